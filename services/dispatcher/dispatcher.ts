/**
 * The dispatcher: turns run requests into work. It is stateless: everything it needs
 * travels in the messages, so a dispatcher killed at any point loses nothing. Its unacked
 * message comes back and is handled again; specs it had already published are run twice at
 * worst, and the aggregator keeps one result per test per round.
 *
 *   run.request    → run.accepted (to the aggregator), then a discover job (to a worker)
 *   run.discovered → filter, round.planned (to the aggregator), then the specs
 *   round.request  → round.planned, then the specs of the re-run
 */
import { createHash } from 'node:crypto';
import { Broker, type Delivery } from '../../shared/broker.js';
import type { Logger } from '../../shared/log.js';
import {
  DispatcherMessage, SCHEMA_VERSION, parseMessage, runRequestProblem,
  type AcceptedRun, type DiscoverJob, type Discovered, type RoundPlanned, type RunAccepted,
  type RunRequest, type SpecJob, type TestRef,
} from '../../shared/messages.js';
import { EXCHANGES, QUEUES, ROUTING } from '../../shared/topology.js';
import { filterTests, planBatches } from './plan.js';

export interface DispatcherOptions {
  brokerUrl: string;
  log: Logger;
}

export type DispatcherState = 'starting' | 'running' | 'draining' | 'stopped' | 'failed';

export class Dispatcher {
  state: DispatcherState = 'starting';
  private readonly broker: Broker;
  private readonly log: Logger;
  /** Rounds already planned by this process, so a duplicate discovery adds no work. */
  private readonly planned = new Set<string>();
  private inFlight = 0;
  private idle?: () => void;

  constructor(opts: DispatcherOptions) {
    this.log = opts.log;
    this.broker = new Broker({ url: opts.brokerUrl, name: 'warren dispatcher', log: opts.log });
  }

  async start(): Promise<void> {
    await this.broker.start();
    await this.broker.consume(QUEUES.dispatcher, (d) => this.track(() => this.onMessage(d)), { prefetch: 4 });
    this.state = 'running';
    this.log.info('dispatcher running');
  }

  async stop(): Promise<void> {
    if (this.state === 'stopped') return;
    this.state = 'draining';
    await this.broker.cancelConsumers().catch(() => undefined);
    if (this.inFlight > 0) await new Promise<void>((r) => (this.idle = r));
    await this.broker.close().catch(() => undefined);
    this.state = 'stopped';
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
    const batches = planBatches(tests, { maxBatch, slots: consumerCount, durations: run.durations });
    // The plan goes first: the aggregator must know the whole round before any result, and
    // if we die halfway through the specs, the redelivered message publishes them again.
    await this.publishPlan(run, round, tests, batches.length, undefined, discovery);
    const suite = { adapter: run.adapter, cwd: run.cwd, command: run.command, env: run.env, testTimeoutSec: run.testTimeoutSec, image: run.image, freshProcess: run.freshProcess };
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
