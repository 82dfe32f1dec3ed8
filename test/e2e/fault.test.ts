/**
 * Faults injected for real: services started as their own processes, one supervisor
 * SIGKILLed in the middle of a run.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { createVhost, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { readReport, runCli, startService, stopService, tmpDir } from '../helpers/cli.js';

let vhost: TestVhost;
const services: ChildProcess[] = [];
before(async () => {
  vhost = await createVhost('warren-e2e-fault');
});
after(async () => {
  for (const s of services) await stopService(s, 'SIGKILL');
  await vhost.delete();
});

test('a supervisor killed with SIGKILL mid-run: the run completes, every test reported exactly once', async () => {
  const marks = tmpDir();
  const suite = tmpDir();
  const reportDir = tmpDir();
  const url = vhost.url;
  services.push(startService(['dispatcher', '--broker', url]));
  services.push(startService(['aggregator', '--broker', url, '--report-dir', tmpDir()]));
  const doomed = startService(['supervisor', '--broker', url, '--workers', '2', '--id', 'doomed']);
  services.push(doomed);
  services.push(startService(['supervisor', '--broker', url, '--workers', '2', '--id', 'survivor']));

  const run = runCli([
    'run', '--broker', url, '--adapter', 'command', '--cwd', suite, '--report-dir', reportDir,
    '--discover-command', 'seq 1 40',
    // each test notes who started it, then takes a while: the kill lands mid-test
    '--run-command', 'echo "$WARREN_WORKER_ID" >> "$MARKS"/t{id}; sleep 0.4',
    '--env', `MARKS=${marks}`,
  ]);
  // Kill once the doomed supervisor has started some tests (and surely holds some unacked).
  await waitFor('the doomed supervisor to run tests', () => {
    const started = fs.readdirSync(marks).map((f) => fs.readFileSync(`${marks}/${f}`, 'utf8'));
    return started.filter((w) => w.startsWith('doomed/')).length >= 3;
  });
  doomed.kill('SIGKILL');

  const res = await run;
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  assert.equal(report.totals.total, 40);
  assert.equal(report.totals.passed, 40);
  const ids = report.tests.map((t) => t.id).sort((a, b) => Number(a) - Number(b));
  assert.deepEqual(ids, Array.from({ length: 40 }, (_, i) => String(i + 1)), 'every test exactly once');
  // the tests the doomed supervisor had in hand were run again by the survivor
  const reruns = fs.readdirSync(marks).filter((f) => fs.readFileSync(`${marks}/${f}`, 'utf8').trim().split('\n').length > 1);
  assert.ok(reruns.length >= 1, 'at least one test was redelivered after the kill');
  for (const f of reruns) assert.match(fs.readFileSync(`${marks}/${f}`, 'utf8'), /survivor\//);
});
