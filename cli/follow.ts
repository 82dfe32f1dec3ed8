/**
 * Following a run from the terminal: its progress line, its report, and the summary printed
 * at the end. `warren run` follows the run it published; `warren follow RUN_ID` follows one
 * that another process started (CI that lost its `warren run`, a colleague's run), and a run
 * that has ended already is answered from the runs log (`warren.runs.log`).
 */
import os from 'node:os';
import type { Broker } from '../shared/broker.js';
import { followRun } from '../shared/follow-run.js';
import { RunFinished, parseMessage, type RunProgress, type RunReport } from '../shared/messages.js';
import { QUEUES } from '../shared/topology.js';

export { followRun };

/** Exit codes: 0 all tests passed (flaky included), 1 some failed, 2 usage or infrastructure
 * error, 130 the run was cancelled (Ctrl-C, `warren cancel`). */
export const EXIT = { passed: 0, failed: 1, error: 2, cancelled: 130 } as const;

/** Who is at this terminal, for run requests and cancels: user@host. */
export function whoAmI(): string {
  let user = process.env.USER ?? process.env.LOGNAME ?? '';
  try {
    user ||= os.userInfo().username;
  } catch {
    // no passwd entry (a container)
  }
  return `${user || 'unknown'}@${os.hostname()}`;
}

/** The end of `runId` from the runs log, if it ended in the last week. */
export async function endedRun(broker: Broker, runId: string): Promise<RunFinished | undefined> {
  const ends = await readRunsLog(broker, Date.now() - 7 * 24 * 3600_000);
  return ends.filter((e) => e.runId === runId && e.totals !== undefined).pop();
}

/** Every run end in the runs log since `since` (ms), oldest first. */
export async function readRunsLog(broker: Broker, since: number): Promise<RunFinished[]> {
  const out: RunFinished[] = [];
  let last = Date.now();
  const sub = await broker.consume(QUEUES.runsLog, async (d) => {
    last = Date.now();
    const msg = parseMessage(RunFinished, d.body);
    if (msg.ok) out.push(msg.value);
    d.ack();
  }, { prefetch: 500, arguments: () => ({ 'x-stream-offset': { '!': 'timestamp', value: Math.floor(since / 1000) } }) });
  // a stream has no end: read until it has been quiet for a moment
  const started = Date.now();
  while (Date.now() - last < 400 || Date.now() - started < 600) await new Promise((r) => setTimeout(r, 100));
  await sub.cancel();
  return out;
}
/** A progress line on a terminal (rewritten in place), or a line now and then in a log. */
export class ProgressView {
  private lastPrinted = 0;
  private width = 0;
  private toldDiscovery = false;
  private readonly since = Date.now();
  constructor(private readonly out: NodeJS.WriteStream) {}
  private ticker?: NodeJS.Timeout;
  /**
   * Discovery is under way: say so, and keep saying for how long and where (`where`: the
   * worker discovering, when known), so the terminal is never silent while a framework lists
   * a big suite: a live line on a terminal, a line every 10 s in a log.
   */
  discovering(where: () => string | undefined = () => undefined): void {
    this.out.write('warren: discovering tests...\n');
    const started = Date.now();
    let said = 0;
    this.ticker = setInterval(() => {
      const secs = Math.round((Date.now() - started) / 1000);
      const worker = where();
      const line = `warren: discovering tests${worker ? ` on worker ${worker}` : ''}... ${secs} s`;
      if (this.out.isTTY) {
        this.out.write(`\r${line.padEnd(this.width)}`);
        this.width = line.length;
      } else if (secs - said >= 10) {
        said = secs;
        this.out.write(`${line}\n`);
      }
    }, 1000);
    this.ticker.unref();
  }
  private stopTicker(): void {
    if (!this.ticker) return;
    clearInterval(this.ticker);
    this.ticker = undefined;
    if (this.out.isTTY && this.width) this.out.write('\n');
    this.width = 0;
  }
  show(p: RunProgress): void {
    if (p.discovery || p.total > 0) this.stopTicker();
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
    this.stopTicker();
    if (this.out.isTTY && this.width) this.out.write('\n');
    this.width = 0;
  }
}

export function formatDuration(sec: number): string {
  if (sec < 60) return `${Math.round(sec)}s`;
  return `${Math.floor(sec / 60)}m${String(Math.round(sec % 60)).padStart(2, '0')}s`;
}

export function printSummary(report: RunReport, files: string[]): void {
  const t = report.totals;
  const secs = ((report.finishedAt - report.startedAt) / 1000).toFixed(1);
  const lines: string[] = [];
  lines.push(
    `warren: run ${report.runId} ${report.status === 'error' ? 'could not run' : report.status}: ${t.total} tests, ${t.passed} passed, ${t.failed} failed, ${t.flaky} flaky, ${t.pending} pending${t.notRun ? `, ${t.notRun} not run` : ''} (${report.rounds} round${report.rounds === 1 ? '' : 's'}, ${secs} s)`,
  );
  if (report.error) lines.push(`  error: ${report.error}`);
  if (report.stopped) lines.push(`  ${report.stopped}`);
  for (const f of report.setupFailures ?? []) lines.push(`  setup failed on ${f.worker}: ${f.message.split('\n')[0]}`);
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


/** One line for a run that ended (from its notice: `warren follow` of an ended run, `warren cancel`). */
export function endLine(e: RunFinished): string {
  // refused before it started (a notice with only the reason)
  if (!e.finishedAt && !e.totals && e.error) return `warren: run ${e.runId}: ${e.error}`;
  const t = e.totals;
  const counts = t ? `: ${t.total} tests, ${t.passed} passed, ${t.failed} failed, ${t.flaky} flaky${t.notRun ? `, ${t.notRun} not run` : ''}` : '';
  const when = e.finishedAt ? ` at ${new Date(e.finishedAt).toISOString()}` : '';
  return `warren: run ${e.runId} had ended${when}: ${e.status}${counts}${e.stopped ? ` (${e.stopped})` : ''}${e.error ? ` (${e.error})` : ''}`;
}

/**
 * `warren follow RUN_ID`: the progress and report of a run started elsewhere, as `warren
 * run` would have shown them (exit code included); a run that had ended: its end, from the
 * runs log.
 */
export async function follow(opts: { broker: Broker; runId: string; timeoutMs: number; reportDir: string; writeReport: (dir: string, r: RunReport) => string[] }): Promise<number> {
  const progress = new ProgressView(process.stderr);
  const following = await followRun(opts.broker, opts.runId, {
    timeoutMs: opts.timeoutMs,
    onProgress: (p) => progress.show(p),
    timeoutMessage: () => `run ${opts.runId}: no report within ${Math.round(opts.timeoutMs / 1000)} s`,
  });
  // subscribed first: a run that ends now still reaches us, one that had ended is in the log
  const ended = await endedRun(opts.broker, opts.runId);
  let outcome: RunReport | RunFinished | undefined = ended;
  if (!outcome) {
    process.stderr.write(`warren: following run ${opts.runId}\n`);
    outcome = await following.report;
  }
  following.stop();
  progress.end();
  if (outcome.type === 'run.finished') {
    process.stdout.write(`${endLine(outcome)}\n`);
    return EXIT[outcome.status as keyof typeof EXIT] ?? EXIT.error;
  }
  printSummary(outcome, opts.writeReport(opts.reportDir, outcome));
  return EXIT[outcome.status];
}
