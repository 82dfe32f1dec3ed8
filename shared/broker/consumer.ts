/**
 * Consumers with manual acknowledgements, one channel each, subscribed again on every new
 * connection.
 *
 * - A consumer never holds more deliveries than its prefetch, across reconnects too: after
 *   a reconnect it subscribes again only once the handlers still running on deliveries of
 *   the old channel have returned (a slot, prefetch 1, never runs two specs at once).
 * - A delivery tag belongs to one channel: `ack()` on a channel that has closed is a no-op
 *   (the broker requeued the message; acking on another channel would kill it), and an ack
 *   on an open channel is always sent, whatever the connection is doing meanwhile.
 * - A consumer cancelled by the server (its queue deleted) reconnects everything.
 */
import { createHash } from 'node:crypto';
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import { EXCHANGES, ROUTING } from '../topology.js';
import type { Connection } from './connection.js';
import type { Publisher } from './publisher.js';

export interface Delivery {
  readonly body: Buffer;
  readonly routingKey: string;
  readonly redelivered: boolean;
  /** Deliveries before this one that were not acked (quorum `x-delivery-count`, else 0). */
  readonly deliveryCount: number;
  readonly headers: Record<string, unknown>;
  /** Who sent it (the user_id property, which RabbitMQ checks against the sender's login). */
  readonly userId?: string;
  /** Taken with get(): the messages still ready in its queue (basic.get-ok's count). */
  readonly remaining?: number;
  /** Acks, unless the channel this came on is gone (then the broker redelivers it). */
  ack(): void;
  /** Gives it back to the queue (counted as a delivery by a quorum queue). */
  requeue(): void;
  /** Publishes the body to the dead-letter exchange with the reason, then acks. */
  deadLetter(reason: string): Promise<void>;
}

export type DeliveryHandler = (delivery: Delivery) => Promise<void>;

export interface ConsumeOptions {
  prefetch: number;
  /**
   * A message whose handler threw this many times is dead-lettered with the last error,
   * instead of being handed to the handler again (default: no bound, for a queue whose
   * broker-side delivery limit counts, as warren.specs does).
   */
  maxDeliveries?: number;
  /** Consumer arguments, asked again at each subscription (a stream's `x-stream-offset`). */
  arguments?: () => Record<string, unknown>;
  /** The broker cancelled this consumer (its queue was deleted). Default: reconnect and
   * subscribe again (the queue is declared again on connect). */
  onCancel?: () => void;
}

/**
 * A consumer of prefetch 1 on one queue, its deliveries kept in a one-place mailbox until
 * asked for (Consumers.tap): a slot that serves one run takes its jobs this way, without a
 * basic.get (a Raft command of its own on a quorum queue) per job.
 */
export interface Tap {
  /** The next delivery, or null if `until` resolves first (a delivery then stays for later). */
  next(until: Promise<unknown>): Promise<Delivery | null>;
  /**
   * Stops its deliveries: basic.cancel is sent at once, so an ack made after this call
   * brings no next delivery. Resolves on cancel-ok with a delivery that came before it, if
   * one did (still unacked: the caller's to handle).
   */
  cancel(): Promise<Delivery | null>;
  /** False once its channel closed (a reconnect): what it held went back to the queue. */
  readonly live: boolean;
}

/** A consumer that can be stopped on its own. */
export interface Subscription {
  /** Stops its deliveries (for good: it is not subscribed again on a reconnect). */
  cancel(): Promise<void>;
}

interface ConsumerSpec extends ConsumeOptions {
  queue: string;
  handler: DeliveryHandler;
  channel?: Channel;
  tag?: string;
  /** Handlers running now (on this channel or an older one). */
  inFlight: number;
  /** A subscription waiting for those handlers to return. */
  deferred?: { conn: ChannelModel; generation: number };
  cancelled: boolean;
}

/** What amqplib says of a call on a channel or connection that went away under it. */
const CONNECTION_GONE = /^(Channel ended, no reply will be forthcoming|Connection closed|Channel closed$)/;

export class Consumers {
  private readonly specs: ConsumerSpec[] = [];
  /** Consumer channels still open. */
  private readonly open = new Set<Channel>();
  /** The last error of a message's handler, by message id (bounded: a hint for the reason). */
  private readonly failures = new Map<string, string>();

  constructor(private readonly connection: Connection, private readonly publisher: Publisher, private readonly name: (n: string) => string = (n) => n) {}

  /** The connection setup that subscribes every consumer on a new connection. */
  readonly setup = async (conn: ChannelModel, generation: number): Promise<void> => {
    for (const spec of this.specs) await this.subscribe(conn, spec, generation);
  };

  async consume(queue: string, handler: DeliveryHandler, opts: ConsumeOptions): Promise<Subscription> {
    const spec: ConsumerSpec = { ...opts, queue, handler, inFlight: 0, cancelled: false };
    this.specs.push(spec);
    if (this.connection.state === 'connected') {
      const { conn, generation } = await this.connection.current();
      try {
        await this.subscribe(conn, spec, generation);
      } catch (err) {
        // the connection went down under the subscription (a dropped link, the broker closing
        // every connection): not the caller's failure, the next connection subscribes it as
        // it does every consumer (setup); an error of the subscription itself is (a 404 is
        // "Operation failed: BasicConsume; 404 ...")
        if (!CONNECTION_GONE.test((err as Error).message)) throw err;
        this.connection.log.info({ queue, err }, 'the connection went down while subscribing; the next one subscribes');
      }
    }
    return { cancel: () => this.cancel(spec) };
  }

  /** Stops delivering new messages to every consumer; in-flight deliveries can still be acked. */
  async cancelAll(): Promise<void> {
    for (const spec of [...this.specs]) await this.cancel(spec);
  }

  private async cancel(spec: ConsumerSpec): Promise<void> {
    spec.cancelled = true;
    spec.deferred = undefined;
    const at = this.specs.indexOf(spec);
    if (at >= 0) this.specs.splice(at, 1);
    const { channel, tag } = spec;
    spec.tag = undefined;
    spec.channel = undefined;
    // the channel stays open: deliveries in flight can still be acked on it
    if (channel && tag) await channel.cancel(tag).catch(() => undefined);
  }

  channels(): Channel[] {
    return [...this.open];
  }

  /** The channel of `get` on the current connection. */
  private puller?: { ch: Channel; generation: number };

  /**
   * Takes one message from `queue` (basic.get, manual ack), or null when it is empty: a slot
   * pulls its next job this way, from whichever queue is next in its rotation, so it never
   * holds more than the one it asked for. The delivery acks on the channel it came on, as a
   * consumer's does (a reconnect meanwhile: the broker has requeued it).
   */
  async get(queue: string): Promise<Delivery | null> {
    const ch = await this.pullerChannel();
    const msg = await ch.get(queue, { noAck: false });
    return msg ? this.delivery(ch, msg as unknown as ConsumeMessage, queue) : null;
  }

  /** The channel of get() and tap() on the current connection (prefetch 1 for its consumers). */
  private async pullerChannel(): Promise<Channel> {
    const { conn, generation } = await this.connection.current();
    const puller = this.puller;
    if (puller && puller.generation === generation && this.open.has(puller.ch)) return puller.ch;
    const ch = await this.connection.channel(conn, generation, 'puller');
    this.open.add(ch);
    ch.on('close', () => this.open.delete(ch));
    await ch.prefetch(1);
    this.puller = { ch, generation };
    return ch;
  }

  /**
   * A prefetch-1 consumer of `queue` on the puller channel (see Tap). Its user never runs a
   * get or a second tap while it lives, so it never holds two messages; it is not subscribed
   * again after a reconnect (its user makes a new one when it wants the next job).
   */
  async tap(queue: string): Promise<Tap> {
    const ch = await this.pullerChannel();
    const mailbox: Delivery[] = [];
    let waiter: ((d: Delivery | null) => void) | undefined;
    let live = true;
    const end = () => {
      live = false;
      mailbox.length = 0; // the broker requeued them with the channel
      waiter?.(null);
    };
    ch.once('close', end);
    const { consumerTag } = await ch.consume(queue, (msg) => {
      if (msg === null) return end(); // cancelled by the server (its queue deleted)
      const d = this.delivery(ch, msg, queue);
      if (waiter) waiter(d);
      else mailbox.push(d);
    }, { noAck: false });
    let cancelled: Promise<Delivery | null> | undefined;
    return {
      get live() {
        return live && !cancelled;
      },
      next(until) {
        if (mailbox.length > 0) return Promise.resolve(mailbox.shift()!);
        if (!live || cancelled) return Promise.resolve(null);
        return new Promise<Delivery | null>((resolve) => {
          // (this call's own waiter: an earlier call's `until` must not end a later call)
          const mine = (d: Delivery | null) => {
            if (waiter === mine) waiter = undefined;
            resolve(d);
          };
          waiter = mine;
          void until.then(() => {
            if (waiter === mine) mine(null);
          });
        });
      },
      cancel() {
        cancelled ??= (async () => {
          waiter?.(null);
          if (live) await ch.cancel(consumerTag).catch(() => undefined);
          ch.removeListener('close', end);
          return live ? mailbox.shift() ?? null : null;
        })();
        return cancelled;
      },
    };
  }

  private async subscribe(conn: ChannelModel, spec: ConsumerSpec, generation: number): Promise<void> {
    if (spec.cancelled) return;
    if (spec.inFlight > 0) {
      // handlers of the old channel still hold deliveries: subscribing now would hand this
      // consumer more than its prefetch; it subscribes when they return
      spec.deferred = { conn, generation };
      return;
    }
    const ch = await this.connection.channel(conn, generation, `consumer of ${spec.queue}`);
    this.open.add(ch);
    ch.on('close', () => this.open.delete(ch));
    await ch.prefetch(spec.prefetch);
    spec.channel = ch;
    const { consumerTag } = await ch.consume(
      spec.queue,
      (msg) => {
        if (msg === null) {
          if (spec.onCancel) {
            void this.cancel(spec);
            return spec.onCancel();
          }
          this.connection.log.warn({ queue: spec.queue }, 'consumer cancelled by the broker, re-subscribing');
          this.connection.lost(conn, generation, 'consumer cancelled');
          return;
        }
        spec.inFlight++;
        const delivery = this.delivery(ch, msg, spec.queue);
        // the message's id, or its content (a hand-published message has no id)
        const id = msg.properties.messageId ? String(msg.properties.messageId) : createHash('sha1').update(msg.content).digest('hex');
        const bounded = spec.maxDeliveries !== undefined && delivery.deliveryCount >= spec.maxDeliveries;
        (bounded
          ? delivery.deadLetter(`its handler failed ${delivery.deliveryCount} times; last: ${this.failures.get(id) ?? 'unknown (another process)'}`)
          : spec.handler(delivery))
          .then(() => this.failures.delete(id))
          .catch((err: Error) => {
            // A handler must turn failures into data; reaching here is a bug or a broken
            // environment. The message goes back to the queue (which counts the delivery) on
            // this same channel: the service does not reconnect for it.
            this.connection.log.error({ err, queue: spec.queue, deliveryCount: delivery.deliveryCount }, 'delivery handler threw; the message goes back to the queue');
            this.failures.set(id, err.message.split('\n')[0]!);
            if (this.failures.size > 1000) this.failures.delete(this.failures.keys().next().value!);
            delivery.requeue();
          })
          .finally(() => {
            if (--spec.inFlight === 0 && spec.deferred) {
              const { conn: c, generation: g } = spec.deferred;
              spec.deferred = undefined;
              if (g === this.connection.generation && this.connection.state === 'connected') {
                this.subscribe(c, spec, g).catch((err) => this.connection.lost(c, g, `re-subscribing ${spec.queue}: ${err.message}`));
              }
            }
          });
      },
      { noAck: false, arguments: spec.arguments?.() },
    );
    spec.tag = consumerTag;
    if (spec.cancelled) await ch.cancel(consumerTag).catch(() => undefined); // cancelled meanwhile
  }

  private delivery(ch: Channel, msg: ConsumeMessage, queue: string): Delivery {
    const headers = (msg.properties.headers ?? {}) as Record<string, unknown>;
    let settled = false;
    const settle = (how: 'ack' | 'requeue') => {
      if (settled) return;
      settled = true;
      // Only on the channel it came on, while it is open: else the broker requeued it.
      if (!this.open.has(ch)) return;
      try {
        if (how === 'ack') ch.ack(msg);
        else ch.nack(msg, false, true);
      } catch (err) {
        this.connection.log.warn({ err, queue }, `${how} failed; the broker will redeliver`);
      }
    };
    const ack = () => settle('ack');
    return {
      body: msg.content,
      routingKey: msg.fields.routingKey,
      redelivered: msg.fields.redelivered,
      deliveryCount: Number(headers['x-delivery-count'] ?? 0),
      headers,
      remaining: (msg.fields as { messageCount?: number }).messageCount,
      userId: msg.properties.userId as string | undefined,
      ack,
      requeue: () => settle('requeue'),
      deadLetter: async (reason: string) => {
        this.connection.log.warn({ queue, reason, routingKey: msg.fields.routingKey }, 'dead-lettering a message');
        await this.publisher.publishRaw(this.name(EXCHANGES.dlx), `${ROUTING.malformed}.${queue}`, msg.content, {
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
}
