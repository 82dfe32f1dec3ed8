/**
 * The one place that names Warren's RabbitMQ topology: every exchange, queue, binding,
 * routing key and queue argument. Services declare exactly this (redeclaring a queue with
 * other arguments closes the channel with 406), and `rabbitmq/definitions.json` is checked
 * against it by test/unit/topology.test.ts.
 *
 * Message flow:
 *   CLI / management UI --run.request--> warren.runs --> warren.dispatcher (dispatcher)
 *   dispatcher --job.<n>--> warren.work --> warren.specs.<n> (one shard per run in progress;
 *     worker slots take one job at a time, round-robin over the shards of the runs they serve)
 *   dispatcher/slot --work.wake--> warren.reports --> supervisors (a shard has work: idle slots look)
 *   aggregator --runs.state--> warren.reports --> supervisors, dispatchers, `warren status`
 *   CLI --run.cancel--> warren.runs --> warren.aggregator
 *   slot --run.discovered--> warren.events --> warren.dispatcher (slots never write warren.runs)
 *   dispatcher/slot --round.planned, spec.result--> warren.events --> warren.aggregator
 *   aggregator --round.request--> warren.runs --> warren.dispatcher
 *   aggregator --run.<id>.progress|report--> warren.reports --> (CLI's own exclusive queue)
 *   warren.reports --run.<id>.report--> warren.history (dispatcher: durations for later runs)
 *   warren.specs.<n> --(delivery limit)--> warren.dlx --spec.crashed--> warren.crashed (aggregator)
 *   any service --(malformed)--> warren.dlx --> warren.dead-letters (operators)
 *   supervisors --supervisor.heartbeat--> warren.status (fanout, transient)
 *   aggregator (active) --entries--> warren.journal (stream) --> every aggregator (replicas)
 *   warren.reports --run.<id>.finished--> supervisors (stop its tests), warren.runs.log (stream: `warren runs`)
 */

export const EXCHANGES = {
  runs: 'warren.runs',
  work: 'warren.work',
  events: 'warren.events',
  reports: 'warren.reports',
  status: 'warren.status',
  dlx: 'warren.dlx',
} as const;

export const QUEUES = {
  dispatcher: 'warren.dispatcher',
  aggregator: 'warren.aggregator',
  crashed: 'warren.crashed',
  deadLetters: 'warren.dead-letters',
  history: 'warren.history',
  journal: 'warren.journal',
  checkpoint: 'warren.journal.checkpoint',
  /** Every run's end (its `finished` notice), for `warren runs` and `warren follow`. */
  runsLog: 'warren.runs.log',
} as const;

/**
 * Exclusive queues held as leases (shared/broker/lease.ts), not declared with the topology:
 * the aggregator that holds `aggregator` is the active one.
 */
export const LEASES = {
  aggregator: 'warren.aggregator.active',
} as const;

/** How long the journal stream keeps entries: longer than the longest run (MAX_DURATION_SEC). */
export const JOURNAL_MAX_AGE = '8D';
/** How long `warren runs` can look back. */
export const RUNS_LOG_MAX_AGE = '7D';

export const ROUTING = {
  runRequest: 'run.request',
  roundRequest: 'round.request',
  discovered: 'run.discovered',
  runCancel: 'run.cancel',
  /** A shard has work: idle slots look (transient, on warren.reports). */
  wake: 'work.wake',
  /** The runs in progress, from the active aggregator every few seconds (transient). */
  runsState: 'runs.state',
  roundPlanned: 'round.planned',
  runAccepted: 'run.accepted',
  specResult: 'spec.result',
  setupFailed: 'setup.failed',
  specCrashed: 'spec.crashed',
  heartbeat: 'supervisor.heartbeat',
  /** Prefix for messages we dead-letter ourselves; the suffix is the source queue. */
  malformed: 'malformed',
} as const;

/**
 * The work queues: a fixed set of quorum queues (quorum queues are not meant for the churn of
 * one queue per run), each run in progress given the least loaded one by the dispatcher.
 * Slots take their next job round-robin over the shards of the runs they may serve, so runs
 * share the workers instead of queueing behind each other; more runs than shards share a
 * shard (first come, first served between those).
 */
export const SPEC_SHARDS = 16;
export const specQueue = (shard: number) => `warren.specs.${shard}`;
export const jobKey = (shard: number) => `job.${shard}`;
const SHARDS = Array.from({ length: SPEC_SHARDS }, (_, i) => i);

/** Binds every final report (a run id may hold dots: `#`). */
export const REPORTS_BINDING = 'run.#.report';
/** Reports waiting for a dispatcher that keeps history; past this the oldest go (it is a cache). */
export const HISTORY_MAX_LENGTH = 1000;

/** Routing key of a run's progress / final report on the reports exchange. */
export const reportKey = (runId: string, kind: 'progress' | 'report' | 'finished') => `run.${runId}.${kind}`;
/** Binds every run's `finished` notice (supervisors). */
export const FINISHED_BINDING = 'run.#.finished';

/**
 * A spec that has been delivered this many times without an ack (each time its worker died)
 * is dead-lettered on the next failure: it "crashed its worker DELIVERY_LIMIT + 1 times".
 * In 3.10 a nack(requeue) also counts, so slots never nack-requeue; they close the channel
 * only when they are really going away.
 */
export const SPEC_DELIVERY_LIMIT = 3;

/**
 * The services' own queues (dispatcher, aggregator, history, crashed): a message whose
 * handler threw this many times is dead-lettered with the last error instead of coming back
 * forever (each delivery counted by the quorum queue's x-delivery-count).
 */
export const SERVICE_DELIVERY_LIMIT = 5;

export type ExchangeType = 'direct' | 'topic' | 'fanout';

export interface ExchangeDef {
  name: string;
  type: ExchangeType;
  durable: boolean;
}

export interface QueueDef {
  name: string;
  durable: boolean;
  arguments: Record<string, string | number>;
}

export interface BindingDef {
  exchange: string;
  queue: string;
  routingKey: string;
}

/** Quorum queues: replicated, delivery counting, at-least-once dead-lettering. */
const quorum = (extra: Record<string, string | number> = {}) => ({
  'x-queue-type': 'quorum',
  'x-dead-letter-exchange': EXCHANGES.dlx,
  // at-least-once dead-lettering is silently at-most-once unless overflow rejects publishes
  'x-dead-letter-strategy': 'at-least-once',
  'x-overflow': 'reject-publish',
  ...extra,
});

export const TOPOLOGY: { exchanges: ExchangeDef[]; queues: QueueDef[]; bindings: BindingDef[] } = {
  exchanges: [
    { name: EXCHANGES.runs, type: 'direct', durable: true },
    { name: EXCHANGES.work, type: 'direct', durable: true },
    { name: EXCHANGES.events, type: 'direct', durable: true },
    { name: EXCHANGES.reports, type: 'topic', durable: true },
    { name: EXCHANGES.status, type: 'fanout', durable: true },
    { name: EXCHANGES.dlx, type: 'topic', durable: true },
  ],
  queues: [
    { name: QUEUES.dispatcher, durable: true, arguments: quorum() },
    ...SHARDS.map((n) => ({
      name: specQueue(n),
      durable: true,
      arguments: quorum({
        'x-delivery-limit': SPEC_DELIVERY_LIMIT,
        'x-dead-letter-routing-key': ROUTING.specCrashed,
      }),
    })),
    { name: QUEUES.aggregator, durable: true, arguments: quorum() },
    { name: QUEUES.crashed, durable: true, arguments: { 'x-queue-type': 'quorum' } },
    { name: QUEUES.deadLetters, durable: true, arguments: { 'x-queue-type': 'quorum' } },
    {
      name: QUEUES.history,
      durable: true,
      arguments: { 'x-queue-type': 'quorum', 'x-dead-letter-exchange': EXCHANGES.dlx, 'x-max-length': HISTORY_MAX_LENGTH },
    },
    // the aggregators' shared state: replicated like the quorum queues, read by every replica
    { name: QUEUES.journal, durable: true, arguments: { 'x-queue-type': 'stream', 'x-max-age': JOURNAL_MAX_AGE } },
    // where a new replica starts reading it (the latest only), with the finished runs' ids
    { name: QUEUES.checkpoint, durable: true, arguments: { 'x-queue-type': 'quorum', 'x-max-length': 1 } },
    { name: QUEUES.runsLog, durable: true, arguments: { 'x-queue-type': 'stream', 'x-max-age': RUNS_LOG_MAX_AGE } },
  ],
  bindings: [
    { exchange: EXCHANGES.runs, queue: QUEUES.dispatcher, routingKey: ROUTING.runRequest },
    { exchange: EXCHANGES.runs, queue: QUEUES.dispatcher, routingKey: ROUTING.roundRequest },
    { exchange: EXCHANGES.events, queue: QUEUES.dispatcher, routingKey: ROUTING.discovered },
    ...SHARDS.map((n) => ({ exchange: EXCHANGES.work, queue: specQueue(n), routingKey: jobKey(n) })),
    { exchange: EXCHANGES.runs, queue: QUEUES.aggregator, routingKey: ROUTING.runCancel },
    { exchange: EXCHANGES.events, queue: QUEUES.aggregator, routingKey: ROUTING.runAccepted },
    { exchange: EXCHANGES.events, queue: QUEUES.aggregator, routingKey: ROUTING.roundPlanned },
    { exchange: EXCHANGES.events, queue: QUEUES.aggregator, routingKey: ROUTING.specResult },
    { exchange: EXCHANGES.events, queue: QUEUES.aggregator, routingKey: ROUTING.setupFailed },
    { exchange: EXCHANGES.dlx, queue: QUEUES.crashed, routingKey: ROUTING.specCrashed },
    { exchange: EXCHANGES.dlx, queue: QUEUES.deadLetters, routingKey: '#' },
    { exchange: EXCHANGES.reports, queue: QUEUES.history, routingKey: REPORTS_BINDING },
    { exchange: EXCHANGES.reports, queue: QUEUES.runsLog, routingKey: FINISHED_BINDING },
  ],
};
