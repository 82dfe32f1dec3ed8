/**
 * `npm run bench`: Warren's own speed, on the real RabbitMQ (a fresh vhost), in one run.
 *
 * (a) Pipeline throughput: N specs through dispatcher → 8 slots (no-op driver: nothing is
 *     started, every test passes) → aggregator → report, in specs/s; beside raw amqplib on
 *     the same queue type (quorum, persistent, prefetch 1, 8 consumers): consume+ack, and
 *     consume + publish-a-result-with-confirm + ack (the shape of a Warren slot).
 * (b) Makespan of a synthetic suite of sleeping tests with skewed durations (300 tests,
 *     16 slots, real processes), divided by its lower bound max(total/slots, longest), one
 *     test per spec and in batches.
 * (c) The fleet: 10 supervisor processes x 8 no-op slots, throughput and resident memory.
 * (d) Generated suites of rspec, mocha, jest and pytest (suites.ts: 400 tests in 40 files,
 *     skewed, a ~300 ms helper): `warren run --local --workers 2` (the real CLI, a fresh
 *     cache, then again with its discovery cache and history) beside the framework's own
 *     2-worker mode on the same suite; BENCH_REPEAT times (default 3), the medians.
 * (e) Fair sharing: a 20-test run alone, then started while a 2,000-test run is in progress
 *     on the same 4 slots (real processes): its time beside its time alone, and the time the
 *     big run still had to go (what first come, first served would have made it wait).
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import amqp from 'amqplib';
import { Broker } from '../../shared/broker.js';
import { createLogger } from '../../shared/log.js';
import { AcceptedRun, RunRequest, SCHEMA_VERSION, type Discovered, type RunAccepted, type RunReport, type TestRef } from '../../shared/messages.js';
import { EXCHANGES, ROUTING, TOPOLOGY, reportKey, specQueue } from '../../shared/topology.js';
import { Aggregator } from '../../services/aggregator/aggregator.js';
import { Dispatcher } from '../../services/dispatcher/dispatcher.js';
import { Supervisor } from '../../services/worker-supervisor/supervisor.js';
import { createVhost } from '../helpers/rabbit.js';
import { idleSlots } from '../helpers/slots.js';
import { BIN, tmpDir } from '../helpers/cli.js';
import { FRAMEWORKS, generateSuite, nativeParallel, parseCounts, type Command, type Framework } from './suites.js';

const log = createLogger('bench', 'error');
process.env.WARREN_LOG_LEVEL = 'error';

async function cluster(url: string, workers: number, driver: 'local' | 'noop', historyFile?: string) {
  const dispatcher = new Dispatcher({ brokerUrl: url, log, historyFile });
  const aggregator = new Aggregator({ brokerUrl: url, reportDir: tmpDir(), log });
  const supervisor = new Supervisor({ brokerUrl: url, workers, driver, log, graceMs: 1000 });
  const broker = new Broker({ url, name: 'bench', log });
  await Promise.all([dispatcher.start(), aggregator.start(), supervisor.start(), broker.start()]);
  // slots connect asynchronously: wait until all are idle (their heartbeats), so batch
  // sizing sees them
  await idleSlots(broker, workers);
  return {
    broker,
    async report(runId: string, start: () => Promise<void>): Promise<{ report: RunReport; ms: number }> {
      let done!: (r: RunReport) => void;
      const got = new Promise<RunReport>((r) => (done = r));
      await broker.watch(EXCHANGES.reports, reportKey(runId, 'report'), `bench.${runId}`, async (d) => {
        d.ack();
        done(JSON.parse(d.body.toString()));
      });
      const t0 = performance.now();
      await start();
      const report = await got;
      return { report, ms: performance.now() - t0 };
    },
    async stop() {
      await supervisor.stop();
      await Promise.all([dispatcher.stop(), aggregator.stop(), broker.close()]);
    },
  };
}

let pipelineRuns = 0;
/** (a) the whole pipeline, from a discovered suite to the final report. */
async function pipeline(url: string, specs: number) {
  const c = await cluster(url, Number(process.env.BENCH_SLOTS ?? 8), 'noop');
  try {
    const run = AcceptedRun.parse({
      type: 'run.request', runId: `bench-pipeline-${++pipelineRuns}`, id: `bench-pipeline-${pipelineRuns}`, adapter: 'command', cwd: '/tmp',
      command: { discover: 'true', run: 'true' }, acceptedAt: Date.now(), deadline: Date.now() + 3_600_000,
    });
    const tests: TestRef[] = Array.from({ length: specs }, (_, i) => ({ id: `t${i}`, file: '', name: `t${i}` }));
    const { value: { report, ms }, ...cpu } = await cpuOf(() => c.report(run.runId, async () => {
      const accepted: RunAccepted = { type: 'run.accepted', v: SCHEMA_VERSION, id: 'a', runId: run.runId, run };
      await c.broker.publish(EXCHANGES.events, ROUTING.runAccepted, accepted);
      const discovered: Discovered = { type: 'run.discovered', v: SCHEMA_VERSION, id: 'd', runId: run.runId, run, tests, worker: 'bench' };
      await c.broker.publish(EXCHANGES.events, ROUTING.discovered, discovered);
    }));
    if (report.totals.passed !== specs) throw new Error(`pipeline lost tests: ${JSON.stringify(report.totals)}`);
    return { specsPerSec: specs / (ms / 1000), ms, cpu: perSpec(cpu, specs) };
  } finally {
    await c.stop();
  }
}

/** CPU seconds (user + system) a process has used, from /proc; 0 once it is gone. */
function cpuSec(pid: number): number {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}
const CLOCK_TICKS = 100;
/** The broker's Erlang VM on this machine (the bench's RabbitMQ is local), if visible. */
function beamPid(): number | undefined {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (fs.readFileSync(`/proc/${d}/comm`, 'utf8').trim() === 'beam.smp') return Number(d);
    } catch {
      // gone
    }
  }
  return undefined;
}
/** CPU used while `fn` runs: this process, its children (slots), the broker. */
async function cpuOf<T>(fn: () => Promise<T>, children: () => number[] = () => childPids(process.pid)): Promise<{ value: T; self: number; kids: number; broker: number }> {
  const beam = beamPid();
  const s0 = cpuSec(process.pid);
  const b0 = beam ? cpuSec(beam) : 0;
  const k0 = new Map(children().map((p) => [p, cpuSec(p)]));
  const value = await fn();
  const kids = children().reduce((sum, p) => sum + cpuSec(p) - (k0.get(p) ?? 0), 0);
  return { value, self: cpuSec(process.pid) - s0, kids, broker: beam ? cpuSec(beam) - b0 : 0 };
}

/** CPU milliseconds per message, by process. */
function perSpec(cpu: { self: number; kids: number; broker: number }, n: number) {
  const ms = (s: number) => ((s * 1000) / n).toFixed(2);
  return `CPU per message: ${ms(cpu.self)} ms here, ${ms(cpu.kids)} ms in slot processes, ${ms(cpu.broker)} ms in the broker`;
}

/** The resident set of a process (and of its children, for a supervisor's slots), in MiB. */
function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}
function childPids(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * (c) the fleet: `supervisors` real `warren supervisor` processes of `slots` no-op slots each,
 * on one machine, the pipeline through all of them; their resident memory.
 */
async function fleet(url: string, supervisors: number, slots: number, specs: number) {
  const procs: ChildProcess[] = [];
  for (let i = 0; i < supervisors; i++) {
    procs.push(spawn(process.execPath, [BIN, 'supervisor', '--workers', String(slots), '--driver', 'noop', '--id', `fleet-${i}`, '--broker', url], {
      env: { ...process.env, WARREN_LOG_LEVEL: 'error', XDG_CACHE_HOME: tmpDir() }, stdio: ['ignore', 'ignore', 'inherit'],
    }));
  }
  const dispatcher = new Dispatcher({ brokerUrl: url, log });
  const aggregator = new Aggregator({ brokerUrl: url, reportDir: tmpDir(), log });
  const broker = new Broker({ url, name: 'bench fleet', log });
  await Promise.all([dispatcher.start(), aggregator.start(), broker.start()]);
  try {
    // every slot is connected before the run starts (the event: their heartbeats)
    await idleSlots(broker, supervisors * slots);
    const run = AcceptedRun.parse({
      type: 'run.request', runId: 'bench-fleet', id: 'bench-fleet', adapter: 'command', cwd: '/tmp',
      command: { discover: 'true', run: 'true' }, acceptedAt: Date.now(), deadline: Date.now() + 3_600_000, maxBatch: 1,
    });
    const tests: TestRef[] = Array.from({ length: specs }, (_, i) => ({ id: `t${i}`, file: '', name: `t${i}` }));
    let done!: (r: RunReport) => void;
    const got = new Promise<RunReport>((r) => (done = r));
    await broker.watch(EXCHANGES.reports, reportKey(run.runId, 'report'), 'bench.fleet', async (d) => {
      d.ack();
      done(JSON.parse(d.body.toString()));
    });
    const t0 = performance.now();
    await broker.publish(EXCHANGES.events, ROUTING.runAccepted, { type: 'run.accepted', v: SCHEMA_VERSION, id: 'a', runId: run.runId, run } satisfies RunAccepted);
    await broker.publish(EXCHANGES.events, ROUTING.discovered, { type: 'run.discovered', v: SCHEMA_VERSION, id: 'd', runId: run.runId, run, tests, worker: 'bench' } satisfies Discovered);
    const report = await got;
    const ms = performance.now() - t0;
    if (report.totals.passed !== specs) throw new Error(`fleet lost tests: ${JSON.stringify(report.totals)}`);
    const sup = procs.map((p) => rssMiB(p.pid!));
    const slot = procs.flatMap((p) => childPids(p.pid!).map(rssMiB));
    return { specsPerSec: specs / (ms / 1000), supervisorMiB: Math.max(...sup), slotMiB: slot.reduce((a, b) => a + b, 0) / Math.max(1, slot.length), slots: slot.length };
  } finally {
    for (const p of procs) p.kill('SIGTERM');
    await Promise.all(procs.map((p) => new Promise((r) => (p.exitCode !== null ? r(null) : p.once('exit', r)))));
    await Promise.all([dispatcher.stop(), aggregator.stop(), broker.close()]);
  }
}

/** Runs a command to its end; wall seconds and its output. */
function timed(c: Command, cwd: string, env: Record<string, string>): Promise<{ seconds: number; code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(c.cmd, c.args, { cwd, env: { ...process.env, ...env, ...c.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b));
    child.stderr.on('data', (b: Buffer) => (out += b));
    child.on('error', reject);
    child.on('close', (code) => resolve({ seconds: (performance.now() - t0) / 1000, code, out }));
  });
}

/**
 * (d) one framework: its own 2-worker mode, Warren cold, Warren with history; `repeat`
 * times, alternating (each time a fresh cache: the first run is cold), the medians.
 */
async function versusNative(url: string, framework: Framework, repeat: number) {
  const dir = tmpDir(`warren-bench-${framework}-`);
  const suite = generateSuite(framework, dir);
  const warren = (cache: string): Command => ({
    cmd: process.execPath,
    args: [BIN, 'run', '--local', '--workers', '2', '--adapter', suite.adapter, '--cwd', dir, '--broker', url, '--no-timings',
      '--report-dir', tmpDir(), ...Object.entries(suite.env).flatMap(([k, v]) => ['--env', `${k}=${v}`])],
    env: { XDG_CACHE_HOME: cache, WARREN_LOG_LEVEL: 'error' },
  });
  const count = (out: string) => Number(/run \S+ \w+: (\d+) tests, (\d+) passed/.exec(out)?.[2] ?? NaN);
  const runs: Array<{ native: number; nativeCount: number; first: number; firstCount: number; second: number; secondCount: number }> = [];
  for (let i = 0; i < repeat; i++) {
    const cache = tmpDir('warren-bench-cache-');
    const first = await timed(warren(cache), dir, {});
    const native = await timed(nativeParallel(framework, dir, 2), dir, suite.env);
    const second = await timed(warren(cache), dir, {});
    runs.push({
      native: native.seconds, nativeCount: parseCounts(framework, native.out)?.passed ?? NaN,
      first: first.seconds, firstCount: count(first.out), second: second.seconds, secondCount: count(second.out),
    });
  }
  const med = (k: 'native' | 'first' | 'second') => median(runs.map((r) => r[k]));
  const least = (k: 'nativeCount' | 'firstCount' | 'secondCount') => Math.min(...runs.map((r) => r[k]));
  return {
    ideal: suite.serialMs / 2000 + suite.helperMs / 1000, tests: suite.tests.length,
    native: med('native'), first: med('first'), second: med('second'),
    nativeCount: least('nativeCount'), firstCount: least('firstCount'), secondCount: least('secondCount'),
    all: (k: 'native' | 'first' | 'second') => runs.map((r) => r[k].toFixed(1)).join('/'),
  };
}

/**
 * `n` raw consumers of `jobs` in this process, a connection each, prefetch 1: each message
 * answered by a confirmed publish to `results` (when given) before its ack; `onAck` after it.
 */
async function rawConsumers(url: string, n: number, jobs: string, results: string | undefined, body: Buffer, onAck: () => void): Promise<amqp.ChannelModel[]> {
  const conns: amqp.ChannelModel[] = [];
  for (let c = 0; c < n; c++) {
    const cc = await amqp.connect(url);
    conns.push(cc);
    const ch = await cc.createChannel();
    const out = await cc.createConfirmChannel();
    await ch.prefetch(1);
    await ch.consume(jobs, (m) => {
      if (!m) return;
      const ack = () => {
        ch.ack(m);
        onAck();
      };
      if (!results) return ack();
      out.sendToQueue(results, body, { persistent: true }, (err) => (err ? undefined : ack()));
    });
  }
  return conns;
}

/** (a') raw amqplib on a queue declared like warren.specs. */
async function raw(url: string, messages: number, consumers: number, withResult: boolean) {
  const conn = await amqp.connect(url);
  const q = `bench.raw.${withResult}`;
  const specsArgs = TOPOLOGY.queues.find((x) => x.name === specQueue(0))!.arguments;
  const setup = await conn.createChannel();
  await setup.assertQueue(q, { durable: true, arguments: { 'x-queue-type': 'quorum', 'x-delivery-limit': specsArgs['x-delivery-limit'] } });
  await setup.assertQueue(`${q}.results`, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
  const body = Buffer.from(JSON.stringify({ type: 'spec', tests: [{ id: 'x', file: '', name: 'x' }] }));
  const pub = await conn.createConfirmChannel();
  for (let i = 0; i < messages; i++) pub.sendToQueue(q, body, { persistent: true });
  await pub.waitForConfirms();
  const beam = beamPid();
  const s0 = cpuSec(process.pid);
  const b0 = beam ? cpuSec(beam) : 0;
  let received = 0;
  let finish!: () => void;
  const all = new Promise<void>((r) => (finish = r));
  const t0 = performance.now();
  const conns = await rawConsumers(url, consumers, q, withResult ? `${q}.results` : undefined, body, () => {
    if (++received === messages) finish();
  });
  await all;
  const ms = performance.now() - t0;
  raw.cpu = perSpec({ self: cpuSec(process.pid) - s0, kids: 0, broker: beam ? cpuSec(beam) - b0 : 0 }, messages);
  for (const cc of conns) await cc.close();
  await setup.deleteQueue(q);
  await setup.deleteQueue(`${q}.results`);
  await conn.close();
  return messages / (ms / 1000);
}
raw.cpu = '';

/**
 * (a'') raw amqplib over the same hops as Warren's pipeline: N jobs published with confirms
 * (the dispatcher), consumed by `consumers` (prefetch 1), each answered by a result published
 * with a confirm before the ack (the slots), the results consumed and acked by one consumer
 * (the aggregator, prefetch 50), timed from the first job published to the last result.
 * `processes`: each consumer in a process of its own (raw-consumer.ts), as Warren's slots
 * are (a test that kills its worker kills only that process): what one process per slot
 * costs by itself on this machine, without any of Warren's work.
 */
async function rawHops(url: string, messages: number, consumers: number, processes = false) {
  const conn = await amqp.connect(url, { noDelay: processes });
  const q = `bench.hops${processes ? 'p' : ''}.jobs`;
  const r = `bench.hops${processes ? 'p' : ''}.results`;
  const setup = await conn.createChannel();
  const specsArgs = TOPOLOGY.queues.find((x) => x.name === specQueue(0))!.arguments;
  await setup.assertQueue(q, { durable: true, arguments: { 'x-queue-type': 'quorum', 'x-delivery-limit': specsArgs['x-delivery-limit'] } });
  await setup.assertQueue(r, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
  const body = Buffer.from(JSON.stringify({ type: 'spec', tests: [{ id: 'x', file: '', name: 'x' }] }));
  const conns: amqp.ChannelModel[] = [conn];
  const kids: ChildProcess[] = [];
  if (processes) {
    const script = path.join(path.dirname(new URL(import.meta.url).pathname), 'raw-consumer.js');
    kids.push(...Array.from({ length: consumers }, () => fork(script, [url, q, r], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })));
    await Promise.all(kids.map((k) => new Promise<void>((res, rej) => {
      k.once('message', () => res());
      k.once('exit', (code) => rej(new Error(`raw consumer exited with ${code}`)));
    })));
  } else {
    conns.push(...(await rawConsumers(url, consumers, q, r, body, () => undefined)));
  }
  const agg = await conn.createChannel();
  await agg.prefetch(50);
  let received = 0;
  let finish!: () => void;
  const all = new Promise<void>((res) => (finish = res));
  await agg.consume(r, (m) => {
    if (!m) return;
    agg.ack(m);
    if (++received === messages) finish();
  });
  const beam = beamPid();
  const s0 = cpuSec(process.pid);
  const b0 = beam ? cpuSec(beam) : 0;
  const k0 = kids.map((k) => cpuSec(k.pid!));
  const t0 = performance.now();
  const pub = await conn.createConfirmChannel();
  for (let i = 0; i < messages; i++) pub.sendToQueue(q, body, { persistent: true });
  await pub.waitForConfirms();
  await all;
  const ms = performance.now() - t0;
  const kidCpu = kids.reduce((sum, k, i) => sum + cpuSec(k.pid!) - k0[i]!, 0);
  const cpu = perSpec({ self: cpuSec(process.pid) - s0, kids: kidCpu, broker: beam ? cpuSec(beam) - b0 : 0 }, messages);
  if (processes) rawHops.procsCpu = cpu;
  else rawHops.cpu = cpu;
  for (const k of kids) {
    k.removeAllListeners('exit');
    k.disconnect();
  }
  await Promise.all(kids.map((k) => new Promise((res) => (k.exitCode !== null ? res(null) : k.once('exit', res)))));
  await setup.deleteQueue(q);
  await setup.deleteQueue(r);
  for (const cc of conns) await cc.close();
  return messages / (ms / 1000);
}
rawHops.cpu = '';
rawHops.procsCpu = '';

/** Deterministic skewed durations: mostly short tests, a long tail. */
function durations(n: number): number[] {
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  return Array.from({ length: n }, () => {
    const u = rand();
    return u < 0.85 ? 0.02 + rand() * 0.15 : u < 0.97 ? 0.3 + rand() * 0.7 : 1.5 + rand() * 1.5;
  }).map((d) => Math.round(d * 1000) / 1000);
}

/**
 * The makespan of greedy list scheduling, tests taken one at a time in `order` by whichever
 * of `slots` is free first, at no cost of its own: what an ideal scheduler makes of that
 * order. In discovery order it is the best one that does not know the durations can hope
 * for (a first run); longest first, the best one that knows them.
 */
function listSchedule(order: readonly number[], slots: number): number {
  const free = Array<number>(slots).fill(0);
  for (const d of order) {
    let i = 0;
    for (let j = 1; j < slots; j++) if (free[j]! < free[i]!) i = j;
    free[i]! += d;
  }
  return Math.max(...free);
}

const MAKESPAN_SUITE = tmpDir('warren-bench-sleeping-');

/** (b) makespan of a sleeping suite, real processes. */
async function makespan(url: string, batched: boolean, history: boolean) {
  const slots = 16;
  const ds = durations(300);
  const total = ds.reduce((a, b) => a + b, 0);
  const bound = Math.max(total / slots, Math.max(...ds));
  // a history for each kind of plan: its first run (no history) is a cold start, its second
  // knows the durations (from the request) and what a batch costs (from the first run)
  const c = await cluster(url, slots, 'local', path.join(MAKESPAN_SUITE, `history-${batched ? 'batched' : 'single'}.sqlite`));
  try {
    const runId = `bench-makespan-${batched ? 'batched' : 'single'}-${history ? 'history' : 'cold'}`;
    const ids = ds.map((d, i) => `t${String(i).padStart(3, '0')}-${d}`).join('\n');
    const request = RunRequest.parse({
      type: 'run.request', runId, adapter: 'command', cwd: MAKESPAN_SUITE,
      command: {
        discover: `printf '%s\\n' ${ids.split('\n').join(' ')}`,
        run: batched ? 'for x in {ids}; do sleep ${x#*-}; done' : 'x={id}; sleep ${x#*-}',
      },
      // a second run of the suite knows each test's duration from the first one's report
      durations: history ? Object.fromEntries(ds.map((d, i) => [`t${String(i).padStart(3, '0')}-${d}`, d * 1000])) : undefined,
    });
    const { report, ms } = await c.report(runId, () => c.broker.publish(EXCHANGES.runs, ROUTING.runRequest, request));
    if (report.totals.passed !== 300) throw new Error(`makespan run failed: ${JSON.stringify(report.totals)}`);
    // what the tests really cost here (each is a process: 16 of them at once on this machine
    // pay their starts), from the report: the bound no scheduler can beat on this machine
    const measured = report.tests.map((t) => t.durationMs / 1000);
    const measuredBound = Math.max(measured.reduce((a, b) => a + b, 0) / slots, Math.max(...measured));
    return { makespan: ms / 1000, bound, total, ratio: ms / 1000 / bound, measuredBound, measuredRatio: ms / 1000 / measuredBound };
  } finally {
    await c.stop();
  }
}

/** (e) a small run alone, then behind a big one on the same slots. */
async function fairSharing(url: string) {
  const slots = 4;
  const suite = tmpDir('warren-bench-fair-');
  const c = await cluster(url, slots, 'local');
  const request = (runId: string, n: number) => RunRequest.parse({
    type: 'run.request', runId, adapter: 'command', cwd: suite, maxBatch: 5,
    command: { discover: `seq 1 ${n}`, run: 'for x in {ids}; do sleep 0.02; done' },
  });
  try {
    const alone = await c.report('fair-small-alone', () => c.broker.publish(EXCHANGES.runs, ROUTING.runRequest, request('fair-small-alone', 20)));
    // the big run, under way (its first 100 results) before the small one starts
    let underWay!: () => void;
    const started = new Promise<void>((r) => (underWay = r));
    await c.broker.watch(EXCHANGES.reports, reportKey('fair-big', 'progress'), 'bench.fair-big.progress', async (d) => {
      d.ack();
      if (JSON.parse(d.body.toString()).done >= 100) underWay();
    });
    const bigStart = performance.now();
    const big = c.report('fair-big', () => c.broker.publish(EXCHANGES.runs, ROUTING.runRequest, request('fair-big', 2000)));
    await started;
    const t0 = performance.now();
    const shared = await c.report('fair-small-shared', () => c.broker.publish(EXCHANGES.runs, ROUTING.runRequest, request('fair-small-shared', 20)));
    const bigDone = await big;
    const bigLeftMs = bigStart + bigDone.ms - t0;
    for (const r of [alone, shared, bigDone]) if (r.report.totals.failed + (r.report.totals.notRun ?? 0) > 0 || r.report.status !== 'passed') throw new Error(`fair-sharing run failed: ${JSON.stringify(r.report.totals)}`);
    return { alone: alone.ms / 1000, shared: shared.ms / 1000, big: bigDone.ms / 1000, bigLeft: Math.max(0, bigLeftMs) / 1000 };
  } finally {
    await c.stop();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main() {
  const vhost = await createVhost('warren-bench');
  try {
    const N = Number(process.env.BENCH_SPECS ?? 5000);
    console.log(`machine: ${os.cpus().length} cores, node ${process.version}; RabbitMQ at localhost, vhost ${vhost.name}\n`);
    // BENCH_PARTS=a,b,c,d (default all): which parts to run
    const parts = (process.env.BENCH_PARTS ?? 'a,b,c,d,e').split(',');
    if (parts.includes('a')) {
      // this machine's speed wanders (2 cores shared with the broker): each side three
      // times, alternating, and the medians compared
      const rawAck = await raw(vhost.url, N, 8, false);
      const rawResults: number[] = [];
      const hopsRuns: number[] = [];
      const procRuns: number[] = [];
      const pipes: Array<Awaited<ReturnType<typeof pipeline>>> = [];
      let rawCpu = '';
      for (let i = 0; i < 3; i++) {
        rawResults.push(await raw(vhost.url, N, 8, true));
        rawCpu = raw.cpu;
        hopsRuns.push(await rawHops(vhost.url, N, 8));
        procRuns.push(await rawHops(vhost.url, N, 8, true));
        pipes.push(await pipeline(vhost.url, N));
      }
      const rawResult = median(rawResults);
      const hops = median(hopsRuns);
      const procs = median(procRuns);
      const p = pipes.sort((x, y) => x.specsPerSec - y.specsPerSec)[1]!;
      const all = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(' / ');
      console.log(`(a) throughput, ${N} specs, 8 consumers/slots, quorum queue, persistent, prefetch 1 (medians of 3, alternating)`);
      console.log(`    raw amqplib consume+ack                         ${rawAck.toFixed(0).padStart(6)} msgs/s`);
      console.log(`    raw amqplib consume+publish result(confirm)+ack ${rawResult.toFixed(0).padStart(6)} msgs/s  (${all(rawResults)})`);
      console.log(`    raw amqplib, Warren's three hops (job, result, aggregation), confirms, from the first publish ${hops.toFixed(0).padStart(6)} msgs/s  (${all(hopsRuns)})`);
      console.log(`    the same three hops, each consumer a process of its own (as slots are) ${procs.toFixed(0).padStart(6)} msgs/s  (${all(procRuns)})`);
      console.log(`    Warren pipeline (no-op executor), to report     ${p.specsPerSec.toFixed(0).padStart(6)} specs/s  (${all(pipes.map((x) => x.specsPerSec))})`);
      console.log(`    Warren / raw-with-result                        ${(p.specsPerSec / rawResult).toFixed(2)}`);
      console.log(`    Warren / raw over the same three hops           ${(p.specsPerSec / hops).toFixed(2)}`);
      console.log(`    Warren / the same, a process per consumer       ${(p.specsPerSec / procs).toFixed(2)}`);
      console.log(`    raw with result: ${rawCpu}`);
      console.log(`    raw, three hops: ${rawHops.cpu}`);
      console.log(`    raw, processes:  ${rawHops.procsCpu}`);
      console.log(`    Warren:          ${p.cpu}`);
    }
    if (parts.includes('b')) {
      const first = await makespan(vhost.url, false, false);
      const ds = durations(300);
      console.log(`\n(b) makespan, 300 sleeping tests (skewed: ${first.total.toFixed(1)} s in all, the longest ${Math.max(...ds).toFixed(2)} s), 16 slots, real processes`);
      console.log(`    lower bound max(total/slots, longest) = ${first.bound.toFixed(2)} s`);
      console.log(`    an ideal scheduler at no cost, one test at a time: in discovery order (not knowing the durations) ratio ${(listSchedule(ds, 16) / first.bound).toFixed(2)}; longest first (knowing them) ${(listSchedule([...ds].sort((a, b) => b - a), 16) / first.bound).toFixed(2)}`);
      const line = (what: string, m: typeof first) => console.log(`    ${what.padEnd(44)} makespan ${m.makespan.toFixed(2).padStart(6)} s   ratio ${m.ratio.toFixed(2)}   (÷ the tests' measured cost ${m.measuredBound.toFixed(2)} s / slot: ${m.measuredRatio.toFixed(2)})`);
      line('one test per spec, no history', first);
      line('one test per spec, durations known', await makespan(vhost.url, false, true));
      line('batched, no history', await makespan(vhost.url, true, false));
      line('batched, durations known (2nd run)', await makespan(vhost.url, true, true));
    }
    if (parts.includes('c')) {
      const F = Number(process.env.BENCH_FLEET_SPECS ?? 3000);
      const rawFleet = await raw(vhost.url, F, 80, true);
      const f = await fleet(vhost.url, 10, 8, F);
      console.log(`\n(c) fleet: 10 supervisors x 8 no-op slots (real processes) on this machine, ${F} specs`);
      console.log(`    raw amqplib, 80 consumers, publish result(confirm)+ack ${rawFleet.toFixed(0).padStart(6)} msgs/s`);
      console.log(`    Warren pipeline through the fleet                      ${f.specsPerSec.toFixed(0).padStart(6)} specs/s   ratio ${(f.specsPerSec / rawFleet).toFixed(2)}`);
      console.log(`    resident memory: supervisor ${f.supervisorMiB.toFixed(0)} MiB (largest of 10), slot ${f.slotMiB.toFixed(0)} MiB (mean of ${f.slots})`);
    }
    if (parts.includes('d')) {
      const only = process.env.BENCH_FRAMEWORKS?.split(',') as Framework[] | undefined;
      const repeat = Number(process.env.BENCH_REPEAT ?? 3);
      console.log(`\n(d) generated suites (400 tests, 40 files, skewed, a ~300 ms helper), 2 workers: the framework's own mode vs \`warren run --local --workers 2\`, medians of ${repeat} (alternating; each time a fresh cache)`);
      console.log(`    ${'framework'.padEnd(9)} ${'ideal'.padStart(6)} ${'native'.padStart(7)} ${'Warren 1st'.padStart(10)} ${'ratio'.padStart(5)} ${'history'.padStart(8)} ${'ratio'.padStart(5)}   tests passed (native / 1st / history)`);
      for (const fw of only ?? FRAMEWORKS) {
        const r = await versusNative(vhost.url, fw, repeat);
        console.log(`    ${fw.padEnd(9)} ${r.ideal.toFixed(1).padStart(5)}s ${r.native.toFixed(1).padStart(6)}s ${r.first.toFixed(1).padStart(9)}s ${(r.first / r.native).toFixed(2).padStart(5)} ${r.second.toFixed(1).padStart(7)}s ${(r.second / r.native).toFixed(2).padStart(5)}   ${r.nativeCount} / ${r.firstCount} / ${r.secondCount} of ${r.tests}   (native ${r.all('native')}, 1st ${r.all('first')}, history ${r.all('second')})`);
      }
    }
    if (parts.includes('e')) {
      const f = await fairSharing(vhost.url);
      console.log('\n(e) fair sharing, 4 slots (real processes): a 20-test run alone, then started while a 2,000-test run is in progress');
      console.log(`    alone ${f.alone.toFixed(2)} s   behind the big run ${f.shared.toFixed(2)} s   ratio ${(f.shared / f.alone).toFixed(2)}   (the big run: ${f.big.toFixed(1)} s in all, ${f.bigLeft.toFixed(1)} s still to go when the small one started: first come, first served would have made it wait that long)`);
    }
  } finally {
    await vhost.delete();
  }
  process.exit(0);
}

void main();
