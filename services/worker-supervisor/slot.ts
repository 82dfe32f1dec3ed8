/**
 * One worker slot: a process of its own (forked by the supervisor) with its own broker
 * connection, consuming `warren.specs` with prefetch 1. For each job it starts the suite's
 * framework through the driver, watches the per-test timeout, turns what happened into
 * results (resolve.ts), publishes them with a confirm, and only then acks.
 *
 * If this process dies, its channel dies with it and the broker redelivers the unacked job:
 * that is how a test that kills its worker is counted (quorum `x-delivery-count`) and, past
 * the delivery limit, dead-lettered to the aggregator as "crashed its worker".
 */
import fs from 'node:fs';
import path from 'node:path';
import { Broker, type Delivery } from '../../shared/broker.js';
import type { Logger } from '../../shared/log.js';
import {
  Job, SCHEMA_VERSION, parseMessage,
  type Discovered, type DiscoverJob, type SpecJob, type SpecResult, type TestRef,
} from '../../shared/messages.js';
import { EXCHANGES, QUEUES, ROUTING } from '../../shared/topology.js';
import { adapterFor, type RunFiles } from './adapters/adapter.js';
import type { RunningProcess, WorkerDriver } from './drivers/driver.js';
import { parseEvents, resolveAttempt, resolveByExitCode, type FrameworkEvent, type Resolution } from './resolve.js';
import { junitEvents } from './adapters/junit.js';

export interface SlotOptions {
  brokerUrl: string;
  /** 0-based index of this slot in its supervisor. */
  index: number;
  /** `<supervisor id>/<index>`: names this worker in results and logs. */
  workerId: string;
  /** The slot's own directory: events files, TMPDIR. */
  dir: string;
  driver: WorkerDriver;
  log: Logger;
  /** Told what the slot is doing (the supervisor forwards it in heartbeats). */
  onState?: (state: SlotActivity) => void;
  /** How far into the running process's events file this slot has read: events before it
   * were written while the slot was alive (the supervisor salvages only those). */
  onEventsRead?: (offset: number) => void;
  /** The worker's environment broke under a job (its container died): the slot must go,
   * so that the broker redelivers the job and the supervisor starts a fresh slot. */
  onBroken?: (reason: string) => void;
}

/** The environment failed, not the test: the job goes back to the queue. */
export class WorkerBrokenError extends Error {
  override name = 'WorkerBrokenError';
}

export type SlotActivity =
  | { state: 'idle' }
  | {
      state: 'busy';
      runId: string;
      specId: string;
      pgid?: number;
      /** While a spec runs: what the supervisor needs to salvage its finished tests if this
       * slot dies (a test killed the worker). */
      running?: { round: number; tests: TestRef[]; events: string };
    };

export type SlotState = 'starting' | 'running' | 'draining' | 'stopped' | 'failed';

/** How often the events file is read while a test runs (for the per-test timeout). */
const WATCH_INTERVAL_MS = 200;
/** How long a framework process may linger after reporting `done`. */
const AFTER_DONE_GRACE_MS = 3000;

export class Slot {
  state: SlotState = 'starting';
  private readonly broker: Broker;
  private current?: { proc?: RunningProcess; done: Promise<void> };
  private seq = 0;

  constructor(private readonly opts: SlotOptions) {
    this.broker = new Broker({ url: opts.brokerUrl, name: `warren worker ${opts.workerId}`, log: opts.log });
  }

  async start(): Promise<void> {
    // what an earlier process of this slot left (its files' names would be reused)
    fs.rmSync(this.opts.dir, { recursive: true, force: true });
    fs.mkdirSync(path.join(this.opts.dir, 'tmp'), { recursive: true });
    await this.opts.driver.prepare();
    await this.broker.start();
    await this.broker.consume(QUEUES.specs, (d) => this.onDelivery(d), { prefetch: 1 });
    this.state = 'running';
    this.opts.onState?.({ state: 'idle' });
  }

  /** Stops taking jobs; the job in hand finishes (or is killed after `graceMs` and redelivered). */
  async drain(graceMs: number): Promise<void> {
    if (this.state === 'stopped' || this.state === 'draining') return;
    this.state = 'draining';
    await this.broker.cancelConsumers().catch(() => undefined);
    if (this.current) {
      const timer = setTimeout(() => {
        this.opts.log.warn({ worker: this.opts.workerId }, 'drain grace expired, killing the running test; its spec goes back to the queue');
        this.current?.proc?.kill('SIGKILL');
      }, graceMs);
      await this.current.done.catch(() => undefined);
      clearTimeout(timer);
    }
    await this.stop();
  }

  /** Kills what runs and closes the connection; unacked jobs go back to the queue. */
  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'stopped';
    try {
      this.current?.proc?.kill('SIGKILL');
    } catch {
      // nothing running
    }
    try {
      await this.broker.close();
    } catch {
      // connection already gone
    }
    try {
      await this.opts.driver.dispose();
    } catch (err) {
      this.opts.log.warn({ err }, 'driver dispose failed');
    }
  }

  // ---- jobs --------------------------------------------------------------------------

  private async onDelivery(d: Delivery): Promise<void> {
    const parsed = parseMessage(Job, d.body);
    if (!parsed.ok) return d.deadLetter(parsed.reason);
    const job = parsed.value;
    let resolveDone!: () => void;
    this.current = { done: new Promise<void>((r) => (resolveDone = r)) };
    try {
      if (job.type === 'discover') await this.discover(job, d);
      else await this.spec(job, d);
    } catch (err) {
      if (err instanceof WorkerBrokenError) {
        // Not acked: the job is redelivered when this slot's connection goes.
        this.opts.log.warn({ runId: job.runId, specId: job.id, reason: err.message }, 'worker environment broke under a job; giving it back');
        this.opts.onBroken?.(err.message);
        return;
      }
      // Stopping mid-job closes the connection under the publish: the job is unacked and
      // goes back to the queue, which is the point of stopping. Anything else is a bug.
      if (this.state !== 'stopped') throw err;
      this.opts.log.info({ runId: job.runId, specId: job.id }, 'stopped mid-job; the broker requeues it');
    } finally {
      this.current = undefined;
      resolveDone();
      if (this.state === 'running') this.opts.onState?.({ state: 'idle' });
    }
  }

  private log(job: { runId: string; id: string }) {
    return this.opts.log.child({ runId: job.runId, specId: job.id, worker: this.opts.workerId });
  }

  private async discover(job: DiscoverJob, d: Delivery): Promise<void> {
    const log = this.log(job);
    const suite = job.run;
    this.opts.onState?.({ state: 'busy', runId: job.runId, specId: job.id });
    log.info('discovering tests');
    let tests: TestRef[] = [];
    let error: string | undefined;
    // (with docker, the directory is inside the image: the exec's failure tells)
    if (this.opts.driver.name === 'local' && !fs.existsSync(suite.cwd)) {
      error = `suite directory ${suite.cwd} does not exist on worker ${this.opts.workerId}`;
    } else {
      const adapter = adapterFor(suite.adapter);
      const files = this.files();
      const timeoutSec = Math.max(120, suite.testTimeoutSec);
      const { outcome, events, stdout } = await this.execute(adapter.discover(suite, this.opts.driver.context), suite, files, timeoutSec, { perTest: false, events: adapter.results === 'events' });
      this.forget(files);
      if (adapter.results === 'events') {
        tests = dedupeTests(events.filter((e): e is Extract<FrameworkEvent, { event: 'test' }> => e.event === 'test'));
        if (!events.some((e) => e.event === 'done')) {
          error = `discovery failed: ${suite.adapter} ${outcome.timedOutAfterSec ? `timed out after ${outcome.timedOutAfterSec} s` : outcome.exit.signal ? `killed by ${outcome.exit.signal}` : `exited with code ${outcome.exit.code}`}: ${lastLine(outcome.stderr) || lastLine(stdout)}`;
        }
      } else if (outcome.exit.code !== 0) {
        error = `discovery failed: \`${suite.command?.discover}\` exited with code ${outcome.exit.code}: ${lastLine(outcome.stderr)}`;
      } else {
        tests = adapter.parseDiscoveryOutput!(stdout);
      }
    }
    const msg: Discovered = {
      type: 'run.discovered', v: SCHEMA_VERSION, id: `${job.id}/discovered`, runId: job.runId,
      run: job.run, tests, error, worker: this.opts.workerId,
    };
    // Confirm before ack: if we die in between, the discovery runs again (the dispatcher
    // ignores a second plan for the same round).
    await this.broker.publish(EXCHANGES.runs, ROUTING.discovered, msg, { timeoutMs: 600_000 });
    log.info({ tests: tests.length, error }, 'discovery published');
    d.ack();
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
      await this.requeue(job, job.tests.map((t) => [t]));
      return d.ack();
    }
    const adapter = adapterFor(job.suite.adapter);
    const files = this.files();
    if (adapter.readsIdsFile) fs.writeFileSync(files.ids, job.tests.map((t) => t.id).join('\n') + '\n');
    // Without events there is no per-test clock: the process has a test's budget per test.
    const budget = adapter.results === 'events' ? job.suite.testTimeoutSec : job.suite.testTimeoutSec * job.tests.length;
    const { outcome, stdout } = await this.execute(adapter.run(job.suite, job.tests, this.opts.driver.context, files), job.suite, files, budget, { perTest: true, events: adapter.results === 'events' }, job);
    const resolution: Resolution =
      adapter.results === 'events' ? resolveAttempt(job.tests, outcome)
        : adapter.results === 'junit' ? resolveAttempt(job.tests, { ...outcome, events: this.junitResults(files, job, outcome) })
          : resolveByExitCode(job.tests, outcome, stdout);
    this.forget(files);
    if (resolution.results.length > 0) {
      const msg: SpecResult = {
        type: 'spec.result', v: SCHEMA_VERSION, id: `${job.id}/result`, runId: job.runId,
        specId: job.id, round: job.round, worker: this.opts.workerId, results: resolution.results,
      };
      await this.broker.publish(EXCHANGES.events, ROUTING.specResult, msg, { timeoutMs: 600_000 });
    }
    if (resolution.rerun.length > 0) {
      log.info({ rerun: resolution.rerun.length }, 'tests left unsettled by this process, queued again');
      await this.requeue(job, resolution.rerun.length === job.tests.length ? resolution.rerun.map((t) => [t]) : [resolution.rerun]);
    }
    log.info({ results: resolution.results.length, exit: outcome.exit }, 'spec done');
    // Ack last: the results (and any re-queued tests) are confirmed by the broker.
    d.ack();
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

  private async requeue(job: SpecJob, groups: TestRef[][]): Promise<void> {
    for (const [i, tests] of groups.entries()) {
      const next: SpecJob = { ...job, id: `${job.id}.${i + 1}`, tests };
      await this.broker.publish(EXCHANGES.work, ROUTING.job, next, { timeoutMs: 600_000 });
    }
  }

  /** Fresh names for one process's files (the slot's directory was emptied at start). */
  private files(): RunFiles {
    const n = ++this.seq;
    return {
      events: path.join(this.opts.dir, `events-${n}.jsonl`),
      ids: path.join(this.opts.dir, `ids-${n}.txt`),
      junit: path.join(this.opts.dir, `junit-${n}.xml`),
    };
  }

  /** Removes a finished process's files, off the job's path. */
  private forget(files: RunFiles): void {
    for (const f of [files.events, files.ids, files.junit]) void fs.promises.rm(f, { force: true });
  }

  /** Runs one framework process, killing it when one test outlives the timeout. */
  private async execute(
    argv: string[],
    suite: { cwd: string; env: Record<string, string>; image?: string },
    files: RunFiles,
    timeoutSec: number,
    /** perTest: the clock restarts at each test (discovery: one budget for the process);
     * events: the process writes events (else there is no file to watch). */
    mode: { perTest: boolean; events: boolean },
    job?: SpecJob,
  ) {
    const started = Date.now();
    const proc = await this.opts.driver.start({
      argv,
      cwd: suite.cwd,
      image: suite.image,
      env: {
        ...suite.env,
        WARREN_EVENTS: files.events,
        WARREN_IDS_FILE: files.ids,
        WARREN_JUNIT_FILE: files.junit,
        WARREN_SLOT_PID: String(process.pid),
        TMPDIR: path.join(this.opts.dir, 'tmp'),
      },
    });
    if (this.current) this.current.proc = proc;
    if (job) {
      this.opts.onState?.({
        state: 'busy', runId: job.runId, specId: job.id, pgid: proc.pgid,
        running: { round: job.round, tests: job.tests, events: files.events },
      });
    }
    // The per-test clock restarts at each test_start; before the first test and in
    // discovery, the whole process has the one budget (loading a suite is part of a test).
    let timedOutAfterSec: number | undefined;
    let offset = 0;
    let clockFrom = started;
    let doneAt: number | undefined;
    const watch = setInterval(() => {
      const chunk = mode.events ? readFrom(files.events, offset) : Buffer.alloc(0);
      offset += chunk.length;
      if (chunk.length > 0 && job) this.opts.onEventsRead?.(offset);
      for (const e of parseEvents(chunk.toString('utf8'))) {
        if (mode.perTest && (e.event === 'test_start' || e.event === 'test_end')) clockFrom = Date.now();
        if (e.event === 'done') doneAt ??= Date.now();
      }
      if (doneAt !== undefined && Date.now() - doneAt > AFTER_DONE_GRACE_MS) {
        // The framework has reported everything but a leaked handle (a timer, a server)
        // keeps the process alive, as plain mocha would: the results stand, end it.
        proc.kill('SIGKILL');
      } else if (Date.now() - clockFrom > timeoutSec * 1000 && timedOutAfterSec === undefined) {
        timedOutAfterSec = timeoutSec;
        proc.kill('SIGKILL');
      }
    }, WATCH_INTERVAL_MS);
    const exit = await proc.exited;
    clearInterval(watch);
    if (exit.infra) throw new WorkerBrokenError(exit.infra);
    const events = mode.events ? parseEvents(readFrom(files.events, 0).toString('utf8')) : [];
    return {
      outcome: { events, exit, timedOutAfterSec, stderr: proc.stderrTail(), elapsedMs: Date.now() - started },
      events,
      stdout: proc.stdoutTail(),
    };
  }
}

function readFrom(file: string, offset: number): Buffer {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= offset) return Buffer.alloc(0);
      const buf = Buffer.alloc(size - offset);
      fs.readSync(fd, buf, 0, buf.length, offset);
      // Only whole lines: a torn last line is read again next time.
      const end = buf.lastIndexOf(0x0a);
      return end < 0 ? Buffer.alloc(0) : buf.subarray(0, end + 1);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return Buffer.alloc(0);
  }
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
