/** Waiting for worker slots to be ready, by their supervisors' heartbeats (slots pull their
 * work, so no queue has them as consumers). */
import { randomUUID } from 'node:crypto';
import type { Broker } from '../../shared/broker.js';
import { Heartbeat, parseMessage } from '../../shared/messages.js';
import { EXCHANGES } from '../../shared/topology.js';

/** Resolves once heartbeats show at least `n` idle slots (each supervisor's latest beat). */
export async function idleSlots(broker: Broker, n: number, timeoutMs = 60_000): Promise<void> {
  const latest = new Map<string, Heartbeat>();
  let done!: () => void;
  const ready = new Promise<void>((r) => (done = r));
  await broker.watch(EXCHANGES.status, '', `test.slots.${randomUUID().slice(0, 8)}`, async (d) => {
    d.ack();
    const hb = parseMessage(Heartbeat, d.body);
    if (!hb.ok) return;
    latest.set(hb.value.supervisor, hb.value);
    const idle = [...latest.values()].reduce((c, h) => c + h.slots.filter((s) => s.state === 'idle').length, 0);
    if (idle >= n) done();
  }, { kind: 'transient' });
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([ready, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`fewer than ${n} idle slots after ${timeoutMs} ms`)), timeoutMs)))]);
  clearTimeout(timer);
}
