/**
 * The aggregator: collects results into one ledger per run (ledger.ts), starts re-run
 * rounds, fails what never came back by the deadline, and publishes progress and the final
 * report (also written to disk).
 *
 * No single coordinator: several aggregators may run, on different hosts. Each is a replica
 * of every run's state, the fold of the journal stream (journal.ts) that the broker
 * replicates; one of them, the holder of the lease `warren.aggregator.active`, is active: it
 * alone consumes the aggregator's queues, journals what they bring, keeps the deadlines and
 * carries out what the entries decide (a round to request, the report). When its
 * connection goes (process killed, host gone), another replica takes the lease, catches up
 * with the stream and carries on with every run where the journal left it: what was decided
 * but not confirmed is done again (a round request is idempotent at the dispatcher, a
 * report is one per run id at the follower), what was not journaled comes back from the
 * queue, since a message is acked only once its entry is in the stream.
 */
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { Broker, type Delivery, type Lease, type Subscription } from '../../shared/broker.js';
import type { Logger } from '../../shared/log.js';
import type { Lifecycle } from '../../shared/lifecycle.js';
import { senderProblem } from '../../shared/roles.js';
import {
  AggregatorMessage, Heartbeat, Job, SCHEMA_VERSION, isConfinedPath, labelsMatch, parseMessage, type RunFinished, type RunsState,
  type AcceptedRun, type RoundPlanned, type RunReport, type TestRef, type TestResult,
} from '../../shared/messages.js';
import { EXCHANGES, LEASES, QUEUES, SPEC_DELIVERY_LIMIT, ROUTING, reportKey, SERVICE_DELIVERY_LIMIT } from '../../shared/topology.js';
import { writeReportFiles } from '../../shared/report.js';
import { CRASHED, RunLedger, type Effect } from './ledger.js';
import { Journal } from './journal.js';

export interface AggregatorOptions {
  /** One URL, or several comma-separated (the nodes of a cluster). */
  brokerUrl: string;
  /** Reports go to `<reportDir>/<runId>/` unless the run request names its own directory. */
  reportDir: string;
  log: Logger;
  /** Minimum time between two progress messages of one run. */
  progressIntervalMs?: number;
  /** Take each message only from the roles allowed to send it (shared/roles.ts). */
  requireRoles?: boolean;
  /** How often a standby asks for the lease (default 1 s: the time a takeover can take
   * once the broker has seen the active one's connection go). */
  leasePollMs?: number;
  /**
   * An invariant broke (the journal stream was deleted: what every replica knew is gone):
   * the aggregator has stopped taking messages and closed its connection, so what it held
   * goes back to the queue. The process should exit.
   */
  onFatal?: (err: Error) => void;
  /** A private Warren's namespace on a shared broker (shared/broker.ts). */
  namespace?: string;
}

/** What the journal holds; `at` is the time the active aggregator took it in (every replica
 * folds the same entries with the same times into the same state). */
type JournalEntry =
  | { k: 'accepted'; runId: string; run: AcceptedRun }
  | { k: 'planned'; runId: string; at: number; round: number; tests: TestRef[]; error?: string; discovery?: RoundPlanned['discovery'] }
  | { k: 'results'; runId: string; at: number; round: number; worker: string; results: TestResult[]; overheadMs?: number; elapsedMs?: number }
  | { k: 'deadline'; runId: string; at: number }
  | { k: 'round-sent'; runId: string; round: number }
  | { k: 'cancel'; runId: string; at: number; by: string }
  | { k: 'setup-failed'; runId: string; at: number; worker: string; message: string }
  | { k: 'abort'; runId: string; at: number; error: string }
  | { k: 'report-sent'; runId: string; status: string };

interface LiveRun {
  ledger: RunLedger;
  /** The journal offset of its first entry (a new replica must read from there). */
  since: number;
  deadline?: NodeJS.Timeout;
  progressTimer?: NodeJS.Timeout;
  lastProgress: number;
  /** How round 1's tests were found (for the progress line). */
  discovery?: RoundPlanned['discovery'];
  /** Per spec: its wall time minus its tests' durations, plus the wait since its worker's
   * previous result (the trip through the broker and the next process's start). */
  overheads: number[];
  /** The same for each worker's first batch (no wait known): used when no other came. */
  firstOverheads: number[];
  /** Per worker: when its latest results came. */
  lastResultAt: Map<string, number>;
  /** Decided effects (a round to request, the report) not yet confirmed by the broker, in
   * order: retried on their own until they are (the message that decided them is acked). */
  outbox: Effect[];
  /** Every worker that could run it left it: the abort is being journaled. */
  aborting?: boolean;
  flushing?: Promise<void>;
  retry?: NodeJS.Timeout;
  retryMs: number;
}

/** Between two batches of a worker, a wait longer than this is not the batch's cost (the
 * worker served another run, or the queue was empty). */
const BATCH_GAP_MAX_MS = 2_000;

/**
 * What a worker spent between its previous results and this batch's start (the previous
 * result's confirm, the ack, the next delivery, the next process): part of what a batch
 * costs, which the dispatcher weighs against balance when it cuts the next runs' plans.
 */
export function batchGap(prev: number | undefined, e: { at: number; elapsedMs?: number }): number | undefined {
  if (prev === undefined || e.elapsedMs === undefined) return undefined;
  const gap = e.at - e.elapsedMs - prev;
  return gap < BATCH_GAP_MAX_MS ? Math.max(0, gap) : undefined;
}

/** Finished runs remembered (their ids refused if used again). */
const FINISHED_RUNS_KEPT = 10_000;

/** At most one journal checkpoint per this long (written as runs finish). */
const CHECKPOINT_EVERY_MS = 5_000;

/** Where a new replica starts reading the journal: every run in progress began there or
 * later; the runs finished before it are the tombstones. */
interface Checkpoint {
  offset: number;
  finished: Array<[string, Tombstone]>;
}

interface Tombstone {
  acceptedAt: number;
  finishedAt: number;
  status: string;
  /** (absent in checkpoints of older versions) */
  deadline?: number;
  shard?: number;
}

/** How often the active aggregator tells the runs in progress (`runs.state`). */
const STATE_EVERY_MS = 2_000;
/** A run ended this lately is still listed (slots drop its specs)... */
const ENDED_LISTED_MS = 10 * 60_000;
/** ... and its shard this lately (slots look there for its leftover specs, to drop them). */
const ENDED_SHARD_LISTED_MS = 60_000;

/** Backoff of an outbox whose publish failed. */
const OUTBOX_RETRY_MIN_MS = 500;
const OUTBOX_RETRY_MAX_MS = 10_000;

/** The longest delay a Node timer takes (2^31 - 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Busy slots per run, and the live slots, from supervisor heartbeats (transient). */
class WorkerActivity {
  private readonly bySupervisor = new Map<string, { at: number; busy: Map<string, number>; hb: Heartbeat }>();
  record(hb: Heartbeat) {
    const busy = new Map<string, number>();
    for (const s of hb.slots) if (s.state === 'busy' && s.runId) busy.set(s.runId, (busy.get(s.runId) ?? 0) + 1);
    this.bySupervisor.set(hb.supervisor, { at: hb.at, busy, hb });
  }
  /** Worker ids of the live slots whose supervisor has these labels (not drained). */
  slotsFor(labels: readonly string[], now: number): string[] {
    const out: string[] = [];
    for (const { at, hb } of this.bySupervisor.values()) {
      if (now - at > 10_000 || hb.drained || hb.state !== 'running' || !labelsMatch(labels, hb.labels)) continue;
      for (const s of hb.slots) if (s.state !== 'stopped') out.push(`${hb.supervisor}/${s.index}`);
    }
    return out;
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
  /** Holds the lease: consumes the queues, keeps the deadlines, carries out effects. */
  active = false;
  private readonly broker: Broker;
  private readonly runs = new Map<string, LiveRun>();
  /** Runs cancelled before their acceptance was journaled (folded from the journal). */
  private readonly cancelledEarly = new Map<string, { by: string; at: number }>();
  /** Acceptances being journaled: a message of the same run waits for them. */
  private readonly accepting = new Map<string, Promise<void>>();
  /** Runs whose report is out, by id (bounded, oldest first): a run id names one run. */
  private readonly finished = new Map<string, Tombstone>();
  private readonly activity = new WorkerActivity();
  private readonly log: Logger;
  private readonly journal: Journal<JournalEntry>;
  private lease?: Lease;
  /** Increases at each promotion and demotion: a promotion of an older term gives up. */
  private term = 0;
  private subscriptions: Subscription[] = [];
  private activeWaiters: Array<() => void> = [];
  private checkpointTimer?: NodeJS.Timeout;
  private lastCheckpoint = 0;
  private stateTimer?: NodeJS.Timeout;
  private stateSoon?: NodeJS.Timeout;

  constructor(private readonly opts: AggregatorOptions) {
    this.log = opts.log;
    this.broker = new Broker({ url: opts.brokerUrl, name: 'warren aggregator', log: opts.log, namespace: opts.namespace });
    this.journal = new Journal<JournalEntry>(this.broker, opts.log, (e, offset) => this.fold(e, offset), (err) => this.fail(err));
  }

  async start(): Promise<void> {
    await this.broker.start();
    const from = await this.readCheckpoint();
    await this.journal.open(from);
    this.log.info({ from, finishedRuns: this.finished.size }, 'reading the journal');
    await this.broker.watch(EXCHANGES.status, '', `warren.status.aggregator.${randomUUID().slice(0, 8)}`, async (d) => {
      const hb = parseMessage(Heartbeat, d.body);
      if (hb.ok) {
        this.activity.record(hb.value);
        // a run some workers left: is any left to run it (a supervisor that was not heard
        // of yet when they left, or went away since)?
        if (this.active) for (const live of this.runs.values()) if (live.ledger.setupFailures.length > 0) this.checkWorkersLeft(live);
      }
      d.ack();
    }, { kind: 'transient' });
    this.lease = this.broker.lease(LEASES.aggregator, this.opts.leasePollMs ?? 1000);
    this.lease.on('acquired', () => void this.promote());
    this.lease.on('lost', () => this.demote('lost its broker connection'));
    this.lease.start();
    this.state = 'running';
    this.log.info('aggregator running (a standby until it holds the lease)');
  }

  /** Resolves once this aggregator is the active one. */
  whenActive(): Promise<void> {
    if (this.active) return Promise.resolve();
    return new Promise((resolve) => this.activeWaiters.push(resolve));
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'draining';
    this.lease?.stop();
    clearTimeout(this.checkpointTimer);
    this.demote('stopping');
    await this.broker.cancelConsumers().catch(() => undefined);
    await this.journal.close();
    await this.broker.close().catch(() => undefined);
    this.state = 'stopped';
  }

  // ---- leadership ----------------------------------------------------------------------

  /** Took the lease: catch up with the journal, then carry on with every run. */
  private async promote(): Promise<void> {
    const term = ++this.term;
    for (;;) {
      try {
        await this.journal.barrier();
        break;
      } catch (err) {
        if (term !== this.term || !this.lease?.held) return;
        this.log.warn({ err }, 'could not catch up with the journal yet; retrying');
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    if (term !== this.term || !this.lease?.held || this.state !== 'running') return;
    this.active = true;
    for (const live of this.runs.values()) {
      this.armDeadline(live);
      // what the journal decided and did not see confirmed is done again
      if (live.ledger.pendingRound) void this.carryOut(live, [{ kind: 'round', request: live.ledger.pendingRound }]);
      else if (live.ledger.report) void this.carryOut(live, [{ kind: 'report', report: live.ledger.report }]);
      this.scheduleProgress(live);
    }
    const subscriptions = [
      await this.broker.consume(QUEUES.aggregator, (d) => this.onMessage(d), { prefetch: 50, maxDeliveries: SERVICE_DELIVERY_LIMIT }),
      await this.broker.consume(QUEUES.crashed, (d) => this.onCrashed(d), { prefetch: 10, maxDeliveries: SERVICE_DELIVERY_LIMIT }),
    ];
    if (term !== this.term) {
      for (const s of subscriptions) await s.cancel();
      return;
    }
    this.subscriptions = subscriptions;
    this.stateTimer = setInterval(() => void this.tellState(), STATE_EVERY_MS);
    void this.tellState();
    this.log.info({ runs: this.runs.size, journalAt: this.journal.position }, 'aggregator active (holds the lease)');
    for (const w of this.activeWaiters.splice(0)) w();
  }

  /** Lost the lease: stop acting; the replica goes on folding the journal. */
  private demote(why: string): void {
    this.term++;
    if (!this.active) return;
    this.active = false;
    clearInterval(this.stateTimer);
    clearTimeout(this.stateSoon);
    this.stateSoon = undefined;
    for (const s of this.subscriptions.splice(0)) void s.cancel();
    this.journal.abort(`no longer the active aggregator: ${why}`);
    for (const live of this.runs.values()) this.quiet(live);
    this.log.warn({ why }, 'aggregator no longer active; standing by');
  }

  /** Timers and pending effects off (the active aggregator owns them). */
  private quiet(live: LiveRun): void {
    clearTimeout(live.deadline);
    clearTimeout(live.progressTimer);
    clearTimeout(live.retry);
    live.progressTimer = undefined;
    live.outbox = [];
  }

  // ---- the journal's fold ------------------------------------------------------------

  /** Applies one journal entry to the runs (on every replica, in stream order). */
  private fold(e: JournalEntry, offset: number): void {
    let effects: Effect[] = [];
    if (e.k === 'accepted') {
      if (this.finished.has(e.runId) || this.runs.has(e.runId)) return;
      const live = this.open(e.run, offset);
      // cancelled before it was accepted (Ctrl-C right after the request)
      const early = this.cancelledEarly.get(e.runId);
      if (!early) return;
      this.cancelledEarly.delete(e.runId);
      effects = live.ledger.onCancel(early.by, early.at);
      if (this.active && effects.length > 0) void this.carryOut(live, effects);
      return;
    }
    const live = this.runs.get(e.runId);
    if (!live) {
      if (e.k === 'cancel' && !this.finished.has(e.runId)) {
        this.cancelledEarly.set(e.runId, { by: e.by, at: e.at });
        if (this.cancelledEarly.size > 1000) this.cancelledEarly.delete(this.cancelledEarly.keys().next().value!);
      }
      return;
    }
    if (e.k === 'planned') {
      if (e.discovery) live.discovery = e.discovery;
      effects = live.ledger.onPlanned(e.round, e.tests, e.error, e.at);
    } else if (e.k === 'results') {
      if (e.overheadMs !== undefined) {
        const gap = batchGap(live.lastResultAt.get(e.worker), e);
        if (gap !== undefined) live.overheads.push(e.overheadMs + gap);
        else live.firstOverheads.push(e.overheadMs);
      }
      live.lastResultAt.set(e.worker, e.at);
      effects = live.ledger.onResults(e.round, e.worker, e.results, e.at, e.elapsedMs);
    } else if (e.k === 'deadline') {
      effects = live.ledger.onDeadline(e.at);
    } else if (e.k === 'round-sent') {
      live.ledger.roundSent(e.round);
    } else if (e.k === 'cancel') {
      effects = live.ledger.onCancel(e.by, e.at);
    } else if (e.k === 'setup-failed') {
      live.ledger.onSetupFailed(e.worker, e.message);
      // here, once the ledger has it: failures handled at once must not each miss the other
      if (this.active) this.checkWorkersLeft(live);
    } else if (e.k === 'abort') {
      effects = live.ledger.onAbort(e.error, e.at);
    } else if (e.k === 'report-sent') {
      this.retire(live, e.status);
      if (this.active) this.checkpointSoon();
      return;
    }
    if (!this.active) return;
    if (effects.length > 0) void this.carryOut(live, effects);
    this.scheduleProgress(live);
  }

  // ---- messages (the active aggregator) ------------------------------------------------

  private async onMessage(d: Delivery): Promise<void> {
    const parsed = parseMessage(AggregatorMessage, d.body);
    if (!parsed.ok) return d.deadLetter(parsed.reason);
    const msg = parsed.value;
    const forged = this.opts.requireRoles ? senderProblem(msg.type, d.userId, msg.runId) : null;
    if (forged) return d.deadLetter(`refused: ${forged}`);
    const now = Date.now();
    if (msg.type === 'run.accepted') {
      const done = this.finished.get(msg.runId);
      if (done && done.acceptedAt !== msg.run.acceptedAt) await this.refuseReused(msg.run, done);
      else if (!done && !this.runs.has(msg.runId)) {
        const appended = this.journal.append({ k: 'accepted', runId: msg.runId, run: msg.run });
        this.accepting.set(msg.runId, appended);
        try {
          await appended;
        } finally {
          this.accepting.delete(msg.runId);
        }
      }
      // (the same acceptance again: a redelivery, nothing to do)
      return d.ack();
    }
    // Messages are handled concurrently (prefetch > 1): the run's plan may come while its
    // acceptance is still being journaled (a cached discovery is that fast).
    await this.accepting.get(msg.runId)?.catch(() => undefined);
    // ... or journaled by the aggregator active before this one, and not read here yet
    if (!this.runs.has(msg.runId) && !this.finished.has(msg.runId)) await this.journal.barrier();
    const live = this.runs.get(msg.runId);
    if (msg.type === 'run.cancel') return this.onCancel(msg, live, d);
    if (!live && this.finished.has(msg.runId)) return d.ack(); // late duplicate of a finished run
    if (!live) {
      // A run no aggregator accepted (from before the journal was lost, or hand-made):
      // keep it for an operator rather than drop it.
      return d.deadLetter(`unknown run ${msg.runId}: no run.accepted in the journal`);
    }
    if (live.ledger.finished) return d.ack(); // late duplicate of a finished run
    if (msg.type === 'setup.failed') {
      await this.journal.append({ k: 'setup-failed', runId: msg.runId, at: now, worker: msg.worker, message: msg.message });
      this.log.warn({ runId: msg.runId, worker: msg.worker, error: msg.message }, 'a worker left the run (its setup failed, or the run is not allowed there)');
    } else if (msg.type === 'round.planned') {
      await this.journal.append({ k: 'planned', runId: msg.runId, at: now, round: msg.round, tests: msg.tests, error: msg.error, discovery: msg.discovery });
    } else {
      const overheadMs = msg.elapsedMs !== undefined && msg.results.length > 0
        ? Math.max(0, msg.elapsedMs - msg.results.reduce((s, r) => s + r.durationMs, 0)) : undefined;
      await this.journal.append({ k: 'results', runId: msg.runId, at: now, round: msg.round, worker: msg.worker, results: msg.results, overheadMs, elapsedMs: msg.elapsedMs });
    }
    d.ack();
  }

  /**
   * `warren cancel`, or Ctrl-C on `warren run`: the run ends now, what finished is reported
   * and the rest is `not_run`; its report's `run.finished` notice stops its tests on every
   * host. A cancel of a finished run tells its end again (the canceller learns it had
   * ended); one that comes before the run's acceptance waits for it in the journal.
   */
  private async onCancel(msg: { runId: string; by: string }, live: LiveRun | undefined, d: Delivery): Promise<void> {
    const done = this.finished.get(msg.runId);
    if (done || live?.ledger.finished) {
      if (done) {
        const finished: RunFinished = { type: 'run.finished', v: SCHEMA_VERSION, runId: msg.runId, status: done.status, deadline: done.deadline ?? 0, finishedAt: done.finishedAt };
        await this.broker.publish(EXCHANGES.reports, reportKey(msg.runId, 'finished'), finished, { mandatory: false, persistent: false });
      }
      return d.ack();
    }
    this.log.warn({ runId: msg.runId, by: msg.by }, live ? 'run cancelled' : 'a run cancelled before its acceptance came; it ends when it does');
    await this.journal.append({ k: 'cancel', runId: msg.runId, at: Date.now(), by: msg.by });
    d.ack();
  }

  /** Every live slot that may serve the run has failed its setup: the run cannot go on. */
  private checkWorkersLeft(live: LiveRun): void {
    const run = live.ledger.run;
    const failed = new Set(live.ledger.setupFailures.map((f) => f.worker));
    const slots = this.activity.slotsFor(run.labels, Date.now());
    if (slots.length === 0 || slots.some((w) => !failed.has(w)) || live.ledger.finished || live.aborting) return;
    live.aborting = true;
    const first = live.ledger.setupFailures[0]!;
    const error = `no worker is left to run it (${failed.size} that could left the run): ${first.worker}: ${first.message}`;
    void this.journal.append({ k: 'abort', runId: run.runId, at: Date.now(), error }).catch((err) => {
      live.aborting = false;
      this.log.warn({ err }, 'could not journal the abort; the next heartbeat checks again');
    });
  }

  /** A spec dead-lettered by the work queue's delivery limit: it killed its worker each time. */
  private async onCrashed(d: Delivery): Promise<void> {
    const parsed = parseMessage(Job, d.body);
    if (!parsed.ok) return d.deadLetter(parsed.reason);
    const job = parsed.value;
    const forged = this.opts.requireRoles ? senderProblem(job.type, d.userId) : null;
    if (forged) return d.deadLetter(`refused: ${forged}`);
    const live = this.runs.get(job.runId);
    if (!live || live.ledger.finished) return d.ack();
    const deaths = deathCount(d.headers) ?? SPEC_DELIVERY_LIMIT + 1;
    if (job.type === 'discover') {
      // the run has no tests to wait for: it fails now, with the reason
      const error = `discovery crashed its worker ${deaths} times (every worker that ran it died while it ran)`;
      this.log.warn({ runId: job.runId }, error);
      await this.journal.append({ k: 'planned', runId: job.runId, at: Date.now(), round: 1, tests: [], error });
      return d.ack();
    }
    const results: TestResult[] = job.tests.map((t) => ({
      testId: t.id, file: t.file, name: t.name, status: 'failed', durationMs: 0,
      message: `crashed its worker ${deaths} times`,
      details: `Every worker that ran this spec died while running it (delivery limit ${SPEC_DELIVERY_LIMIT}); it was taken out of circulation.`,
    }));
    this.log.warn({ runId: job.runId, specId: job.id, tests: job.tests.map((t) => t.id) }, 'spec crashed its workers, failing it');
    await this.journal.append({ k: 'results', runId: job.runId, at: Date.now(), round: job.round, worker: CRASHED, results });
    d.ack();
  }

  // ---- runs ----------------------------------------------------------------------------

  private open(run: AcceptedRun, since: number): LiveRun {
    const live: LiveRun = { ledger: new RunLedger(run), since, lastProgress: 0, overheads: [], firstOverheads: [], lastResultAt: new Map(), outbox: [], retryMs: OUTBOX_RETRY_MIN_MS };
    this.runs.set(run.runId, live);
    if (this.active) {
      this.armDeadline(live);
      this.tellStateSoon();
      this.log.info({ runId: run.runId, shard: run.shard, deadline: new Date(run.deadline).toISOString() }, 'run opened');
    }
    return live;
  }

  /** The run's deadline timer (re-armed in steps: a timer past 24.8 days would fire at once). */
  private armDeadline(live: LiveRun): void {
    clearTimeout(live.deadline);
    const wait = Math.max(0, live.ledger.run.deadline - Date.now());
    live.deadline = setTimeout(() => {
      if (Date.now() < live.ledger.run.deadline) this.armDeadline(live);
      else void this.onDeadline(live);
    }, Math.min(wait, MAX_TIMER_MS));
  }

  private async onDeadline(live: LiveRun): Promise<void> {
    if (live.ledger.finished || !this.active) return;
    const runId = live.ledger.run.runId;
    this.log.warn({ runId }, 'run deadline reached, failing the tests that did not come back');
    try {
      await this.journal.append({ k: 'deadline', runId, at: Date.now() });
    } catch (err) {
      // not journaled: the next active aggregator's deadline timer fires at once
      this.log.error({ err, runId }, 'could not journal the run deadline');
      if (this.active) live.deadline = setTimeout(() => void this.onDeadline(live), OUTBOX_RETRY_MAX_MS);
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
    if (live.outbox.length === 0 || !this.active) return Promise.resolve();
    clearTimeout(live.retry);
    live.flushing = (async () => {
      while (live.outbox.length > 0 && this.active) {
        const effect = live.outbox[0]!;
        try {
          await this.apply(live, effect);
          live.outbox = live.outbox.filter((e) => e !== effect);
          live.retryMs = OUTBOX_RETRY_MIN_MS;
        } catch (err) {
          if (!this.active) return;
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
      await this.journal.append({ k: 'round-sent', runId, round: effect.request.round });
      this.log.info({ runId, round: effect.request.round, tests: effect.request.tests.length }, 're-running failures in a new round');
    } else if (this.runs.get(runId) === live) {
      await this.finish(live, effect.report);
    }
  }

  private async finish(live: LiveRun, report: RunReport): Promise<void> {
    const runId = report.runId;
    const overheads = [...(live.overheads.length ? live.overheads : live.firstOverheads)].sort((a, b) => a - b);
    if (overheads.length) report = { ...report, batchOverheadMs: Math.round(overheads[Math.floor(overheads.length / 2)]!) };
    clearTimeout(live.deadline);
    clearTimeout(live.progressTimer);
    // under our report directory whatever the request says (the dispatcher refuses a
    // reportDir that is absolute or climbs out; a hand-published acceptance is not trusted)
    const asked = live.ledger.run.reportDir;
    const dir = asked !== undefined && isConfinedPath(asked) ? path.join(this.opts.reportDir, asked) : path.join(this.opts.reportDir, runId);
    try {
      writeReportFiles(dir, report);
    } catch (err) {
      this.log.error({ err, runId, dir }, 'could not write the report files');
    }
    await this.publishProgress(live);
    await this.broker.publish(EXCHANGES.reports, reportKey(runId, 'report'), report, { mandatory: false });
    const finished: RunFinished = {
      type: 'run.finished', v: SCHEMA_VERSION, runId, status: report.status, deadline: live.ledger.run.deadline,
      totals: report.totals, startedAt: report.startedAt, finishedAt: report.finishedAt, startedBy: live.ledger.run.startedBy,
      adapter: report.adapter, error: report.error, stopped: report.stopped,
    };
    await this.broker.publish(EXCHANGES.reports, reportKey(runId, 'finished'), finished, { mandatory: false, persistent: false });
    await this.journal.append({ k: 'report-sent', runId, status: report.status });
    this.log.info({ runId, status: report.status, ...report.totals, dir }, 'run finished');
  }

  /** A finished run keeps only its tombstone (a late message is acked, a reused id refused). */
  private retire(live: LiveRun, status: string): void {
    const run = live.ledger.run;
    this.quiet(live);
    this.runs.delete(run.runId);
    this.finished.set(run.runId, { acceptedAt: run.acceptedAt, finishedAt: Date.now(), status, deadline: run.deadline, shard: run.shard });
    if (this.finished.size > FINISHED_RUNS_KEPT) this.finished.delete(this.finished.keys().next().value!);
    if (this.active) this.tellStateSoon();
  }

  // ---- the runs in progress, told to the cluster ------------------------------------------

  /** What slots take work from and `warren status` shows (RunsState). */
  stateOfRuns(now = Date.now()): RunsState {
    const runs = [...this.runs.values()].filter((l) => !l.ledger.finished).map((l) => {
      const run = l.ledger.run;
      const p = l.ledger.progress(now, 0);
      return {
        runId: run.runId, shard: run.shard ?? 0, labels: run.labels ?? [], startedBy: run.startedBy, adapter: run.adapter, cwd: run.cwd,
        acceptedAt: run.acceptedAt, deadline: run.deadline, round: p.round, total: p.total, done: p.done, failed: p.failed, flaky: p.flaky,
        etaSec: p.etaSec, setupFailures: l.ledger.setupFailures.length,
      };
    });
    const finished: RunsState['finished'] = [];
    // newest last in the map: walk back until too old
    for (const [runId, t] of [...this.finished].reverse()) {
      if (now - t.finishedAt > ENDED_LISTED_MS) break;
      if (t.deadline !== undefined) finished.push({ runId, deadline: t.deadline, status: t.status, finishedAt: t.finishedAt });
    }
    const shards = new Set(runs.map((r) => r.shard));
    for (const f of finished) {
      const shard = this.finished.get(f.runId)?.shard;
      if (shard !== undefined && now - f.finishedAt < ENDED_SHARD_LISTED_MS) shards.add(shard);
    }
    return { type: 'runs.state', v: SCHEMA_VERSION, at: now, runs, finished, shards: [...shards].sort((a, b) => a - b) };
  }

  private async tellState(): Promise<void> {
    if (!this.active) return;
    try {
      await this.broker.publish(EXCHANGES.reports, ROUTING.runsState, this.stateOfRuns(), { persistent: false, mandatory: false, timeoutMs: 5000 });
    } catch (err) {
      this.log.debug({ err }, 'runs state not sent (again in a moment)');
    }
  }

  /** A run opened or ended: tell it now (a few changes together), not at the next tick. */
  private tellStateSoon(): void {
    if (this.stateSoon) return;
    this.stateSoon = setTimeout(() => {
      this.stateSoon = undefined;
      void this.tellState();
    }, 20);
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
    if (live.ledger.finished || live.progressTimer || !this.active) return;
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

  // ---- checkpoints ---------------------------------------------------------------------

  /** The latest checkpoint: its tombstones are taken in, its offset returned (0: none). */
  private async readCheckpoint(): Promise<number> {
    const body = await this.broker.peek(QUEUES.checkpoint);
    if (!body) return 0;
    try {
      const cp = JSON.parse(body.toString('utf8')) as Checkpoint;
      if (!Number.isInteger(cp.offset) || !Array.isArray(cp.finished)) throw new Error('not a checkpoint');
      for (const [id, t] of cp.finished) this.finished.set(id, t);
      return cp.offset;
    } catch (err) {
      this.log.warn({ err }, 'the journal checkpoint is unreadable; reading the whole journal');
      return 0;
    }
  }

  /** Writes a checkpoint soon (at most one per CHECKPOINT_EVERY_MS). */
  private checkpointSoon(): void {
    if (this.checkpointTimer) return;
    const wait = Math.max(0, this.lastCheckpoint + CHECKPOINT_EVERY_MS - Date.now());
    this.checkpointTimer = setTimeout(() => {
      this.checkpointTimer = undefined;
      if (!this.active) return;
      this.lastCheckpoint = Date.now();
      const offset = Math.min(this.journal.position, ...[...this.runs.values()].map((l) => l.since));
      const cp: Checkpoint = { offset, finished: [...this.finished] };
      this.broker.publish('', QUEUES.checkpoint, cp).then(
        () => this.log.info({ offset, runsInProgress: this.runs.size }, 'journal checkpoint written'),
        (err) => this.log.warn({ err }, 'journal checkpoint not written (the next one will be)'),
      );
    }, wait);
  }

  /** Stops loudly: no more messages, the connection closed (unacked ones go back). */
  private fail(err: Error): void {
    if (this.state === 'failed' || this.state === 'stopped') return;
    this.state = 'failed';
    this.log.fatal({ err }, 'the journal is gone; stopping (what this aggregator held goes back to the queue)');
    this.lease?.stop();
    this.demote('the journal is gone');
    void this.broker.close().catch(() => undefined);
    this.opts.onFatal?.(err);
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
