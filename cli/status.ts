/**
 * `warren status` (runs in progress, work waiting, supervisors per host) and `warren runs`
 * (recent runs and how they ended). Both only read the broker: the active aggregator's
 * `runs.state`, the supervisors' heartbeats, the work queues' depths and the runs log; there
 * is no database of their own.
 */
import { randomUUID } from 'node:crypto';
import type { Broker } from '../shared/broker.js';
import { Heartbeat, RunsState, parseMessage, type RunFinished } from '../shared/messages.js';
import { EXCHANGES, ROUTING, SPEC_SHARDS, specQueue } from '../shared/topology.js';
import { formatDuration, readRunsLog } from './follow.js';

/** Specs waiting in the work queues, in all and by shard (those with any). */
export async function waitingSpecs(broker: Broker): Promise<{ total: number; byShard: Array<[number, number]> }> {
  const counts = await Promise.all(Array.from({ length: SPEC_SHARDS }, (_, n) => broker.checkQueue(specQueue(n)).then((q) => q.messageCount)));
  const byShard = counts.flatMap((c, n): Array<[number, number]> => (c > 0 ? [[n, c]] : []));
  return { total: counts.reduce((a, b) => a + b, 0), byShard };
}

export interface StatusOptions {
  broker: Broker;
  /** How long to listen (the aggregator tells its state every 2 s, supervisors beat every 2 s). */
  listenMs: number;
  out: (line: string) => void;
}

/** What runs now, and where: returns the state heard (undefined: no active aggregator). */
export async function status(opts: StatusOptions): Promise<{ state?: RunsState; supervisors: Heartbeat[] }> {
  const beats = new Map<string, Heartbeat>();
  let state: RunsState | undefined;
  const tag = randomUUID().slice(0, 8);
  await opts.broker.watch(EXCHANGES.status, '', `warren.status-cli.${tag}.beats`, async (d) => {
    d.ack();
    const hb = parseMessage(Heartbeat, d.body);
    if (hb.ok) beats.set(hb.value.supervisor, hb.value);
  }, { kind: 'transient' });
  await opts.broker.watch(EXCHANGES.reports, ROUTING.runsState, `warren.status-cli.${tag}.runs`, async (d) => {
    d.ack();
    const msg = parseMessage(RunsState, d.body);
    if (msg.ok && (!state || msg.value.at > state.at)) state = msg.value;
  }, { kind: 'transient' });
  await new Promise((r) => setTimeout(r, opts.listenMs));
  const waiting = await waitingSpecs(opts.broker);
  const supervisors = [...beats.values()].sort((a, b) => a.host.localeCompare(b.host) || a.supervisor.localeCompare(b.supervisor));
  const now = Date.now();
  if (!state) {
    opts.out(`no runs state heard in ${Math.round(opts.listenMs / 1000)} s: is an aggregator running?`);
  } else {
    opts.out(`runs in progress: ${state.runs.length}`);
    if (state.runs.length) {
      const busy = (runId: string) => supervisors.reduce((n, hb) => n + hb.slots.filter((s) => s.state === 'busy' && s.runId === runId).length, 0);
      const rows = state.runs.map((r) => [
        r.runId, r.startedBy ?? '-', `${r.done}/${r.total}${r.round > 1 ? ` (round ${r.round})` : ''}`, String(r.failed), String(busy(r.runId)),
        String(waiting.byShard.find(([n]) => n === r.shard)?.[1] ?? 0), r.etaSec === null ? '-' : formatDuration(r.etaSec), formatDuration((now - r.acceptedAt) / 1000),
        r.labels.join(',') || '-',
      ]);
      table(opts.out, ['run', 'started by', 'done/total', 'failed', 'workers', 'queued', 'ETA', 'running for', 'labels'], rows);
    }
  }
  opts.out(`work waiting: ${waiting.total} specs${waiting.total ? ` (${waiting.byShard.map(([n, c]) => `${specQueue(n)}: ${c}`).join(', ')})` : ''}`);
  const live = supervisors.filter((hb) => now - hb.at < 10_000 && hb.state !== 'stopped');
  const slots = live.reduce((n, hb) => n + hb.slots.filter((s) => s.state !== 'stopped').length, 0);
  const busy = live.reduce((n, hb) => n + hb.slots.filter((s) => s.state === 'busy').length, 0);
  opts.out(`supervisors: ${live.length} (${slots} worker slots, ${busy} busy)`);
  if (live.length) {
    table(opts.out, ['host', 'supervisor', 'driver', 'state', 'slots', 'busy', 'labels'], live.map((hb) => [
      hb.host, hb.supervisor, hb.driver, hb.drained && hb.state === 'running' ? 'drained' : hb.state, String(hb.slots.length),
      String(hb.slots.filter((s) => s.state === 'busy').length), Object.entries(hb.labels).map(([k, v]) => (v ? `${k}=${v}` : k)).join(',') || '-',
    ]));
  }
  return { state, supervisors: live };
}

/** Recent runs, newest last, from the runs log. */
export async function runs(opts: { broker: Broker; sinceMs: number; limit: number; out: (line: string) => void }): Promise<RunFinished[]> {
  const ends = (await readRunsLog(opts.broker, Date.now() - opts.sinceMs)).filter((e) => e.totals !== undefined);
  const shown = ends.slice(-opts.limit);
  if (shown.length === 0) {
    opts.out(`no run ended in the last ${formatDuration(opts.sinceMs / 1000)}`);
    return shown;
  }
  table(opts.out, ['ended', 'run', 'status', 'tests', 'passed', 'failed', 'flaky', 'not run', 'took', 'started by', 'note'], shown.map((e) => [
    new Date(e.finishedAt ?? 0).toISOString().replace('T', ' ').slice(0, 19), e.runId, e.status, String(e.totals!.total), String(e.totals!.passed),
    String(e.totals!.failed), String(e.totals!.flaky), String(e.totals!.notRun ?? 0),
    e.startedAt && e.finishedAt ? formatDuration((e.finishedAt - e.startedAt) / 1000) : '-', e.startedBy ?? '-', (e.stopped ?? e.error ?? '').slice(0, 60),
  ]));
  return shown;
}

function table(out: (line: string) => void, head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  out(line(head));
  for (const r of rows) out(line(r));
}
