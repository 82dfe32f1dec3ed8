/**
 * Every message that crosses a service boundary, as a runtime schema (zod) with its inferred
 * type. Messages cross hosts and versions, so each envelope carries `type`, a schema version
 * `v`, the `runId` and an `id` to deduplicate on. Consumers parse with `parseMessage`; a
 * message that fails is dead-lettered with the reason, never requeued, never fatal.
 */
import { z } from 'zod';

export const SCHEMA_VERSION = 1;

/** The longest duration any timeout may have: a week (Node's timers overflow past 24.8 days
 * and would fire at once). */
export const MAX_DURATION_SEC = 7 * 24 * 3600;
const seconds = () => z.number().positive().max(MAX_DURATION_SEC, `at most ${MAX_DURATION_SEC} s (a week)`);

export const ADAPTERS = ['rspec', 'mocha', 'jest', 'vitest', 'node-test', 'pytest', 'go', 'playwright', 'junit', 'command'] as const;
export type AdapterName = (typeof ADAPTERS)[number];

/**
 * Adapters whose plug-in has a warm runner (PROTOCOL.md, serve): a batch costs tens of
 * milliseconds instead of a framework's start, so the dispatcher cuts their runs finer.
 * The worker side runs these warm unless a run asks for `freshProcess`.
 */
export const WARM_ADAPTERS: readonly AdapterName[] = ['rspec', 'mocha', 'jest', 'vitest', 'node-test', 'pytest', 'go'];

const runId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/, 'runId: letters, digits, "_", "." or "-", at most 100');

/** A supervisor label a run may require: `name` or `name=value`. */
export const label = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:/-]*(=[A-Za-z0-9_.:/-]*)?$/, 'a label: name or name=value (letters, digits, "_", ".", ":", "/", "-")');

/** Does a supervisor with these labels serve a run that requires `required`? */
export function labelsMatch(required: readonly string[], has: Record<string, string>): boolean {
  return required.every((l) => {
    const eq = l.indexOf('=');
    return eq < 0 ? l in has : has[l.slice(0, eq)] === l.slice(eq + 1);
  });
}

/** A test as discovered: `id` re-runs exactly this test; `name` is its full name. */
export const TestRef = z.object({
  id: z.string().min(1),
  file: z.string(),
  name: z.string(),
});
export type TestRef = z.infer<typeof TestRef>;

/** What a worker needs to run a suite: the part of a run request that travels with specs. */
export const SuiteConfig = z.object({
  adapter: z.enum(ADAPTERS),
  /** The suite directory, as a path on the worker hosts. */
  cwd: z.string().min(1),
  /** For the `command` and `junit` adapters: `discover` prints one test id per line; `run`
   * is a template where `{ids}` becomes the space-separated, shell-quoted test ids, `{id}`
   * the single id (the spec then carries one test) and, for `junit`, `{junit}` the file
   * the command must write its JUnit XML to (also in $WARREN_JUNIT_FILE). */
  command: z.object({ discover: z.string().min(1), run: z.string().min(1) }).optional(),
  /** The framework's own options and paths, as the project's test command gives them
   * (`--require test/support/env --check-leaks test/ test/acceptance/`): the plug-in hands
   * them to the framework's own option parser (PROTOCOL.md, WARREN_FRAMEWORK_ARGS). */
  args: z.array(z.string().max(4096)).max(500).default([]),
  /** Extra environment for the test processes. */
  env: z.record(z.string(), z.string()).default({}),
  /** A single test running longer than this is killed and reported "timed out after N s". */
  testTimeoutSec: seconds().default(300),
  /** The suite's image, for supervisors on the docker driver (pulled when missing). */
  image: z.string().min(1).optional(),
  /** Every batch in a cold framework process of its own, instead of a slot's warm runner
   * (for suites that leave global state behind that the next batch would see). */
  freshProcess: z.boolean().default(false),
  /** Once per worker slot before its first spec of the run (a shell command, with
   * TEST_ENV_NUMBER / WARREN_WORKER_INDEX: e.g. create and load that worker's database); a
   * failing setup takes the slot out of the run. */
  setupCommand: z.string().min(1).optional(),
  /** When the slot leaves the run (the run ended, or the slot stops). */
  teardownCommand: z.string().min(1).optional(),
  /** Only supervisors with every one of these labels run it (`gpu`, or `os=linux`). */
  labels: z.array(label).max(20).default([]),
  /** Environment values sealed with the cluster's key (`--secret-env`, shared/signing.ts):
   * opened only by the slot that runs the tests, never in clear in a message, a journal, a
   * dead letter or a log. */
  secretEnv: z.record(z.string(), z.string()).default({}),
  /** The submitter's signature (shared/signing.ts): checked by the dispatcher (the whole
   * request) and by every slot (this suite, bound to the run id) when a key is configured. */
  auth: z.object({
    alg: z.literal('hmac-sha256'),
    at: z.number(),
    nonce: z.string().regex(/^[0-9a-f]{32}$/),
    request: z.string().regex(/^[0-9a-f]{64}$/),
    suite: z.string().regex(/^[0-9a-f]{64}$/),
  }).optional(),
});
export type SuiteConfig = z.infer<typeof SuiteConfig>;
export type RunAuth = NonNullable<SuiteConfig['auth']>;

/** The part of a run that travels with its specs (and keys a slot's warm runner). */
export function suiteOf(run: SuiteConfig): SuiteConfig {
  return {
    adapter: run.adapter, cwd: run.cwd, command: run.command, args: run.args, env: run.env, testTimeoutSec: run.testTimeoutSec, image: run.image,
    freshProcess: run.freshProcess, setupCommand: run.setupCommand, teardownCommand: run.teardownCommand, labels: run.labels,
    secretEnv: run.secretEnv, auth: run.auth,
  };
}

/**
 * A run request, as published to exchange `warren.runs` with routing key `run.request`.
 * Everything but `adapter` and `cwd` is optional, so a hand-written message from the
 * management UI's "Publish message" form works.
 */
export const RunRequest = SuiteConfig.extend({
  type: z.literal('run.request'),
  v: z.literal(SCHEMA_VERSION).default(SCHEMA_VERSION),
  runId: runId.optional(),
  id: z.string().optional(),
  /** Regular expressions matched against a test's id and its full name. */
  pattern: z.string().max(1000).optional(),
  exclude: z.string().max(1000).optional(),
  /** Only these test ids (e.g. the failures of an earlier run), before pattern/exclude. */
  only: z.array(z.string()).min(1).optional(),
  /** Another round re-runs the failures while failed/total is at most this. */
  rerunThreshold: z.number().min(0).max(1).default(0.1),
  /** Rounds in all, the first included. */
  maxRounds: z.number().int().min(1).max(20).default(3),
  /** Tests with no result this long after the run started are failed as dropped. */
  runTimeoutSec: seconds().default(3600),
  /** At most this many tests in one spec (one framework process). */
  maxBatch: z.number().int().min(1).max(1000).default(50),
  /** Where the aggregator writes report.json, junit.xml, summary.md: a directory under its
   * own `--report-dir` (a relative path; default `<runId>`). */
  reportDir: z.string().max(500).optional(),
  /** Known durations in ms by test id (from an earlier report): batches are then sized by
   * time and the longest go first. */
  durations: z.record(z.string(), z.number().min(0)).optional(),
  /** Stop the run after this many failed tests (counted once no re-run can save them, or at
   * once with `failFast`): the rest are reported `not_run`. */
  maxFailures: z.number().int().min(1).optional(),
  /** Count failures as they come, not after the re-run decision (`--fail-fast` alone: 1). */
  failFast: z.boolean().default(false),
  /** Who started it (user@host), for `warren status`. */
  startedBy: z.string().max(200).optional(),
});
export type RunRequest = z.infer<typeof RunRequest>;

/** A relative path that stays under the directory it is joined to (no `..`, not absolute). */
export function isConfinedPath(p: string): boolean {
  return p.length > 0 && !p.startsWith('/') && !p.includes('\0') && !p.split(/[\\/]/).includes('..');
}

/** One-line problem with a run request that the schema cannot express, or null. */
export function runRequestProblem(r: RunRequest): string | null {
  for (const field of ['pattern', 'exclude'] as const) {
    const value = r[field];
    if (value === undefined) continue;
    try {
      new RegExp(value);
    } catch (err) {
      return `${field}: not a valid regular expression: ${(err as Error).message}`;
    }
  }
  if ((r.adapter === 'command' || r.adapter === 'junit') && !r.command) return `command: required with adapter "${r.adapter}" ({ "discover": ..., "run": ... })`;
  if (!r.cwd.startsWith('/')) return `cwd: must be an absolute path, got ${JSON.stringify(r.cwd)}`;
  if (r.reportDir !== undefined && !isConfinedPath(r.reportDir)) {
    return `reportDir: must be a relative path under the aggregator's report directory, without "..", got ${JSON.stringify(r.reportDir)}`;
  }
  return null;
}
export type RunRequestInput = z.input<typeof RunRequest>;

/** A run request after the dispatcher accepted it: ids assigned, defaults applied. */
export const AcceptedRun = RunRequest.extend({
  runId,
  id: z.string(),
  acceptedAt: z.number(),
  deadline: z.number(),
  /** Its work queue (topology SPEC_SHARDS). */
  shard: z.number().int().min(0).default(0),
});
export type AcceptedRun = z.infer<typeof AcceptedRun>;

const envelope = { v: z.literal(SCHEMA_VERSION), id: z.string().min(1), runId };

/**
 * A job whose worker's environment broke under it (its container died, its slot failed)
 * and that went back to the queue as a fresh message: not its tests' doing, so it does not
 * use up their crash budget (the queue's delivery limit); bounded by itself instead.
 */
export const InfraFailures = z.object({
  failures: z.number().int().min(1),
  /** The supervisors it broke on. */
  hosts: z.array(z.string()),
  /** The latest reason. */
  last: z.string(),
});
export type InfraFailures = z.infer<typeof InfraFailures>;

/** On `warren.work`: discover the suite's tests (a dry run, by a worker). */
export const DiscoverJob = z.object({
  ...envelope,
  type: z.literal('discover'),
  run: AcceptedRun,
  infra: InfraFailures.optional(),
});
export type DiscoverJob = z.infer<typeof DiscoverJob>;

/** On `warren.work`: run these tests in one framework process. */
export const SpecJob = z.object({
  ...envelope,
  type: z.literal('spec'),
  round: z.number().int().min(1),
  tests: z.array(TestRef).min(1),
  suite: SuiteConfig,
  expiresAt: z.number(),
  /** The run's work queue, where a re-queued part of this spec goes. */
  shard: z.number().int().min(0).default(0),
  infra: InfraFailures.optional(),
});
export type SpecJob = z.infer<typeof SpecJob>;

export const Job = z.discriminatedUnion('type', [DiscoverJob, SpecJob]);
export type Job = z.infer<typeof Job>;

/** To the dispatcher: the result of a discovery. */
export const Discovered = z.object({
  ...envelope,
  type: z.literal('run.discovered'),
  run: AcceptedRun,
  tests: z.array(TestRef),
  error: z.string().optional(),
  worker: z.string(),
  /** The list came from the worker's discovery cache (the suite's files are unchanged). */
  cached: z.boolean().optional(),
});
export type Discovered = z.infer<typeof Discovered>;

/** To the dispatcher, from the aggregator: run another round of these tests. */
export const RoundRequest = z.object({
  ...envelope,
  type: z.literal('round.request'),
  round: z.number().int().min(2),
  tests: z.array(TestRef).min(1),
  run: AcceptedRun,
});
export type RoundRequest = z.infer<typeof RoundRequest>;

export const DispatcherMessage = z.discriminatedUnion('type', [
  RunRequest,
  Discovered,
  RoundRequest,
]);
export type DispatcherMessage = z.infer<typeof DispatcherMessage>;

export const TEST_STATUSES = ['passed', 'failed', 'pending'] as const;
export type TestStatus = (typeof TEST_STATUSES)[number];

/** One test's outcome in one attempt. */
export const TestResult = z.object({
  testId: z.string(),
  file: z.string(),
  name: z.string(),
  status: z.enum(TEST_STATUSES),
  durationMs: z.number().min(0),
  message: z.string().optional(),
  /** Where the failure is: backtrace, stderr tail. */
  details: z.string().optional(),
  /** The same failure every time (its file does not load, its package does not build): not re-run. */
  once: z.boolean().optional(),
  /** Passed, after `failures` failed attempts of the framework's own retries in this run
   * (Playwright's `retries`): the first failure's message and details. Reported flaky. */
  retried: z.object({ failures: z.number().int().min(1), message: z.string().optional(), details: z.string().optional() }).optional(),
});
export type TestResult = z.infer<typeof TestResult>;

/** To the aggregator: the dispatcher accepted a run. */
export const RunAccepted = z.object({ ...envelope, type: z.literal('run.accepted'), run: AcceptedRun });
export type RunAccepted = z.infer<typeof RunAccepted>;

/** To the aggregator: these tests make up a round (or discovery failed: `error`). */
export const RoundPlanned = z.object({
  ...envelope,
  type: z.literal('round.planned'),
  round: z.number().int().min(1),
  tests: z.array(TestRef),
  specs: z.number().int().min(0),
  error: z.string().optional(),
  /** Round 1: how the tests were found (a worker's discovery cache, or the framework). */
  discovery: z.object({ cached: z.boolean(), found: z.number(), known: z.number().optional() }).optional(),
});
export type RoundPlanned = z.infer<typeof RoundPlanned>;

/** To the aggregator: results of (part of) a spec. */
export const SpecResult = z.object({
  ...envelope,
  type: z.literal('spec.result'),
  specId: z.string(),
  round: z.number().int().min(1),
  worker: z.string(),
  results: z.array(TestResult),
  /** The batch's wall time on its worker, start of the framework process (or of the warm
   * runner's batch) to its end. */
  elapsedMs: z.number().optional(),
});
export type SpecResult = z.infer<typeof SpecResult>;

/** To the aggregator (on warren.runs, `run.cancel`): stop this run; what finished is reported. */
export const RunCancel = z.object({
  ...envelope,
  type: z.literal('run.cancel'),
  /** Who asked (user@host), in the report. */
  by: z.string().max(200).default('someone'),
});
export type RunCancel = z.infer<typeof RunCancel>;

/** To the aggregator: a slot's setup command failed; the slot is out of the run. */
export const SetupFailed = z.object({
  ...envelope,
  type: z.literal('setup.failed'),
  worker: z.string(),
  message: z.string(),
});
export type SetupFailed = z.infer<typeof SetupFailed>;

export const AggregatorMessage = z.discriminatedUnion('type', [RunAccepted, RoundPlanned, SpecResult, RunCancel, SetupFailed]);
export type AggregatorMessage = z.infer<typeof AggregatorMessage>;

/** `not_run`: the run stopped (cancelled, --max-failures) before the test had a result. */
export const FINAL_STATUSES = ['passed', 'failed', 'flaky', 'pending', 'not_run'] as const;
export type FinalStatus = (typeof FINAL_STATUSES)[number];

/** The final word on one test. */
export const ReportTest = z.object({
  id: z.string(),
  file: z.string(),
  name: z.string(),
  status: z.enum(FINAL_STATUSES),
  durationMs: z.number(),
  message: z.string().optional(),
  details: z.string().optional(),
  /** Status in each round it ran, first round first. */
  attempts: z.array(z.enum(TEST_STATUSES)),
  worker: z.string().optional(),
});
export type ReportTest = z.infer<typeof ReportTest>;

export const RunReport = z.object({
  ...envelope,
  type: z.literal('run.report'),
  status: z.enum(['passed', 'failed', 'error', 'cancelled']),
  /** Set when the run could not run at all (discovery failed). */
  error: z.string().optional(),
  /** Why it stopped before every test ran (cancelled by whom, or after N failures). */
  stopped: z.string().optional(),
  /** Slots whose setup command failed (each was taken out of the run). */
  setupFailures: z.array(z.object({ worker: z.string(), message: z.string() })).optional(),
  adapter: z.string(),
  cwd: z.string(),
  startedAt: z.number(),
  finishedAt: z.number(),
  rounds: z.number().int(),
  totals: z.object({
    total: z.number(),
    passed: z.number(),
    failed: z.number(),
    flaky: z.number(),
    pending: z.number(),
    notRun: z.number().default(0),
  }),
  tests: z.array(ReportTest),
  /** Each batch's results as they came (the report's per-worker timeline): its worker, when
   * it ran (ended when its results came; began its wall time before), how it went. */
  batches: z.array(z.object({
    worker: z.string(),
    round: z.number(),
    startedAt: z.number(),
    finishedAt: z.number(),
    tests: z.number(),
    failed: z.number(),
    timedOut: z.boolean().optional(),
    crashed: z.boolean().optional(),
  })).optional(),
  /** What a batch cost beyond its tests' own durations, the wait since its worker's
   * previous batch included (median over the run's specs, ms): the dispatcher sizes later
   * runs' batches by it. */
  batchOverheadMs: z.number().optional(),
});
export type RunReport = z.infer<typeof RunReport>;

export const RunProgress = z.object({
  ...envelope,
  type: z.literal('run.progress'),
  round: z.number(),
  total: z.number(),
  done: z.number(),
  passed: z.number(),
  failed: z.number(),
  flaky: z.number(),
  pending: z.number(),
  activeWorkers: z.number(),
  etaSec: z.number().nullable(),
  startedAt: z.number(),
  /** Round 1: how the tests were found (a worker's discovery cache, or the framework). */
  discovery: z.object({ cached: z.boolean(), found: z.number(), known: z.number().optional() }).optional(),
});
export type RunProgress = z.infer<typeof RunProgress>;

export const ReportMessage = z.discriminatedUnion('type', [RunProgress, RunReport]);

/** One run in progress, as the active aggregator sees it. */
export const RunState = z.object({
  runId: z.string(),
  shard: z.number(),
  labels: z.array(z.string()),
  startedBy: z.string().optional(),
  adapter: z.string(),
  cwd: z.string(),
  acceptedAt: z.number(),
  deadline: z.number(),
  round: z.number(),
  total: z.number(),
  done: z.number(),
  failed: z.number(),
  flaky: z.number(),
  etaSec: z.number().nullable(),
  /** Slots out of the run after their setup failed. */
  setupFailures: z.number().default(0),
});
export type RunState = z.infer<typeof RunState>;

/**
 * On warren.reports (`runs.state`), every few seconds and when a run opens or ends, from the
 * active aggregator: what the slots take work for (the shards of the runs in progress, and of
 * those just ended, whose leftover specs they drop) and what `warren status` shows. Transient.
 */
export const RunsState = z.object({
  type: z.literal('runs.state'),
  v: z.literal(SCHEMA_VERSION),
  at: z.number(),
  runs: z.array(RunState),
  /** Runs ended lately: slots drop their specs. */
  finished: z.array(z.object({ runId: z.string(), deadline: z.number(), status: z.string(), finishedAt: z.number() })),
  /** Shards with runs in progress or ended lately. */
  shards: z.array(z.number()),
});
export type RunsState = z.infer<typeof RunsState>;

/** On warren.reports (`work.wake`): jobs were published to this shard; idle slots look. Transient. */
export const WorkWake = z.object({
  type: z.literal('work.wake'),
  v: z.literal(SCHEMA_VERSION),
  runId: z.string(),
  shard: z.number().int().min(0),
  labels: z.array(z.string()).default([]),
});
export type WorkWake = z.infer<typeof WorkWake>;

/** After a run's report, on warren.reports (`run.<id>.finished`): workers drop its remaining
 * specs (redelivered or duplicated ones) and stop any of its tests still running. Transient. */
export const RunFinished = z.object({
  type: z.literal('run.finished'),
  v: z.literal(SCHEMA_VERSION),
  runId: z.string().min(1),
  status: z.string(),
  /** The run's deadline: with the id, it names this run (a later run may reuse the id once
   * an aggregator forgot it; its specs carry another deadline). */
  deadline: z.number(),
  /** What `warren runs` shows (absent when an aggregator tells an end again). */
  totals: RunReport.shape.totals.optional(),
  startedAt: z.number().optional(),
  finishedAt: z.number().optional(),
  startedBy: z.string().optional(),
  adapter: z.string().optional(),
  error: z.string().optional(),
  stopped: z.string().optional(),
});
export type RunFinished = z.infer<typeof RunFinished>;
export type ReportMessage = z.infer<typeof ReportMessage>;

/** Fanned out every few seconds by each supervisor; transient. */
export const Heartbeat = z.object({
  type: z.literal('supervisor.heartbeat'),
  v: z.literal(SCHEMA_VERSION),
  supervisor: z.string(),
  host: z.string(),
  at: z.number(),
  driver: z.string().default('local'),
  labels: z.record(z.string(), z.string()).default({}),
  state: z.enum(['starting', 'running', 'draining', 'stopped', 'failed']).default('running'),
  /** Taken out of rotation: its worker environments kept breaking (the reason). */
  drained: z.string().optional(),
  slots: z.array(
    z.object({
      index: z.number(),
      state: z.enum(['starting', 'idle', 'busy', 'restarting', 'stopped']),
      runId: z.string().optional(),
    }),
  ),
});
export type Heartbeat = z.infer<typeof Heartbeat>;

export type ParseResult<T> = { ok: true; value: T } | { ok: false; reason: string };

/** Parses a message body: bad JSON or a schema mismatch becomes a one-line reason. */
/** No Warren message is near this: one above it is refused before it is parsed. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

export function parseMessage<T>(schema: z.ZodType<T>, body: Buffer | string): ParseResult<T> {
  const size = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
  if (size > MAX_MESSAGE_BYTES) return { ok: false, reason: `too big: ${(size / 1048576).toFixed(1)} MiB, over the ${MAX_MESSAGE_BYTES / 1048576} MiB a Warren message may have` };
  let json: unknown;
  try {
    json = JSON.parse(typeof body === 'string' ? body : body.toString('utf8'));
  } catch (err) {
    return { ok: false, reason: `not JSON: ${(err as Error).message}` };
  }
  const parsed = schema.safeParse(json);
  if (parsed.success) return { ok: true, value: parsed.data };
  const issue = parsed.error.issues[0]!;
  const where = issue.path.length ? issue.path.join('.') : '(message)';
  const type = typeof json === 'object' && json && 'type' in json ? ` (type ${JSON.stringify((json as { type: unknown }).type)})` : '';
  return { ok: false, reason: `invalid message${type}: ${where}: ${issue.message}` };
}
