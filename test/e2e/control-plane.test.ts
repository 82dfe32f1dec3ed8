/**
 * The control plane on paths that used to falsify or stall a run, end to end with the real
 * CLI and services, each synchronised on events (marker files, process exits).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createVhost, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { readReport, runCli, startService, stopService, tmpDir } from '../helpers/cli.js';

let vhost: TestVhost;
const services: ChildProcess[] = [];
before(async () => {
  vhost = await createVhost('warren-e2e-control');
});
after(async () => {
  for (const s of services) await stopService(s, 'SIGKILL');
  await vhost.delete();
});

test('a drain whose grace runs out gives the running test back to the queue: it runs elsewhere, and is not failed', async () => {
  const url = vhost.url;
  const marks = tmpDir();
  const reportDir = tmpDir();
  services.push(startService(['dispatcher', '--broker', url, '--no-history']));
  services.push(startService(['aggregator', '--broker', url, '--report-dir', tmpDir(), '--state-dir', tmpDir()]));
  const first = startService(['supervisor', '--broker', url, '--workers', '1', '--id', 'first', '--grace', '1']);
  services.push(first);
  // the first attempt marks itself and hangs; any later one passes
  const run = runCli([
    'run', '--broker', url, '--adapter', 'command', '--cwd', tmpDir(), '--report-dir', reportDir, '--max-rounds', '1',
    '--discover-command', 'echo slow',
    '--run-command', 'if [ -e "$MARKS/started" ]; then echo "$WARREN_WORKER_ID" > "$MARKS/again"; exit 0; fi; echo "$WARREN_WORKER_ID" > "$MARKS/started"; exec sleep 300',
    '--env', `MARKS=${marks}`,
  ]);
  await waitFor('the first attempt running', () => fs.existsSync(path.join(marks, 'started')), 60_000);
  services.push(startService(['supervisor', '--broker', url, '--workers', '1', '--id', 'second']));
  const exited = new Promise<number | null>((r) => first.once('exit', (code) => r(code)));
  first.kill('SIGTERM');
  assert.equal(await exited, 0);
  const res = await run;
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  assert.deepEqual(report.tests.map((t) => [t.id, t.status, t.attempts]), [['slow', 'passed', ['passed']]], 'one result: the test the drain killed is not failed');
  assert.match(fs.readFileSync(path.join(marks, 'again'), 'utf8'), /^second\//);
  for (const s of services.splice(0)) await stopService(s);
});

test('a discovery that kills its worker every time fails the run at once with the reason', async () => {
  const reportDir = tmpDir();
  const res = await runCli([
    'run', '--local', '--workers', '1', '--broker', vhost.url, '--adapter', 'command', '--cwd', tmpDir(), '--report-dir', reportDir,
    '--discover-command', 'kill -9 "$WARREN_SLOT_PID"', '--run-command', 'true', '--run-timeout', '600',
  ], { timeoutMs: 120_000 });
  assert.equal(res.code, 2, `${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  assert.equal(report.status, 'error');
  assert.match(report.error ?? '', /^discovery crashed its worker 4 times/);
});
