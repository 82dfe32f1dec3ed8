/**
 * The aggregator: collects results into one ledger per run (ledger.ts), starts re-run
 * rounds, fails what never came back by the deadline, and publishes progress and the final
 * report (also written to disk).
 *
 * Durability: every message is appended to the run's journal before it is acked, and the
 * decisions taken (round sent, report sent) are journaled after they are confirmed. An
 * aggregator that restarts replays its journals and carries out what was decided but not
 * confirmed, so a crash loses no result and sends no round twice in the normal case.
 */
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { Broker, type Delivery } from '../../shared/broker.js';
import type { Logger } from '../../shared/log.js';
import type { Lifecycle } from '../../shared/lifecycle.js';
import {
  AggregatorMessage, Heartbeat, Job, SCHEMA_VERSION, parseMessage, type RunFinished,
  type AcceptedRun, type RoundPlanned, type RunReport, type TestRef, type TestResult,
} from '../../shared/messages.js';
import { EXCHANGES, QUEUES, ROUTING, SPEC_DELIVERY_LIMIT, reportKey, SERVICE_DELIVERY_LIMIT } from '../../shared/topology.js';
import { writeReportFiles } from '../../shared/report.js';
import { CRASHED, RunLedger, type Effect } from './ledger.js';
import { Journal } from './journal.js';

export interface AggregatorOptions {
  brokerUrl: string;
  /** Reports go to `<reportDir>/<runId>/` unless the run request names its own directory. */
  reportDir: string;
  /** Journals of runs in progress. */
  stateDir: string;
  log: Logger;
  /** Minimum time between two progress messages of one run. */
  progressIntervalMs?: number;
  /**
   * An invariant broke (a journal entry could not be made durable: disk full, directory
   * gone): the aggregator has stopped taking messages and closed its connection, so what it
   * held goes back to the queue for a healthy one. The process should exit.
   */
  onFatal?: (err: Error) => void;
}

type JournalEntry =
  | { k: 'accepted'; run: AcceptedRun }
  | { k: 'planned'; round: number; tests: TestRef[]; error?: string }
  | { k: 'results'; round: number; worker: string; results: TestResult[] }
  | { k: 'round-sent'; round: number }
  | { k: 'report-sent' };

interface LiveRun {
  ledger: RunLedger;
  deadline?: NodeJS.Timeout;
  progressTimer?: NodeJS.Timeout;
  lastProgress: number;
  reportSent: boolean;
  /** How round 1's tests were found (for the progress line; not journaled). */
  discovery?: RoundPlanned['discovery'];
  /** Per spec: its wall time minus its tests' durations (not journaled: a hint). */
  overheads: number[];
  /** Decided effects (a round to request, the report) not yet confirmed by the broker, in
   * order: retried on their own until they are (the message that decided them is acked). */
  outbox: Effect[];
  flushing?: Promise<void>;
  retry?: NodeJS.Timeout;
  retryMs: number;
}

/** Finished runs remembered (their ids refused if used again). */
const FINISHED_RUNS_KEPT = 10_000;

/** Backoff of an outbox whose publish failed. */
const OUTBOX_RETRY_MIN_MS = 500;
const OUTBOX_RETRY_MAX_MS = 10_000;

/** The longest delay a Node timer takes (2^31 - 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Busy slots per run, from supervisor heartbeats (transient). */
class WorkerActivity {
  private readonly bySupervisor = new Map<string, { at: number; busy: Map<string, number> }>();
  record(hb: Heartbeat) {
    const busy = new Map<string, number>();
    for (const s of hb.slots) if (s.state === 'busy' && s.runId) busy.set(s.runId, (busy.get(s.runId) ?? 0) + 1);
    this.bySupervisor.set(hb.supervisor, { at: hb.at, busy });
  }
  active(runId: string, now: number): number {
    let n = 0;
    for (const [id, s] of this.bySupervisor) {
      if (now - s.at > 10_000) this.bySupervisor.delete(id);
      else n += s.busy.get(runId) ?? 0;
    }
    return n;
  }
}

export class Aggregator {
  state: Lifecycle = 'starting';
  private readonly broker: Broker;
  private readonly runs = new Map<string, LiveRun>();
  /** Runs whose report is out, by id (bounded, oldest first): a run id names one run. */
  private readonly finished = new Map<string, { acceptedAt: number; finishedAt: number; status: string }>();
  private readonly activity = new WorkerActivity();
  private readonly log: Logger;
  private readonly journal: Journal<JournalEntry>;

  constructor(private readonly opts: AggregatorOptions) {
    this.log = opts.log;
    this.broker = new Broker({ url: opts.brokerUrl, name: 'warren aggregator', log: opts.log });
    this.journal = new Journal(opts.stateDir);
  }

  async start(): Promise<void> {
    await this.broker.start();
    await this.recover();
    await this.broker.consume(QUEUES.aggregator, (d) => this.onMessage(d), { prefetch: 50, maxDeliveries: SERVICE_DELIVERY_LIMIT });
    await this.broker.consume(QUEUES.crashed, (d) => this.onCrashed(d), { prefetch: 10, maxDeliveries: SERVICE_DELIVERY_LIMIT });
    await this.broker.watch(EXCHANGES.status, '', `warren.status.aggregator.${randomUUID().slice(0, 8)}`, async (d) => {
      const hb = parseMessage(Heartbeat, d.body);
      if (hb.ok) this.activity.record(hb.value);
      d.ack();
    }, 30_000);
    this.state = 'running';
    this.log.info('aggregator running');
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'draining';
    await this.broker.cancelConsumers().catch(() => undefined);
    for (const live of this.runs.values()) {
      clearTimeout(live.deadline);
      clearTimeout(live.progressTimer);
      clearTimeout(live.retry);
    }
    await this.broker.close().catch(() => undefined);
    await this.journal.close();
    this.state = 'stopped';
  }

  // ---- messages ------------------------------------------------------------------------

  private async onMessage(d: Delivery): Promise<void> {
    const parsed = parseMessage(AggregatorMessage, d.body);
    if (!parsed.ok) return d.deadLetter(parsed.reason);
    const msg = parsed.value;
    const now = Date.now();
    if (msg.type === 'run.accepted') {
      const done = this.finished.get(msg.runId);
      if (done && done.acceptedAt !== msg.run.acceptedAt) await this.refuseReused(msg.run, done);
      else if (!done && !this.runs.has(msg.runId)) {
        this.open(msg.run);
        await this.record(msg.runId, { k: 'accepted', run: msg.run });
      }
      // (the same acceptance again: a redelivery, nothing to do)
      return d.ack();
    }
    const live = this.runs.get(msg.runId);
    if (!live && this.finished.has(msg.runId)) return d.ack(); // late duplicate of a finished run
    if (!live) {
      // A run this aggregator never accepted (another aggregator's, or from before its
      // journals were lost): keep it for an operator rather than drop it.
      return d.deadLetter(`unknown run ${msg.runId}: no run.accepted seen by this aggregator`);
    }
    if (live.ledger.finished) return d.ack(); // late duplicate of a finished run
    let entry: JournalEntry;
    let effects: Effect[];
    if (msg.type === 'round.planned') {
      entry = { k: 'planned', round: msg.round, tests: msg.tests, error: msg.error };
      if (msg.discovery) live.discovery = msg.discovery;
      effects = live.ledger.onPlanned(msg.round, msg.tests, msg.error, now);
    } else {
      entry = { k: 'results', round: msg.round, worker: msg.worker, results: msg.results };
      if (msg.elapsedMs !== undefined && msg.results.length > 0) {
        live.overheads.push(Math.max(0, msg.elapsedMs - msg.results.reduce((s, r) => s + r.durationMs, 0)));
      }
      effects = live.ledger.onResults(msg.round, msg.worker, msg.results, now);
    }
    await this.record(msg.runId, entry);
    await this.carryOut(live, effects);
    this.scheduleProgress(live);
    d.ack();
  }

  /** A spec dead-lettered by the work queue's delivery limit: it killed its worker each time. */
  private async onCrashed(d: Delivery): Promise<void> {
    const parsed = parseMessage(Job, d.body);
    if (!parsed.ok) return d.deadLetter(parsed.reason);
    const job = parsed.value;
    const live = this.runs.get(job.runId);
    if (!live || live.ledger.finished) return d.ack();
    const deaths = deathCount(d.headers) ?? SPEC_DELIVERY_LIMIT + 1;
    if (job.type === 'discover') {
      // the run has no tests to wait for: it fails now, with the reason
      const error = `discovery crashed its worker ${deaths} times (every worker that ran it died while it ran)`;
      this.log.warn({ runId: job.runId }, error);
      const effects = live.ledger.onPlanned(1, [], error, Date.now());
      await this.record(job.runId, { k: 'planned', round: 1, tests: [], error });
      await this.carryOut(live, effects);
      return d.ack();
    }
    const results: TestResult[] = job.tests.map((t) => ({
      testId: t.id, file: t.file, name: t.name, status: 'failed', durationMs: 0,
      message: `crashed its worker ${deaths} times`,
      details: `Every worker that ran this spec died while running it (delivery limit ${SPEC_DELIVERY_LIMIT}); it was taken out of circulation.`,
    }));
    this.log.warn({ runId: job.runId, specId: job.id, tests: job.tests.map((t) => t.id) }, 'spec crashed its workers, failing it');
    const effects = live.ledger.onResults(job.round, CRASHED, results, Date.now());
    await this.record(job.runId, { k: 'results', round: job.round, worker: CRASHED, results });
    await this.carryOut(live, effects);
    this.scheduleProgress(live);
    d.ack();
  }

  // ---- runs ----------------------------------------------------------------------------

  private open(run: AcceptedRun): LiveRun {
    const live: LiveRun = { ledger: new RunLedger(run), lastProgress: 0, reportSent: false, overheads: [], outbox: [], retryMs: OUTBOX_RETRY_MIN_MS };
    this.runs.set(run.runId, live);
    this.armDeadline(live);
    this.log.info({ runId: run.runId, deadline: new Date(run.deadline).toISOString() }, 'run opened');
    return live;
  }

  /** The run's deadline timer (re-armed in steps: a timer past 24.8 days would fire at once). */
  private armDeadline(live: LiveRun): void {
    const wait = Math.max(0, live.ledger.run.deadline - Date.now());
    live.deadline = setTimeout(() => {
      if (Date.now() < live.ledger.run.deadline) this.armDeadline(live);
      else void this.onDeadline(live);
    }, Math.min(wait, MAX_TIMER_MS));
  }

  private async onDeadline(live: LiveRun): Promise<void> {
    if (live.ledger.finished) return;
    this.log.warn({ runId: live.ledger.run.runId }, 'run deadline reached, failing the tests that did not come back');
    const effects = live.ledger.onDeadline(Date.now());
    try {
      await this.carryOut(live, effects);
    } catch (err) {
      this.log.error({ err, runId: live.ledger.run.runId }, 'could not publish the report at the deadline');
    }
  }

  /** Carries out decided effects through the run's outbox (see LiveRun.outbox). */
  private async carryOut(live: LiveRun, effects: Effect[]): Promise<void> {
    // the report ends the run: a round still waiting to be requested is moot
    if (effects.some((e) => e.kind === 'report')) live.outbox = live.outbox.filter((e) => e.kind === 'report');
    live.outbox.push(...effects);
    await this.flushOutbox(live);
  }

  private flushOutbox(live: LiveRun): Promise<void> {
    // a flush under way may have looked at the outbox before these effects came: after it
    if (live.flushing) return live.flushing.then(() => this.flushOutbox(live));
    if (live.outbox.length === 0) return Promise.resolve();
    clearTimeout(live.retry);
    live.flushing = (async () => {
      while (live.outbox.length > 0 && this.state !== 'stopped' && this.state !== 'failed') {
        const effect = live.outbox[0]!;
        try {
          await this.apply(live, effect);
          live.outbox = live.outbox.filter((e) => e !== effect);
          live.retryMs = OUTBOX_RETRY_MIN_MS;
        } catch (err) {
          this.log.warn({ err, runId: live.ledger.run.runId, effect: effect.kind, retryInMs: live.retryMs }, 'a decided effect was not confirmed; retrying it');
          live.retry = setTimeout(() => void this.flushOutbox(live), live.retryMs);
          live.retryMs = Math.min(OUTBOX_RETRY_MAX_MS, live.retryMs * 2);
          return;
        }
      }
    })().finally(() => (live.flushing = undefined));
    return live.flushing;
  }

  private async apply(live: LiveRun, effect: Effect): Promise<void> {
    const runId = live.ledger.run.runId;
    if (effect.kind === 'round') {
      await this.broker.publish(EXCHANGES.runs, ROUTING.roundRequest, effect.request);
      live.ledger.roundSent(effect.request.round);
      await this.record(runId, { k: 'round-sent', round: effect.request.round });
      this.log.info({ runId, round: effect.request.round, tests: effect.request.tests.length }, 're-running failures in a new round');
    } else if (!live.reportSent) {
      await this.finish(live, effect.report);
    }
  }

  private async finish(live: LiveRun, report: RunReport): Promise<void> {
    const runId = report.runId;
    const overheads = [...live.overheads].sort((a, b) => a - b);
    if (overheads.length) report = { ...report, batchOverheadMs: Math.round(overheads[Math.floor(overheads.length / 2)]!) };
    clearTimeout(live.deadline);
    clearTimeout(live.progressTimer);
    const dir = live.ledger.run.reportDir ?? path.join(this.opts.reportDir, runId);
    try {
      writeReportFiles(dir, report);
    } catch (err) {
      this.log.error({ err, runId, dir }, 'could not write the report files');
    }
    await this.publishProgress(live);
    await this.broker.publish(EXCHANGES.reports, reportKey(runId, 'report'), report, { mandatory: false });
    live.reportSent = true;
    const finished: RunFinished = { type: 'run.finished', v: SCHEMA_VERSION, runId, status: report.status, deadline: live.ledger.run.deadline };
    await this.broker.publish(EXCHANGES.reports, reportKey(runId, 'finished'), finished, { mandatory: false, persistent: false });
    await this.record(runId, { k: 'report-sent' });
    this.retire(live, report.status);
    this.log.info({ runId, status: report.status, ...report.totals, dir }, 'run finished');
    // The journal has done its job; the report files are the record now.
    await this.journal.remove(runId);
  }

  /** A finished run keeps only its tombstone (a late message is acked, a reused id refused). */
  private retire(live: LiveRun, status: string): void {
    const run = live.ledger.run;
    this.runs.delete(run.runId);
    this.finished.set(run.runId, { acceptedAt: run.acceptedAt, finishedAt: Date.now(), status });
    if (this.finished.size > FINISHED_RUNS_KEPT) this.finished.delete(this.finished.keys().next().value!);
  }

  /**
   * A run request with the id of a run that finished: a run id names one run, so this one
   * is refused with a report that says why (its follower, `warren run --run-id`, exits 2 with
   * it) and the workers are told again that the id is finished (they drop its discovery).
   */
  private async refuseReused(run: AcceptedRun, done: { finishedAt: number; status: string }): Promise<void> {
    const error = `run id ${run.runId} was used by a run that finished at ${new Date(done.finishedAt).toISOString()} (${done.status}); a run id names one run: give this one another --run-id`;
    this.log.warn({ runId: run.runId }, 'a finished run id used again; refused');
    const refusal = new RunLedger(run);
    const [effect] = refusal.onPlanned(1, [], error, Date.now());
    const report = effect?.kind === 'report' ? effect.report : undefined;
    if (report) await this.broker.publish(EXCHANGES.reports, reportKey(run.runId, 'report'), report, { mandatory: false });
    const finished: RunFinished = { type: 'run.finished', v: SCHEMA_VERSION, runId: run.runId, status: 'error', deadline: run.deadline };
    await this.broker.publish(EXCHANGES.reports, reportKey(run.runId, 'finished'), finished, { mandatory: false, persistent: false });
  }

  private scheduleProgress(live: LiveRun): void {
    if (live.ledger.finished || live.progressTimer) return;
    const wait = Math.max(0, live.lastProgress + (this.opts.progressIntervalMs ?? 500) - Date.now());
    live.progressTimer = setTimeout(() => {
      live.progressTimer = undefined;
      void this.publishProgress(live).catch((err) => this.log.debug({ err }, 'progress not sent'));
    }, wait);
  }

  private async publishProgress(live: LiveRun): Promise<void> {
    live.lastProgress = Date.now();
    const runId = live.ledger.run.runId;
    const msg = { ...live.ledger.progress(Date.now(), this.activity.active(runId, Date.now())), discovery: live.discovery };
    await this.broker.publish(EXCHANGES.reports, reportKey(runId, 'progress'), msg, { mandatory: false, persistent: false });
  }

  /** Appends to a run's journal; failing that, the aggregator cannot keep its promise. */
  private async record(runId: string, entry: JournalEntry): Promise<void> {
    try {
      await this.journal.append(runId, entry);
    } catch (err) {
      this.fail(err as Error);
      throw err;
    }
  }

  /** Stops loudly: no more messages, the connection closed (unacked ones go back). */
  private fail(err: Error): void {
    if (this.state === 'failed' || this.state === 'stopped') return;
    this.state = 'failed';
    this.log.fatal({ err }, 'the journal cannot be written; stopping (what this aggregator held goes back to the queue)');
    void this.broker.close().catch(() => undefined);
    this.opts.onFatal?.(err);
  }

  // ---- recovery ----------------------------------------------------------------------

  /** Rebuilds the runs in progress from their journals and finishes what was decided. */
  private async recover(): Promise<void> {
    for (const { entries } of this.journal.readAll()) {
      const first = entries[0];
      if (!first || first.k !== 'accepted') continue;
      const live = this.open(first.run);
      let reportSent = false;
      const now = Date.now();
      for (const e of entries.slice(1)) {
        if (e.k === 'planned') live.ledger.onPlanned(e.round, e.tests, e.error, now);
        else if (e.k === 'results') live.ledger.onResults(e.round, e.worker, e.results, now);
        else if (e.k === 'round-sent') live.ledger.roundSent(e.round);
        else if (e.k === 'report-sent') reportSent = true;
      }
      this.log.info({ runId: first.run.runId, entries: entries.length }, 'run recovered from its journal');
      if (live.ledger.pendingRound) await this.carryOut(live, [{ kind: 'round', request: live.ledger.pendingRound }]);
      else if (live.ledger.report && !reportSent) await this.finish(live, live.ledger.report);
      else if (reportSent) {
        clearTimeout(live.deadline);
        this.retire(live, live.ledger.report?.status ?? 'error');
        await this.journal.remove(first.run.runId);
      }
    }
  }
}

/** How many times the broker counted this message's deaths (from x-death). */
function deathCount(headers: Record<string, unknown>): number | undefined {
  const deaths = headers['x-death'];
  if (!Array.isArray(deaths) || deaths.length === 0) return undefined;
  const first = deaths[0] as { count?: number };
  // x-death counts dead-letterings; deliveries that killed a worker = delivery limit + 1
  return first.count !== undefined ? SPEC_DELIVERY_LIMIT + first.count : undefined;
}
