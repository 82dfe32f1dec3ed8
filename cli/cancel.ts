/**
 * `warren cancel RUN_ID`: asks the active aggregator to end a run now. Its waiting specs are
 * dropped, its running tests are stopped on every host (the run's `finished` notice), and
 * its report says `cancelled` with what had finished; `warren run` following it exits 130.
 */
import type { Broker } from '../shared/broker.js';
import { UsageError } from '../shared/errors.js';
import { SCHEMA_VERSION, type RunCancel } from '../shared/messages.js';
import { EXCHANGES, ROUTING } from '../shared/topology.js';
import { endLine, followRun, whoAmI } from './follow.js';

export async function cancel(opts: { broker: Broker; runId: string; waitMs: number; out: (line: string) => void }): Promise<number> {
  const following = await followRun(opts.broker, opts.runId, {
    timeoutMs: opts.waitMs,
    timeoutMessage: () => `run ${opts.runId}: no report within ${Math.round(opts.waitMs / 1000)} s of the cancel (no aggregator running, or no such run: \`warren runs\` lists those that ended); it ends as soon as it is accepted`,
  });
  const msg: RunCancel = { type: 'run.cancel', v: SCHEMA_VERSION, id: `${opts.runId}/cancel/${Date.now()}`, runId: opts.runId, by: whoAmI() };
  await opts.broker.publish(EXCHANGES.runs, ROUTING.runCancel, msg);
  const end = await following.report;
  if (end.type === 'run.finished') {
    opts.out(endLine(end));
    return 0;
  }
  if (end.status !== 'cancelled') {
    opts.out(`warren: run ${opts.runId} ended before the cancel: ${end.status}`);
    return 0;
  }
  const t = end.totals;
  opts.out(`warren: run ${opts.runId} cancelled: ${t.passed + t.failed + t.flaky + t.pending} of ${t.total} tests had finished (${t.passed} passed, ${t.failed} failed, ${t.flaky} flaky), ${t.notRun} not run`);
  return 0;
}

export function runIdArgument(value: string | undefined): string {
  if (!value || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/.test(value)) throw new UsageError(`RUN_ID: expected a run id (letters, digits, "_", "." or "-"), got ${JSON.stringify(value ?? '')}`);
  return value;
}
