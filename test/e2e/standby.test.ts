/**
 * No single coordinator: two aggregators and two dispatchers on one broker; the active
 * aggregator and one dispatcher are SIGKILLed mid-run, and the run still ends with the same
 * report a fault-free run gives. The aggregator keeps nothing on its disk (its journal is
 * the broker's stream), so a host lost with its disk is this same case. Synchronised on
 * marker files and log lines, never on sleeps.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { createVhost, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { readReport, runCli, startService, stopService, tmpDir, watchService } from '../helpers/cli.js';
import type { RunReport } from '../../shared/messages.js';

let vhost: TestVhost;
const services: ChildProcess[] = [];
before(async () => {
  vhost = await createVhost('warren-e2e-standby');
});
after(async () => {
  for (const s of services) await stopService(s, 'SIGKILL');
  await vhost.delete();
});

const TESTS = 16;
/** Test 3 fails its first attempt (a re-run round), every test marks each attempt. */
const runArgs = (marks: string, reportDir: string) => [
  'run', '--broker', vhost.url, '--adapter', 'command', '--cwd', tmpDir(), '--report-dir', reportDir,
  '--discover-command', `seq 1 ${TESTS}`, '--max-batch', '1',
  '--run-command', 'echo x >> "$MARKS/t{id}"; if [ {id} = 3 ] && [ ! -e "$MARKS/failed" ]; then touch "$MARKS/failed"; exit 1; fi; sleep 0.3',
  '--env', `MARKS=${marks}`,
];
const shape = (r: RunReport) => ({ status: r.status, totals: r.totals, rounds: r.rounds, tests: r.tests.map((t) => [t.id, t.status, t.attempts]) });

test('the active aggregator and a dispatcher SIGKILLed mid-run: the standbys finish it with the report of a fault-free run', async () => {
  const url = vhost.url;
  const first = watchService(['aggregator', '--broker', url, '--report-dir', tmpDir()]);
  services.push(first.child);
  await first.logged('aggregator active (holds the lease)');
  const standby = watchService(['aggregator', '--broker', url, '--report-dir', tmpDir()]);
  services.push(standby.child);
  await standby.logged('aggregator running (a standby until it holds the lease)');
  const dispatchers = [startService(['dispatcher', '--broker', url, '--no-history']), startService(['dispatcher', '--broker', url, '--no-history'])];
  services.push(...dispatchers, startService(['supervisor', '--broker', url, '--workers', '2']));

  // the same run without faults, for the report to compare with
  const calmReports = tmpDir();
  const calm = await runCli(runArgs(tmpDir(), calmReports));
  assert.equal(calm.code, 0, `${calm.stdout}\n${calm.stderr}`);
  const expected = shape(readReport(calmReports));
  assert.deepEqual(expected.totals, { total: TESTS, passed: TESTS - 1, failed: 0, flaky: 1, pending: 0, notRun: 0 });

  const marks = tmpDir();
  const reportDir = tmpDir();
  const run = runCli(runArgs(marks, reportDir));
  await waitFor('a quarter of the tests to have run', () => fs.readdirSync(marks).filter((f) => f.startsWith('t')).length >= TESTS / 4, 60_000);
  first.child.kill('SIGKILL');
  dispatchers[0]!.kill('SIGKILL');
  await standby.logged('aggregator active (holds the lease)');
  const res = await run;
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  assert.deepEqual(shape(readReport(reportDir)), expected, 'the same report as the fault-free run');
  // the report is published before the line is logged: wait for the line, do not look once
  const finished = await standby.logged('run finished', 30_000);
  assert.equal(finished.status, 'passed', 'the standby finished the run');

  // a replica started later reads the journal from the checkpoint, not from its start, and
  // still knows the finished runs: a finished run's id is refused
  await standby.logged('journal checkpoint written');
  const late = watchService(['aggregator', '--broker', url, '--report-dir', tmpDir()]);
  services.push(late.child);
  const reading = await late.logged('reading the journal');
  assert.ok(Number(reading.from) > 0, `started from the checkpoint (${reading.from})`);
  assert.equal(reading.finishedRuns, 2);
  standby.child.kill('SIGKILL');
  await late.logged('aggregator active (holds the lease)');
  const again = await runCli([...runArgs(tmpDir(), tmpDir()), '--run-id', readReport(calmReports).runId]);
  assert.equal(again.code, 2, `${again.stdout}\n${again.stderr}`);
  assert.match(again.stdout + again.stderr, /was used by a run that finished/);
});
