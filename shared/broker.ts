/**
 * The one wrapper around amqplib that every service uses: a connection that comes back
 * (p-retry with backoff), the topology re-declared on each connection, consumers
 * re-subscribed, and publishes that resolve only on a broker confirm.
 *
 * Rules it enforces (see ../shared/FACTS.md):
 * - every publish is `mandatory` and confirmed; a `return` (312 NO_ROUTE) arrives *before*
 *   the positive confirm, so the confirm of a returned message is turned into an error;
 * - `publish()` returning false means buffered: we wait for 'drain', racing 'close';
 * - a delivery tag belongs to one channel: after a reconnect, `ack()` of an older delivery
 *   is a no-op (the broker has already requeued it; acking would kill the new channel);
 * - 'error' listeners on the connection and every channel, so no event crashes the process;
 * - a consumer cancelled by the server (queue deleted) is re-subscribed.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import amqp, { type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage, type Options } from 'amqplib';
import pRetry from 'p-retry';
import type { Logger } from './log.js';
import { EXCHANGES, ROUTING, TOPOLOGY } from './topology.js';
import { InfrastructureError, UnroutableError, errorMessage } from './errors.js';

export interface BrokerOptions {
  url: string;
  /** Shown as the connection name in the management UI. */
  name: string;
  log: Logger;
  /** Attempts for the first connection before start() fails (an unreachable broker). */
  connectAttempts?: number;
  /** Declare the topology on each connection (default true). */
  declareTopology?: boolean;
}

export interface Delivery {
  readonly body: Buffer;
  readonly routingKey: string;
  readonly redelivered: boolean;
  /** Deliveries before this one that were not acked (quorum `x-delivery-count`, else 0). */
  readonly deliveryCount: number;
  readonly headers: Record<string, unknown>;
  /** Acks, unless the channel this came on is gone (then the broker redelivers it). */
  ack(): void;
  /** Publishes the body to the dead-letter exchange with the reason, then acks. */
  deadLetter(reason: string): Promise<void>;
}

export type DeliveryHandler = (delivery: Delivery) => Promise<void>;

interface ConsumerSpec {
  queue: string;
  prefetch: number;
  handler: DeliveryHandler;
  channel?: Channel;
  tag?: string;
}

export type BrokerState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

export interface PublishOptions {
  persistent?: boolean;
  mandatory?: boolean;
  headers?: Record<string, unknown>;
  /** Give up after this long without a confirm, reconnects included (default 60 s). */
  timeoutMs?: number;
}

export class Broker extends EventEmitter {
  state: BrokerState = 'idle';
  private conn?: ChannelModel;
  private pub?: ConfirmChannel;
  private generation = 0;
  private readonly consumers: ConsumerSpec[] = [];
  /** Consumer channels of the current connection. */
  private channels = new Set<Channel>();
  private readonly returned = new Set<string>();
  /** Rejecters of publishes awaiting their confirm on the current channel. */
  private readonly unconfirmed = new Set<(e: Error) => void>();
  /** Set while the publish channel's buffer is full. */
  private full?: Promise<void>;
  private connected?: { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void };
  private readonly log: Logger;

  constructor(private readonly opts: BrokerOptions) {
    super();
    this.log = opts.log;
    this.resetConnected();
  }

  /** Connects (bounded attempts) and declares the topology. Rejects with a one-line error. */
  async start(): Promise<void> {
    this.state = 'connecting';
    try {
      await pRetry(() => this.connectOnce(), {
        retries: Math.max(0, (this.opts.connectAttempts ?? 4) - 1),
        minTimeout: 250,
        maxTimeout: 2000,
      });
    } catch (err) {
      this.state = 'closed';
      throw new InfrastructureError(`cannot reach RabbitMQ at ${redact(this.opts.url)}: ${errorMessage(err)}`, { cause: err });
    }
  }

  /** Resolves once a connection is up (immediately if it is). */
  whenConnected(): Promise<void> {
    return this.connected!.promise;
  }

  async consume(queue: string, handler: DeliveryHandler, opts: { prefetch: number }): Promise<void> {
    const spec: ConsumerSpec = { queue, prefetch: opts.prefetch, handler };
    this.consumers.push(spec);
    if (this.state === 'connected' && this.conn) await this.subscribeConsumer(this.conn, spec, this.generation);
  }

  /** Stops delivering new messages to every consumer; in-flight deliveries can still be acked. */
  async cancelConsumers(): Promise<void> {
    for (const spec of this.consumers) {
      const { channel, tag } = spec;
      spec.tag = undefined;
      if (channel && tag) await channel.cancel(tag).catch(() => undefined);
    }
    this.consumers.length = 0;
  }

  /** Publishes a JSON message and resolves on the broker's confirm. Survives reconnects. */
  publish(exchange: string, routingKey: string, message: unknown, opts: PublishOptions = {}): Promise<void> {
    return this.publishRaw(exchange, routingKey, Buffer.from(JSON.stringify(message)), opts);
  }

  async publishRaw(exchange: string, routingKey: string, content: Buffer, opts: PublishOptions = {}): Promise<void> {
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
    for (let attempt = 1; ; attempt++) {
      if (this.state === 'closed') throw new InfrastructureError('broker connection is closed');
      await withTimeout(this.whenConnected(), deadline - Date.now(), 'broker unavailable while publishing');
      try {
        await this.publishOnce(exchange, routingKey, content, opts);
        return;
      } catch (err) {
        // Unroutable is a topology bug, not a transient: retrying would not help.
        if (err instanceof UnroutableError || Date.now() >= deadline) throw err;
        this.log.warn({ err, exchange, routingKey, attempt }, 'publish not confirmed, retrying');
        await sleep(Math.min(100 * attempt, 1000));
      }
    }
  }

  /** Message and consumer counts of a queue (passive; does not create it). */
  async checkQueue(queue: string): Promise<{ messageCount: number; consumerCount: number }> {
    await this.whenConnected();
    const ch = await this.conn!.createChannel();
    ch.on('error', () => undefined);
    try {
      const q = await ch.checkQueue(queue);
      return { messageCount: q.messageCount, consumerCount: q.consumerCount };
    } finally {
      await ch.close().catch(() => undefined);
    }
  }

  /**
   * A private queue bound to `exchange` with `routingKey`, for a watcher (the CLI). Not
   * exclusive and durable, so a report published while we reconnect (or while the broker
   * restarts) waits for us; it expires once unused for `expiresMs`.
   */
  async watch(exchange: string, routingKey: string, queue: string, handler: DeliveryHandler, expiresMs = 600_000): Promise<void> {
    const setup = async (ch: Channel) => {
      await ch.assertQueue(queue, { durable: true, arguments: { 'x-expires': expiresMs } });
      await ch.bindQueue(queue, exchange, routingKey);
    };
    this.queueSetups.push(setup);
    if (this.state === 'connected' && this.pub) await setup(this.pub);
    await this.consume(queue, handler, { prefetch: 100 });
  }
  private readonly queueSetups: Array<(ch: Channel) => Promise<void>> = [];

  async close(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.connected?.reject(new InfrastructureError('broker connection is closed'));
    // Close each channel before the connection: on RabbitMQ 3.10 an ack to a quorum queue
    // followed at once by connection.close is lost (the message is requeued), while a
    // channel.close handshake settles it (checked: test/e2e/drain.test.ts).
    for (const ch of [...this.channels, this.pub]) {
      try {
        await ch?.close();
      } catch {
        // already closed
      }
    }
    try {
      await this.conn?.close();
    } catch {
      // already gone: nothing to release
    }
  }

  // ---- internals ---------------------------------------------------------------------

  private resetConnected() {
    let resolve!: () => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => undefined);
    this.connected = { promise, resolve, reject };
  }

  private async connectOnce(): Promise<void> {
    const conn = await amqp.connect(this.opts.url, { clientProperties: { connection_name: this.opts.name } });
    const generation = ++this.generation;
    this.channels = new Set();
    conn.on('error', (err) => this.log.warn({ err }, 'broker connection error'));
    conn.on('blocked', (reason) => this.log.warn({ reason }, 'broker blocked publishing (resource alarm)'));
    conn.on('unblocked', () => this.log.info('broker unblocked publishing'));
    try {
      const pub = await conn.createConfirmChannel();
      pub.on('error', (err) => this.log.warn({ err }, 'publish channel error'));
      pub.on('return', (msg: ConsumeMessage) => {
        if (msg.properties.messageId) this.returned.add(String(msg.properties.messageId));
      });
      if (this.opts.declareTopology !== false) await declareTopology(pub);
      for (const setup of this.queueSetups) await setup(pub);
      // Any channel closing under us (406, queue deleted...) is handled the same way as a lost
      // connection: drop everything and reconnect, so no half-working state survives.
      pub.on('close', () => {
        const pending = [...this.unconfirmed];
        this.unconfirmed.clear();
        for (const fail of pending) fail(new InfrastructureError('channel closed before the confirm'));
        this.onLost(conn, generation, 'publish channel closed');
      });
      this.conn = conn;
      this.pub = pub;
      for (const spec of this.consumers) await this.subscribeConsumer(conn, spec, generation);
    } catch (err) {
      await conn.close().catch(() => undefined);
      throw err;
    }
    conn.on('close', () => this.onLost(conn, generation, 'connection closed'));
    this.state = 'connected';
    this.connected!.resolve();
    this.emit('connected');
  }

  private onLost(conn: ChannelModel, generation: number, why: string) {
    if (generation !== this.generation || this.state === 'closed' || this.state === 'reconnecting') return;
    this.state = 'reconnecting';
    this.resetConnected();
    this.emit('disconnected');
    this.log.warn({ why }, 'lost the broker, reconnecting');
    conn.close().catch(() => undefined);
    void pRetry(
      async () => {
        if (this.state === 'closed') return;
        await this.connectOnce();
      },
      {
        retries: Number.POSITIVE_INFINITY,
        minTimeout: 500,
        maxTimeout: 5000,
        onFailedAttempt: ({ error, attemptNumber }) => {
          this.log.warn({ err: error, attempt: attemptNumber }, 'reconnect failed');
        },
      },
    ).then(() => {
      if (this.state === 'connected') this.log.info('reconnected to the broker');
    });
  }

  private async subscribeConsumer(conn: ChannelModel, spec: ConsumerSpec, generation: number): Promise<void> {
    const ch = await conn.createChannel();
    this.channels.add(ch);
    ch.on('error', (err) => this.log.warn({ err, queue: spec.queue }, 'consumer channel error'));
    ch.on('close', () => this.onLost(conn, generation, `consumer channel of ${spec.queue} closed`));
    await ch.prefetch(spec.prefetch);
    spec.channel = ch;
    const { consumerTag } = await ch.consume(
      spec.queue,
      (msg) => {
        if (msg === null) {
          // Cancelled by the server (queue deleted): re-declare and re-subscribe.
          this.log.warn({ queue: spec.queue }, 'consumer cancelled by the broker, re-subscribing');
          this.onLost(conn, generation, 'consumer cancelled');
          return;
        }
        const delivery = this.delivery(ch, msg, generation, spec.queue);
        spec.handler(delivery).catch((err) => {
          // A handler must turn failures into data; reaching here is a bug. The message stays
          // unacked and comes back when this channel goes, so log loudly and drop the channel.
          this.log.error({ err, queue: spec.queue }, 'delivery handler threw');
          ch.close().catch(() => undefined);
        });
      },
      { noAck: false },
    );
    spec.tag = consumerTag;
  }

  private delivery(ch: Channel, msg: ConsumeMessage, generation: number, queue: string): Delivery {
    const headers = (msg.properties.headers ?? {}) as Record<string, unknown>;
    let settled = false;
    const ack = () => {
      if (settled) return;
      settled = true;
      // Never ack a tag of an older channel: the broker already requeued the message.
      if (generation !== this.generation || this.state !== 'connected') return;
      try {
        ch.ack(msg);
      } catch (err) {
        this.log.warn({ err, queue }, 'ack failed; the broker will redeliver');
      }
    };
    return {
      body: msg.content,
      routingKey: msg.fields.routingKey,
      redelivered: msg.fields.redelivered,
      deliveryCount: Number(headers['x-delivery-count'] ?? 0),
      headers,
      ack,
      deadLetter: async (reason: string) => {
        this.log.warn({ queue, reason, routingKey: msg.fields.routingKey }, 'dead-lettering a message');
        await this.publishRaw(EXCHANGES.dlx, `${ROUTING.malformed}.${queue}`, msg.content, {
          headers: {
            'x-warren-reason': reason,
            'x-warren-queue': queue,
            'x-warren-routing-key': msg.fields.routingKey,
          },
        });
        ack();
      },
    };
  }

  private async publishOnce(exchange: string, routingKey: string, content: Buffer, opts: PublishOptions): Promise<void> {
    if (this.full) await this.full;
    const ch = this.pub;
    if (!ch) throw new InfrastructureError('no publish channel');
    const messageId = randomUUID();
    const options: Options.Publish = {
      persistent: opts.persistent ?? true,
      mandatory: opts.mandatory ?? true,
      contentType: 'application/json',
      messageId,
      headers: opts.headers,
    };
    await new Promise<void>((resolve, reject) => {
      // A channel that closes with this message unconfirmed fails it, so the caller retries.
      const fail = (e: Error) => reject(e);
      this.unconfirmed.add(fail);
      const ok = ch.publish(exchange, routingKey, content, options, (err) => {
        this.unconfirmed.delete(fail);
        if (err) return reject(new InfrastructureError(`publish to ${exchange} nacked by the broker`, { cause: err }));
        if (this.returned.delete(messageId)) {
          return reject(new UnroutableError(`unroutable: no queue bound to ${exchange} for ${JSON.stringify(routingKey)}`));
        }
        resolve();
      });
      if (!ok && !this.full) {
        // Buffered, not dropped: the confirm callback still settles it. Later publishes wait
        // for 'drain' (or 'close'), so callers do not pile up more while the socket is full.
        this.full = new Promise<void>((done) => {
          const release = () => {
            ch.off('drain', release);
            ch.off('close', release);
            this.full = undefined;
            done();
          };
          ch.on('drain', release);
          ch.on('close', release);
        });
      }
    });
  }
}

/** Declares every exchange, queue and binding of `TOPOLOGY` (idempotent). */
export async function declareTopology(ch: Channel): Promise<void> {
  for (const ex of TOPOLOGY.exchanges) await ch.assertExchange(ex.name, ex.type, { durable: ex.durable });
  for (const q of TOPOLOGY.queues) await ch.assertQueue(q.name, { durable: q.durable, arguments: q.arguments });
  for (const b of TOPOLOGY.bindings) await ch.bindQueue(b.queue, b.exchange, b.routingKey);
}

export function redact(url: string): string {
  return url.replace(/\/\/([^:/@]+):([^@]+)@/, '//$1:***@');
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new InfrastructureError(what)), Math.max(0, ms));
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
