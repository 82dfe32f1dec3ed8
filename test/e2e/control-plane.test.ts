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
  services.push(startService(['aggregator', '--broker', url, '--report-dir', tmpDir()]));
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

test('a spec of a run whose report is out is dropped by the workers, not run', async () => {
  const url = vhost.url;
  const marks = tmpDir();
  services.push(startService(['dispatcher', '--broker', url, '--no-history']));
  services.push(startService(['aggregator', '--broker', url, '--report-dir', tmpDir()]));
  services.push(startService(['supervisor', '--broker', url, '--workers', '1', '--id', 'only']));
  const cwd = tmpDir();
  const common = ['--broker', url, '--adapter', 'command', '--cwd', cwd, '--discover-command', 'echo a', '--run-command', 'echo "$RUN" >> "$MARKS/ran"', '--env', `MARKS=${marks}`];
  const firstDir = tmpDir();
  const first = await runCli(['run', ...common, '--run-id', 'finished-run', '--env', 'RUN=first', '--report-dir', firstDir]);
  assert.equal(first.code, 0, first.stderr);
  const deadline = readReport(firstDir).startedAt + 3600 * 1000; // accepted + the default --run-timeout
  // its spec again, as a redelivery or a republishing dispatcher would bring it
  const { Broker } = await import('../../shared/broker.js');
  const { createLogger } = await import('../../shared/log.js');
  const broker = new Broker({ url, name: 'test stale', log: createLogger('test', 'silent') });
  await broker.start();
  await broker.publish('warren.work', 'job.0', {
    type: 'spec', v: 1, id: 'finished-run/r1/s1-again', runId: 'finished-run', round: 1, tests: [{ id: 'a', file: '', name: 'a' }],
    suite: { adapter: 'command', cwd, command: { discover: 'echo a', run: 'echo stale >> "$MARKS/ran"' }, env: { MARKS: marks }, testTimeoutSec: 60 },
    expiresAt: deadline, shard: 0,
  });
  const second = await runCli(['run', ...common, '--env', 'RUN=second', '--report-dir', tmpDir()]);
  assert.equal(second.code, 0, second.stderr);
  // the worker takes it (from the run's shard, or sweeping the others) and drops it
  await waitFor('the stale spec taken', async () => (await broker.checkQueue('warren.specs.0')).messageCount === 0, 60_000);
  await broker.close();
  assert.deepEqual(fs.readFileSync(path.join(marks, 'ran'), 'utf8').trim().split('\n'), ['first', 'second'], 'the stale spec did not run');
  for (const s of services.splice(0)) await stopService(s);
});

test('a run id that names a finished run is refused with a report that says so', async () => {
  const url = vhost.url;
  services.push(startService(['dispatcher', '--broker', url, '--no-history']));
  services.push(startService(['aggregator', '--broker', url, '--report-dir', tmpDir()]));
  services.push(startService(['supervisor', '--broker', url, '--workers', '1', '--id', 'ids']));
  const args = ['run', '--broker', url, '--adapter', 'command', '--cwd', tmpDir(), '--discover-command', 'echo a', '--run-command', 'true', '--run-id', 'once-only'];
  const first = await runCli([...args, '--report-dir', tmpDir()]);
  assert.equal(first.code, 0, first.stderr);
  const againDir = tmpDir();
  const again = await runCli([...args, '--report-dir', againDir]);
  assert.equal(again.code, 2, again.stderr);
  const report = readReport(againDir);
  assert.equal(report.status, 'error');
  assert.match(report.error ?? '', /^run id once-only was used by a run that finished at .* \(passed\); a run id names one run/);
  assert.equal(report.totals.total, 0);
  for (const s of services.splice(0)) await stopService(s);
});
