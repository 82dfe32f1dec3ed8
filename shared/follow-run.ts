/**
 * Following one run on the broker, for whoever waits for its end (`warren run`, `warren
 * follow`, `warren cancel`, `warren github`): its progress and its report, on a queue of the
 * follower's own that keeps them across a reconnect.
 */
import { randomBytes } from 'node:crypto';
import type { Broker } from './broker.js';
import { UsageError } from './errors.js';
import { ReportMessage, RunFinished, parseMessage, type RunProgress, type RunReport } from './messages.js';
import { EXCHANGES } from './topology.js';

export interface Following {
  /** Resolves with the run's report (or the notice of its end, for a run long over). */
  report: Promise<RunReport | RunFinished>;
  stop(): void;
}

/**
 * Subscribes to a run's progress and report (a queue of our own that keeps them across a
 * reconnect) and resolves with the report; `onProgress` sees each progress message and
 * `onEnded` a `finished` notice that came without a report (the run had ended already).
 */
export async function followRun(
  broker: Broker,
  runId: string,
  opts: { timeoutMs: number; onProgress?: (p: RunProgress) => void; timeoutMessage: () => string },
): Promise<Following> {
  let resolve!: (r: RunReport | RunFinished) => void;
  let reject!: (err: Error) => void;
  const report = new Promise<RunReport | RunFinished>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  const timer = setTimeout(() => reject(new UsageError(opts.timeoutMessage())), opts.timeoutMs);
  let done = false;
  await broker.watch(EXCHANGES.reports, `run.${runId}.*`, `warren.cli.${runId}.${randomBytes(3).toString('hex')}`, async (d) => {
    d.ack();
    if (done) return;
    if (d.routingKey.endsWith('.finished')) {
      // after a report, the notice adds nothing; alone, the run had ended before (a cancel
      // of an ended run, `warren follow` of one): it says how
      const notice = parseMessage(RunFinished, d.body);
      if (notice.ok && notice.value.totals === undefined) {
        setTimeout(() => finish(notice.value), 1000).unref();
      }
      return;
    }
    const msg = parseMessage(ReportMessage, d.body);
    if (!msg.ok) return;
    if (msg.value.type === 'run.progress') opts.onProgress?.(msg.value);
    else finish(msg.value);
  }, { kind: 'kept' });
  function finish(r: RunReport | RunFinished) {
    if (done) return;
    done = true;
    clearTimeout(timer);
    resolve(r);
  }
  return { report, stop: () => clearTimeout(timer) };
}

