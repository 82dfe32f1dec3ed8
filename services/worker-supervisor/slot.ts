/**
 * One worker slot: a process of its own (forked by the supervisor) with its own broker
 * connection, taking one job at a time from the work queues of the runs in progress
 * (intake.ts: round-robin over their shards), never two. For each job it runs the batch
 * on a runner (runner/runner.ts: the slot's warm framework
 * process for this run, or a cold one), turns what happened into results (resolve.ts),
 * publishes them with a confirm, and only then acks.
 *
 * If this process dies, its channel dies with it and the broker redelivers the unacked job:
 * that is how a test that kills its worker is counted (quorum `x-delivery-count`) and, past
 * the delivery limit, dead-lettered to the aggregator as "crashed its worker". A worker
 * environment that breaks under a job (its container dies) is not the test's doing: the job
 * goes back as a fresh message with the break counted on it (`giveBack`).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Broker, type Delivery } from '../../shared/broker.js';
import type { Logger } from '../../shared/log.js';
import type { Lifecycle } from '../../shared/lifecycle.js';
import {
  Job, SCHEMA_VERSION, labelsMatch, parseMessage, suiteOf,
  type Discovered, type RunsState, type SetupFailed, type WorkWake, type InfraFailures, type DiscoverJob, type SpecJob, type SpecResult, type SuiteConfig, type TestRef,
} from '../../shared/messages.js';
import { EXCHANGES, ROUTING, jobKey } from '../../shared/topology.js';
import { adapterFor, type Adapter, type RunFiles } from './adapters/adapter.js';
import type { Invocation, WorkerDriver } from './drivers/driver.js';
import { resolveAttempt, resolveByExitCode, type Resolution } from './resolve.js';
import type { FrameworkEvent } from './runner/protocol.js';
import { RunnerLostError, WarmRunner, WorkerBrokenError, runCold, type Batch, type BatchOutcome } from './runner/runner.js';
import { DiscoveryCache } from './discovery-cache.js';
import { junitEvents } from './adapters/junit.js';
import { senderProblem } from '../../shared/roles.js';
import { openSecrets, suiteProblem } from '../../shared/signing.js';
import { cwdProblem, globMatch } from './confine.js';
import { Intake } from './intake.js';
import { RunSetups } from './setup.js';

export { WorkerBrokenError } from './runner/runner.js';

export interface SlotOptions {
  brokerUrl: string;
  /** 0-based index of this slot in its supervisor. */
  index: number;
  /** `<supervisor id>/<index>`: names this worker in results and logs. */
  workerId: string;
  /** The slot's own directory: events files, TMPDIR. */
  dir: string;
  /** Caches that outlive runs, shared by the supervisor's slots (a directory per suite
   * below it: WARREN_CACHE_DIR). */
  cacheDir: string;
  /** Discovery results by suite content, shared by the host's slots. */
  discoveryDir: string;
  /** A warm runner above this resident size after a batch is retired. */
  runnerMaxRssBytes: number;
  driver: WorkerDriver;
  /** Its supervisor's labels: the slot takes work only of runs that these satisfy. */
  labels?: Record<string, string>;
  /** A private Warren's namespace on a shared broker (shared/broker.ts). */
  namespace?: string;
  /** Directories a run's cwd must be under where it is this host's (the local driver, a
   * mounted suite): a slot leaves a run outside them (confine.ts). */
  allowCwd?: string[];
  /** Images a run may name (`*` a wildcard; the driver's default image always); none: any. */
  allowImage?: string[];
  /** With a key: only suites signed with it are run, and their secret env is opened. */
  signingKey?: Buffer;
  /** Jobs only from the roles allowed to send them (shared/roles.ts). */
  requireRoles?: boolean;
  docker?: { mountSuite: boolean; image?: string };
  log: Logger;
  /** Told what the slot is doing (the supervisor forwards it in heartbeats). */
  onState?: (state: SlotActivity) => void;
  /** How far into the running process's events file this slot has read: events before it
   * were written while the slot was alive (the supervisor salvages only those). */
  onEventsRead?: (offset: number) => void;
  /** A run's tests are being discovered here: the host's idle slots may start its warm
   * runners meanwhile (the supervisor forwards it to them, this slot included). */
  onDiscovering?: (runId: string, suite: SuiteConfig) => void;
  /** The worker's environment broke under a job (its container died), or the slot failed:
   * the job is given back; the slot must go, and the supervisor starts a fresh one. */
  onBroken?: (reason: string, jobId: string) => void;
}

export type SlotActivity =
  /** pgid: a warm runner waiting for the next batch (the supervisor reaps it if we die). */
  | { state: 'idle'; pgid?: number }
  | {
      state: 'busy';
      runId: string;
      specId: string;
      pgid?: number;
      /** While a spec runs: what the supervisor needs to salvage its finished tests if this
       * slot dies (a test killed the worker). */
      running?: { round: number; tests: TestRef[]; events: string };
    };

/** In the slot's directory while a batch runs: what it runs (read by the supervisor if the slot dies). */
export const RUNNING_FILE = 'running.json';

/** A job that broke its worker's environment this often, or on this many hosts, fails. */
const INFRA_FAILURE_LIMIT = 10;
const INFRA_HOST_LIMIT = 3;

/** A warm runner with no batch for this long is retired (its run is probably over). */
const RUNNER_IDLE_MS = 30_000;

export class Slot {
  state: Lifecycle = 'starting';
  private readonly broker: Broker;
  private readonly intake: Intake;
  private readonly setups: RunSetups;
  /** The loop taking jobs, until the slot drains or stops. */
  private loop?: Promise<void>;
  private readonly discoveries: DiscoveryCache;
  private current?: { kill?: () => void; done: Promise<void> };
  private runner?: WarmRunner;
  private idleTimer?: NodeJS.Timeout;
  private seq = 0;
  /** The job in hand was killed by a drain's grace: not a result, it goes back to the queue. */
  private abandoned = false;
  /** Runs whose report is out (the latest ones): their specs are dropped, not run. */
  private readonly finished = new Set<string>();
  /** The job in hand belongs to a run that finished meanwhile: killed, no result. */
  private moot = false;
  private currentRun?: string;
  /** A prewarm that came while this slot was connecting. */
  private pendingPrewarm?: { runId: string; suite: SuiteConfig };
  /** Cache directories made already, by suite (one mkdir per suite, not per spec). */
  private readonly caches = new Map<string, string>();

  constructor(private readonly opts: SlotOptions) {
    this.broker = new Broker({ url: opts.brokerUrl, name: `warren worker ${opts.workerId}`, log: opts.log, namespace: opts.namespace });
    this.discoveries = new DiscoveryCache(opts.discoveryDir);
    this.intake = new Intake(this.broker, opts.labels ?? {}, opts.log);
    this.setups = new RunSetups(opts.driver, (suite, argv) => this.invocation(suite, argv), opts.log.child({ worker: opts.workerId }));
  }

  async start(): Promise<void> {
    // what an earlier process of this slot left (its files' names would be reused)
    fs.rmSync(this.opts.dir, { recursive: true, force: true });
    fs.mkdirSync(path.join(this.opts.dir, 'tmp'), { recursive: true });
    await this.opts.driver.prepare();
    await this.broker.start();
    this.state = 'running';
    this.opts.onState?.({ state: 'idle' });
    if (this.pendingPrewarm) this.prewarm(this.pendingPrewarm.runId, this.pendingPrewarm.suite);
    this.pendingPrewarm = undefined;
    this.loop = this.takeJobs();
  }

  /** One job at a time, until the intake stops (drain) or the slot does. */
  private async takeJobs(): Promise<void> {
    while (this.state === 'running') {
      const taken = await this.intake.take();
      if (!taken || (this.state as Lifecycle) === 'stopped') return;
      try {
        await this.onDelivery(taken.delivery, taken.shard);
      } catch (err) {
        // a failure the handler could not turn into data (its dead-lettering failed): the
        // job goes back to its queue, which counts the delivery; the slot goes on
        this.opts.log.error({ err, worker: this.opts.workerId }, 'handling a job failed; it goes back to the queue');
        taken.delivery.requeue();
      }
    }
  }

  /** The runs in progress and those just ended (the aggregator's `runs.state`). */
  runsState(state: RunsState): void {
    this.intake.setState(state);
    for (const f of state.finished) if (!this.finished.has(attempt(f.runId, f.deadline))) this.runFinished(f.runId, f.deadline);
  }

  /** Jobs were published to a shard (`work.wake`). */
  wake(w: WorkWake): void {
    this.intake.wake(w.runId, w.shard, w.labels);
  }

  /** Stops taking jobs; the job in hand finishes (or is killed after `graceMs` and redelivered). */
  async drain(graceMs: number): Promise<void> {
    if (this.state === 'stopped' || this.state === 'draining') return;
    this.state = 'draining';
    this.intake.stop();
    // a job being taken right now is run too (given back, it would count as a death)
    const timer = setTimeout(() => {
      if (!this.current) return;
      this.opts.log.warn({ worker: this.opts.workerId }, 'drain grace expired, killing the running test; its spec goes back to the queue');
      this.abandoned = true;
      this.current.kill?.();
    }, graceMs);
    await this.loop?.catch(() => undefined);
    clearTimeout(timer);
    await this.stop();
  }

  /** Kills what runs and closes the connection; unacked jobs go back to the queue. */
  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    this.intake.stop();
    clearTimeout(this.idleTimer);
    try {
      this.current?.kill?.();
    } catch {
      // nothing running
    }
    await this.setups.leaveAll().catch(() => undefined);
    try {
      await this.broker.close();
    } catch {
      // connection already gone
    }
    try {
      // after the connection: an unacked job goes back to the queue at once, while the
      // runner finishes its framework's teardown (vitest's globalSetup teardown, say)
      await this.runner?.retire();
    } catch {
      // gone already
    }
    try {
      await this.opts.driver.dispose();
    } catch (err) {
      this.opts.log.warn({ err }, 'driver dispose failed');
    }
  }

  // ---- jobs --------------------------------------------------------------------------

  private async onDelivery(d: Delivery, shard: number): Promise<void> {
    const parsed = parseMessage(Job, d.body);
    if (!parsed.ok) return d.deadLetter(parsed.reason);
    const job = parsed.value;
    const sender = this.opts.requireRoles ? senderProblem(job.type, d.userId) : null;
    if (sender) return d.deadLetter(`refused by ${this.opts.workerId}: ${sender}`);
    if (this.finished.has(attemptOf(job))) {
      this.opts.log.info({ runId: job.runId, specId: job.id }, 'skipping a job of a finished run');
      return d.ack();
    }
    const suite = job.type === 'discover' ? job.run : job.suite;
    if (this.intake.isExcluded(job.runId) || !labelsMatch(suite.labels, this.opts.labels ?? {})) {
      // Not ours (a run we are out of, or whose labels we lack): back where it came from, as
      // a fresh message (not counted against its tests). Only where a shard is shared, or
      // a wake raced its run's state.
      await this.publishJob(job, shard);
      return d.ack();
    }
    // not signed by the submitter (with a key): a forged or altered job, kept for an operator
    const forged = this.opts.signingKey ? suiteProblem(job.runId, suite, this.opts.signingKey) : null;
    if (forged) return d.deadLetter(`refused by ${this.opts.workerId}: ${forged}`);
    const refusal = this.refusal(suite);
    if (refusal) {
      await this.leaveRun(job, refusal, shard);
      return d.ack();
    }
    let resolveDone!: () => void;
    this.current = { done: new Promise<void>((r) => (resolveDone = r)) };
    this.currentRun = attemptOf(job);
    this.moot = false;
    try {
      if (job.type === 'discover') await this.discover(job, d);
      else await this.spec(job, d);
      // what the job's processes left running goes before the next job comes
      if (this.state === 'running') await this.opts.driver.cleanup?.(!!this.runner?.usable);
    } catch (err) {
      // Stopping mid-job closes the connection under the publish: the job is unacked and
      // goes back to the queue, which is the point of stopping.
      if (this.state === 'stopped') {
        this.opts.log.info({ runId: job.runId, specId: job.id }, 'stopped mid-job; the broker requeues it');
        return;
      }
      // The worker's environment broke (its container died) or this slot failed (a bug):
      // not the tests' doing. The job goes back as a fresh message, so that the queue's
      // delivery limit, which counts deaths of the worker under a test, stays theirs; then
      // the slot goes, for a fresh environment (the supervisor counts the breaks).
      const reason = err instanceof WorkerBrokenError ? err.message : `the worker slot failed: ${(err as Error).message.split('\n')[0]}`;
      if (!(err instanceof WorkerBrokenError)) this.opts.log.error({ err, runId: job.runId, specId: job.id }, 'slot failed handling a job');
      await this.giveBack(job, reason, shard);
      // no other job may come in the moment between the ack and this slot's end (it would
      // go back to the queue counted as a death under its tests)
      this.intake.stop();
      d.ack();
      this.opts.onBroken?.(reason, job.id);
    } finally {
      this.current = undefined;
      this.currentRun = undefined;
      resolveDone();
      if (this.state === 'running') this.idle();
    }
  }

  /** Why this host does not run `suite` (the operator's bounds: directories, images, keys), or null. */
  private refusal(suite: SuiteConfig): string | null {
    const hostPath = this.opts.driver.name === 'local' || (this.opts.driver.name === 'docker' && this.opts.docker?.mountSuite);
    const outside = hostPath ? cwdProblem(suite.cwd, this.opts.allowCwd ?? []) : null;
    if (outside) return outside;
    const allowed = this.opts.allowImage ?? [];
    if (suite.image && allowed.length > 0 && suite.image !== this.opts.docker?.image && !allowed.some((p) => globMatch(p, suite.image!))) {
      return `image ${suite.image} is not one this supervisor runs (--allow-image ${allowed.join(',')})`;
    }
    try {
      openSecrets(suite.secretEnv, this.opts.signingKey);
    } catch (err) {
      return (err as Error).message;
    }
    return null;
  }

  /**
   * This slot cannot serve the run (its setup failed, its directory is not allowed here):
   * it takes no more of its work, the job goes back for the other slots, and the aggregator
   * is told (the report says why; a run no slot is left for fails).
   */
  private async leaveRun(job: Job, reason: string, shard: number): Promise<void> {
    this.log(job).warn({ error: reason }, 'this slot leaves the run');
    this.intake.exclude(job.runId);
    const msg: SetupFailed = { type: 'setup.failed', v: SCHEMA_VERSION, id: `${job.runId}/setup/${this.opts.workerId}`, runId: job.runId, worker: this.opts.workerId, message: reason };
    await this.broker.publish(EXCHANGES.events, ROUTING.setupFailed, msg, { timeoutMs: 600_000 });
    await this.publishJob(job, shard);
  }

  /** Between jobs: a warm runner waits for the next batch of its run, for a while. */
  private idle(): void {
    clearTimeout(this.idleTimer);
    const runner = this.runner?.usable ? this.runner : undefined;
    this.opts.onState?.({ state: 'idle', ...(runner?.pgid ? { pgid: runner.pgid } : {}) });
    if (runner) {
      this.idleTimer = setTimeout(() => {
        if (this.runner === runner && !this.current) {
          this.runner = undefined;
          void runner.retire().then(() => {
            if (!this.current && this.state === 'running') this.opts.onState?.({ state: 'idle' });
          });
        }
      }, RUNNER_IDLE_MS);
      this.idleTimer.unref();
    }
  }

  private log(job: { runId: string; id: string }) {
    return this.opts.log.child({ runId: job.runId, specId: job.id, worker: this.opts.workerId });
  }

  private async discover(job: DiscoverJob, d: Delivery): Promise<void> {
    const log = this.log(job);
    const suite = job.run;
    this.opts.onState?.({ state: 'busy', runId: job.runId, specId: job.id });
    let tests: TestRef[] = [];
    let error: string | undefined;
    let cached = false;
    if (this.warmArgv(suiteOf(suite))) this.opts.onDiscovering?.(job.runId, suiteOf(suite));
    // (with docker, the directory is inside the image: the exec's failure tells)
    const where = this.opts.driver.name === 'local' ? fs.statSync(suite.cwd, { throwIfNoEntry: false }) : undefined;
    if (this.opts.driver.name === 'local' && !where) {
      error = `suite directory ${suite.cwd} does not exist on worker ${this.opts.workerId}`;
    } else if (where && !where.isDirectory()) {
      error = `suite directory ${suite.cwd} is not a directory on worker ${this.opts.workerId}`;
    } else {
      const fingerprint = this.opts.driver.fingerprint ? await this.opts.driver.fingerprint(suite.image) : undefined;
      const key = this.discoveries.key(suite, fingerprint);
      const hit = key ? this.discoveries.get(key) : undefined;
      if (hit) {
        tests = hit.tests;
        cached = true;
        log.info({ tests: tests.length }, 'discovery from the cache (the suite is unchanged)');
      } else {
        log.info('discovering tests');
        ({ tests, error } = await this.discoverNow(suite));
        if (this.abandoned) return; // killed by the end of a drain: back to the queue, not acked
        if (key && !error) this.discoveries.put(key, tests);
      }
    }
    const msg: Discovered = {
      type: 'run.discovered', v: SCHEMA_VERSION, id: `${job.id}/discovered`, runId: job.runId,
      run: job.run, tests, error, worker: this.opts.workerId, cached,
    };
    // Confirm before ack: if we die in between, the discovery runs again (the dispatcher
    // ignores a second plan for the same round).
    await this.broker.publish(EXCHANGES.events, ROUTING.discovered, msg, { timeoutMs: 600_000 });
    log.info({ tests: tests.length, error, cached }, 'discovery published');
    d.ack();
  }

  /** A cold discovery process: the framework lists the suite's tests. */
  private async discoverNow(suite: SuiteConfig): Promise<{ tests: TestRef[]; error?: string }> {
    const adapter = adapterFor(suite.adapter);
    const files = this.files();
    const events = adapter.results === 'events';
    const outcome = await runCold(this.opts.driver, this.invocation(suite, adapter.discover(suite, this.opts.driver.context), files), {
      tests: [], events: files.events, timeoutSec: Math.max(120, suite.testTimeoutSec), perTest: false, watchEvents: events,
    });
    this.forget(files);
    if (events) {
      const tests = dedupeTests(outcome.events.filter((e): e is Extract<FrameworkEvent, { event: 'test' }> => e.event === 'test'));
      if (outcome.events.some((e) => e.event === 'done')) return { tests };
      const how = outcome.timedOutAfterSec ? `timed out after ${outcome.timedOutAfterSec} s` : outcome.exit.signal ? `killed by ${outcome.exit.signal}` : `exited with code ${outcome.exit.code}`;
      return { tests, error: `discovery failed: ${suite.adapter} ${how}: ${lastLine(outcome.stderr) || lastLine(outcome.stdout)}` };
    }
    if (outcome.exit.code !== 0) {
      return { tests: [], error: `discovery failed: \`${suite.command?.discover}\` exited with code ${outcome.exit.code}: ${lastLine(outcome.stderr)}` };
    }
    return { tests: adapter.parseDiscoveryOutput!(outcome.stdout) };
  }

  private async spec(job: SpecJob, d: Delivery): Promise<void> {
    const log = this.log(job);
    if (Date.now() > job.expiresAt) {
      // The run's deadline passed: the aggregator has already reported these as dropped.
      log.info('skipping a spec of a finished run');
      return d.ack();
    }
    if ((d.redelivered || d.deliveryCount > 0) && job.tests.length > 1) {
      // This batch was in hand when a worker died. One of its tests may be the killer: run
      // each alone, so the killer alone uses up its delivery limit and the others are fine.
      log.warn({ tests: job.tests.length, deliveryCount: d.deliveryCount }, 'redelivered batch, splitting it into single tests');
      await this.requeue(job, job.tests.map((t) => [t]), job.shard);
      return d.ack();
    }
    const setupError = await this.setups.ensure(attemptOf(job), job.suite);
    if (setupError) {
      await this.leaveRun(job, setupError, job.shard);
      return d.ack();
    }
    const adapter = adapterFor(job.suite.adapter);
    const files = this.files();
    const outcome = await this.runBatch(job, adapter, files);
    if (adapter.results === 'events') fs.rmSync(path.join(this.opts.dir, RUNNING_FILE), { force: true });
    if (this.abandoned) {
      // not acked: the broker gives the spec to another worker when this slot's channel closes
      log.info('killed by the end of a drain; the spec goes back to the queue');
      this.forget(files, adapter);
      return;
    }
    if (this.moot) {
      log.info('its run finished while it ran: no result');
      this.forget(files, adapter);
      return d.ack();
    }
    const resolution: Resolution =
      adapter.results === 'events' ? resolveAttempt(job.tests, outcome)
        : adapter.results === 'junit' ? resolveAttempt(job.tests, { ...outcome, events: this.junitResults(files, job, outcome) })
          : resolveByExitCode(job.tests, outcome, outcome.stdout);
    this.forget(files, adapter);
    if (resolution.results.length > 0) {
      const msg: SpecResult = {
        type: 'spec.result', v: SCHEMA_VERSION, id: `${job.id}/result`, runId: job.runId,
        specId: job.id, round: job.round, worker: this.opts.workerId, results: resolution.results,
        elapsedMs: outcome.elapsedMs,
      };
      await this.broker.publish(EXCHANGES.events, ROUTING.specResult, msg, { timeoutMs: 600_000 });
    }
    if (resolution.rerun.length > 0) {
      log.info({ rerun: resolution.rerun.length }, 'tests left unsettled by this process, queued again');
      await this.requeue(job, resolution.rerun.length === job.tests.length ? resolution.rerun.map((t) => [t]) : [resolution.rerun], job.shard);
    }
    log.info({ results: resolution.results.length, exit: outcome.exit, warm: !!this.warmArgv(job.suite, adapter) }, 'spec done');
    // Ack last: the results (and any re-queued tests) are confirmed by the broker.
    d.ack();
  }

  /** Runs the spec's tests: on this run's warm runner when the adapter has one, else cold. */
  private async runBatch(job: SpecJob, adapter: Adapter, files: RunFiles): Promise<BatchOutcome> {
    // Without events there is no per-test clock: the process has a test's budget per test.
    const budget = adapter.results === 'events' ? job.suite.testTimeoutSec : job.suite.testTimeoutSec * job.tests.length;
    const batch: Batch = {
      tests: job.tests, events: files.events, timeoutSec: budget, perTest: true, watchEvents: adapter.results === 'events',
      onStarted: (pgid) => {
        // what to salvage if this slot dies: the tests its framework reported (events only)
        const running = adapter.results === 'events' ? { round: job.round, tests: job.tests, events: files.events } : undefined;
        // also on disk, synchronously: a test that kills this slot at once can beat the IPC
        // message below, and the supervisor would not know what to salvage
        if (running) fs.writeFileSync(path.join(this.opts.dir, RUNNING_FILE), JSON.stringify({ runId: job.runId, specId: job.id, running }));
        this.opts.onState?.({ state: 'busy', runId: job.runId, specId: job.id, pgid, ...(running ? { running } : {}) });
      },
      onEventsRead: (offset) => this.opts.onEventsRead?.(offset),
    };
    const warm = this.warmArgv(job.suite, adapter);
    if (!warm) {
      if (adapter.readsIdsFile) fs.writeFileSync(files.ids, job.tests.map((t) => t.id).join('\n') + '\n');
      const inv = this.invocation(job.suite, adapter.run(job.suite, job.tests, this.opts.driver.context, files), files);
      return runCold(this.opts.driver, inv, { ...batch, onProcess: (kill) => (this.current!.kill = kill) });
    }
    for (let attempt = 1; ; attempt++) {
      const runner = this.warmRunner(job.runId, job.suite, warm);
      this.current!.kill = () => runner.kill();
      try {
        return await runner.run(batch);
      } catch (err) {
        // A runner that died of something an earlier batch left behind: this batch was never
        // begun; once on a fresh runner (then its own failure is its own).
        if (!(err instanceof RunnerLostError) || attempt > 1) throw err;
        this.log(job).warn({ reason: err.message }, 'warm runner lost before the batch began; starting a fresh one');
      }
    }
  }

  /** The serve invocation for a suite, when it runs warm: adapter, driver and run allow it. */
  private warmArgv(suite: SuiteConfig, adapter: Adapter = adapterFor(suite.adapter)): string[] | undefined {
    if (!adapter.serve || suite.freshProcess || this.opts.driver.isolatesSpecs || this.opts.driver.name === 'noop') return undefined;
    return adapter.serve(suite, this.opts.driver.context);
  }

  /** A run's report is out: its specs still coming are dropped, its test running now stopped. */
  runFinished(runId: string, deadline: number): void {
    this.finished.add(attempt(runId, deadline));
    // its teardown, once the test in hand (stopped below, if it is the run's) is over
    const key = attempt(runId, deadline);
    void (this.current?.done ?? Promise.resolve()).then(() => this.setups.leave(key)).catch(() => undefined);
    if (this.finished.size > 1000) this.finished.delete(this.finished.values().next().value!);
    if (this.currentRun === attempt(runId, deadline) && this.current) {
      this.moot = true;
      this.opts.log.info({ runId, worker: this.opts.workerId }, 'its run finished: stopping the test in hand');
      this.current.kill?.();
    }
    if (this.runner?.usable && this.runner.key.startsWith(`${runId}\0`) && !this.current) {
      const runner = this.runner;
      this.runner = undefined;
      void runner.retire();
    }
  }

  /**
   * Starts this run's warm runner ahead of its first spec, while its tests are discovered
   * (here or on another slot of the host): the framework and the suite's helpers load during
   * discovery instead of after it. Only an idle slot does; an unused runner retires as any
   * idle one does.
   */
  prewarm(runId: string, suite: SuiteConfig): void {
    // (local workers only for now: a docker slot's container is made by its first process,
    // and a prewarm racing the slot's discovery for it left containers behind)
    if (this.opts.driver.name !== 'local') return;
    // a run with a setup command: its runner starts after the setup (its helpers may need
    // what the setup makes), at the first batch
    if (suite.setupCommand) return;
    if (this.state === 'starting') {
      this.pendingPrewarm = { runId, suite };
      return;
    }
    if (this.state !== 'running') return;
    const argv = this.warmArgv(suite);
    if (!argv) return;
    const key = `${runId}\0${suiteKey(suite)}`;
    if (this.runner?.usable && this.runner.key === key) return;
    if (this.current && this.runner?.usable) return; // busy with another run's batch
    const runner = this.warmRunner(runId, suite, argv);
    runner.start().catch((err) => this.opts.log.warn({ err, runId }, 'prewarming a runner failed; the first batch starts one'));
    if (!this.current) this.idle();
  }

  /**
   * The slot's warm runner for this job's run: the one it has, or a new one. A runner
   * serves one run only (a later run may bring changed files, another env): the old one
   * is retired when another run's spec comes.
   */
  private warmRunner(runId: string, suite: SuiteConfig, argv: string[]): WarmRunner {
    clearTimeout(this.idleTimer);
    const key = `${runId}\0${suiteKey(suite)}`;
    if (this.runner?.usable && this.runner.key === key) return this.runner;
    if (this.runner) void this.runner.retire();
    this.runner = new WarmRunner({
      driver: this.opts.driver, key, maxRssBytes: this.opts.runnerMaxRssBytes,
      log: this.opts.log.child({ runId, worker: this.opts.workerId }),
      inv: this.invocation(suite, argv),
    });
    return this.runner;
  }

  /** The environment of every framework process of this slot, for a suite. */
  private invocation(suite: SuiteConfig, argv: string[], files?: RunFiles): Invocation {
    // per suite (adapter, directory, image), not per env: a run's env often names a
    // temporary directory, and the caches must outlive it
    const name = `${suite.adapter}\0${suite.cwd}\0${suite.image ?? ''}`;
    let cache = this.caches.get(name);
    if (!cache) {
      cache = path.join(this.opts.cacheDir, hash([suite.adapter, suite.cwd, suite.image ?? null]).slice(0, 16));
      fs.mkdirSync(cache, { recursive: true });
      this.opts.driver.own?.(cache);
      this.caches.set(name, cache);
    }
    return {
      argv,
      cwd: suite.cwd,
      image: suite.image,
      env: {
        ...suite.env,
        ...openSecrets(suite.secretEnv, this.opts.signingKey),
        ...(files ? { WARREN_EVENTS: files.events, WARREN_IDS_FILE: files.ids, WARREN_JUNIT_FILE: files.junit } : {}),
        ...(suite.args.length ? { WARREN_FRAMEWORK_ARGS: JSON.stringify(suite.args) } : {}),
        WARREN_SLOT_PID: String(process.pid),
        WARREN_CACHE_DIR: cache,
        TMPDIR: path.join(this.opts.dir, 'tmp'),
      },
    };
  }

  /** The JUnit XML the run command wrote, as events; none when it is missing or broken. */
  private junitResults(files: RunFiles, job: SpecJob, outcome: { timedOutAfterSec?: number; exit: { code: number | null; signal: string | null } }): FrameworkEvent[] {
    // killed (timeout, signal): the crash rules apply
    if (outcome.timedOutAfterSec !== undefined || outcome.exit.signal !== null) return [];
    if (!fs.existsSync(files.junit)) {
      return [
        { event: 'error', message: `the run command wrote no JUnit XML to {junit} ($WARREN_JUNIT_FILE) and exited with code ${outcome.exit.code}` },
        { event: 'done' },
      ];
    }
    try {
      return junitEvents(fs.readFileSync(files.junit, 'utf8'), job.tests);
    } catch (err) {
      this.log(job).warn({ err }, 'JUnit XML does not parse');
      return [{ event: 'error', message: `the JUnit XML of the run command does not parse: ${(err as Error).message.split('\n')[0]}` }, { event: 'done' }];
    }
  }

  /**
   * A job whose worker broke under it: back to the queue with the break counted on the job,
   * or, once it has broken workers too often or on too many hosts (then it is probably the
   * test that breaks them), its tests fail (its run fails, for a discovery) with the reason.
   */
  private async giveBack(job: Job, reason: string, shard: number): Promise<void> {
    const supervisor = this.opts.workerId.slice(0, this.opts.workerId.lastIndexOf('/'));
    const infra: InfraFailures = {
      failures: (job.infra?.failures ?? 0) + 1,
      hosts: [...new Set([...(job.infra?.hosts ?? []), supervisor])],
      last: reason,
    };
    const log = this.log(job);
    if (infra.failures < INFRA_FAILURE_LIMIT && infra.hosts.length < INFRA_HOST_LIMIT) {
      log.warn({ reason, infraFailures: infra.failures }, 'worker environment broke under a job; it goes back to the queue (not counted against its tests)');
      await this.publishJob({ ...job, infra }, shard);
      return;
    }
    const why = `its worker environment broke ${infra.failures} times, on ${infra.hosts.length} host${infra.hosts.length > 1 ? 's' : ''} (${infra.hosts.join(', ')}); last: ${reason}`;
    log.warn({ reason: why }, 'a job broke its workers too often; failing it');
    if (job.type === 'discover') {
      const msg: Discovered = {
        type: 'run.discovered', v: SCHEMA_VERSION, id: `${job.id}/discovered`, runId: job.runId,
        run: job.run, tests: [], error: `discovery failed: ${why}`, worker: this.opts.workerId,
      };
      await this.broker.publish(EXCHANGES.events, ROUTING.discovered, msg, { timeoutMs: 600_000 });
      return;
    }
    const msg: SpecResult = {
      type: 'spec.result', v: SCHEMA_VERSION, id: `${job.id}/result`, runId: job.runId, specId: job.id, round: job.round, worker: this.opts.workerId,
      results: job.tests.map((t) => ({ testId: t.id, file: t.file, name: t.name, status: 'failed', durationMs: 0, message: why })),
    };
    await this.broker.publish(EXCHANGES.events, ROUTING.specResult, msg, { timeoutMs: 600_000 });
  }

  private async requeue(job: SpecJob, groups: TestRef[][], shard: number): Promise<void> {
    for (const [i, tests] of groups.entries()) {
      const next: SpecJob = { ...job, id: `${job.id}.${i + 1}`, tests };
      await this.publishJob(next, shard, false);
    }
    await this.wakeShard(job, shard);
  }

  /** A job back to its run's work queue (where it came from), confirmed; idle slots told. */
  private async publishJob(job: Job, shard: number, wake = true): Promise<void> {
    await this.broker.publish(EXCHANGES.work, jobKey(shard), job, { timeoutMs: 600_000 });
    if (wake) await this.wakeShard(job, shard);
  }

  private async wakeShard(job: Job, shard: number): Promise<void> {
    const labels = job.type === 'discover' ? job.run.labels : job.suite.labels;
    const wake: WorkWake = { type: 'work.wake', v: SCHEMA_VERSION, runId: job.runId, shard, labels };
    await this.broker.publish(EXCHANGES.reports, ROUTING.wake, wake, { persistent: false, mandatory: false, timeoutMs: 5000 }).catch(() => undefined);
  }

  /** Fresh names for one batch's files (the slot's directory was emptied at start). */
  private files(): RunFiles {
    const n = ++this.seq;
    return {
      events: path.join(this.opts.dir, `events-${n}.jsonl`),
      ids: path.join(this.opts.dir, `ids-${n}.txt`),
      junit: path.join(this.opts.dir, `junit-${n}.xml`),
    };
  }

  /** Removes a finished batch's files, off the job's path: those its adapter makes. */
  private forget(files: RunFiles, adapter?: Adapter): void {
    const made = !adapter ? [files.events, files.ids, files.junit]
      : [...(adapter.results === 'events' ? [files.events] : []), ...(adapter.readsIdsFile ? [files.ids] : []), ...(adapter.results === 'junit' ? [files.junit] : [])];
    for (const f of made) void fs.promises.rm(f, { force: true });
  }
}

/** A run and its deadline: what names one run, even if a later one reuses its id. */
const attempt = (runId: string, deadline: number) => `${runId}\0${deadline}`;
const attemptOf = (job: Job) => attempt(job.runId, job.type === 'spec' ? job.expiresAt : job.run.deadline);

/** What makes two specs' suites the same for one warm runner. */
function suiteKey(suite: SuiteConfig): string {
  return hash([suite.adapter, suite.cwd, suite.image ?? null, suite.command ?? null, suite.args, Object.entries(suite.env).sort(), Object.entries(suite.secretEnv).sort()]);
}

function hash(value: unknown): string {
  return crypto.createHash('sha256').update(JSON.stringify(value)).digest('hex');
}

function lastLine(s: string): string {
  return s.trim().split('\n').filter(Boolean).slice(-1)[0] ?? '';
}

/** The framework's listing, first occurrence of each id kept. */
function dedupeTests(events: Array<{ id: string; file: string; name: string }>): TestRef[] {
  const seen = new Set<string>();
  const out: TestRef[] = [];
  for (const e of events) {
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    out.push({ id: e.id, file: (e.file ?? '').replace(/^\.\//, ''), name: e.name });
  }
  return out;
}
