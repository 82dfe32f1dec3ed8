/**
 * The dispatcher: turns run requests into work. Everything it needs to be correct travels
 * in the messages, so a dispatcher killed at any point loses nothing; what it keeps (the
 * history of durations, history.ts) only makes plans better balanced. Its unacked
 * message comes back and is handled again; specs it had already published are run twice at
 * worst, and the aggregator keeps one result per test per round.
 *
 *   run.request    → run.accepted (to the aggregator), then a discover job (to a worker)
 *   run.discovered → filter, round.planned (to the aggregator), then the specs
 *   round.request  → round.planned, then the specs of the re-run
 *   run report     → the history (warren.history): durations for the next runs' plans
 */
import { createHash } from 'node:crypto';
import { Broker, type Delivery } from '../../shared/broker.js';
import type { Logger } from '../../shared/log.js';
import type { Lifecycle } from '../../shared/lifecycle.js';
import {
  DispatcherMessage, RunReport, SCHEMA_VERSION, WARM_ADAPTERS, parseMessage, runRequestProblem,
  type AcceptedRun, type DiscoverJob, type Discovered, type RoundPlanned, type RunAccepted,
  type RunRequest, type SpecJob, type TestRef, suiteOf } from '../../shared/messages.js';
import { EXCHANGES, QUEUES, ROUTING, SERVICE_DELIVERY_LIMIT } from '../../shared/topology.js';
import { History } from './history.js';
import { CHEAP_BATCH_MS, filterTests, minBatchMsFor, planBatches } from './plan.js';

export interface DispatcherOptions {
  brokerUrl: string;
  log: Logger;
  /** SQLite file of per-test durations, fed by final reports (none: plans use only what a
   * run request brings). */
  historyFile?: string;
}

export class Dispatcher {
  state: Lifecycle = 'starting';
  private readonly broker: Broker;
  private readonly log: Logger;
  /** Rounds already planned by this process, so a duplicate discovery adds no work. */
  private readonly planned = new Set<string>();
  private inFlight = 0;
  private idle?: () => void;
  private history?: History;
  /** Runs whose report this process has recorded, and who waits for one. */
  private readonly recorded = new Set<string>();
  private readonly recordWaiters = new Map<string, () => void>();

  constructor(private readonly opts: DispatcherOptions) {
    this.log = opts.log;
    this.broker = new Broker({ url: opts.brokerUrl, name: 'warren dispatcher', log: opts.log });
  }

  async start(): Promise<void> {
    if (this.opts.historyFile) this.history = new History(this.opts.historyFile);
    await this.broker.start();
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
    switch (msg.type) {
      case 'run.request': {
        const problem = runRequestProblem(msg);
        if (problem) return d.deadLetter(`invalid run request: ${problem}`);
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

  private async accept(req: RunRequest, d: Delivery): Promise<void> {
    // A run id that is the same when this message is redelivered: the requester's, or one
    // derived from the message itself.
    const runId = req.runId ?? `run-${createHash('sha256').update(d.body).update(String(d.headers['x-warren-nonce'] ?? '')).digest('hex').slice(0, 12)}`;
    const now = Date.now();
    const run: AcceptedRun = { ...req, runId, id: req.id ?? runId, acceptedAt: now, deadline: now + req.runTimeoutSec * 1000 };
    const accepted: RunAccepted = { type: 'run.accepted', v: SCHEMA_VERSION, id: `${runId}/accepted`, runId, run };
    await this.broker.publish(EXCHANGES.events, ROUTING.runAccepted, accepted);
    const job: DiscoverJob = { type: 'discover', v: SCHEMA_VERSION, id: `${runId}/discover`, runId, run };
    await this.broker.publish(EXCHANGES.work, ROUTING.job, job);
    this.log.info({ runId, adapter: run.adapter, cwd: run.cwd }, 'run accepted, discovery queued');
  }

  private async discovered(msg: Discovered): Promise<void> {
    const { run } = msg;
    if (msg.error) {
      this.log.warn({ runId: run.runId, error: msg.error }, 'discovery failed');
      await this.publishPlan(run, 1, [], 0, msg.error);
      return;
    }
    const tests = filterTests(msg.tests, run.pattern, run.exclude, run.only);
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
    const { consumerCount } = await this.broker.checkQueue(QUEUES.specs);
    // a template without {ids} runs one test per process
    const maxBatch = run.command && !run.command.run.includes('{ids}') ? 1 : run.maxBatch;
    // durations: the request's own (--timings), else what the history knows of this suite
    const durations = run.durations ?? this.history?.durations(run.adapter, run.cwd, tests);
    // batches no smaller than what a batch of this suite was measured to cost is worth
    // a batch's cost: measured by earlier runs (any adapter: a `command` may start in 5 ms),
    // else what a warm runner or a cold process usually costs; cheap batches are cut finer
    const overhead = run.freshProcess ? undefined : this.history?.batchOverheadMs(run.adapter, run.cwd);
    const cheap = overhead !== undefined ? overhead < CHEAP_BATCH_MS : WARM_ADAPTERS.includes(run.adapter) && !run.freshProcess;
    const batches = planBatches(tests, { maxBatch, slots: consumerCount, durations, minBatchMs: minBatchMsFor(overhead, cheap), warm: cheap });
    if (discovery) discovery = { ...discovery, known: durations ? tests.filter((t) => durations[t.id] !== undefined).length : 0 };
    // The plan goes first: the aggregator must know the whole round before any result, and
    // if we die halfway through the specs, the redelivered message publishes them again.
    await this.publishPlan(run, round, tests, batches.length, undefined, discovery);
    const suite = suiteOf(run);
    await Promise.all(
      batches.map((batch, i) => {
        const job: SpecJob = {
          type: 'spec', v: SCHEMA_VERSION, id: `${run.runId}/r${round}/s${i + 1}`, runId: run.runId,
          round, tests: batch, suite, expiresAt: run.deadline,
        };
        return this.broker.publish(EXCHANGES.work, ROUTING.job, job);
      }),
    );
    this.planned.add(key);
    this.log.info({ runId: run.runId, round, tests: tests.length, specs: batches.length, slots: consumerCount }, 'round published');
  }

  private publishPlan(run: AcceptedRun, round: number, tests: TestRef[], specs: number, error?: string, discovery?: RoundPlanned['discovery']) {
    const plan: RoundPlanned = {
      type: 'round.planned', v: SCHEMA_VERSION, id: `${run.runId}/r${round}/plan`, runId: run.runId, round, tests, specs, error, discovery,
    };
    return this.broker.publish(EXCHANGES.events, ROUTING.roundPlanned, plan);
  }
}
