/**
 * One cluster, many runs: fair sharing of the workers, cancellation, fail-fast, labels,
 * per-worker setup, private `--local` runs and the live view, end to end with the real CLI
 * and services on a vhost of the shared broker. Each test synchronises on events (marker
 * files the tests write, reports, process exits), never on sleeps.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Broker } from '../../shared/broker.js';
import { createLogger } from '../../shared/log.js';
import { SPEC_SHARDS, specQueue } from '../../shared/topology.js';
import { createVhost, queueDepth, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { idleSlots } from '../helpers/slots.js';
import { readReport, runCli, startService, stopService, tmpDir, BIN } from '../helpers/cli.js';
import { spawn } from 'node:child_process';

let vhost: TestVhost;
let broker: Broker;
const services: ChildProcess[] = [];
const log = createLogger('test', 'silent');

before(async () => {
  vhost = await createVhost('warren-e2e-sharing');
  broker = new Broker({ url: vhost.url, name: 'test sharing', log });
  await broker.start();
});
after(async () => {
  for (const s of services.splice(0)) await stopService(s, 'SIGKILL');
  await broker.close();
  await vhost.delete();
});

/** A dispatcher and an aggregator (and supervisors, by the caller). */
function controlPlane(): void {
  services.push(startService(['dispatcher', '--broker', vhost.url, '--no-history']));
  services.push(startService(['aggregator', '--broker', vhost.url, '--report-dir', tmpDir()]));
}

function supervisor(id: string, workers: number, extra: string[] = []): ChildProcess {
  const s = startService(['supervisor', '--broker', vhost.url, '--workers', String(workers), '--id', id, '--grace', '2', ...extra]);
  services.push(s);
  return s;
}

async function stopAll(): Promise<void> {
  for (const s of services.splice(0)) await stopService(s);
}

/** `warren run` of a `command` suite of `n` tests; each test marks `$MARKS/<run>-<id>` as it starts. */
function runSuite(name: string, n: number, marks: string, opts: { body?: string; args?: string[]; reportDir?: string } = {}) {
  const reportDir = opts.reportDir ?? tmpDir();
  const res = runCli([
    'run', '--broker', vhost.url, '--run-id', name, '--adapter', 'command', '--cwd', tmpDir(), '--report-dir', reportDir,
    '--max-batch', '1', '--max-rounds', '1', '--no-timings',
    '--discover-command', `seq 1 ${n}`,
    '--run-command', `echo $$ > "$MARKS/${name}-{id}"; ${opts.body ?? 'true'}`,
    '--env', `MARKS=${marks}`, ...(opts.args ?? []),
  ], { timeoutMs: 240_000 });
  return { res, reportDir };
}

const started = (marks: string, run: string) => fs.readdirSync(marks).filter((f) => f.startsWith(`${run}-`)).length;

async function workQueued(): Promise<number> {
  let n = 0;
  for (let i = 0; i < SPEC_SHARDS; i++) n += await queueDepth(vhost.url, specQueue(i));
  return n;
}

test('concurrent runs share the workers: a small run started behind two big ones does not wait for them', async () => {
  controlPlane();
  supervisor('share', 2);
  await idleSlots(broker, 2);
  const marks = tmpDir();
  const a = runSuite('big-a', 30, marks, { body: 'sleep 0.2' });
  const b = runSuite('big-b', 30, marks, { body: 'sleep 0.2' });
  await waitFor('both big runs under way', () => started(marks, 'big-a') >= 2 && started(marks, 'big-b') >= 2, 120_000);
  const small = runSuite('small', 4, marks);
  const res = await small.res;
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  // first come, first served would have run all 60 big tests first
  const bigDone = started(marks, 'big-a') + started(marks, 'big-b');
  assert.ok(bigDone <= 45, `the small run finished after ${bigDone} of 60 big tests had started`);
  assert.equal(readReport(small.reportDir).totals.passed, 4);
  for (const r of [a, b]) {
    const out = await r.res;
    assert.equal(out.code, 0, `${out.stdout}\n${out.stderr}`);
    assert.equal(readReport(r.reportDir).totals.passed, 30);
  }
  assert.equal(await workQueued(), 0, 'no spec left in any work queue');
  await stopAll();
});

test('warren cancel: waiting specs are dropped, running tests on two supervisors are killed, the report says cancelled', async () => {
  controlPlane();
  supervisor('cancel-a', 1);
  supervisor('cancel-b', 1);
  await idleSlots(broker, 2);
  const marks = tmpDir();
  const run = runSuite('to-cancel', 12, marks, { body: 'exec sleep 300' });
  await waitFor('a test running on each supervisor', () => started(marks, 'to-cancel') >= 2, 120_000);
  const pids = fs.readdirSync(marks).map((f) => Number(fs.readFileSync(path.join(marks, f), 'utf8')));
  const cancel = await runCli(['cancel', 'to-cancel', '--broker', vhost.url]);
  assert.equal(cancel.code, 0, `${cancel.stdout}\n${cancel.stderr}`);
  assert.match(cancel.stdout, /run to-cancel cancelled: 0 of 12 tests had finished .* 12 not run/);
  const res = await run.res;
  assert.equal(res.code, 130, `${res.stdout}\n${res.stderr}`);
  const report = readReport(run.reportDir);
  assert.equal(report.status, 'cancelled');
  assert.match(report.stopped ?? '', /^cancelled by /);
  assert.equal(report.totals.notRun, 12);
  await waitFor('the running tests killed on both hosts', () => pids.every((pid) => !alive(pid)), 30_000);
  await waitFor('its waiting specs dropped', async () => (await workQueued()) === 0, 30_000);
  assert.equal(started(marks, 'to-cancel'), 2, 'no test of the cancelled run started after the cancel');
  // a cancel of a run that has ended says so
  const again = await runCli(['cancel', 'to-cancel', '--broker', vhost.url]);
  assert.equal(again.code, 0);
  assert.match(again.stdout, /run to-cancel had ended .*: cancelled/);
  await stopAll();
});

test('Ctrl-C on warren run cancels the run (exit 130); warren follow of it tells how it ended', async () => {
  controlPlane();
  supervisor('ctrl-c', 2);
  await idleSlots(broker, 2);
  const marks = tmpDir();
  const reportDir = tmpDir();
  const child = spawn(process.execPath, [
    BIN, 'run', '--broker', vhost.url, '--run-id', 'interrupted', '--adapter', 'command', '--cwd', tmpDir(), '--report-dir', reportDir,
    '--max-batch', '1', '--discover-command', 'seq 1 8', '--run-command', 'echo $$ > "$MARKS/interrupted-{id}"; exec sleep 300', '--env', `MARKS=${marks}`,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c) => (stderr += c));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  await waitFor('tests running', () => started(marks, 'interrupted') >= 2, 120_000);
  child.kill('SIGINT');
  assert.equal(await exited, 130, stderr);
  assert.match(stderr, /cancelling run interrupted \(Ctrl-C again to detach\)/);
  assert.equal(readReport(reportDir).status, 'cancelled');
  const follow = await runCli(['follow', 'interrupted', '--broker', vhost.url]);
  assert.equal(follow.code, 130, `${follow.stdout}\n${follow.stderr}`);
  assert.match(follow.stdout, /run interrupted had ended .*: cancelled: 8 tests, 0 passed, 0 failed, 0 flaky, 8 not run/);
  await stopAll();
});

test('--fail-fast stops every worker of the run at the first failure; the rest is not run', async () => {
  controlPlane();
  supervisor('ff', 2);
  await idleSlots(broker, 2);
  const marks = tmpDir();
  // test 1 fails at once; the others would run for minutes: the stop must kill them
  // (the first spec holds test 1: the queue is first in, first out within a run)
  const run = runSuite('fail-fast', 20, marks, { body: '[ {id} = 1 ] && exit 1; exec sleep 300', args: ['--fail-fast', '--test-timeout', '60'] });
  const res = await run.res;
  assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
  const report = readReport(run.reportDir);
  assert.equal(report.status, 'failed');
  assert.equal(report.stopped, 'stopped after 1 failed test (--fail-fast)');
  assert.equal(report.totals.failed, 1);
  assert.equal(report.totals.notRun, 19);
  assert.match(res.stdout, /1 failed, 0 flaky, 0 pending, 19 not run/);
  await waitFor('its waiting specs dropped', async () => (await workQueued()) === 0, 30_000);
  await stopAll();
});

test('labels route a run to the supervisors that have them; labels nobody has fail the run at once', async () => {
  controlPlane();
  supervisor('plain', 2);
  supervisor('rubyist', 1, ['--labels', 'ruby,os=linux']);
  await idleSlots(broker, 3);
  const marks = tmpDir();
  const routed = runSuite('needs-ruby', 6, marks, { args: ['--labels', 'ruby'] });
  const res = await routed.res;
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  const report = readReport(routed.reportDir);
  assert.deepEqual([...new Set(report.tests.map((t) => t.worker))], ['rubyist/0'], 'every test ran on the labelled supervisor');
  const nobody = runSuite('needs-gpu', 2, marks, { args: ['--labels', 'gpu'] });
  const out = await nobody.res;
  assert.equal(out.code, 2, `${out.stdout}\n${out.stderr}`);
  assert.match(readReport(nobody.reportDir).error ?? '', /^no live supervisor has the labels gpu \(live: .*rubyist \[ruby,os=linux\]/);
  await stopAll();
});

test('a failing setup takes its slot out of the run, the others go on; teardown runs when the run ends', async () => {
  controlPlane();
  supervisor('setup', 2);
  await idleSlots(broker, 2);
  const marks = tmpDir();
  // the tests wait for worker 1 to have tried its setup: both slots take part
  const run = runSuite('with-setup', 6, marks, {
    body: 'while [ ! -e "$MARKS/tried-1" ]; do sleep 0.05; done',
    args: [
      '--setup-command', `if [ "$WARREN_WORKER_INDEX" = 1 ]; then touch "$MARKS/tried-1"; echo "no database for worker 1" >&2; exit 3; fi; touch "$MARKS/setup-$WARREN_WORKER_INDEX"`,
      '--teardown-command', 'touch "$MARKS/teardown-$WARREN_WORKER_INDEX"',
    ],
  });
  const res = await run.res;
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  const report = readReport(run.reportDir);
  assert.equal(report.totals.passed, 6);
  assert.deepEqual([...new Set(report.tests.map((t) => t.worker))], ['setup/0']);
  assert.equal(report.setupFailures?.length, 1);
  assert.equal(report.setupFailures![0]!.worker, 'setup/1');
  assert.match(report.setupFailures![0]!.message, /setup command .* exited with code 3: no database for worker 1/);
  assert.match(res.stdout, /setup failed on setup\/1: /);
  await waitFor('the teardown of the slot that was set up', () => fs.existsSync(path.join(marks, 'teardown-0')), 30_000);
  assert.ok(!fs.existsSync(path.join(marks, 'teardown-1')), 'no teardown where the setup failed');

  const none = runSuite('setup-everywhere', 4, marks, { args: ['--setup-command', 'echo "cannot" >&2; exit 1'] });
  const out = await none.res;
  assert.equal(out.code, 2, `${out.stdout}\n${out.stderr}`);
  assert.match(readReport(none.reportDir).error ?? '', /^no worker is left to run it \(2 that could left the run\): .*setup command /);
  await stopAll();
});

test('two warren run --local at once on one broker: each runs only its own tests, and leaves nothing behind', async () => {
  const marks = tmpDir();
  const local = (name: string, n: number) => {
    const reportDir = tmpDir();
    const res = runCli([
      'run', '--local', '--workers', '1', '--broker', vhost.url, '--run-id', name, '--adapter', 'command', '--cwd', tmpDir(), '--report-dir', reportDir,
      '--discover-command', `seq 1 ${n}`, '--run-command', `touch "$MARKS/${name}-{id}"`, '--env', `MARKS=${marks}`,
    ], { timeoutMs: 180_000 });
    return { res, reportDir };
  };
  const one = local('local-one', 5);
  const two = local('local-two', 7);
  for (const [r, n] of [[one, 5], [two, 7]] as const) {
    const out = await r.res;
    assert.equal(out.code, 0, `${out.stdout}\n${out.stderr}`);
    assert.equal(readReport(r.reportDir).totals.passed, n);
  }
  assert.equal(started(marks, 'local-one'), 5);
  assert.equal(started(marks, 'local-two'), 7);
  await waitFor('the private queues removed', async () => (await vhost.queues()).every((q) => !q.startsWith('warren.local-')), 30_000);
});

test('warren status shows the runs in progress and the supervisors; warren runs the runs that ended', async () => {
  controlPlane();
  supervisor('watched', 1);
  await idleSlots(broker, 1);
  const marks = tmpDir();
  const run = runSuite('watched-run', 3, marks, { body: 'while [ ! -e "$MARKS/go" ]; do sleep 0.05; done' });
  await waitFor('a test running', () => started(marks, 'watched-run') >= 1, 120_000);
  const status = await runCli(['status', '--broker', vhost.url]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /^runs in progress: 1$/m);
  assert.match(status.stdout, /^watched-run +\S+@\S+ +0\/3 +0 +1 +[12] /m);
  assert.match(status.stdout, /^supervisors: 1 \(1 worker slots, 1 busy\)$/m);
  fs.writeFileSync(path.join(marks, 'go'), '');
  assert.equal((await run.res).code, 0);
  const runs = await runCli(['runs', '--broker', vhost.url]);
  assert.equal(runs.code, 0, runs.stderr);
  assert.match(runs.stdout, /watched-run +passed +3 +3 +0 +0 +0 /);
  await stopAll();
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
