/**
 * The dispatcher: turns run requests into work. Everything it needs to be correct travels
 * in the messages, so a dispatcher killed at any point loses nothing; what it keeps (the
 * history of durations, history.ts) only makes plans better balanced. Its unacked
 * message comes back and is handled again; specs it had already published are run twice at
 * worst, and the aggregator keeps one result per test per round.
 *
 *   run.request    → a work queue for the run (the least loaded shard), run.accepted (to the
 *                    aggregator), then a discover job (to a worker that has the run's labels)
 *   run.discovered → filter, round.planned (to the aggregator), then the specs
 *   round.request  → round.planned, then the specs of the re-run
 *   run report     → the history (warren.history): durations for the next runs' plans
 */
import { createHash } from 'node:crypto';
import { Broker, type Delivery } from '../../shared/broker.js';
import type { Logger } from '../../shared/log.js';
import type { Lifecycle } from '../../shared/lifecycle.js';
import {
  DispatcherMessage, Heartbeat, RunReport, RunsState, SCHEMA_VERSION, WARM_ADAPTERS, labelsMatch, parseMessage, runRequestProblem,
  type AcceptedRun, type DiscoverJob, type Discovered, type RoundPlanned, type RunAccepted,
  type RunFinished, type RunRequest, type SpecJob, type TestRef, type WorkWake, suiteOf,
} from '../../shared/messages.js';
import { senderProblem } from '../../shared/roles.js';
import { NonceCache, requestProblem } from '../../shared/signing.js';
import { EXCHANGES, QUEUES, ROUTING, SERVICE_DELIVERY_LIMIT, SPEC_SHARDS, jobKey, reportKey } from '../../shared/topology.js';
import { History } from './history.js';
import { PatternTooSlow, filterTestsBounded } from './filter.js';
import { CHEAP_BATCH_MS, minBatchMsFor, planBatches } from './plan.js';

export interface DispatcherOptions {
  brokerUrl: string;
  log: Logger;
  /** SQLite file of per-test durations, fed by final reports (none: plans use only what a
   * run request brings). */
  historyFile?: string;
  /** A private Warren's namespace on a shared broker (shared/broker.ts). */
  namespace?: string;
  /** With a key, only signed, intact, fresh run requests are accepted (shared/signing.ts). */
  signingKey?: Buffer;
  /** Take each message only from the roles allowed to send it (shared/roles.ts). */
  requireRoles?: boolean;
}

/** A supervisor heard from this lately is live (heartbeats come every 2 s). */
const SUPERVISOR_LIVE_MS = 10_000;
/** Slots a plan assumes when no supervisor has been heard yet. */
const UNHEARD_SLOTS = 8;
/** A dispatcher's first judgement of labels waits this long after its start. */
const HEARTBEAT_WAIT_MS = 3_000;

export class Dispatcher {
  state: Lifecycle = 'starting';
  private readonly broker: Broker;
  private readonly log: Logger;
  /** Rounds already planned by this process, so a duplicate discovery adds no work. */
  private readonly planned = new Set<string>();
  private readonly nonces = new NonceCache();
  private inFlight = 0;
  private idle?: () => void;
  private history?: History;
  /** Runs whose report this process has recorded, and who waits for one. */
  private readonly recorded = new Set<string>();
  private readonly recordWaiters = new Map<string, () => void>();
  /** The runs in progress (the aggregator's latest `runs.state`), for choosing shards. */
  private runsState?: RunsState;
  /** Shards this process gave runs lately (not in a state yet). */
  private readonly assigned = new Map<string, { shard: number; labels: string[]; at: number }>();
  /** Live supervisors, from their heartbeats: who can serve a run, how many slots. */
  private readonly supervisors = new Map<string, Heartbeat>();
  private startedAt = 0;

  constructor(private readonly opts: DispatcherOptions) {
    this.log = opts.log;
    this.broker = new Broker({ url: opts.brokerUrl, name: 'warren dispatcher', log: opts.log, namespace: opts.namespace });
  }

  async start(): Promise<void> {
    if (this.opts.historyFile) this.history = new History(this.opts.historyFile);
    await this.broker.start();
    this.startedAt = Date.now();
    await this.broker.watch(EXCHANGES.reports, ROUTING.runsState, `warren.dispatcher.runs.${process.pid}.${Math.random().toString(36).slice(2, 8)}`, async (d) => {
      d.ack();
      const msg = parseMessage(RunsState, d.body);
      if (msg.ok && (!this.runsState || msg.value.at >= this.runsState.at)) this.runsState = msg.value;
    }, { kind: 'transient' });
    await this.broker.watch(EXCHANGES.status, '', `warren.dispatcher.status.${process.pid}.${Math.random().toString(36).slice(2, 8)}`, async (d) => {
      d.ack();
      const hb = parseMessage(Heartbeat, d.body);
      if (hb.ok) this.supervisors.set(hb.value.supervisor, hb.value);
    }, { kind: 'transient' });
    await this.broker.consume(QUEUES.dispatcher, (d) => this.track(() => this.onMessage(d)), { prefetch: 4, maxDeliveries: SERVICE_DELIVERY_LIMIT });
    if (this.history) await this.broker.consume(QUEUES.history, (d) => this.track(() => this.onReport(d)), { prefetch: 1, maxDeliveries: SERVICE_DELIVERY_LIMIT });
    this.state = 'running';
    this.log.info('dispatcher running');
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'draining';
    await this.broker.cancelConsumers().catch(() => undefined);
    if (this.inFlight > 0) await new Promise<void>((r) => (this.idle = r));
    await this.broker.close().catch(() => undefined);
    this.history?.close();
    this.state = 'stopped';
  }

  /** A finished run's report: its durations go into the history. */
  private async onReport(d: Delivery): Promise<void> {
    const parsed = parseMessage(RunReport, d.body);
    if (!parsed.ok) return d.deadLetter(parsed.reason);
    const n = this.history!.record(parsed.value);
    this.log.info({ runId: parsed.value.runId, tests: n }, 'durations recorded');
    d.ack();
    this.recorded.add(parsed.value.runId);
    this.recordWaiters.get(parsed.value.runId)?.();
  }

  /**
   * Resolves once this run's report is in the history (or after `timeoutMs`): `warren run
   * --local` waits for it before stopping its dispatcher, so the next run is balanced by it.
   */
  historyRecorded(runId: string, timeoutMs: number): Promise<void> {
    if (!this.history || this.recorded.has(runId)) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.recordWaiters.delete(runId);
        resolve();
      }
      this.recordWaiters.set(runId, done);
    });
  }

  private async track(fn: () => Promise<void>) {
    this.inFlight++;
    try {
      await fn();
    } finally {
      if (--this.inFlight === 0) this.idle?.();
    }
  }

  private async onMessage(d: Delivery): Promise<void> {
    const parsed = parseMessage(DispatcherMessage, d.body);
    if (!parsed.ok) return d.deadLetter(parsed.reason);
    const msg = parsed.value;
    // (a submitter's request must name its run: its id says whose it is)
    const forged = this.opts.requireRoles ? senderProblem(msg.type, d.userId, msg.type === 'run.request' ? msg.runId ?? '' : undefined) : null;
    if (forged) return d.deadLetter(`refused: ${forged}`);
    switch (msg.type) {
      case 'run.request': {
        const problem = runRequestProblem(msg);
        if (problem) return d.deadLetter(`invalid run request: ${problem}`);
        const refused = this.opts.signingKey ? requestProblem(msg, this.opts.signingKey, this.nonces) : null;
        if (refused) return this.refuse(msg, refused, d);
        await this.accept(msg, d);
        break;
      }
      case 'run.discovered':
        await this.discovered(msg);
        break;
      case 'round.request':
        await this.plan(msg.run, msg.round, msg.tests);
        break;
    }
    d.ack();
  }

  /**
   * A run request this cluster does not take (unsigned, altered, stale, replayed): kept in
   * the dead letters with the reason, and its requester (following the run id it asked
   * for) told at once instead of waiting for its timeout.
   */
  private async refuse(req: RunRequest, reason: string, d: Delivery): Promise<void> {
    this.log.warn({ runId: req.runId, reason }, 'run request refused');
    if (req.runId) {
      const notice: RunFinished = { type: 'run.finished', v: SCHEMA_VERSION, runId: req.runId, status: 'error', deadline: 0, error: `run request refused: ${reason}` };
      await this.broker.publish(EXCHANGES.reports, reportKey(req.runId, 'finished'), notice, { mandatory: false, persistent: false }).catch(() => undefined);
    }
    await d.deadLetter(`run request refused: ${reason}`);
  }

  private async accept(req: RunRequest, d: Delivery): Promise<void> {
    // A run id that is the same when this message is redelivered: the requester's, or one
    // derived from the message itself.
    const runId = req.runId ?? `run-${createHash('sha256').update(d.body).update(String(d.headers['x-warren-nonce'] ?? '')).digest('hex').slice(0, 12)}`;
    const now = Date.now();
    const shard = this.chooseShard(runId, req.labels);
    // at once (requests are handled concurrently): the next choice counts this run
    this.assigned.set(runId, { shard, labels: req.labels, at: now });
    const run: AcceptedRun = { ...req, runId, id: req.id ?? runId, acceptedAt: now, deadline: now + req.runTimeoutSec * 1000, shard };
    const accepted: RunAccepted = { type: 'run.accepted', v: SCHEMA_VERSION, id: `${runId}/accepted`, runId, run };
    await this.broker.publish(EXCHANGES.events, ROUTING.runAccepted, accepted);
    // labels nobody live has: the run fails now, with the labels named (a run without
    // labels waits for supervisors, as a queue does)
    const unserved = req.labels.length > 0 ? await this.unserved(req.labels) : undefined;
    if (unserved) {
      this.log.warn({ runId, labels: req.labels }, unserved);
      await this.publishPlan(run, 1, [], 0, unserved);
      return;
    }
    const job: DiscoverJob = { type: 'discover', v: SCHEMA_VERSION, id: `${runId}/discover`, runId, run };
    await this.broker.publish(EXCHANGES.work, jobKey(shard), job);
    await this.wake(run);
    this.log.info({ runId, adapter: run.adapter, cwd: run.cwd, shard }, 'run accepted, discovery queued');
  }

  /**
   * The work queue for a new run: a shard with the fewest runs in progress (those of the
   * aggregator's latest state, and those this process gave out since), preferring one whose
   * runs need the same labels (a slot takes from a shard only if it can serve all its runs).
   * The run id breaks ties, so a redelivered request gets the same shard.
   */
  private chooseShard(runId: string, labels: string[]): number {
    const now = Date.now();
    const load = Array.from({ length: SPEC_SHARDS }, () => ({ runs: 0, otherLabels: 0 }));
    const key = (l: string[]) => [...l].sort().join(',');
    const seen = new Set<string>();
    const count = (id: string, shard: number, l: string[]) => {
      if (seen.has(id) || id === runId || shard >= SPEC_SHARDS) return;
      seen.add(id);
      load[shard]!.runs++;
      if (key(l) !== key(labels)) load[shard]!.otherLabels++;
    };
    for (const r of this.runsState?.runs ?? []) count(r.runId, r.shard, r.labels);
    for (const [id, a] of this.assigned) {
      if (now - a.at > 60_000) this.assigned.delete(id);
      else if (!this.runsState?.finished.some((f) => f.runId === id)) count(id, a.shard, a.labels);
    }
    const best = Math.min(...load.map((l) => l.otherLabels * 1000 + l.runs));
    const candidates = load.flatMap((l, i) => (l.otherLabels * 1000 + l.runs === best ? [i] : []));
    const h = createHash('sha256').update(runId).digest().readUInt32BE(0);
    return candidates[h % candidates.length]!;
  }

  /** Why no live supervisor can serve a run needing these labels, or undefined if one can. */
  private async unserved(labels: string[]): Promise<string | undefined> {
    // a dispatcher that just started has not heard every supervisor yet
    const heardAll = this.startedAt + HEARTBEAT_WAIT_MS;
    if (Date.now() < heardAll) await new Promise((r) => setTimeout(r, heardAll - Date.now()));
    const live = this.liveSupervisors();
    if (live.some((hb) => labelsMatch(labels, hb.labels))) return undefined;
    const seen = live.map((hb) => `${hb.supervisor} [${Object.entries(hb.labels).map(([k, v]) => (v ? `${k}=${v}` : k)).join(',')}]`);
    return `no live supervisor has the labels ${labels.join(',')} (${live.length ? `live: ${seen.join(', ')}` : 'no supervisor is live'})`;
  }

  private liveSupervisors(): Heartbeat[] {
    const now = Date.now();
    return [...this.supervisors.values()].filter((hb) => now - hb.at < SUPERVISOR_LIVE_MS && hb.state === 'running' && !hb.drained);
  }

  /** Idle slots that may serve the run look at its shard now. */
  private async wake(run: AcceptedRun): Promise<void> {
    const wake: WorkWake = { type: 'work.wake', v: SCHEMA_VERSION, runId: run.runId, shard: run.shard, labels: run.labels };
    await this.broker.publish(EXCHANGES.reports, ROUTING.wake, wake, { persistent: false, mandatory: false, timeoutMs: 5000 }).catch(() => undefined);
  }

  private async discovered(msg: Discovered): Promise<void> {
    const { run } = msg;
    if (msg.error) {
      this.log.warn({ runId: run.runId, error: msg.error }, 'discovery failed');
      await this.publishPlan(run, 1, [], 0, msg.error);
      return;
    }
    let tests: TestRef[];
    try {
      tests = await filterTestsBounded(msg.tests, run.pattern, run.exclude, run.only);
    } catch (err) {
      if (!(err instanceof PatternTooSlow)) throw err;
      this.log.warn({ runId: run.runId, pattern: run.pattern, exclude: run.exclude }, err.message);
      await this.publishPlan(run, 1, [], 0, err.message);
      return;
    }
    if (tests.length === 0) {
      const error = msg.tests.length === 0
        ? `no tests found in ${run.cwd} by ${run.adapter}`
        : `no test matched (found ${msg.tests.length}; --pattern ${JSON.stringify(run.pattern ?? '')}, --exclude ${JSON.stringify(run.exclude ?? '')}${run.only ? `, ${run.only.length} ids from --only-failures-from` : ''})`;
      await this.publishPlan(run, 1, [], 0, error);
      return;
    }
    await this.plan(run, 1, tests, { cached: msg.cached ?? false, found: msg.tests.length });
  }

  private async plan(run: AcceptedRun, round: number, tests: TestRef[], discovery?: RoundPlanned['discovery']): Promise<void> {
    const key = `${run.runId}:${round}`;
    if (this.planned.has(key)) {
      this.log.info({ runId: run.runId, round }, 'round already planned, ignoring the duplicate');
      return;
    }
    // the slots that can take this run's work (their supervisors' heartbeats)
    const heard = this.liveSupervisors().filter((hb) => labelsMatch(run.labels, hb.labels)).reduce((n, hb) => n + hb.slots.length, 0);
    // none heard yet (this dispatcher started with the run, and the first heartbeat came
    // before its queue was bound): planned as for a few hosts' slots, not for one
    const slots = heard > 0 ? heard : UNHEARD_SLOTS;
    // a template without {ids} runs one test per process
    const maxBatch = run.command && !run.command.run.includes('{ids}') ? 1 : run.maxBatch;
    // durations: the request's own (--timings), else what the history knows of this suite
    const durations = run.durations ?? this.history?.durations(run.adapter, run.cwd, tests);
    // batches no smaller than what a batch of this suite was measured to cost is worth
    // a batch's cost: measured by earlier runs (any adapter: a `command` may start in 5 ms),
    // else what a warm runner or a cold process usually costs; cheap batches are cut finer
    const overhead = run.freshProcess ? undefined : this.history?.batchOverheadMs(run.adapter, run.cwd);
    const cheap = overhead !== undefined ? overhead < CHEAP_BATCH_MS : WARM_ADAPTERS.includes(run.adapter) && !run.freshProcess;
    const batches = planBatches(tests, { maxBatch, slots, durations, minBatchMs: minBatchMsFor(overhead, cheap), warm: cheap });
    if (discovery) discovery = { ...discovery, known: durations ? tests.filter((t) => durations[t.id] !== undefined).length : 0 };
    // The plan goes first: the aggregator must know the whole round before any result, and
    // if we die halfway through the specs, the redelivered message publishes them again.
    await this.publishPlan(run, round, tests, batches.length, undefined, discovery);
    const suite = suiteOf(run);
    const published = batches.map((batch, i) => {
      const job: SpecJob = {
        type: 'spec', v: SCHEMA_VERSION, id: `${run.runId}/r${round}/s${i + 1}`, runId: run.runId,
        round, tests: batch, suite, expiresAt: run.deadline, shard: run.shard,
      };
      return this.broker.publish(EXCHANGES.work, jobKey(run.shard), job);
    });
    // the idle slots look as soon as the first job is in the queue (the first to be
    // confirmed: the broker confirms in order), not once all of them are
    const woken = published.length > 0 ? published[0]!.then(() => this.wake(run)) : this.wake(run);
    await Promise.all([...published, woken]);
    this.planned.add(key);
    this.log.info({ runId: run.runId, round, tests: tests.length, specs: batches.length, slots, shard: run.shard }, 'round published');
  }

  private publishPlan(run: AcceptedRun, round: number, tests: TestRef[], specs: number, error?: string, discovery?: RoundPlanned['discovery']) {
    const plan: RoundPlanned = {
      type: 'round.planned', v: SCHEMA_VERSION, id: `${run.runId}/r${round}/plan`, runId: run.runId, round, tests, specs, error, discovery,
    };
    return this.broker.publish(EXCHANGES.events, ROUTING.roundPlanned, plan);
  }
}
