/**
 * Spare slot processes (slot-process.ts): forked before their supervisor exists, as
 * `warren run --local` does first thing, then adopted by it. An adopted spare is the slot,
 * with the environment and configuration it is handed (not the ones it was forked with); a
 * spare beyond the slots, or one whose parent goes away, leaves.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Broker } from '../../shared/broker.js';
import { createLogger } from '../../shared/log.js';
import { RunRequest, type RunReport } from '../../shared/messages.js';
import { EXCHANGES, ROUTING, reportKey } from '../../shared/topology.js';
import { Aggregator } from '../../services/aggregator/aggregator.js';
import { Dispatcher } from '../../services/dispatcher/dispatcher.js';
import { Supervisor } from '../../services/worker-supervisor/supervisor.js';
import { forkSpares, takeSpares } from '../../services/worker-supervisor/slot-process.js';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';
import { idleSlots } from '../helpers/slots.js';
import { tmpDir } from '../helpers/cli.js';

const log = createLogger('test', 'error');
let vhost: TestVhost;
before(async () => {
  vhost = await createVhost('warren-spares');
});
after(async () => {
  await vhost.delete();
});

const exited = (c: ChildProcess) => new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r())));

test('spares forked for `run --local --workers 3` are adopted by the first slots; the one left over is stopped', async () => {
  forkSpares(['node', 'warren', 'run', '--local', '--workers', '3']);
  const spares = takeSpares();
  assert.equal(spares.length, 3);
  assert.deepEqual(takeSpares(), [], 'each spare is handed out once');
  // set after the forks: only an adoption can give it to the slots
  process.env.SPARE_TEST_MARK = 'adopted';
  const marks = tmpDir();
  const dispatcher = new Dispatcher({ brokerUrl: vhost.url, log });
  const aggregator = new Aggregator({ brokerUrl: vhost.url, reportDir: tmpDir(), log });
  const supervisor = new Supervisor({ brokerUrl: vhost.url, workers: 2, driver: 'local', passEnv: ['*'], log, graceMs: 1000, spares });
  const broker = new Broker({ url: vhost.url, name: 'test spares', log });
  try {
    await Promise.all([dispatcher.start(), aggregator.start(), supervisor.start(), broker.start()]);
    await exited(spares[2]!);
    assert.equal(spares[2]!.signalCode, 'SIGTERM', 'the spare beyond the two slots is stopped');
    await idleSlots(broker, 2);
    let done!: (r: RunReport) => void;
    const got = new Promise<RunReport>((r) => (done = r));
    await broker.watch(EXCHANGES.reports, reportKey('spares-1', 'report'), 'test.spares.report', async (d) => {
      d.ack();
      done(JSON.parse(d.body.toString()) as RunReport);
    });
    await broker.publish(EXCHANGES.runs, ROUTING.runRequest, RunRequest.parse({
      type: 'run.request', runId: 'spares-1', adapter: 'command', cwd: tmpDir(),
      // $PPID: the slot process that started the test's shell
      command: { discover: 'seq 1 6', run: `echo "$SPARE_TEST_MARK $WARREN_WORKER_INDEX $PPID" > ${marks}/{id}` },
    }));
    const report = await got;
    assert.equal(report.totals.passed, 6, JSON.stringify(report.totals));
    const seen = fs.readdirSync(marks).map((f) => fs.readFileSync(path.join(marks, f), 'utf8').trim().split(' '));
    assert.equal(seen.length, 6);
    const slotPids = new Map([[String(spares[0]!.pid), '0'], [String(spares[1]!.pid), '1']]);
    for (const [mark, index, ppid] of seen) {
      assert.equal(mark, 'adopted', 'the test saw the environment handed to its slot');
      assert.equal(slotPids.get(ppid!), index, `the test ran in spare ${ppid}, adopted as slot ${index}`);
    }
  } finally {
    delete process.env.SPARE_TEST_MARK;
    await supervisor.stop();
    await Promise.all([dispatcher.stop(), aggregator.stop(), broker.close()]);
  }
});

test('a spare nobody adopts leaves when the command that forked it does', async () => {
  // a command that forks its spares and exits at once (an option error, say)
  const script = path.join(tmpDir(), 'forks-and-exits.mjs');
  const module = new URL('../../services/worker-supervisor/slot-process.js', import.meta.url).pathname;
  fs.writeFileSync(script, `import { forkSpares, takeSpares } from ${JSON.stringify(module)};
forkSpares(['node', 'warren', 'run', '--local', '--workers', '2']);
process.send(takeSpares().map((c) => c.pid), () => process.disconnect());
`);
  const parent = fork(script, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const pids = await new Promise<number[]>((r) => parent.once('message', (m) => r(m as number[])));
  await exited(parent);
  assert.equal(pids.length, 2);
  // the spares are not our children: their end is seen in /proc (each a zombie or gone at
  // once, as init reaps them), within a bound
  const alive = (pid: number) => {
    try {
      return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    } catch {
      return false;
    }
  };
  const deadline = Date.now() + 30_000;
  while (pids.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(pids.filter(alive), [], 'no spare outlives the command');
});
