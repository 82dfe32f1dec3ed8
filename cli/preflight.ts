/**
 * What `warren run` needs on the broker, said within seconds instead of after the run's
 * timeout: a dispatcher and an aggregator consuming their queues (checked before the run is
 * published), and a supervisor that may run it (its heartbeats, listened to from the start).
 * Without one, the run is not left waiting in silence: `warren run` says what is missing and
 * exits 2 (a published run is cancelled first), or with `--wait-for-workers` waits, saying
 * what for. The same heartbeats name the worker discovering the tests, for the live line.
 */
import { randomUUID } from 'node:crypto';
import type { Broker } from '../shared/broker.js';
import { redact } from '../shared/config.js';
import { userOf } from '../shared/broker/connection.js';
import { roleOf } from '../shared/roles.js';
import { Heartbeat, labelsMatch, parseMessage } from '../shared/messages.js';
import { EXCHANGES, QUEUES } from '../shared/topology.js';

/** A dispatcher or aggregator starting with the run: consuming within this long. */
const CONTROL_PLANE_WAIT_MS = 5_000;
/** Supervisors beat every 2 s: one missing after this long is not there. */
export const SUPERVISOR_WAIT_MS = 6_000;
const POLL_MS = 1_000;

/** What of the control plane is missing on the broker (no consumer on its queue), or null. */
export async function controlPlaneProblem(broker: Broker, url: string): Promise<string | null> {
  const missing: string[] = [];
  for (const [service, queue] of [['dispatcher', QUEUES.dispatcher], ['aggregator', QUEUES.aggregator]] as const) {
    try {
      if ((await broker.checkQueue(queue)).consumerCount === 0) missing.push(`no ${service} consumes ${queue}`);
    } catch {
      // not ours to check (a user without the right, an older topology): the run will tell
      return null;
    }
  }
  if (missing.length === 0) return null;
  return `${missing.join(' and ')} on ${redact(url)}: start \`warren dispatcher\` and \`warren aggregator\` (deploy/control-plane.compose.yml), or run with --local`;
}

/** The supervisors heard on the broker (their heartbeats), from when this starts listening. */
export class WorkerWatch {
  private readonly beats = new Map<string, Heartbeat>();
  /** When each was last heard, on this clock (another host's may be off by minutes). */
  private readonly heardAt = new Map<string, number>();
  private readonly since = Date.now();

  /** Nothing is heard (a submitter may not read heartbeats): no check, no worker named. */
  private deaf = false;

  static async start(broker: Broker, url: string): Promise<WorkerWatch> {
    const w = new WorkerWatch();
    // a submitter reads only its own runs' reports (shared/roles.ts); the dispatcher still
    // refuses a run with labels no live supervisor has
    if (roleOf(userOf(url.split(',')[0]!)) === 'submitter') {
      w.deaf = true;
      return w;
    }
    await broker.watch(EXCHANGES.status, '', `warren.cli.${randomUUID().slice(0, 8)}.beats`, async (d) => {
      d.ack();
      const hb = parseMessage(Heartbeat, d.body);
      if (!hb.ok) return;
      w.beats.set(hb.value.supervisor, hb.value);
      w.heardAt.set(hb.value.supervisor, Date.now());
    }, { kind: 'transient' });
    return w;
  }

  /** Supervisors heard lately that may run a run with these labels. */
  able(labels: readonly string[]): Heartbeat[] {
    const recent = Date.now() - SUPERVISOR_WAIT_MS;
    return [...this.beats.values()].filter((hb) => this.heardAt.get(hb.supervisor)! >= recent && hb.state === 'running' && !hb.drained && labelsMatch(labels, hb.labels));
  }

  /** Why no supervisor may run it (none heard, none with the labels, all drained). */
  why(labels: readonly string[], url: string): string {
    const heard = [...this.beats.values()];
    if (heard.length === 0) {
      return `no supervisor is connected to ${redact(url)} (no heartbeat in ${Math.round((Date.now() - this.since) / 1000)} s): nothing would run the tests; start \`warren supervisor\` on a worker host (deploy/worker.compose.yml), run with --local, or give --wait-for-workers`;
    }
    const labelled = heard.filter((hb) => labelsMatch(labels, hb.labels));
    if (labelled.length === 0) {
      const have = heard.map((hb) => `${hb.supervisor}: ${Object.entries(hb.labels).map(([k, v]) => (v ? `${k}=${v}` : k)).join(',') || 'no labels'}`).join('; ');
      return `no supervisor has the labels ${labels.join(',')} (heard ${have}); give other --labels, or --wait-for-workers`;
    }
    return `every supervisor that could run it is drained or stopping (${labelled.map((hb) => `${hb.supervisor}: ${hb.drained ?? hb.state}`).join('; ')}); \`warren hosts\` says more`;
  }

  /** Waits for the control plane (a few seconds; for good with `wait`, saying so every few seconds); what is missing if it does not come. */
  static async controlPlane(broker: Broker, url: string, opts: { wait: boolean; say: (line: string) => void }): Promise<string | null> {
    const since = Date.now();
    let lastSaid = 0;
    for (;;) {
      const problem = await controlPlaneProblem(broker, url);
      // (services started with the run, by a compose file or a test, get a moment)
      if (!problem || (!opts.wait && Date.now() - since >= CONTROL_PLANE_WAIT_MS)) return problem;
      if (opts.wait && Date.now() - since >= CONTROL_PLANE_WAIT_MS && Date.now() - lastSaid >= 10_000) {
        lastSaid = Date.now();
        opts.say(`warren: waiting for the control plane (${Math.round((Date.now() - since) / 1000)} s): ${problem.split(' on ')[0]}`);
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  /**
   * Resolves true once a supervisor that may run it is heard, false after `SUPERVISOR_WAIT_MS`
   * without one (never, with `wait`: then `say` is told every few seconds what it waits for).
   */
  async awaitAble(labels: readonly string[], opts: { wait: boolean; url: string; say: (line: string) => void; cancelled: () => boolean }): Promise<boolean> {
    let lastSaid = 0;
    while (!opts.cancelled()) {
      if (this.deaf || this.able(labels).length > 0) return true;
      const waited = Date.now() - this.since;
      if (waited >= SUPERVISOR_WAIT_MS) {
        if (!opts.wait) return false;
        if (Date.now() - lastSaid >= 10_000) {
          lastSaid = Date.now();
          const heard = this.beats.size;
          opts.say(`warren: waiting for a supervisor that may run it (${Math.round(waited / 1000)} s; ${heard === 0 ? 'none connected' : `${heard} heard, none able`})`);
        }
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    return false;
  }

  /** The worker busy with this run while its tests are discovered (`<supervisor>/<slot>`), if heard. */
  discovering(runId: string): string | undefined {
    for (const hb of this.beats.values()) {
      const slot = hb.slots.find((s) => s.state === 'busy' && s.runId === runId);
      if (slot) return `${hb.supervisor}/${slot.index}`;
    }
    return undefined;
  }
}
