/**
 * Runners: the framework processes a slot runs its specs in, and the clock that watches
 * them. Two kinds, one batch API:
 *
 * - a cold process (`runCold`): started for one batch (`<plug-in> run`, or any command),
 *   the batch is over when it exits. Discovery, the `command`/`junit` adapters and runs
 *   with `--fresh-process` use it.
 * - a warm runner (`WarmRunner`): `<plug-in> serve`, started at a slot's first batch of a
 *   run and fed batch after batch on its stdin (protocol.ts); a batch is over at its `end`
 *   event. It is killed and forgotten when a test hangs or the process dies (the batch is
 *   then resolved exactly as a cold crash would be) and retired (stdin closed) when it grew
 *   past its memory limit, when its run is over, or when the slot stops.
 *
 * The per-test clock is the same for both: it restarts at every test_start/test_end; before
 * the first test the whole batch has one test's budget (loading the suite is part of a test).
 */
import fs from 'node:fs';
import type { Logger } from '../../../shared/log.js';
import type { TestRef } from '../../../shared/messages.js';
import type { Invocation, ProcessExit, RunningProcess, WorkerDriver } from '../drivers/driver.js';
import type { AttemptOutcome } from '../resolve.js';
import { encodeCommand, parseEvents, type EndEvent, type FrameworkEvent } from './protocol.js';

/** How often the clock looks at a batch (events also wake it as they are written). */
const WATCH_INTERVAL_MS = 200;
/** How long a cold process may linger after `done`, or a warm one take from `done` to `end`. */
const AFTER_DONE_GRACE_MS = 3000;
/** How long a retired warm runner may take to exit after its stdin closed (its framework's
 * teardown: vitest's teardownTimeout is 10 s). */
const RETIRE_GRACE_MS = 15_000;

export interface Batch {
  tests: TestRef[];
  /** The batch's events file (created empty here; the plug-in appends). */
  events: string;
  /** One test's budget, in seconds (the whole batch's, with `perTest: false`). */
  timeoutSec: number;
  /** The clock restarts at each test (else one budget for the batch: discovery). */
  perTest: boolean;
  /** The process writes events (else there is no file to watch: `command`, `junit`). */
  watchEvents: boolean;
  /** The process runs: its process group, for the supervisor to reap if the slot dies. */
  onStarted?: (pgid: number | undefined) => void;
  /** Bytes of the events file read so far (the supervisor salvages only those). */
  onEventsRead?: (offset: number) => void;
  /** How to kill the batch's process (a drain whose grace ran out). */
  onProcess?: (kill: () => void) => void;
}

export interface BatchOutcome extends AttemptOutcome {
  stdout: string;
}

/** The environment failed, not the test: the job goes back to the queue. */
export class WorkerBrokenError extends Error {
  override name = 'WorkerBrokenError';
}

/** A warm runner died before it began a later batch (what killed it was left over from an
 * earlier one, or it was gone already): not this batch's doing; run it on a fresh runner. */
export class RunnerLostError extends Error {
  override name = 'RunnerLostError';
}

/** Runs one batch in a process of its own. */
export async function runCold(driver: WorkerDriver, inv: Invocation, batch: Batch): Promise<BatchOutcome> {
  const started = Date.now();
  if (batch.watchEvents) {
    fs.writeFileSync(batch.events, '');
    driver.own?.(batch.events);
  }
  const proc = await driver.start(inv);
  batch.onStarted?.(proc.pgid);
  batch.onProcess?.(() => proc.kill('SIGKILL'));
  const watched = await watch(proc, batch, started, false);
  const exit = await proc.exited;
  watched.stop();
  if (exit.infra) throw new WorkerBrokenError(exit.infra);
  return outcome(batch, exit, watched, started, proc);
}

export interface WarmRunnerOptions {
  driver: WorkerDriver;
  /** The `serve` invocation (stdin is added). */
  inv: Invocation;
  /** What this runner is good for: the slot starts another one for another key. */
  key: string;
  /** Retired after a batch that left it above this resident size. */
  maxRssBytes: number;
  log: Logger;
}

/** One warm framework process (`<plug-in> serve`), fed one batch at a time. */
export class WarmRunner {
  readonly key: string;
  private proc?: RunningProcess;
  private starting?: Promise<RunningProcess>;
  private exit?: Promise<ProcessExit>;
  private batches = 0;
  private dead = false;

  constructor(private readonly opts: WarmRunnerOptions) {
    this.key = opts.key;
  }

  /** False once it died, was killed or retired: the slot starts a fresh one. */
  get usable(): boolean {
    return !this.dead;
  }

  get pgid(): number | undefined {
    return this.proc?.pgid;
  }

  async run(batch: Batch): Promise<BatchOutcome> {
    if (this.dead) throw new Error('[runner] run() on a runner that is gone');
    const started = Date.now();
    fs.writeFileSync(batch.events, '');
    this.opts.driver.own?.(batch.events);
    const proc = await this.start();
    proc.resetTails();
    const n = ++this.batches;
    batch.onStarted?.(proc.pgid);
    if (!proc.write(encodeCommand({ cmd: 'run', batch: n, events: batch.events, ids: batch.tests.map((t) => t.id) }))) {
      this.dead = true;
      // a runner that never began (it could not start: the batch is resolved by its exit)
      if (n > 1) throw new RunnerLostError('the warm runner had exited before its next batch');
    }
    const watched = await watch(proc, batch, started, true);
    // The batch ends at its `end` event, or when the process ends (it crashed, or the clock
    // killed it): whichever comes first.
    const ended = await Promise.race([watched.ended.then(() => 'end' as const), this.exit!.then(() => 'exit' as const)]);
    watched.stop();
    if (ended === 'exit') {
      this.dead = true;
      const exit = await this.exit!;
      if (exit.infra) throw new WorkerBrokenError(exit.infra);
      const result = outcome(batch, exit, watched, started, proc);
      // Began: the plug-in said `start` or a test's event (an `error` alone can be the
      // plug-in's own "exited before it finished").
      const began = result.events.some((e) => e.event === 'start' || e.event === 'test_start' || e.event === 'test_end');
      if (n > 1 && !began && watched.timedOutAfterSec === undefined) {
        throw new RunnerLostError(`the warm runner ${describe(exit)} before it began batch ${n}`);
      }
      return result;
    }
    const end = watched.end!;
    const exit: ProcessExit = { code: end.code, signal: end.signal ?? null };
    if (watched.timedOutAfterSec !== undefined || watched.lingered) {
      // Killed by the clock after all (a race at the line): a runner we killed is gone.
      this.kill();
    } else if (end.rss !== undefined && end.rss > this.opts.maxRssBytes) {
      this.opts.log.info({ rssMiB: Math.round(end.rss / 1048576), limitMiB: Math.round(this.opts.maxRssBytes / 1048576) }, 'warm runner grew past its memory limit; retiring it');
      void this.retire();
    }
    return outcome(batch, exit, watched, started, proc);
  }

  /**
   * Starts the process (once): at its first batch, or ahead of it (a slot prewarming while
   * the run's tests are discovered: the framework loads meanwhile).
   */
  start(): Promise<RunningProcess> {
    this.starting ??= this.opts.driver.start({ ...this.opts.inv, stdin: true }).then((proc) => {
      this.proc = proc;
      this.exit = proc.exited;
      void this.exit.then(() => (this.dead = true));
      if (this.dead) proc.kill('SIGKILL'); // retired or killed while it started
      return proc;
    });
    return this.starting;
  }

  /** Closes its stdin (it finishes and exits); kills it if it does not within a grace. */
  async retire(): Promise<void> {
    this.dead = true;
    // one still starting is killed as its start completes (start()): wait for that
    if (!this.proc && this.starting) await this.starting.catch(() => undefined);
    const proc = this.proc;
    if (!proc) return;
    proc.closeStdin();
    const exited = await Promise.race([
      this.exit!.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), RETIRE_GRACE_MS).unref()),
    ]);
    if (!exited) proc.kill('SIGKILL');
  }

  kill(): void {
    this.dead = true;
    this.proc?.kill('SIGKILL');
  }
}

interface Watched {
  /** Resolves at the batch's `end` event (warm runners). */
  ended: Promise<void>;
  end?: EndEvent;
  timedOutAfterSec?: number;
  /** Killed for lingering after `done`. */
  lingered: boolean;
  stop(): void;
}

/**
 * The clock of one batch: reads the events file as it grows (woken by the file's changes,
 * and every WATCH_INTERVAL_MS), kills the process when one test outlives its budget, or
 * when it lingers after `done`.
 */
async function watch(proc: RunningProcess, batch: Batch, started: number, warm: boolean): Promise<Watched> {
  let offset = 0;
  let clockFrom = started;
  let doneAt: number | undefined;
  let resolveEnded!: () => void;
  const w: Watched = { ended: new Promise<void>((r) => (resolveEnded = r)), lingered: false, stop: () => undefined };
  const look = () => {
    const chunk = batch.watchEvents ? readFrom(batch.events, offset) : Buffer.alloc(0);
    offset += chunk.length;
    if (chunk.length > 0) batch.onEventsRead?.(offset);
    for (const e of parseEvents(chunk.toString('utf8'))) {
      if (batch.perTest && (e.event === 'test_start' || e.event === 'test_end')) clockFrom = Date.now();
      if (e.event === 'done') doneAt ??= Date.now();
      if (e.event === 'end' && warm && !w.end) {
        w.end = e;
        resolveEnded();
      }
    }
    if (w.end) return;
    if (doneAt !== undefined && Date.now() - doneAt > AFTER_DONE_GRACE_MS) {
      // The framework has reported everything but a leaked handle (a timer, a server)
      // keeps the process alive, as plain mocha would: the results stand, end it.
      w.lingered = true;
      proc.kill('SIGKILL');
    } else if (Date.now() - clockFrom > batch.timeoutSec * 1000 && w.timedOutAfterSec === undefined) {
      w.timedOutAfterSec = batch.timeoutSec;
      proc.kill('SIGKILL');
    }
  };
  const timer = setInterval(look, WATCH_INTERVAL_MS);
  let watcher: fs.FSWatcher | undefined;
  if (batch.watchEvents) {
    try {
      watcher = fs.watch(batch.events, () => look());
      watcher.on('error', () => undefined);
    } catch {
      // the interval alone, then
    }
  }
  w.stop = () => {
    clearInterval(timer);
    watcher?.close();
  };
  return w;
}

function describe(exit: ProcessExit): string {
  return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
}

function outcome(batch: Batch, exit: ProcessExit, w: Watched, started: number, proc: RunningProcess): BatchOutcome {
  const events: FrameworkEvent[] = batch.watchEvents ? parseEvents(readFrom(batch.events, 0).toString('utf8')) : [];
  return { events, exit, timedOutAfterSec: w.timedOutAfterSec, stderr: proc.stderrTail(), elapsedMs: Date.now() - started, stdout: proc.stdoutTail() };
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
