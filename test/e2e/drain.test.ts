/**
 * Deliberate stops and restarts: a supervisor told to stop (SIGTERM) finishes and reports
 * what it holds; an aggregator killed mid-run comes back from the journal stream.
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
  vhost = await createVhost('warren-e2e-drain');
});
after(async () => {
  for (const s of services) await stopService(s, 'SIGKILL');
  await vhost.delete();
});

const lines = (dir: string) => Object.fromEntries(fs.readdirSync(dir).map((f) => [f, fs.readFileSync(`${dir}/${f}`, 'utf8').trim().split('\n')]));

test('SIGTERM drains a supervisor: its running tests finish and are reported once; an aggregator SIGKILLed mid-run recovers', async () => {
  const url = vhost.url;
  const marks = tmpDir();
  const reportDir = tmpDir();
  const aggregatorArgs = ['aggregator', '--broker', url, '--report-dir', tmpDir()];
  services.push(startService(['dispatcher', '--broker', url]));
  let aggregator = startService(aggregatorArgs);
  services.push(aggregator);
  const draining = startService(['supervisor', '--broker', url, '--workers', '2', '--id', 'draining', '--grace', '60']);
  services.push(draining);

  const run = runCli([
    'run', '--broker', url, '--adapter', 'command', '--cwd', tmpDir(), '--report-dir', reportDir,
    '--discover-command', 'seq 1 8',
    '--run-command', 'echo "$WARREN_WORKER_ID" >> "$MARKS"/t{id}; sleep 1.5',
    '--env', `MARKS=${marks}`,
  ]);
  await waitFor('the draining supervisor to hold two tests', () => Object.keys(lines(marks)).length >= 2);
  const held = Object.keys(lines(marks));
  const exited = new Promise<number | null>((r) => draining.once('exit', (code) => r(code)));
  draining.kill('SIGTERM');
  // while it drains, the aggregator dies too, and comes back from its journal
  aggregator.kill('SIGKILL');
  await new Promise((r) => aggregator.once('exit', r));
  assert.equal(await exited, 0, 'a drained supervisor exits 0');
  const afterDrain = lines(marks);
  assert.deepEqual(Object.keys(afterDrain).sort(), held.sort(), 'it took no new test while draining');
  aggregator = startService(aggregatorArgs);
  services.push(aggregator);
  services.push(startService(['supervisor', '--broker', url, '--workers', '2', '--id', 'fresh']));

  const res = await run;
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  assert.equal(report.totals.total, 8);
  assert.equal(report.totals.passed, 8);
  const all = lines(marks);
  for (const id of held) {
    assert.equal(all[id]!.length, 1, `${id} ran once: finished by the draining supervisor, not run again (${all[id]})`);
    assert.match(all[id]![0]!, /^draining\//);
  }
  for (const [id, who] of Object.entries(all)) assert.equal(who.length, 1, `${id} ran once (${who})`);
});
