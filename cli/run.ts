/**
 * `warren run`: builds a run request from the flags, publishes it, follows the run (the
 * progress line) to its report, writes the report files and prints the summary; with
 * `--local` it first starts a dispatcher, an aggregator and a supervisor of its own.
 *
 * Exit codes: 0 all tests passed (flaky included), 1 some failed, 2 usage or infrastructure
 * error (bad flag, missing suite directory, unreachable broker, no report in time).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Broker } from '../shared/broker.js';
import { brokerUrl, fraction, positiveInt, positiveNumber } from '../shared/config.js';
import { UsageError, errorMessage } from '../shared/errors.js';
import { createLogger } from '../shared/log.js';
import {
  ADAPTERS, ReportMessage, RunRequest, parseMessage, runRequestProblem,
  type AdapterName, type RunProgress, type RunReport,
} from '../shared/messages.js';
import { writeReportFiles } from '../shared/report.js';
import { EXCHANGES, ROUTING } from '../shared/topology.js';
import { Dispatcher } from '../services/dispatcher/dispatcher.js';
import { Aggregator } from '../services/aggregator/aggregator.js';
import { Supervisor, defaultCacheRoot } from '../services/worker-supervisor/supervisor.js';
import { loadSupervisorConfig, type SupervisorConfigInput } from '../services/worker-supervisor/config.js';
import { detectAdapter } from './detect.js';

export const EXIT = { passed: 0, failed: 1, error: 2 } as const;

export interface RunFlags {
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
}

function buildRequest(flags: RunFlags): RunRequest {
  const cwd = path.resolve(flags.cwd);
  // With an image and remote workers, --cwd is a path inside the image: nothing to check here.
  const inImage = flags.image !== undefined && !flags.local;
  if (!inImage && (!fs.existsSync(cwd) || !fs.statSync(cwd).isDirectory())) throw new UsageError(`--cwd: suite directory ${cwd} does not exist`);
  let adapter = flags.adapter as AdapterName | undefined;
  if (adapter === undefined && inImage) throw new UsageError('--adapter: required when --cwd is a path inside --image');
  if (adapter === undefined) {
    const found = detectAdapter(cwd);
    adapter = found.adapter;
    process.stderr.write(`warren: adapter ${found.adapter} (found ${found.why}); --adapter to choose another\n`);
  }
  if (!ADAPTERS.includes(adapter)) throw new UsageError(`--adapter: unknown adapter ${JSON.stringify(adapter)}; expected one of ${ADAPTERS.join(', ')}`);
  const env: Record<string, string> = {};
  for (const pair of flags.env) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--env: expected KEY=VALUE, got ${JSON.stringify(pair)}`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const commanded = adapter === 'command' || adapter === 'junit';
  if (commanded && (!flags.discoverCommand || !flags.runCommand)) {
    throw new UsageError(`--adapter ${adapter} needs --discover-command and --run-command`);
  }
  const input = {
    type: 'run.request',
    runId: flags.runId ?? `run-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}-${randomBytes(3).toString('hex')}`,
    adapter,
    cwd,
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

/** A progress line on a terminal (rewritten in place), or a line now and then in a log. */
class ProgressView {
  private lastPrinted = 0;
  private width = 0;
  private toldDiscovery = false;
  private readonly since = Date.now();
  constructor(private readonly out: NodeJS.WriteStream) {}
  /** Discovery is under way: say so, the terminal is not frozen. */
  discovering(): void {
    this.out.write('warren: discovering tests...\n');
  }
  show(p: RunProgress): void {
    if (p.discovery && !this.toldDiscovery) {
      this.toldDiscovery = true;
      const how = p.discovery.cached ? "from the worker's discovery cache: the suite is unchanged" : `discovered in ${((Date.now() - this.since) / 1000).toFixed(1)} s`;
      const known = p.discovery.known ? `, ${p.discovery.known} with known durations (longest first)` : '';
      this.out.write(`warren: ${p.discovery.found} tests found (${how}), ${p.total} to run${known}\n`);
    }
    const eta = p.etaSec === null ? '' : `  ETA ${formatDuration(p.etaSec)}`;
    const line = `round ${p.round}  ${p.done}/${p.total} done  ${p.passed} passed  ${p.failed} failed  ${p.flaky} flaky  ${p.activeWorkers} workers active${eta}`;
    if (this.out.isTTY) {
      this.out.write(`\r${line.padEnd(this.width)}`);
      this.width = line.length;
    } else if (Date.now() - this.lastPrinted > 5000 || p.done === p.total) {
      this.out.write(`${line}\n`);
      this.lastPrinted = Date.now();
    }
  }
  end(): void {
    if (this.out.isTTY && this.width) this.out.write('\n');
    this.width = 0;
  }
}

function formatDuration(sec: number): string {
  if (sec < 60) return `${Math.round(sec)}s`;
  return `${Math.floor(sec / 60)}m${String(Math.round(sec % 60)).padStart(2, '0')}s`;
}

function printSummary(report: RunReport, files: string[]): void {
  const t = report.totals;
  const secs = ((report.finishedAt - report.startedAt) / 1000).toFixed(1);
  const lines: string[] = [];
  lines.push(
    `warren: run ${report.runId} ${report.status === 'error' ? 'could not run' : report.status}: ${t.total} tests, ${t.passed} passed, ${t.failed} failed, ${t.flaky} flaky, ${t.pending} pending (${report.rounds} round${report.rounds === 1 ? '' : 's'}, ${secs} s)`,
  );
  if (report.error) lines.push(`  error: ${report.error}`);
  const failed = report.tests.filter((x) => x.status === 'failed');
  if (failed.length) {
    lines.push('', 'Failed:');
    for (const x of failed) lines.push(`  ✗ ${x.name}  (${x.id})`, `      ${(x.message ?? '').split('\n')[0]}`);
  }
  const flaky = report.tests.filter((x) => x.status === 'flaky');
  if (flaky.length) {
    lines.push('', 'Flaky (failed, then passed):');
    for (const x of flaky) lines.push(`  ~ ${x.name}  (${x.id})  attempts: ${x.attempts.join(' → ')}`);
  }
  lines.push('', `Reports: ${files.join(', ')}`);
  process.stdout.write(lines.join('\n') + '\n');
}

interface LocalServices {
  /** Until the run's durations are in the local history (bounded). */
  recorded(runId: string): Promise<void>;
  stop(): Promise<void>;
}

async function startLocal(url: string, workers: number, flags: RunFlags): Promise<LocalServices> {
  // The person at the terminal reads the progress line and the summary (which says what
  // crashed or timed out); services and their slots log only errors unless
  // WARREN_LOG_LEVEL says otherwise.
  process.env.WARREN_LOG_LEVEL ??= 'error';
  const level = process.env.WARREN_LOG_LEVEL;
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-local-'));
  // the history outlives the run's temporary directory: the next run is balanced by it
  const dispatcher = new Dispatcher({ brokerUrl: url, log: createLogger('dispatcher', level), historyFile: path.join(defaultCacheRoot(), 'history.sqlite') });
  const aggregator = new Aggregator({
    brokerUrl: url, reportDir: path.join(stateDir, 'reports'),
    log: createLogger('aggregator', level),
    onFatal: (err) => {
      process.stderr.write(`warren: the local aggregator stopped: ${err.message}\n`);
      process.exit(2);
    },
  });
  // --local --driver docker: the suite directory from --cwd is mounted into the containers
  const config = loadSupervisorConfig({
    workers, driver: flags.driver as SupervisorConfigInput['driver'],
    docker: { mountSuite: true, image: flags.image, memory: flags.memory, isolation: flags.isolation as 'slot' | 'spec' | undefined, network: flags.network as 'none' | 'host' | undefined },
  });
  const supervisor = new Supervisor({
    brokerUrl: url, workers, graceMs: 2000, log: createLogger('worker-supervisor', level), dir: path.join(stateDir, 'slots'),
    driver: config.driver, docker: config.docker,
  });
  await Promise.all([dispatcher.start(), aggregator.start(), supervisor.start()]);
  return {
    recorded: (runId) => dispatcher.historyRecorded(runId, 5000),
    async stop() {
      // each step on its own: one failing must not keep the others running
      for (const s of [supervisor, dispatcher, aggregator]) {
        try {
          await s.stop();
        } catch {
          // best effort on the way out
        }
      }
      fs.rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

export async function run(flags: RunFlags): Promise<number> {
  let request: RunRequest;
  try {
    request = buildRequest(flags);
  } catch (err) {
    if (!(err instanceof NothingToRun)) throw err;
    process.stderr.write(`warren: ${err.message}\n`);
    return EXIT.passed;
  }
  const runId = request.runId!;
  const url = brokerUrl(flags.broker);
  const workers = flags.workers !== undefined ? positiveInt('--workers', flags.workers) : os.availableParallelism();
  if (flags.workers !== undefined && !flags.local) throw new UsageError('--workers: only with --local (remote supervisors have their own --workers)');
  if (flags.driver !== undefined && !flags.local) throw new UsageError('--driver: only with --local (remote supervisors have their own --driver)');
  const log = createLogger('cli', process.env.WARREN_LOG_LEVEL ?? 'warn');
  const broker = new Broker({ url, name: `warren cli ${runId}`, log, connectAttempts: 3 });
  await broker.start();
  let local: LocalServices | undefined;
  const progress = new ProgressView(process.stderr);
  try {
    if (flags.local) local = await startLocal(url, workers, flags);
    const report = await new Promise<RunReport>((resolve, reject) => {
      const waitMs = request.runTimeoutSec * 1000 + 120_000;
      const timer = setTimeout(() => reject(new UsageError(`no report for run ${runId} within ${Math.round(waitMs / 1000)} s: are a dispatcher, an aggregator and a supervisor running on ${url}?`)), waitMs);
      broker
        .watch(EXCHANGES.reports, `run.${runId}.*`, `warren.cli.${runId}`, async (d) => {
          d.ack();
          const msg = parseMessage(ReportMessage, d.body);
          if (!msg.ok) return;
          if (msg.value.type === 'run.progress') progress.show(msg.value);
          else {
            clearTimeout(timer);
            resolve(msg.value);
          }
        }, { kind: 'kept' })
        .then(() => broker.publish(EXCHANGES.runs, ROUTING.runRequest, request))
        .then(() => process.stderr.write(`warren: run ${runId} published (${request.adapter}, ${request.cwd}${flags.local ? `, ${workers} local workers` : ''}${request.durations ? `, batches balanced by ${Object.keys(request.durations).length} known durations` : ''}${request.freshProcess ? ', a fresh process per batch' : ''})\n`))
        .then(() => progress.discovering())
        .catch(reject);
    });
    progress.end();
    const files = writeReportFiles(path.resolve(flags.reportDir), report);
    printSummary(report, files);
    await local?.recorded(runId);
    return EXIT[report.status];
  } finally {
    progress.end();
    await local?.stop();
    // Bounded: a connection whose socket died under the close handshake never answers, and
    // with nothing else pending Node would end the process with code 13 (an unsettled
    // await) instead of the report's exit code (seen in the chaos suite).
    await Promise.race([broker.close(), new Promise((r) => setTimeout(r, 5000))]);
  }
}
