/** End to end on the mocha fixture suite, through the real CLI with --local. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';
import { FIXTURES, readReport, runCli, tmpDir } from '../helpers/cli.js';

let vhost: TestVhost;
before(async () => {
  vhost = await createVhost('warren-e2e-mocha');
});
after(async () => {
  await vhost.delete();
});

test('a whole run of the mocha fixture: every kind of test ends with the right status', async () => {
  const state = tmpDir();
  const reportDir = tmpDir();
  const res = await runCli([
    'run', '--local', '--workers', '3', '--adapter', 'mocha', '--cwd', path.join(FIXTURES, 'mocha-suite'),
    '--test-timeout', '4', '--rerun-threshold', '0.5', '--max-rounds', '2',
    '--env', `FLAKY_STATE_DIR=${state}`, '--report-dir', reportDir, '--broker', vhost.url,
  ]);
  assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  const t = new Map(report.tests.map((x) => [x.id, x]));
  assert.equal(report.totals.total, 26);
  assert.equal(new Set(report.tests.map((x) => x.id)).size, 26, 'each test once');
  assert.equal(t.get('test/duplicates.test.js :: Dup same title')!.status, 'passed');
  assert.equal(t.get('test/duplicates.test.js :: Dup same title #2')!.status, 'passed');
  assert.equal(t.get('test/esm.test.mjs :: ESM runs an ES module test')!.status, 'passed');
  assert.match(t.get('test/failing.test.js :: Failing throws an error')!.message!, /^Error: boom from failing.test/);
  assert.equal(t.get('test/failing.test.js :: Failing passes before the failures')!.status, 'passed');
  assert.equal(report.tests.filter((x) => x.file === 'test/pending.test.js' && x.status === 'pending').length, 3);
  // (seen `passed` in 2 of 5 fresh-clone CI runs, cause not found yet: the run's own log and
  // the attempts say where the first, failing attempt went)
  const flaky = t.get('test/flaky.test.js :: Flaky fails the first time only')!;
  assert.equal(flaky.status, 'flaky', `attempts ${flaky.attempts.join(',')} on ${flaky.worker}\n${res.stderr}`);
  assert.equal(t.get('test/hanging.test.js :: Hanging hangs forever')!.message, 'timed out after 4 s');
  assert.equal(t.get('test/hanging.test.js :: Hanging passes quickly')!.status, 'passed');
  assert.match(t.get('test/broken.test.js')!.message!, /broken.test.js fails to load/);
  const killer = [...t.values()].find((x) => x.file === 'test/killer.test.js' && x.status === 'failed')!;
  assert.equal(killer.message, 'crashed its worker 4 times');
  assert.ok(report.tests.some((x) => x.file === 'test/killer.test.js' && x.status === 'passed'), 'the killer does not sink its file');
  assert.deepEqual([report.totals.failed, report.totals.flaky, report.totals.pending], [6, 1, 3]);
  assert.equal(fs.readFileSync(path.join(reportDir, 'junit.xml'), 'utf8').match(/<testcase /g)!.length, 26);
});

test('a suite whose selected tests all pass exits 0', async () => {
  const reportDir = tmpDir();
  const res = await runCli([
    'run', '--local', '--workers', '2', '--adapter', 'mocha', '--cwd', path.join(FIXTURES, 'mocha-suite'),
    '--pattern', 'passing|duplicates|esm', '--report-dir', reportDir, '--broker', vhost.url,
  ]);
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  assert.equal(report.status, 'passed');
  assert.ok(report.totals.total >= 5);
  assert.equal(report.totals.passed, report.totals.total);
});
