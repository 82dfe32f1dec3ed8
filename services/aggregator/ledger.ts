/**
 * Pure bookkeeping of one run: which tests each round holds, the one result kept per test
 * per round (the first to arrive; redeliveries and duplicates are dropped), when a round is
 * complete, whether another round re-runs the failures, and the final report.
 * No I/O: the aggregator feeds it messages and carries out the effects it returns.
 */
import {
  SCHEMA_VERSION,
  type AcceptedRun, type FinalStatus, type ReportTest, type RoundRequest, type RunProgress, type RunReport,
  type TestRef, type TestResult, type TestStatus,
} from '../../shared/messages.js';

/** The worker name on results the aggregator made for a spec that crashed its workers. */
export const CRASHED = 'crashed';
/** Batches kept for a report's timeline (a bigger run's report shows its first ones). */
const MAX_BATCHES = 5000;

export const DROPPED_MESSAGE = "Example didn't run because of a timeout or a drop";

export type Effect =
  | { kind: 'round'; request: RoundRequest }
  | { kind: 'report'; report: RunReport };

interface Round {
  number: number;
  /** Undefined until the dispatcher's plan arrives (results may be buffered before). */
  tests?: TestRef[];
  /** A re-run round: the tests it was decided for (known before its plan arrives). */
  expected?: TestRef[];
  results: Map<string, TestResult & { worker: string }>;
  /** Planned tests still without a result (kept so completion is O(1) per result). */
  waiting: Set<string>;
  startedAt: number;
}

export class RunLedger {
  readonly rounds = new Map<number, Round>();
  current = 1;
  report?: RunReport;
  /** A next round decided but not yet confirmed as sent. */
  pendingRound?: RoundRequest;
  private error?: string;
  /** Each test's final status so far (kept as results come, so progress is O(1)). */
  private readonly standing = new Map<string, FinalStatus>();
  private readonly everFailed = new Set<string>();
  /** A failure that came after the same round's pass of the test (kept apart: the pass stands). */
  private readonly failedToo = new Map<string, TestResult & { worker: string }>();
  private readonly counts: Record<FinalStatus, number> = { passed: 0, failed: 0, flaky: 0, pending: 0, not_run: 0 };
  /** Why the run stopped before every test ran (cancelled, too many failures). */
  private stopped?: string;
  private cancelled = false;
  /** Slots whose setup command failed (out of the run). */
  readonly setupFailures: Array<{ worker: string; message: string }> = [];
  /** The batches' results as they came, for the report's timeline (at most MAX_BATCHES). */
  private readonly batches: NonNullable<RunReport['batches']> = [];

  constructor(readonly run: AcceptedRun) {}

  get finished(): boolean {
    return this.report !== undefined;
  }

  private round(n: number, now: number): Round {
    let r = this.rounds.get(n);
    if (!r) {
      r = { number: n, results: new Map(), waiting: new Set(), startedAt: now };
      this.rounds.set(n, r);
    }
    return r;
  }

  onPlanned(round: number, tests: TestRef[], error: string | undefined, now: number): Effect[] {
    if (this.finished) return [];
    const r = this.round(round, now);
    if (r.tests) return []; // a duplicate plan (dispatcher redelivery): the first one stands
    r.tests = tests;
    r.waiting = new Set(tests.filter((t) => !r.results.has(t.id)).map((t) => t.id));
    r.startedAt = now;
    if (round === 1 && (error || tests.length === 0)) {
      this.error = error ?? 'no tests to run';
      return this.finish(now);
    }
    return this.maybeComplete(now);
  }

  onResults(round: number, worker: string, results: TestResult[], now: number, elapsedMs?: number): Effect[] {
    if (this.finished) return [];
    const r = this.round(round, now);
    if (this.batches.length < MAX_BATCHES && results.length > 0) {
      const ms = elapsedMs ?? results.reduce((s, x) => s + x.durationMs, 0);
      const timedOut = results.some((x) => x.status === 'failed' && /^timed out after/.test(x.message ?? ''));
      this.batches.push({
        worker, round, startedAt: now - ms, finishedAt: now, tests: results.length, failed: results.filter((x) => x.status === 'failed').length,
        ...(timedOut ? { timedOut } : {}), ...(worker === CRASHED ? { crashed: true } : {}),
      });
    }
    for (const res of results) {
      // Exactly one result per test per round: the first. A redelivered spec's second run,
      // or a split batch's overlap, adds nothing.
      const kept = r.results.get(res.testId);
      if (!kept) {
        r.results.set(res.testId, { ...res, worker });
        r.waiting.delete(res.testId);
        if (res.retried) this.everFailed.add(res.testId); // failed, then passed on the framework's own retry
        this.stand(res.testId, res.status);
      } else if (kept.status === 'passed' && res.status === 'failed' && !this.failedToo.has(res.testId)) {
        // ... but a failure that comes second is still a failure the test had: a dead
        // worker's salvaged attempt can arrive after its re-run passed. Flaky, not passed.
        this.failedToo.set(res.testId, { ...res, worker });
        this.everFailed.add(res.testId);
        this.stand(res.testId, 'passed');
      }
    }
    const limit = this.failureLimit();
    if (limit !== undefined) {
      const failures = this.finalFailures();
      if (failures >= limit) {
        this.stopped = `stopped after ${failures} failed test${failures === 1 ? '' : 's'} (${this.run.failFast && this.run.maxFailures === undefined ? '--fail-fast' : `--max-failures ${limit}`})`;
        this.pendingRound = undefined;
        return this.finish(now);
      }
    }
    return this.maybeComplete(now);
  }

  /** Stop after this many failed tests (--max-failures, or 1 with --fail-fast alone). */
  private failureLimit(): number | undefined {
    return this.run.maxFailures ?? (this.run.failFast ? 1 : undefined);
  }

  /**
   * Failed tests that count toward --max-failures: with --fail-fast every failure as it
   * comes; else those no re-run can save any more (the last round, a round with more
   * failures than the re-run threshold allows, a test that crashed its worker).
   */
  private finalFailures(): number {
    if (this.run.failFast) return this.counts.failed;
    const r = this.rounds.get(this.current);
    const total = this.rounds.get(1)?.tests?.length;
    if (!r || total === undefined) return 0;
    const failed = [...r.results.values()].filter((x) => x.status === 'failed');
    const final = (x: (typeof failed)[number]) => x.worker === CRASHED || !!x.once;
    const noRerun = this.current >= this.run.maxRounds || failed.filter((x) => !final(x)).length / total > this.run.rerunThreshold;
    return noRerun ? failed.length : failed.filter(final).length;
  }

  /** Cancelled: what has finished is reported, the rest is `not_run`. */
  onCancel(by: string, now: number): Effect[] {
    if (this.finished) return [];
    this.cancelled = true;
    this.stopped = `cancelled by ${by}`;
    this.pendingRound = undefined;
    return this.finish(now);
  }

  /** The run cannot go on (no worker left whose setup succeeded): it ends with the error. */
  onAbort(error: string, now: number): Effect[] {
    if (this.finished) return [];
    this.error = error;
    this.pendingRound = undefined;
    return this.finish(now);
  }

  /** A slot's setup command failed there: that slot is out of the run. */
  onSetupFailed(worker: string, message: string): void {
    if (!this.setupFailures.some((f) => f.worker === worker)) this.setupFailures.push({ worker, message });
  }

  /** The run's deadline: every test still without a result is failed as dropped. */
  onDeadline(now: number): Effect[] {
    if (this.finished) return [];
    const r = this.rounds.get(this.current);
    // a re-run round not planned yet holds what it was decided for, not the round before
    const tests = r?.tests ?? r?.expected ?? [];
    if (!r?.tests && this.current === 1) this.error = `no tests were discovered before the run's deadline (${this.run.runTimeoutSec} s)`;
    const round = this.round(this.current, now);
    round.tests ??= tests;
    for (const t of round.tests) {
      if (!round.results.has(t.id)) {
        round.results.set(t.id, { testId: t.id, file: t.file, name: t.name, status: 'failed', durationMs: 0, message: DROPPED_MESSAGE, worker: '' });
        round.waiting.delete(t.id);
        this.stand(t.id, 'failed');
      }
    }
    this.pendingRound = undefined;
    return this.finish(now);
  }

  /** The next round was published: forget the pending decision. */
  roundSent(round: number): void {
    if (this.pendingRound?.round === round) this.pendingRound = undefined;
  }

  private maybeComplete(now: number): Effect[] {
    const r = this.rounds.get(this.current);
    if (!r?.tests || this.pendingRound) return [];
    if (r.waiting.size > 0) return [];
    // A test that crashed its worker has had its retries (the delivery limit): no re-run.
    const failed = r.tests.filter((t) => r.results.get(t.id)!.status === 'failed');
    // nor does a file that does not load: it fails the same way every time
    const retryable = failed.filter((t) => r.results.get(t.id)!.worker !== CRASHED && !r.results.get(t.id)!.once);
    const total = this.rounds.get(1)!.tests!.length;
    if (retryable.length > 0 && failed.length / total <= this.run.rerunThreshold && this.current < this.run.maxRounds) {
      this.current += 1;
      this.round(this.current, now).expected = retryable;
      const request: RoundRequest = {
        type: 'round.request', v: SCHEMA_VERSION, id: `${this.run.runId}/r${this.current}/request`,
        runId: this.run.runId, round: this.current, tests: retryable, run: this.run,
      };
      this.pendingRound = request;
      return [{ kind: 'round', request }];
    }
    return this.finish(now);
  }

  private finish(now: number): Effect[] {
    this.report = this.buildReport(now);
    return [{ kind: 'report', report: this.report }];
  }

  /** A test's latest attempt came in (results arrive in round order): its standing now. */
  private stand(id: string, status: TestStatus): void {
    if (status === 'failed') this.everFailed.add(id);
    const now: FinalStatus = status === 'passed' && this.everFailed.has(id) ? 'flaky' : status;
    const before = this.standing.get(id);
    if (before) this.counts[before]--;
    this.standing.set(id, now);
    this.counts[now]++;
  }

  finalTests(): ReportTest[] {
    const tests = this.rounds.get(1)?.tests ?? [];
    const rounds = [...this.rounds.keys()].sort((a, b) => a - b).map((n) => this.rounds.get(n)!.results);
    return tests.map((t) => {
      const other = this.failedToo.get(t.id);
      const attempts = [...(other ? [other] : []), ...rounds.flatMap((results) => results.get(t.id) ?? [])]
        // the framework's own retries inside an attempt (Playwright's): its failed tries first
        .flatMap((a) => (a.retried ? [...Array.from({ length: a.retried.failures }, () => ({ ...a, status: 'failed' as const, message: a.retried!.message, details: a.retried!.details })), a] : [a]));
      const last = attempts[attempts.length - 1];
      const statuses = attempts.map((a) => a.status as TestStatus);
      // a run that stopped early: a test that never ran is not a failure of it
      let status: FinalStatus = last ? last.status : this.stopped ? 'not_run' : 'failed';
      const firstFailure = attempts.find((a) => a.status === 'failed');
      if (status === 'passed' && firstFailure) status = 'flaky';
      const shown = status === 'failed' ? last : status === 'flaky' ? firstFailure : last;
      return {
        id: t.id,
        file: t.file,
        // the name its run gave it, if that differs (resolve.ts runName: an RSpec one-liner)
        name: last?.name || t.name,
        status,
        durationMs: last?.durationMs ?? 0,
        ...(shown?.message && status !== 'passed' ? { message: shown.message } : {}),
        ...(shown?.details && status !== 'passed' ? { details: shown.details } : {}),
        attempts: statuses,
        ...(last?.worker ? { worker: last.worker } : {}),
      };
    });
  }

  buildReport(now: number): RunReport {
    const tests = this.finalTests();
    const count = (s: FinalStatus) => tests.filter((t) => t.status === s).length;
    const totals = { total: tests.length, passed: count('passed'), failed: count('failed'), flaky: count('flaky'), pending: count('pending'), notRun: count('not_run') };
    return {
      type: 'run.report', v: SCHEMA_VERSION, id: `${this.run.runId}/report`, runId: this.run.runId,
      status: this.error ? 'error' : this.cancelled ? 'cancelled' : totals.failed > 0 ? 'failed' : 'passed',
      ...(this.error ? { error: this.error } : {}),
      ...(this.stopped ? { stopped: this.stopped } : {}),
      ...(this.setupFailures.length ? { setupFailures: [...this.setupFailures] } : {}),
      adapter: this.run.adapter, cwd: this.run.cwd,
      startedAt: this.run.acceptedAt, finishedAt: now, rounds: Math.max(...this.rounds.keys(), 1),
      totals, tests,
      ...(this.batches.length ? { batches: [...this.batches] } : {}),
    };
  }

  progress(now: number, activeWorkers: number): RunProgress {
    const r = this.rounds.get(this.current);
    const tests = r?.tests ?? [];
    const done = tests.length - (r?.waiting.size ?? 0);
    const count = (s: FinalStatus) => this.counts[s];
    const elapsed = (now - (r?.startedAt ?? now)) / 1000;
    const etaSec = done > 0 && done < tests.length ? Math.round(((tests.length - done) * elapsed) / done) : done === tests.length && tests.length > 0 ? 0 : null;
    return {
      type: 'run.progress', v: SCHEMA_VERSION, id: `${this.run.runId}/progress/${now}`, runId: this.run.runId,
      round: this.current, total: tests.length, done,
      passed: count('passed'), failed: count('failed'), flaky: count('flaky'), pending: count('pending'),
      activeWorkers, etaSec, startedAt: this.run.acceptedAt,
    };
  }
}
