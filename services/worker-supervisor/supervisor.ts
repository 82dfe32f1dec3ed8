/**
 * The worker-supervisor: keeps N slot processes alive on this host and tells the cluster
 * what they are doing (heartbeats on `warren.status`). A slot that dies is data, not an
 * error: its unacked job is already back in the queue; we reap its test processes, log who
 * died running what, and start a fresh slot after a backoff.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Broker } from '../../shared/broker.js';
import { InfrastructureError } from '../../shared/errors.js';
import type { Logger } from '../../shared/log.js';
import type { Lifecycle } from '../../shared/lifecycle.js';
import {
  RunFinished, RunsState, SCHEMA_VERSION, WorkWake, parseMessage,
  type Heartbeat, type SpecResult, type SuiteConfig, type TestRef,
} from '../../shared/messages.js';
import { EXCHANGES, FINISHED_BINDING, ROUTING } from '../../shared/topology.js';
import { finishedResults, parseEvents } from './resolve.js';
import { RUNNING_FILE, type SlotActivity } from './slot.js';
import { DEFAULT_PASS_ENV, type SupervisorConfig } from './config.js';
import { assetsDir } from './adapters/adapter.js';
import { ImagePuller, dockerImageStore } from './drivers/images.js';
import { startSlotProcess } from './slot-process.js';

/** What a slot process is told at start (env WARREN_SLOT). */
export interface SlotConfig {
  brokerUrl: string;
  index: number;
  /** How many slots its supervisor has (they share the host's CPUs). */
  workers: number;
  workerId: string;
  supervisorId: string;
  dir: string;
  graceMs: number;
  driver: SupervisorConfig['driver'];
  docker: SupervisorConfig['docker'];
  /** Our plug-ins, where the driver's processes can read them. */
  assetsDir: string;
  /** Environment of every test process of this slot. */
  env: Record<string, string>;
  /** The slot's caches that outlive runs (one directory per suite below it). */
  cacheDir: string;
  /** Discovery results by suite content, shared by this host's slots. */
  discoveryDir: string;
  /** A warm runner above this resident size after a batch is retired. */
  runnerMaxRssBytes: number;
  /** The supervisor's labels (the runs the slot may take work of). */
  labels: Record<string, string>;
  /** What test processes see of the supervisor's environment (local driver). */
  passEnv: string[];
  /** Directories a run's cwd must be under; none: anywhere. */
  allowCwd: string[];
  allowImage: string[];
  /** The signing key (shared/signing.ts), as text. */
  signingKey?: string;
  requireRoles: boolean;
  /** A private Warren's namespace on a shared broker (shared/broker.ts). */
  namespace?: string;
}

/** Slot → supervisor over IPC, besides activity reports. */
export type SlotRequest =
  | { type: 'ensure-image'; id: number; image: string }
  /** The slot has read its running process's events up to here (while alive). */
  | { type: 'events-read'; offset: number }
  /** The slot discovers a run's tests: idle slots may start its warm runners meanwhile. */
  | { type: 'discovering'; runId: string; suite: SuiteConfig }
  /** The worker's environment broke under a job (given back to the queue); the slot exits. */
  | { type: 'broken'; reason: string; jobId: string };
export type SupervisorReply =
  | { type: 'image-ready'; id: number; error?: string }
  | { type: 'prewarm'; runId: string; suite: SuiteConfig }
  | { type: 'run-finished'; runId: string; deadline: number }
  | { type: 'runs-state'; state: RunsState }
  | { type: 'wake'; wake: WorkWake };

export interface SupervisorOptions {
  brokerUrl: string;
  /** Number of slots (parallel workers) on this host. */
  workers: number;
  /** Names this supervisor in results, logs and the management UI (default host-pid). */
  id?: string;
  /** Parent of the slots' own directories (default a new temp dir). */
  dir?: string;
  /** On SIGTERM, how long a running test may take to finish before it is killed and requeued. */
  graceMs?: number;
  /** Caches that outlive runs: the frameworks' own (per slot and suite) and discovery
   * (default $XDG_CACHE_HOME/warren or ~/.cache/warren). */
  cacheDir?: string;
  /** A warm runner above this resident size after a batch is retired (default 2 GiB). */
  runnerMaxRssBytes?: number;
  heartbeatMs?: number;
  /** Slot processes forked ahead (slot-process.ts): the first slots adopt them instead of forking. */
  spares?: ChildProcess[];
  /** Where tests run: `local` child processes (default), `docker` containers, or `noop`
   * (runs nothing; benchmarks). */
  driver?: SupervisorConfig['driver'];
  docker?: SupervisorConfig['docker'];
  labels?: Record<string, string>;
  /** What tests of the local driver see of this process's environment (confine.ts). */
  passEnv?: readonly string[];
  /** Directories a run's cwd must be under (confine.ts); none: anywhere. */
  allowCwd?: readonly string[];
  /** Images a run may name (`*` a wildcard); none: any. */
  allowImage?: readonly string[];
  /** With a key, slots run only suites signed with it, and open their secret env. */
  signingKey?: Buffer;
  /** Slots take jobs only from the roles allowed to send them (shared/roles.ts). */
  requireRoles?: boolean;
  /** This many different jobs breaking their worker environments here within 10 min drain
   * the host (default 3). */
  breakLimit?: number;
  /** A private Warren's namespace on a shared broker (shared/broker.ts). */
  namespace?: string;
  log: Logger;
}

interface SlotHandle {
  index: number;
  child?: ChildProcess;
  activity: SlotActivity | { state: 'starting' | 'restarting' | 'stopped' };
  startedAt: number;
  failures: number;
  restartTimer?: NodeJS.Timeout;
  /** Bytes of the running spec's events file that the slot saw while alive. */
  eventsRead: number;
}

/** Breaks of worker environments older than this are forgotten. */
const BREAK_WINDOW_MS = 10 * 60_000;

/** $XDG_CACHE_HOME/warren, else ~/.cache/warren. */
export function defaultCacheRoot(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'warren');
}

interface CacheLease {
  root: string;
  /** This supervisor's own part of the cache: `<root>/slots-<n>`. */
  dir: string;
  release(): void;
}

/** dockerode and the docker driver, loaded only for the docker driver (a local supervisor, and `warren run --local`, start faster). */
async function dockerDriver() {
  const [{ default: Docker }, { LABELS, removeContainers }] = await Promise.all([import('dockerode'), import('./drivers/docker.js')]);
  return { Docker, LABELS, removeContainers };
}

/**
 * Takes the first `<root>/slots-<n>` no live supervisor holds (a pid lock file), so two
 * supervisors on one host never share a slot's framework caches, and a restarted one (or
 * the next `warren run --local`) finds the caches its predecessor warmed.
 */
function leaseCache(root: string): CacheLease {
  // pid and a token: several supervisors may live in one process (tests, the benchmark)
  const mine = `${process.pid} ${Math.random().toString(36).slice(2)}`;
  for (let n = 0; ; n++) {
    const dir = path.join(root, `slots-${n}`);
    fs.mkdirSync(dir, { recursive: true });
    const lock = path.join(dir, 'lock');
    try {
      fs.writeFileSync(lock, mine, { flag: 'wx' });
    } catch {
      const holder = Number(fs.readFileSync(lock, 'utf8').split(' ')[0]);
      if (holder && alive(holder)) continue;
      fs.writeFileSync(lock, mine); // its holder is gone
    }
    return {
      root, dir,
      release: () => {
        try {
          if (fs.readFileSync(lock, 'utf8') === mine) fs.unlinkSync(lock);
        } catch {
          // gone already
        }
      },
    };
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}


export class Supervisor {
  state: Lifecycle = 'starting';
  readonly id: string;
  private readonly slots: SlotHandle[] = [];
  private readonly spares: ChildProcess[];
  private readonly broker: Broker;
  private readonly dir: string;
  private heartbeat?: NodeJS.Timeout;
  private stopping?: Promise<void>;
  private puller?: ImagePuller;
  private assets = assetsDir();
  private cache?: CacheLease;
  /** Recent breaks of this host's worker environments, one per job. */
  private breaks: Array<{ at: number; jobId: string; reason: string }> = [];
  /** Why this host takes no more jobs (its environments kept breaking). */
  drained?: string;
  /** The latest runs in progress (a slot started later is told at once). */
  private runs?: RunsState;

  constructor(private readonly opts: SupervisorOptions) {
    // With docker, a restarted supervisor must find its earlier containers: a stable name.
    this.id = opts.id ?? (opts.driver === 'docker' ? os.hostname() : `${os.hostname()}-${process.pid}`);
    this.dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'warren-supervisor-'));
    this.broker = new Broker({ url: opts.brokerUrl, name: `warren supervisor ${this.id}`, log: opts.log, namespace: opts.namespace });
    this.spares = [...(opts.spares ?? [])];
  }

  async start(): Promise<void> {
    if (this.opts.driver === 'docker') await this.startDocker();
    this.cache = leaseCache(this.opts.cacheDir ?? defaultCacheRoot());
    // the slots first: each is a process of its own that loads and connects (a few hundred
    // ms), while this one connects too; a runs-state that comes before a slot is up is told
    // to it as it starts (spawn)
    for (let i = 0; i < this.opts.workers; i++) {
      const handle: SlotHandle = { index: i, activity: { state: 'starting' }, startedAt: 0, failures: 0, eventsRead: 0 };
      this.slots.push(handle);
      this.spawn(handle);
    }
    // spares beyond the slots (a docker supervisor has as many; these are not needed)
    for (const spare of this.spares.splice(0)) spare.kill('SIGTERM');
    try {
      await this.startWatching();
    } catch (err) {
      this.state = 'stopped'; // no restarts of the slots killed here
      for (const h of this.slots) {
        clearTimeout(h.restartTimer);
        h.child?.kill('SIGTERM');
      }
      throw err;
    }
    this.heartbeat = setInterval(() => void this.beat(), this.opts.heartbeatMs ?? 2000);
    this.state = 'running';
    void this.beat(); // heard at once (a run's preflight and the dispatcher's label check count the live ones), not after a period
    this.opts.log.info({ supervisor: this.id, workers: this.opts.workers, allowCwd: this.opts.allowCwd, passEnv: this.opts.passEnv ?? DEFAULT_PASS_ENV }, 'supervisor running');
    const hostPaths = (this.opts.driver ?? 'local') === 'local' || this.opts.docker?.mountSuite;
    if (hostPaths && !this.opts.allowCwd?.length && !this.opts.namespace) {
      this.opts.log.warn('runs may use any directory of this host as their suite (--allow-cwd confines them)');
    }
  }

  /** What the slots take work from (the runs in progress, by shard), where work was just
   * published, and which runs finished (the slots drop their remaining specs and stop their
   * running tests): watched here, told to the slots. */
  private async startWatching(): Promise<void> {
    await this.broker.start();
    await this.broker.watch(EXCHANGES.reports, [FINISHED_BINDING, ROUTING.runsState, ROUTING.wake], `warren.supervisor.${this.id}.${process.pid}`, async (d) => {
      d.ack();
      if (d.routingKey === ROUTING.runsState) {
        const msg = parseMessage(RunsState, d.body);
        if (!msg.ok) return;
        this.runs = msg.value;
        for (const h of this.slots) tell(h.child, { type: 'runs-state', state: msg.value });
      } else if (d.routingKey === ROUTING.wake) {
        const msg = parseMessage(WorkWake, d.body);
        if (msg.ok) for (const h of this.slots) tell(h.child, { type: 'wake', wake: msg.value });
      } else {
        const msg = parseMessage(RunFinished, d.body);
        if (msg.ok) for (const h of this.slots) tell(h.child, { type: 'run-finished', runId: msg.value.runId, deadline: msg.value.deadline });
      }
    }, { kind: 'transient' });
  }

  /** What each slot is doing (tests wait for 'idle': connected and taking work). */
  get slotStates(): string[] {
    return this.slots.map((s) => s.activity.state);
  }

  /** Drains every slot (running tests finish, or go back to the queue after the grace). */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    this.state = 'draining';
    const grace = this.opts.graceMs ?? 30_000;
    await Promise.all(
      this.slots.map(async (s) => {
        clearTimeout(s.restartTimer);
        const child = s.child;
        if (!child || child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise<void>((r) => child.once('exit', () => r()));
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), grace + 5000);
        await exited;
        clearTimeout(timer);
      }),
    );
    clearInterval(this.heartbeat);
    // what the slots could not remove (a slot that died, containers of a drained host)
    if (this.opts.driver === 'docker') {
      const { Docker, LABELS, removeContainers } = await dockerDriver();
      await removeContainers(new Docker(), { [LABELS.supervisor]: this.id }, this.opts.log).catch(() => undefined);
    }
    this.cache?.release();
    await this.beat().catch(() => undefined);
    try {
      await this.broker.close();
    } catch {
      // already closed
    }
    this.state = 'stopped';
  }

  /** The engine answers, our earlier containers are gone, the plug-ins are where it can mount them. */
  private async startDocker(): Promise<void> {
    const { Docker, LABELS, removeContainers } = await dockerDriver();
    const docker = new Docker();
    try {
      await docker.ping();
    } catch (err) {
      throw new InfrastructureError(`cannot reach the Docker engine (${process.env.DOCKER_HOST ?? '/var/run/docker.sock'}): ${(err as Error).message}`);
    }
    await removeContainers(docker, { [LABELS.supervisor]: this.id }, this.opts.log);
    this.assets = path.join(this.dir, 'assets');
    fs.cpSync(assetsDir(), this.assets, { recursive: true });
    this.puller = new ImagePuller(dockerImageStore(docker), this.opts.docker?.registryAuth, (image, ms) => this.opts.log.info({ image, ms }, 'image pulled'));
  }

  private spawn(handle: SlotHandle): void {
    const workerId = `${this.id}/${handle.index}`;
    const dir = path.join(this.dir, `slot-${handle.index}`);
    fs.mkdirSync(dir, { recursive: true });
    const slotEnv = {
      WARREN_WORKER_INDEX: String(handle.index),
      // parallel_tests' convention: '' for the first worker, then '2', '3', ...
      TEST_ENV_NUMBER: handle.index === 0 ? '' : String(handle.index + 1),
      WARREN_WORKER_ID: workerId,
      WARREN_SLOT_DIR: dir,
    };
    const config: SlotConfig = {
      brokerUrl: this.opts.brokerUrl, index: handle.index, workers: this.opts.workers, workerId, supervisorId: this.id, dir,
      graceMs: this.opts.graceMs ?? 30_000, driver: this.opts.driver ?? 'local',
      docker: this.opts.docker ?? { isolation: 'slot', memory: 0, cpus: 0, pidsLimit: 0, network: 'none', mountSuite: false, mountSuiteWritable: false, capAdd: [], readOnly: false, tmpSize: 0 },
      passEnv: [...(this.opts.passEnv ?? DEFAULT_PASS_ENV)], allowCwd: [...(this.opts.allowCwd ?? [])],
      allowImage: [...(this.opts.allowImage ?? [])], signingKey: this.opts.signingKey?.toString('utf8'), requireRoles: this.opts.requireRoles ?? false,
      assetsDir: this.assets, env: slotEnv,
      // shared by this supervisor's slots: the frameworks' caches are made for concurrent
      // workers (jest's, go's, pytest's), and one slot's discovery warms them for all
      cacheDir: path.join(this.cache!.dir, 'suites'),
      discoveryDir: path.join(this.cache!.root, 'discovery'),
      runnerMaxRssBytes: this.opts.runnerMaxRssBytes ?? 2 * 1024 ** 3,
      labels: this.opts.labels ?? {},
      namespace: this.opts.namespace,
    };
    const child = startSlotProcess({ ...process.env, ...slotEnv }, JSON.stringify(config), this.spares.shift());
    handle.child = child;
    handle.startedAt = Date.now();
    handle.activity = { state: 'starting' };
    child.on('message', (m: SlotActivity | SlotRequest) => {
      if (!('type' in m)) {
        handle.activity = m;
        handle.eventsRead = 0;
      } else if (m.type === 'events-read') handle.eventsRead = m.offset;
      else if (m.type === 'discovering') this.prewarm(m.runId, m.suite);
      else if (m.type === 'broken') this.onBroken(handle, m.reason, m.jobId);
      else void this.onRequest(child, m);
    });
    child.on('exit', (code, signal) => this.onSlotExit(handle, child, code, signal));
    if (this.runs) tell(child, { type: 'runs-state', state: this.runs });
  }

  /** Every slot of this host is told; the idle ones start the run's warm runner (the
   * discovering one too, a slot still connecting once it is up). */
  private prewarm(runId: string, suite: SuiteConfig): void {
    for (const h of this.slots) tell(h.child, { type: 'prewarm', runId, suite });
  }

  /**
   * A slot's environment broke under a job. Different jobs breaking here within a while
   * means the host is sick (its engine, its disk), not the tests: the supervisor takes itself
   * out of rotation so that the jobs run on healthy hosts, and says so in its heartbeat
   * (`warren hosts`) until an operator restarts it.
   */
  private onBroken(handle: SlotHandle, reason: string, jobId: string): void {
    const now = Date.now();
    this.breaks = [...this.breaks.filter((b) => now - b.at < BREAK_WINDOW_MS && b.jobId !== jobId), { at: now, jobId, reason }];
    this.opts.log.warn({ worker: `${this.id}/${handle.index}`, jobId, reason, breaks: this.breaks.length }, 'a worker environment broke under a job');
    const limit = this.opts.breakLimit ?? 3;
    if (this.breaks.length < limit || this.drained) return;
    this.drained = `${this.breaks.length} worker environments broke under different jobs within ${Math.round(BREAK_WINDOW_MS / 60_000)} min; last: ${reason}`;
    this.opts.log.error({ supervisor: this.id, reason: this.drained }, 'this host is drained: no more jobs are taken here until the supervisor is restarted');
    for (const s of this.slots) {
      clearTimeout(s.restartTimer);
      if (s.activity.state === 'restarting') s.activity = { state: 'stopped' };
      // running jobs finish (or go back to the queue after the grace)
      if (s.child && s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGTERM');
    }
    void this.beat();
  }

  private async onRequest(child: ChildProcess, req: Extract<SlotRequest, { type: 'ensure-image' }>): Promise<void> {
    let reply: SupervisorReply;
    try {
      if (!this.puller) throw new Error('this supervisor does not run the docker driver');
      await this.puller.ensure(req.image);
      reply = { type: 'image-ready', id: req.id };
    } catch (err) {
      reply = { type: 'image-ready', id: req.id, error: (err as Error).message };
    }
    tell(child, reply);
  }

  private onSlotExit(handle: SlotHandle, child: ChildProcess, code: number | null, signal: string | null): void {
    if (handle.child !== child) return;
    const last = handle.activity;
    // Its test processes (a warm runner too, busy or idle) live in their own process group:
    // reap them, nobody else will.
    if ((last.state === 'busy' || last.state === 'idle') && last.pgid) {
      try {
        process.kill(-last.pgid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    handle.child = undefined;
    if (last.state === 'busy' && last.running) {
      void this.salvage(`${this.id}/${handle.index}`, last.runId, last.specId, last.running, handle.eventsRead);
    } else {
      // killed before its 'busy' message reached us: the slot wrote what it ran to disk
      const onDisk = readRunning(path.join(this.dir, `slot-${handle.index}`, RUNNING_FILE));
      if (onDisk) void this.salvage(`${this.id}/${handle.index}`, onDisk.runId, onDisk.specId, onDisk.running, 0);
    }
    // (while starting too: the slots start before this supervisor's own connection is up)
    if ((this.state !== 'running' && this.state !== 'starting') || this.drained) {
      handle.activity = { state: 'stopped' };
      return;
    }
    // A slot that lived a while starts its backoff afresh.
    handle.failures = Date.now() - handle.startedAt > 60_000 ? 1 : handle.failures + 1;
    const delay = Math.min(30_000, 250 * 2 ** (handle.failures - 1));
    this.opts.log.warn(
      {
        worker: `${this.id}/${handle.index}`, code, signal, delayMs: delay,
        ...(last.state === 'busy' ? { runId: last.runId, specId: last.specId } : {}),
      },
      'worker exited unexpectedly; its job is redelivered, restarting it',
    );
    handle.activity = { state: 'restarting' };
    handle.restartTimer = setTimeout(() => {
      if (this.state === 'running' || this.state === 'starting') this.spawn(handle);
    }, delay);
  }

  /**
   * A slot died under a spec (a test killed its worker): the broker redelivers the spec and
   * its tests run again, but what already finished is reported now, from the slot's events
   * file, so a first attempt is not lost (a flaky failure stays a failure of round N). The
   * aggregator keeps the first result per test and round, so the re-run adds nothing twice.
   */
  private async salvage(workerId: string, runId: string, specId: string, running: { round: number; tests: TestRef[]; events: string }, upTo: number): Promise<void> {
    // What the slot had read while alive; after its death an orphaned framework may go on
    // writing (the test that killed the worker then "passes") until we reap it, so beyond
    // that only failures are kept: a failure is a fact (a flaky test's first attempt, in
    // the same batch as a test that killed the worker), a pass written then is not trusted.
    let file: Buffer;
    try {
      file = fs.readFileSync(running.events);
    } catch {
      return; // nothing was written
    }
    const seen = finishedResults(running.tests, parseEvents(file.subarray(0, upTo).toString('utf8')));
    const known = new Set(seen.map((r) => r.testId));
    const later = finishedResults(running.tests, parseEvents(file.toString('utf8'))).filter((r) => r.status === 'failed' && !known.has(r.testId));
    const results = [...seen, ...later];
    if (results.length === 0) return;
    const msg: SpecResult = {
      type: 'spec.result', v: SCHEMA_VERSION, id: `${specId}/salvaged`, runId, specId, round: running.round, worker: workerId, results,
    };
    try {
      await this.broker.publish(EXCHANGES.events, ROUTING.specResult, msg);
      this.opts.log.info({ runId, specId, results: results.length }, 'reported the tests a dead worker had finished');
    } catch (err) {
      this.opts.log.warn({ err, runId, specId }, 'could not report what a dead worker had finished; those tests run again');
    }
  }

  private async beat(): Promise<void> {
    const msg: Heartbeat = {
      type: 'supervisor.heartbeat', v: SCHEMA_VERSION, supervisor: this.id, host: os.hostname(), at: Date.now(),
      driver: this.opts.driver ?? 'local', labels: this.opts.labels ?? {}, state: this.state,
      ...(this.drained ? { drained: this.drained } : {}),
      slots: this.slots.map((s) => ({
        index: s.index,
        state: s.activity.state,
        ...(s.activity.state === 'busy' ? { runId: s.activity.runId } : {}),
      })),
    };
    try {
      await this.broker.publish(EXCHANGES.status, '', msg, { persistent: false, mandatory: false, timeoutMs: 5000 });
    } catch (err) {
      this.opts.log.debug({ err }, 'heartbeat not sent');
    }
  }
}

function readRunning(file: string): { runId: string; specId: string; running: { round: number; tests: TestRef[]; events: string } } | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return undefined; // no batch was running
  }
}

/** A message to a slot process; one exiting meanwhile (EPIPE) just misses it. */
function tell(child: ChildProcess | undefined, msg: SupervisorReply): void {
  if (child?.connected) child.send(msg, () => undefined);
}
