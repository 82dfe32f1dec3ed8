/**
 * `warren run`: builds a run request from the flags, publishes it, follows the run (the
 * progress line) to its report, writes the report files and prints the summary; with
 * `--local` it first starts a dispatcher, an aggregator and a supervisor of its own.
 *
 * Ctrl-C cancels the run (its report says what had finished; exit 130); a second Ctrl-C
 * only detaches (the run goes on ending; `warren follow RUN_ID` picks it up again).
 *
 * Exit codes: 0 all tests passed (flaky included), 1 some failed, 2 usage or infrastructure
 * error (bad flag, missing suite directory, unreachable broker, no report in time), 130
 * cancelled.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Broker, redact } from '../shared/broker.js';
import { userOf } from '../shared/broker/connection.js';
import { runIdPrefix } from '../shared/roles.js';
import { loadSigningKey, sealSecrets, signRequest } from '../shared/signing.js';
import type { GitHubReporter } from '../services/github/reporter.js';
import { brokerUrl, fraction, positiveInt, positiveNumber } from '../shared/config.js';
import { UsageError, errorMessage } from '../shared/errors.js';
import { createLogger } from '../shared/log.js';
import {
  ADAPTERS, RunRequest, SCHEMA_VERSION, runRequestProblem,
  type AdapterName, type RunCancel, type RunFinished,
} from '../shared/messages.js';
import { writeReportFiles } from '../shared/report.js';
import { EXCHANGES, ROUTING } from '../shared/topology.js';
import { Dispatcher } from '../services/dispatcher/dispatcher.js';
import { Aggregator } from '../services/aggregator/aggregator.js';
import { Supervisor, defaultCacheRoot } from '../services/worker-supervisor/supervisor.js';
import { loadSupervisorConfig, type SupervisorConfigInput } from '../services/worker-supervisor/config.js';
import { takeSpares } from '../services/worker-supervisor/slot-process.js';
import { detectAdapter } from './detect.js';
import { describeCommand, parseTestCommand, scriptTestCommand } from './test-command.js';
import { WorkerWatch } from './preflight.js';
import { EXIT, ProgressView, endLine, followRun, printSummary, whoAmI } from './follow.js';

export { EXIT } from './follow.js';

export interface RunFlags {
  /** The test command after `--` (`mocha --require x test/`). */
  command?: string[];
  verbose?: boolean;
  logFile?: string;
  waitForWorkers?: boolean;
  adapter?: string;
  cwd: string;
  pattern?: string;
  exclude?: string;
  reportDir: string;
  rerunThreshold: string;
  maxRounds: string;
  testTimeout: string;
  runTimeout: string;
  maxBatch: string;
  env: string[];
  discoverCommand?: string;
  runCommand?: string;
  broker?: string;
  local?: boolean;
  workers?: string;
  runId?: string;
  timings?: string | false;
  image?: string;
  onlyFailuresFrom?: string;
  driver?: string;
  memory?: string;
  isolation?: string;
  network?: string;
  freshProcess?: boolean;
  labels?: string;
  maxFailures?: string;
  failFast?: boolean;
  setupCommand?: string;
  teardownCommand?: string;
  secretEnv: string[];
  signingKeyFile?: string;
  githubPr?: string;
  reportUrl?: string;
}

function buildRequest(flags: RunFlags, runIdPrefix = 'run-'): RunRequest {
  const cwd = path.resolve(flags.cwd);
  // With an image and remote workers, --cwd is a path inside the image: nothing to check here.
  const inImage = flags.image !== undefined && !flags.local;
  if (!inImage && (!fs.existsSync(cwd) || !fs.statSync(cwd).isDirectory())) throw new UsageError(`--cwd: suite directory ${cwd} does not exist`);
  let adapter = flags.adapter as AdapterName | undefined;
  if (adapter !== undefined && !ADAPTERS.includes(adapter)) throw new UsageError(`--adapter: unknown adapter ${JSON.stringify(adapter)}; expected one of ${ADAPTERS.join(', ')}`);
  // the framework, its options and paths: the command after --, else the project's own
  // `npm test` when it runs a framework, else what the directory holds
  let testCommand = flags.command?.length ? parseTestCommand(flags.command) : undefined;
  if (testCommand && adapter !== undefined && adapter !== testCommand.adapter) {
    throw new UsageError(`--adapter ${adapter}: the command after -- runs ${testCommand.adapter}`);
  }
  if (!testCommand && !inImage) {
    const script = scriptTestCommand(cwd);
    if (script && (adapter === undefined || adapter === script.adapter)) testCommand = script;
  }
  if (testCommand) {
    adapter = testCommand.adapter;
    process.stderr.write(`warren: ${describeCommand(testCommand)}\n`);
  }
  if (adapter === undefined && inImage) throw new UsageError('--adapter: required when --cwd is a path inside --image');
  if (adapter === undefined) {
    const found = detectAdapter(cwd);
    adapter = found.adapter;
    process.stderr.write(`warren: adapter ${found.adapter} (found ${found.why}); --adapter to choose another, or give the test command after --\n`);
  }
  const env: Record<string, string> = { ...testCommand?.env };
  for (const pair of flags.env) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--env: expected KEY=VALUE, got ${JSON.stringify(pair)}`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const commanded = adapter === 'command' || adapter === 'junit';
  if (commanded && testCommand) throw new UsageError(`--adapter ${adapter} takes --discover-command and --run-command, not a command after --`);
  if (commanded && (!flags.discoverCommand || !flags.runCommand)) {
    throw new UsageError(`--adapter ${adapter} needs --discover-command and --run-command`);
  }
  const input = {
    type: 'run.request',
    runId: flags.runId ?? `${runIdPrefix}${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}-${randomBytes(3).toString('hex')}`,
    adapter,
    cwd,
    args: testCommand?.args ?? [],
    pattern: flags.pattern,
    exclude: flags.exclude,
    env,
    command: commanded ? { discover: flags.discoverCommand!, run: flags.runCommand! } : undefined,
    rerunThreshold: fraction('--rerun-threshold', flags.rerunThreshold),
    maxRounds: positiveInt('--max-rounds', flags.maxRounds),
    testTimeoutSec: positiveNumber('--test-timeout', flags.testTimeout),
    runTimeoutSec: positiveNumber('--run-timeout', flags.runTimeout),
    maxBatch: positiveInt('--max-batch', flags.maxBatch),
    image: flags.image,
    freshProcess: flags.freshProcess ?? false,
    only: flags.onlyFailuresFrom ? failuresFrom(flags.onlyFailuresFrom) : undefined,
    labels: flags.labels ? flags.labels.split(',').map((l) => l.trim()).filter(Boolean) : [],
    maxFailures: flags.maxFailures !== undefined ? positiveInt('--max-failures', flags.maxFailures) : undefined,
    failFast: flags.failFast ?? false,
    setupCommand: flags.setupCommand,
    teardownCommand: flags.teardownCommand,
    startedBy: whoAmI(),
  };
  const durations = loadDurations(flags);
  const parsed = RunRequest.safeParse({ ...input, durations });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UsageError(`${issue.path.join('.')}: ${issue.message}`);
  }
  const problem = runRequestProblem(parsed.data);
  if (problem) throw new UsageError(problem);
  return parsed.data;
}

/** The request with `--secret-env` values sealed and, with a key, signed. */
function sealAndSign(request: RunRequest, names: string[], key: Buffer | undefined): RunRequest {
  if (names.length > 0 && !key) throw new UsageError('--secret-env: needs a signing key (WARREN_SIGNING_KEY or --signing-key-file), the one the supervisors have');
  const secrets: Record<string, string> = {};
  for (const name of names) {
    const value = process.env[name];
    if (value === undefined) throw new UsageError(`--secret-env ${name}: not set in this environment`);
    if (name in request.env) throw new UsageError(`--secret-env ${name}: also given with --env`);
    secrets[name] = value;
  }
  const sealed = names.length > 0 ? { ...request, secretEnv: sealSecrets(secrets, key!) } : request;
  return key ? signRequest(sealed, key) : sealed;
}

/** The ids of the tests that failed in an earlier report (what a red build re-runs). */
function failuresFrom(file: string): string[] {
  let report: { tests?: Array<{ id: string; status: string }> };
  try {
    report = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new UsageError(`--only-failures-from: cannot read ${file}: ${errorMessage(err)}`);
  }
  if (!Array.isArray(report.tests)) throw new UsageError(`--only-failures-from: ${file} is not a Warren report.json (no tests)`);
  const failed = report.tests.filter((t) => t.status === 'failed').map((t) => t.id);
  if (failed.length === 0) throw new NothingToRun(`no failed tests in ${file}: nothing to re-run`);
  return failed;
}

/** Not an error: the user asked for nothing. Exit 0 with the reason. */
class NothingToRun extends Error {}

/**
 * Durations by test id from an earlier report: `--timings FILE`, else the report left in
 * --report-dir by the previous run; `--no-timings` turns it off.
 */
function loadDurations(flags: RunFlags): Record<string, number> | undefined {
  if (flags.timings === false) return undefined;
  const file = flags.timings ?? path.join(path.resolve(flags.reportDir), 'report.json');
  if (!fs.existsSync(file)) {
    if (flags.timings) throw new UsageError(`--timings: ${file} does not exist`);
    return undefined;
  }
  try {
    const report = JSON.parse(fs.readFileSync(file, 'utf8')) as { tests?: Array<{ id: string; durationMs: number; status: string }> };
    const out: Record<string, number> = {};
    for (const t of report.tests ?? []) if (t.status === 'passed' || t.status === 'failed' || t.status === 'flaky') out[t.id] = t.durationMs;
    return Object.keys(out).length ? out : undefined;
  } catch (err) {
    throw new UsageError(`--timings: cannot read ${file}: ${errorMessage(err)}`);
  }
}

interface LocalServices {
  /** Until the run's durations are in the local history (bounded). */
  recorded(runId: string): Promise<void>;
  stop(): Promise<void>;
}

async function startLocal(url: string, namespace: string, workers: number, flags: RunFlags, signingKey: Buffer | undefined): Promise<LocalServices> {
  // The person at the terminal reads the progress line and the summary (which says what
  // crashed or timed out); services and their slots log only errors unless
  // WARREN_LOG_LEVEL says otherwise.
  process.env.WARREN_LOG_LEVEL ??= 'error';
  const level = process.env.WARREN_LOG_LEVEL;
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-local-'));
  // the history outlives the run's temporary directory: the next run is balanced by it
  const dispatcher = new Dispatcher({ brokerUrl: url, namespace, log: createLogger('dispatcher', level), historyFile: path.join(defaultCacheRoot(), 'history.sqlite'), signingKey });
  const aggregator = new Aggregator({
    brokerUrl: url, namespace, reportDir: path.join(stateDir, 'reports'),
    log: createLogger('aggregator', level),
    onFatal: (err) => {
      process.stderr.write(`warren: the local aggregator stopped: ${err.message}\n`);
      process.exit(2);
    },
  });
  // --local --driver docker: the suite directory from --cwd is mounted into the containers,
  // writable (the user's own directory, as their framework would write it); tests see the
  // user's environment, but for Warren's own variables (the broker URL)
  const config = loadSupervisorConfig({
    workers, driver: flags.driver as SupervisorConfigInput['driver'], passEnv: ['*'],
    // (as the caller's own user: the suite directory is theirs)
    docker: { user: `${process.getuid?.() ?? 0}:${process.getgid?.() ?? 0}`, mountSuite: true, mountSuiteWritable: true, image: flags.image, memory: flags.memory, isolation: flags.isolation as 'slot' | 'spec' | undefined, network: flags.network as 'none' | 'host' | undefined },
  });
  const supervisor = new Supervisor({
    brokerUrl: url, namespace, workers, graceMs: 2000, log: createLogger('worker-supervisor', level), dir: path.join(stateDir, 'slots'),
    driver: config.driver, docker: config.docker, passEnv: config.passEnv, signingKey,
    // forked by bin/warren.js as the command started: loaded by now, or nearly
    spares: takeSpares(),
  });
  await Promise.all([dispatcher.start(), aggregator.start(), supervisor.start()]);
  return {
    recorded: (runId) => dispatcher.historyRecorded(runId, 5000),
    async stop() {
      // all at once, each on its own: one failing must not keep the others running (best
      // effort on the way out)
      await Promise.allSettled([supervisor, dispatcher, aggregator].map((s) => s.stop()));
      fs.rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

export async function run(flags: RunFlags): Promise<number> {
  let request: RunRequest;
  try {
    // a submitter's runs are named after it (shared/roles.ts: it reads only those reports)
    request = buildRequest(flags, runIdPrefix(userOf(brokerUrl(flags.broker).split(',')[0]!)));
  } catch (err) {
    if (!(err instanceof NothingToRun)) throw err;
    process.stderr.write(`warren: ${err.message}\n`);
    return EXIT.passed;
  }
  const runId = request.runId!;
  const url = brokerUrl(flags.broker);
  // --local with secrets and no key: a key of this run's own, for its own services
  let key = loadSigningKey(flags.signingKeyFile);
  if (!key && flags.local && flags.secretEnv.length > 0) key = Buffer.from(randomBytes(32).toString('hex'));
  request = sealAndSign(request, flags.secretEnv, key);
  // the pull request first: a wrong token or number is said before anything runs
  // octokit is loaded only for a run that reports to GitHub
  const gh = flags.githubPr || process.env.GITHUB_ACTIONS === 'true' ? await import('../services/github/reporter.js') : undefined;
  const github: GitHubReporter | undefined = flags.githubPr && gh ? new gh.GitHubReporter(gh.parsePullRequest(flags.githubPr), gh.reporterFromEnv(flags.reportUrl)) : undefined;
  if (github) await github.started(runId);
  const workers = flags.workers !== undefined ? positiveInt('--workers', flags.workers) : os.availableParallelism();
  if (flags.workers !== undefined && !flags.local) throw new UsageError('--workers: only with --local (remote supervisors have their own --workers)');
  if (flags.driver !== undefined && !flags.local) throw new UsageError('--driver: only with --local (remote supervisors have their own --driver)');
  // a person reads this terminal: log lines are readable ones, the JSON goes to --log-file
  // (or to the terminal with --verbose)
  if (flags.verbose) {
    process.env.WARREN_LOG_LEVEL ??= 'debug';
  } else {
    process.env.WARREN_PERSON_LOG = '1';
    if (flags.logFile) process.env.WARREN_LOG_FILE = path.resolve(flags.logFile);
  }
  const log = createLogger('cli', process.env.WARREN_LOG_LEVEL ?? 'warn');
  // --local: a private Warren on the broker, under a namespace of its own: it takes no other
  // run's work and no other services take its own (shared/broker.ts, namespaced)
  const namespace = flags.local ? `local-${randomBytes(4).toString('hex')}` : undefined;
  const broker = new Broker({ url, name: `warren cli ${runId}`, log, connectAttempts: 3, namespace });
  // (first: this connection declares the namespace's topology; services declaring the same
  // new quorum queues at the same time can find one not running yet: basic.get on it fails
  // with `noproc` and closes their connection. Their slots were forked as the command
  // started: bin/warren.js)
  await broker.start();
  let local: LocalServices | undefined;
  let onInterrupt: (() => void) | undefined;
  const progress = new ProgressView(process.stderr);
  try {
    if (namespace) local = await startLocal(url, namespace, workers, flags, key);
    const following = await followRun(broker, runId, {
      timeoutMs: request.runTimeoutSec * 1000 + 120_000,
      onProgress: (p) => progress.show(p),
      timeoutMessage: () => `no report for run ${runId} within ${request.runTimeoutSec + 120} s: are a dispatcher, an aggregator and a supervisor running on ${redact(url)}?`,
    });
    // Ctrl-C: the first cancels the run (and waits for its report), the second detaches
    let interrupts = 0;
    let detach!: () => void;
    const detached = new Promise<'detached'>((r) => (detach = () => r('detached')));
    onInterrupt = () => {
      interrupts++;
      progress.end();
      if (interrupts > 1) {
        process.stderr.write(`warren: detached from run ${runId}; it goes on ending without us (\`warren follow ${runId}\` picks it up again)\n`);
        return detach();
      }
      process.stderr.write(`warren: cancelling run ${runId} (Ctrl-C again to detach)\n`);
      const cancel: RunCancel = { type: 'run.cancel', v: SCHEMA_VERSION, id: `${runId}/cancel`, runId, by: whoAmI() };
      broker.publish(EXCHANGES.runs, ROUTING.runCancel, cancel).catch((err) => process.stderr.write(`warren: the cancel was not sent: ${errorMessage(err)}\n`));
    };
    process.on('SIGINT', onInterrupt);
    // what the run needs, said now rather than after its timeout (cli/preflight.ts)
    const say = (line: string) => {
      progress.end();
      process.stderr.write(`${line}\n`);
    };
    if (!local) {
      const problem = await WorkerWatch.controlPlane(broker, url, { wait: !!flags.waitForWorkers, say });
      if (problem) {
        process.stderr.write(`warren: ${problem}\n`);
        return EXIT.error;
      }
    }
    const workersHeard = await WorkerWatch.start(broker, url);
    await broker.publish(EXCHANGES.runs, ROUTING.runRequest, request);
    process.stderr.write(`warren: run ${runId} published (${request.adapter}, ${request.cwd}${flags.local ? `, ${workers} local workers` : ''}${request.durations ? `, batches balanced by ${Object.keys(request.durations).length} known durations` : ''}${request.freshProcess ? ', a fresh process per batch' : ''}${request.labels.length ? `, on supervisors labelled ${request.labels.join(',')}` : ''})\n`);
    progress.discovering(() => workersHeard.discovering(runId));
    let over = false;
    const noWorker = local ? new Promise<never>(() => undefined)
      : workersHeard.awaitAble(request.labels, { wait: !!flags.waitForWorkers, url, say, cancelled: () => over })
        .then((able) => (able ? new Promise<never>(() => undefined) : ('no-worker' as const)));
    const outcome = await Promise.race([following.report, detached, noWorker]).finally(() => (over = true));
    if (outcome === 'detached') return EXIT.cancelled;
    if (outcome === 'no-worker') {
      // not left waiting in the queue for a worker that may come in an hour
      progress.end();
      process.stderr.write(`warren: ${workersHeard.why(request.labels, url)}\n`);
      const cancel: RunCancel = { type: 'run.cancel', v: SCHEMA_VERSION, id: `${runId}/cancel`, runId, by: whoAmI() };
      await broker.publish(EXCHANGES.runs, ROUTING.runCancel, cancel).catch(() => undefined);
      process.stderr.write(`warren: run ${runId} cancelled\n`);
      return EXIT.error;
    }
    if (outcome.type === 'run.finished') {
      process.stdout.write(`${endLine(outcome as RunFinished)}\n`);
      await github?.ended(outcome as RunFinished);
      return EXIT[outcome.status as keyof typeof EXIT] ?? EXIT.error;
    }
    const report = outcome;
    progress.end();
    const files = writeReportFiles(path.resolve(flags.reportDir), report);
    printSummary(report, files);
    if (process.env.GITHUB_ACTIONS === 'true' && gh) for (const line of gh.actionsAnnotations(report)) process.stdout.write(`${line}\n`);
    if (github) process.stdout.write(`warren: the result is on ${flags.githubPr}: ${await github.finished(report)}\n`);
    await local?.recorded(runId);
    return EXIT[report.status];
  } finally {
    if (onInterrupt) process.off('SIGINT', onInterrupt);
    progress.end();
    if (local) {
      await local.stop();
      // (a consumer the broker cancels under the deletion would reconnect and declare again)
      await broker.cancelConsumers().catch(() => undefined);
      await broker.deleteNamespace().catch((err) => log.warn({ err }, 'could not remove the private queues (they expire within the hour)'));
    }
    // Bounded: a connection whose socket died under the close handshake never answers, and
    // with nothing else pending Node would end the process with code 13 (an unsettled
    // await) instead of the report's exit code (seen in the chaos suite).
    await Promise.race([broker.close(), new Promise((r) => setTimeout(r, 5000))]);
  }
}
