/**
 * A vhost of its own for each integration or end-to-end test, on the real RabbitMQ (through
 * the management API), so tests never share queues. Torn down by the test.
 */
import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';

const API = process.env.WARREN_TEST_MGMT ?? 'http://127.0.0.1:15672/api';
const AUTH = 'Basic ' + Buffer.from('guest:guest').toString('base64');
const HOST = process.env.WARREN_TEST_AMQP_HOST ?? 'localhost:5672';

async function api(method: string, path: string, body?: unknown): Promise<Response> {
  const res = await fetch(`${API}${path}`, {
    method,
    headers: { authorization: AUTH, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok && res.status !== 404) throw new Error(`management API ${method} ${path}: ${res.status} ${await res.text()}`);
  return res;
}

export interface TestVhost {
  name: string;
  url: string;
  /** The names of the vhost's queues (the management API). */
  queues(): Promise<string[]>;
  delete(): Promise<void>;
}

export async function createVhost(prefix = 'warren-test'): Promise<TestVhost> {
  const name = `${prefix}-${randomBytes(4).toString('hex')}`;
  await api('PUT', `/vhosts/${encodeURIComponent(name)}`);
  await api('PUT', `/permissions/${encodeURIComponent(name)}/guest`, { configure: '.*', write: '.*', read: '.*' });
  return {
    name,
    url: `amqp://guest:guest@${HOST}/${encodeURIComponent(name)}`,
    queues: async () => ((await (await api('GET', `/queues/${encodeURIComponent(name)}?columns=name`)).json()) as Array<{ name: string }>).map((q) => q.name),
    delete: async () => {
      await api('DELETE', `/vhosts/${encodeURIComponent(name)}`);
    },
  };
}

/** Drains a queue with a plain amqplib channel, returning the messages (acked). */
export async function drainQueue(url: string, queue: string): Promise<amqp.GetMessage[]> {
  const conn = await amqp.connect(url);
  try {
    const ch = await conn.createChannel();
    const out: amqp.GetMessage[] = [];
    for (;;) {
      const m = await ch.get(queue, { noAck: true });
      if (!m) break;
      out.push(m);
    }
    return out;
  } finally {
    await conn.close();
  }
}

export async function queueDepth(url: string, queue: string): Promise<number> {
  const conn = await amqp.connect(url);
  try {
    const ch = await conn.createChannel();
    return (await ch.checkQueue(queue)).messageCount;
  } finally {
    await conn.close();
  }
}

export async function publishRaw(url: string, exchange: string, key: string, body: string): Promise<void> {
  const conn = await amqp.connect(url);
  try {
    const ch = await conn.createConfirmChannel();
    ch.publish(exchange, key, Buffer.from(body), { persistent: true });
    await ch.waitForConfirms();
  } finally {
    await conn.close();
  }
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 60_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
