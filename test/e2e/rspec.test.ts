/**
 * End to end on the RSpec fixture suite: the real CLI with --local (a dispatcher, an
 * aggregator and a supervisor with real slot processes) on a vhost of its own.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';
import { FIXTURES, readReport, runCli, tmpDir } from '../helpers/cli.js';
import type { ReportTest, RunReport } from '../../shared/messages.js';

let vhost: TestVhost;
before(async () => {
  vhost = await createVhost('warren-e2e-rspec');
});
after(async () => {
  await vhost.delete();
});

const byId = (report: RunReport) => new Map<string, ReportTest>(report.tests.map((t) => [t.id, t]));

test('a whole run of the RSpec fixture: every kind of test ends with the right status', async () => {
  const state = tmpDir();
  const reportDir = tmpDir();
  const res = await runCli([
    'run', '--local', '--workers', '3', '--adapter', 'rspec', '--cwd', path.join(FIXTURES, 'rspec-suite'),
    '--test-timeout', '4', '--rerun-threshold', '0.5', '--max-rounds', '2',
    '--env', `FLAKY_STATE_DIR=${state}`, '--report-dir', reportDir, '--broker', vhost.url,
  ]);
  assert.equal(res.code, 1, `exit 1 on failures\n${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  const tests = byId(report);
  const status = (id: string) => tests.get(id)?.status;

  // every discovered test is reported exactly once, the file that fails to load included
  assert.equal(new Set(report.tests.map((t) => t.id)).size, report.tests.length);
  assert.equal(report.totals.total, 31);

  for (const t of report.tests.filter((x) => x.file === 'spec/passing_spec.rb')) assert.equal(t.status, 'passed', t.name);
  assert.equal(status('./spec/failing_spec.rb[1:1]'), 'passed');
  assert.equal(status('./spec/failing_spec.rb[1:3]'), 'failed');
  assert.match(tests.get('./spec/failing_spec.rb[1:3]')!.message!, /RuntimeError: boom from failing_spec/);
  assert.deepEqual(tests.get('./spec/failing_spec.rb[1:3]')!.attempts, ['failed', 'failed'], 'failures re-run in round 2');
  assert.equal(report.tests.filter((t) => t.file === 'spec/pending_spec.rb' && t.status === 'pending').length, 2);

  const flaky = tests.get('./spec/flaky_spec.rb[1:1]')!;
  assert.equal(flaky.status, 'flaky');
  assert.deepEqual(flaky.attempts, ['failed', 'passed']);

  const hung = tests.get('./spec/hanging_spec.rb[1:1]')!;
  assert.equal(hung.status, 'failed');
  assert.equal(hung.message, 'timed out after 4 s');
  assert.equal(status('./spec/hanging_spec.rb[1:2]'), 'passed', 'the hung test does not sink its file');

  const broken = tests.get('./spec/broken_spec.rb')!;
  assert.equal(broken.status, 'failed');
  assert.match(broken.message!, /this_method_does_not_exist!/);

  const killer = tests.get('./spec/killer_spec.rb[1:1]')!;
  assert.equal(killer.status, 'failed');
  assert.equal(killer.message, 'crashed its worker 4 times');
  assert.equal(status('./spec/killer_spec.rb[1:2]'), 'passed', 'the killer does not sink the rest of its batch');

  assert.deepEqual(
    { failed: report.totals.failed, flaky: report.totals.flaky, pending: report.totals.pending },
    { failed: 6, flaky: 1, pending: 2 },
  );

  // junit.xml: one testcase per test, failure messages kept
  const junit = fs.readFileSync(path.join(reportDir, 'junit.xml'), 'utf8');
  assert.equal(junit.match(/<testcase /g)!.length, 31);
  assert.match(junit, /<failure message="timed out after 4 s">/);
  assert.match(junit, /<failure message="crashed its worker 4 times">/);
  assert.match(fs.readFileSync(path.join(reportDir, 'summary.md'), 'utf8'), /boom from failing_spec/);

  // the terminal summary names the failures
  assert.match(res.stdout, /Failed:[\s\S]*Hanging hangs forever[\s\S]*timed out after 4 s/);
  assert.match(res.stdout, /Flaky \(failed, then passed\):[\s\S]*flaky_spec/);
});
