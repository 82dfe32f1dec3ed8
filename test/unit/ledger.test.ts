import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DROPPED_MESSAGE, RunLedger } from '../../services/aggregator/ledger.js';
import { AcceptedRun, type TestRef, type TestResult } from '../../shared/messages.js';

const run = (over: Partial<AcceptedRun> = {}) =>
  AcceptedRun.parse({ type: 'run.request', adapter: 'rspec', cwd: '/suite', runId: 'r1', id: 'r1', acceptedAt: 0, deadline: 1000, ...over });
const tests = (n: number): TestRef[] => Array.from({ length: n }, (_, i) => ({ id: `t${i}`, file: 'f', name: `test ${i}` }));
const res = (t: TestRef, status: TestResult['status'], message?: string): TestResult => ({ testId: t.id, file: t.file, name: t.name, status, durationMs: 1, message });

test('one result per test per round: a redelivered duplicate changes nothing', () => {
  const l = new RunLedger(run({ rerunThreshold: 0.5 }));
  const ts = tests(2);
  l.onPlanned(1, ts, undefined, 0);
  l.onResults(1, 'w1', [res(ts[0]!, 'failed', 'first')], 1);
  l.onResults(1, 'w2', [res(ts[0]!, 'passed')], 2);
  const effects = l.onResults(1, 'w1', [res(ts[1]!, 'passed')], 3);
  assert.equal(effects[0]!.kind, 'round', 'the failure is re-run');
  assert.equal(l.rounds.get(1)!.results.get('t0')!.message, 'first');
});

test('failures under the threshold are re-run; failed-then-passed is flaky', () => {
  const l = new RunLedger(run({ rerunThreshold: 0.5 }));
  const ts = tests(4);
  l.onPlanned(1, ts, undefined, 0);
  const e1 = l.onResults(1, 'w', [res(ts[0]!, 'passed'), res(ts[1]!, 'failed', 'flake'), res(ts[2]!, 'pending'), res(ts[3]!, 'failed', 'real')], 1);
  assert.equal(e1.length, 1);
  const req = e1[0]!.kind === 'round' ? e1[0]!.request : assert.fail('expected a round');
  assert.deepEqual(req.tests.map((t) => t.id), ['t1', 't3']);
  assert.equal(req.round, 2);
  l.roundSent(2);
  l.onPlanned(2, req.tests, undefined, 2);
  const e2 = l.onResults(2, 'w', [res(ts[1]!, 'passed'), res(ts[3]!, 'failed', 'real again')], 3);
  assert.equal(e2[0]!.kind, 'round', 'round 3: t3 still fails, under the threshold');
  l.roundSent(3);
  l.onPlanned(3, [ts[3]!], undefined, 4);
  const e3 = l.onResults(3, 'w', [res(ts[3]!, 'failed', 'real third')], 5);
  const report = e3[0]!.kind === 'report' ? e3[0]!.report : assert.fail('expected the report after max rounds');
  assert.deepEqual(report.tests.map((t) => [t.id, t.status]), [['t0', 'passed'], ['t1', 'flaky'], ['t2', 'pending'], ['t3', 'failed']]);
  assert.deepEqual(report.tests[1]!.attempts, ['failed', 'passed']);
  assert.equal(report.tests[1]!.message, 'flake');
  assert.equal(report.tests[3]!.message, 'real third');
  assert.deepEqual(report.totals, { total: 4, passed: 1, failed: 1, flaky: 1, pending: 1, notRun: 0 });
  assert.equal(report.status, 'failed');
  assert.equal(report.rounds, 3);
});

test('over the threshold, no re-run: the report comes at once', () => {
  const l = new RunLedger(run({ rerunThreshold: 0.1 }));
  const ts = tests(2);
  l.onPlanned(1, ts, undefined, 0);
  const e = l.onResults(1, 'w', [res(ts[0]!, 'failed'), res(ts[1]!, 'passed')], 1);
  assert.equal(e[0]!.kind, 'report');
});

test('tests that crashed their worker are not re-run: the delivery limit already retried them', () => {
  const l = new RunLedger(run({ rerunThreshold: 1 }));
  const ts = tests(2);
  l.onPlanned(1, ts, undefined, 0);
  l.onResults(1, 'crashed', [res(ts[0]!, 'failed', 'crashed its worker 4 times')], 1);
  const e = l.onResults(1, 'w', [res(ts[1]!, 'passed')], 2);
  assert.equal(e[0]!.kind, 'report');
});

test('results before the plan are kept and count once the plan arrives', () => {
  const l = new RunLedger(run());
  const ts = tests(1);
  assert.deepEqual(l.onResults(1, 'w', [res(ts[0]!, 'passed')], 0), []);
  const e = l.onPlanned(1, ts, undefined, 1);
  assert.equal(e[0]!.kind, 'report');
});

test('at the deadline, what never came back is failed as dropped', () => {
  const l = new RunLedger(run());
  const ts = tests(3);
  l.onPlanned(1, ts, undefined, 0);
  l.onResults(1, 'w', [res(ts[0]!, 'passed')], 1);
  const e = l.onDeadline(1000);
  const report = e[0]!.kind === 'report' ? e[0]!.report : assert.fail();
  assert.deepEqual(report.tests.map((t) => [t.status, t.message]), [['passed', undefined], ['failed', DROPPED_MESSAGE], ['failed', DROPPED_MESSAGE]]);
  assert.deepEqual(l.onResults(1, 'w', [res(ts[1]!, 'passed')], 2), [], 'a finished run takes nothing more');
});

test('a discovery error ends the run with an error report', () => {
  const l = new RunLedger(run());
  const e = l.onPlanned(1, [], 'discovery failed: rspec exited with code 1', 0);
  const report = e[0]!.kind === 'report' ? e[0]!.report : assert.fail();
  assert.equal(report.status, 'error');
  assert.match(report.error!, /discovery failed/);
});

test('a deadline after a re-run was decided but before it was planned fails only the re-run tests', () => {
  const l = new RunLedger(run({ rerunThreshold: 0.5 }));
  const ts = tests(2);
  l.onPlanned(1, ts, undefined, 0);
  const e1 = l.onResults(1, 'w', [res(ts[0]!, 'passed'), res(ts[1]!, 'failed', 'flake?')], 1);
  assert.equal(e1[0]!.kind, 'round');
  l.roundSent(2);
  // no round.planned for round 2 yet: the deadline
  const e2 = l.onDeadline(2);
  const report = e2[0]!.kind === 'report' ? e2[0]!.report : assert.fail('expected the report');
  assert.deepEqual(report.tests.map((t) => [t.id, t.status]), [['t0', 'passed'], ['t1', 'failed']]);
  assert.equal(report.tests[1]!.message, DROPPED_MESSAGE);
  assert.deepEqual(report.totals, { total: 2, passed: 1, failed: 1, flaky: 0, pending: 0, notRun: 0 });
});

test("a failure that comes after the same round's pass still makes the test flaky (a dead worker's salvaged attempt, late)", () => {
  const l = new RunLedger(run({ rerunThreshold: 0.5 }));
  const ts = tests(2);
  l.onPlanned(1, ts, undefined, 0);
  l.onResults(1, 'w2', [res(ts[0]!, 'passed')], 1);
  l.onResults(1, 'w1', [res(ts[0]!, 'failed', 'first attempt')], 2);
  const effects = l.onResults(1, 'w2', [res(ts[1]!, 'passed')], 3);
  const report = effects[0]!.kind === 'report' ? effects[0]!.report : assert.fail('expected the report');
  assert.equal(report.tests[0]!.status, 'flaky');
  assert.equal(report.tests[0]!.message, 'first attempt');
  assert.deepEqual(report.tests[0]!.attempts, ['failed', 'passed']);
  assert.equal(report.totals.flaky, 1);
});

test('a cancel ends the run now: what finished stands, the rest is not run', () => {
  const l = new RunLedger(run());
  const ts = tests(4);
  l.onPlanned(1, ts, undefined, 0);
  l.onResults(1, 'w', [res(ts[0]!, 'passed'), res(ts[1]!, 'failed', 'boom')], 1);
  const [effect] = l.onCancel('alice@ci', 2);
  const report = effect?.kind === 'report' ? effect.report : assert.fail('expected the report');
  assert.equal(report.status, 'cancelled');
  assert.equal(report.stopped, 'cancelled by alice@ci');
  assert.deepEqual(report.tests.map((t) => [t.id, t.status]), [['t0', 'passed'], ['t1', 'failed'], ['t2', 'not_run'], ['t3', 'not_run']]);
  assert.equal(report.totals.notRun, 2);
  assert.deepEqual(l.onResults(1, 'w', [res(ts[2]!, 'passed')], 3), [], 'a late result changes nothing');
});

test('--max-failures counts only failures no re-run can save; --fail-fast counts them as they come', () => {
  // threshold 0.5 of 6 tests: up to 3 failures are re-run, so 2 failures do not stop round 1
  const l = new RunLedger(run({ maxFailures: 2, rerunThreshold: 0.5, maxRounds: 2 }));
  const ts = tests(6);
  l.onPlanned(1, ts, undefined, 0);
  assert.deepEqual(l.onResults(1, 'w', [res(ts[0]!, 'failed'), res(ts[1]!, 'failed')], 1), [], 'both may still be re-run');
  // a fourth failure: more than the threshold, no re-run can save any of them
  l.onResults(1, 'w', [res(ts[2]!, 'failed')], 2);
  const [effect] = l.onResults(1, 'w', [res(ts[3]!, 'failed')], 3);
  const report = effect?.kind === 'report' ? effect.report : assert.fail('expected the run to stop');
  assert.equal(report.status, 'failed');
  assert.match(report.stopped ?? '', /^stopped after 4 failed tests \(--max-failures 2\)$/);
  assert.deepEqual(report.tests.map((t) => t.status), ['failed', 'failed', 'failed', 'failed', 'not_run', 'not_run']);

  const fast = new RunLedger(run({ failFast: true, rerunThreshold: 0.5 }));
  fast.onPlanned(1, ts, undefined, 0);
  const [stop] = fast.onResults(1, 'w', [res(ts[0]!, 'passed'), res(ts[1]!, 'failed')], 1);
  const r2 = stop?.kind === 'report' ? stop.report : assert.fail('--fail-fast stops at the first failure');
  assert.equal(r2.stopped, 'stopped after 1 failed test (--fail-fast)');
  assert.equal(r2.totals.notRun, 4);
});

test('the report names a test as its run did when that differs (an RSpec one-liner is named only once it ran)', () => {
  const l = new RunLedger(run());
  const ts: TestRef[] = [{ id: 'a[1:1]', file: 'a', name: 'Array ' }, { id: 'a[1:2]', file: 'a', name: 'Array has a name' }];
  l.onPlanned(1, ts, undefined, 0);
  const effects = l.onResults(1, 'w', [{ ...res(ts[0]!, 'passed'), name: 'Array is expected to eq [1, 2]' }, res(ts[1]!, 'passed')], 1);
  const report = effects[0]!.kind === 'report' ? effects[0]!.report : assert.fail('expected the report');
  assert.deepEqual(report.tests.map((t) => t.name), ['Array is expected to eq [1, 2]', 'Array has a name']);
});

test('a failure that is the same every time (a file that does not load) is not re-run; a flaky-looking one is', () => {
  const l = new RunLedger(run({ rerunThreshold: 0.5 }));
  const ts = tests(4);
  l.onPlanned(1, ts, undefined, 0);
  const effects = l.onResults(1, 'w', [{ ...res(ts[0]!, 'failed', 'failed to load f'), once: true }, res(ts[1]!, 'failed', 'maybe flaky'), res(ts[2]!, 'passed'), res(ts[3]!, 'passed')], 1);
  const req = effects[0]!.kind === 'round' ? effects[0]!.request : assert.fail('expected a round');
  assert.deepEqual(req.tests.map((t) => t.id), ['t1'], 'only the failure a re-run may change');
  l.roundSent(2);
  l.onPlanned(2, req.tests, undefined, 2);
  const e2 = l.onResults(2, 'w', [res(ts[1]!, 'passed')], 3);
  const report = e2[0]!.kind === 'report' ? e2[0]!.report : assert.fail('expected the report');
  assert.deepEqual(report.tests.map((t) => [t.id, t.status, t.attempts.join(',')]), [['t0', 'failed', 'failed'], ['t1', 'flaky', 'failed,passed'], ['t2', 'passed', 'passed'], ['t3', 'passed', 'passed']]);
});

test("a pass after the framework's own retries (Playwright's) is flaky, with the first failure, and needs no round of Warren's", () => {
  const l = new RunLedger(run({ rerunThreshold: 1 }));
  const ts = tests(2);
  l.onPlanned(1, ts, undefined, 0);
  const retried: TestResult = { ...res(ts[0]!, 'passed'), retried: { failures: 2, message: 'Error: first try', details: 'at x' } };
  const e = l.onResults(1, 'w', [retried, res(ts[1]!, 'passed')], 1);
  const report = e[0]!.kind === 'report' ? e[0]!.report : assert.fail('nothing failed for good: the report at once');
  assert.deepEqual(report.tests.map((t) => [t.id, t.status]), [['t0', 'flaky'], ['t1', 'passed']]);
  assert.deepEqual(report.tests[0]!.attempts, ['failed', 'failed', 'passed']);
  assert.equal(report.tests[0]!.message, 'Error: first try');
  assert.equal(report.tests[0]!.details, 'at x');
  assert.deepEqual(report.totals, { total: 2, passed: 1, failed: 0, flaky: 1, pending: 0, notRun: 0 });
  assert.equal(report.status, 'passed');
});
