import { test } from 'node:test';
import assert from 'node:assert/strict';
import { finishedResults, parseEvents, resolveAttempt, resolveByExitCode, type FrameworkEvent } from '../../services/worker-supervisor/resolve.js';
import type { TestRef } from '../../shared/messages.js';

const T = (id: string, file = 'spec/a_spec.rb'): TestRef => ({ id, file, name: `name of ${id}` });
const start = (t: TestRef): FrameworkEvent => ({ event: 'test_start', id: t.id, file: t.file, name: t.name });
const end = (t: TestRef, status: 'passed' | 'failed' | 'pending', message?: string): FrameworkEvent => ({ event: 'test_end', id: t.id, file: t.file, name: t.name, status, durationMs: 5, message });
const ok = { code: 0, signal: null };
const base = { stderr: '', elapsedMs: 100 };

test('a clean run keeps the framework results', () => {
  const [a, b] = [T('a'), T('b')];
  const r = resolveAttempt([a, b], { ...base, exit: { code: 1, signal: null }, events: [start(a), end(a, 'passed'), start(b), end(b, 'failed', 'boom'), { event: 'done' }] });
  assert.deepEqual(r.results.map((x) => [x.testId, x.status, x.message]), [['a', 'passed', undefined], ['b', 'failed', 'boom']]);
  assert.deepEqual(r.rerun, []);
});

test('a timeout fails only the running test; the rest of the batch runs again', () => {
  const [a, b, c] = [T('a'), T('b'), T('c')];
  const r = resolveAttempt([a, b, c], { ...base, exit: { code: null, signal: 'SIGKILL' }, timedOutAfterSec: 5, events: [start(a), end(a, 'passed'), start(b)] });
  assert.deepEqual(r.results.map((x) => [x.testId, x.status, x.message]), [['a', 'passed', undefined], ['b', 'failed', 'timed out after 5 s']]);
  assert.deepEqual(r.rerun.map((x) => x.id), ['c']);
});

test('a test that crashes the framework is failed with the crash; the others are not sunk', () => {
  const [a, b, c] = [T('a'), T('b'), T('c')];
  const r = resolveAttempt([a, b, c], { ...base, stderr: 'Segmentation fault', exit: { code: null, signal: 'SIGSEGV' }, events: [start(a)] });
  assert.equal(r.results.length, 1);
  assert.equal(r.results[0]!.testId, 'a');
  assert.match(r.results[0]!.message!, /crashed: the test process killed by SIGSEGV/);
  assert.equal(r.results[0]!.details, 'Segmentation fault');
  assert.deepEqual(r.rerun.map((x) => x.id), ['b', 'c']);
});

test('a batch that dies before any test starts is split, a lone test is failed', () => {
  const [a, b] = [T('a'), T('b')];
  const split = resolveAttempt([a, b], { ...base, exit: { code: 139, signal: null }, events: [] });
  assert.deepEqual(split, { results: [], rerun: [a, b] });
  const lone = resolveAttempt([a], { ...base, exit: { code: 139, signal: null }, events: [] });
  assert.equal(lone.results[0]!.status, 'failed');
  assert.match(lone.results[0]!.message!, /exited with code 139/);
});

test('a file that fails to load fails its own tests; the other files of the batch run again', () => {
  const broken = T('./spec/broken_spec.rb', 'spec/broken_spec.rb');
  const good = T('./spec/good_spec.rb[1:1]', 'spec/good_spec.rb');
  const r = resolveAttempt([good, broken], {
    ...base, exit: { code: 1, signal: null },
    events: [{ event: 'error', message: 'NameError: undefined method', file: 'spec/broken_spec.rb' }, { event: 'done' }],
  });
  assert.deepEqual(r.results.map((x) => [x.testId, x.status, x.message]), [['./spec/broken_spec.rb', 'failed', 'NameError: undefined method']]);
  assert.deepEqual(r.rerun, [good]);
});

test('an error outside any file fails every test when nothing else settles them', () => {
  const [a, b] = [T('a'), T('b')];
  const r = resolveAttempt([a, b], { ...base, exit: { code: 1, signal: null }, events: [{ event: 'error', message: 'before(:suite) failed' }, { event: 'done' }] });
  assert.deepEqual(r.results.map((x) => x.message), ['before(:suite) failed', 'before(:suite) failed']);
});

test('tests the framework never reported are failed, not lost', () => {
  const [a, b] = [T('a'), T('b')];
  const r = resolveAttempt([a, b], { ...base, exit: ok, events: [start(a), end(a, 'passed'), { event: 'done' }] });
  assert.deepEqual(r.rerun, [b], 'first it runs again alone');
  const again = resolveAttempt([b], { ...base, exit: ok, events: [{ event: 'done' }] });
  assert.match(again.results[0]!.message!, /not run/);
});

test('the command adapter takes the exit code', () => {
  const r = resolveByExitCode([T('x')], { ...base, exit: { code: 3, signal: null }, events: [] }, 'some output');
  assert.equal(r.results[0]!.status, 'failed');
  assert.equal(r.results[0]!.message, 'exited with code 3');
  assert.match(r.results[0]!.details!, /some output/);
});

test('a torn last line of the events file is skipped', () => {
  assert.equal(parseEvents('{"event":"done"}\n{"event":"test_st').length, 1);
});

test('what a dead worker had finished is kept: test_end results only, for the tests asked for', () => {
  const [a, b, c] = [T('a'), T('b'), T('c')];
  const results = finishedResults([a, b, c], [start(a), end(a, 'failed', 'flaky: first attempt fails'), start(b), end(T('other'), 'passed'), start(c)]);
  assert.deepEqual(results.map((r) => [r.testId, r.status, r.message]), [['a', 'failed', 'flaky: first attempt fails']]);
});

test("a name only the run knows is taken from it (RSpec one-liners: the dry run says the group and a trailing space); other names stay the discovered ones", () => {
  const tests: TestRef[] = [
    { id: './spec/a_spec.rb[1:1]', file: './spec/a_spec.rb', name: 'Array ' },
    { id: './spec/a_spec.rb[1:2]', file: './spec/a_spec.rb', name: 'Array has a name' },
  ];
  const events: FrameworkEvent[] = [
    { event: 'test_end', id: tests[0]!.id, file: tests[0]!.file, name: 'Array is expected to eq [1, 2]', status: 'passed' },
    { event: 'test_end', id: tests[1]!.id, file: tests[1]!.file, name: 'Array has a name (as the formatter put it)', status: 'passed' },
    { event: 'done' },
  ];
  const { results } = resolveAttempt(tests, { ...base, events, exit: ok });
  assert.deepEqual(results.map((r) => r.name), ['Array is expected to eq [1, 2]', 'Array has a name']);
  assert.deepEqual(finishedResults(tests, events).map((r) => r.name), ['Array is expected to eq [1, 2]', 'Array has a name']);
});

test('a file that fails to load is failed once: its results say so (not re-run), an error without `load` does not', () => {
  const [a, b] = [T('a', 'spec/broken_spec.rb'), T('b', 'spec/hooks_spec.rb')];
  const r = resolveAttempt([a, b], {
    ...base, exit: { code: 1, signal: null },
    events: [
      { event: 'error', message: 'An error occurred while loading ./spec/broken_spec.rb', file: 'spec/broken_spec.rb', load: true },
      { event: 'error', message: 'error in an after(:all) hook', file: 'spec/hooks_spec.rb' },
      { event: 'done' },
    ],
  });
  assert.deepEqual(r.results.map((x) => [x.testId, x.status, x.once]), [['a', 'failed', true], ['b', 'failed', undefined]]);
});
