/**
 * The one broker client every service uses, made of three parts:
 * - broker/connection.ts: a connection that comes back (backoff, several node URLs), with
 *   the setups run on each new connection;
 * - broker/publisher.ts: publishes that resolve on the broker's confirm;
 * - broker/consumer.ts: consumers with manual acks, re-subscribed safely after a reconnect;
 * - broker/lease.ts: a lease only one connection holds (an exclusive queue), for a leader.
 * This file puts them together with the topology declared on every connection.
 */
import { EventEmitter } from 'node:events';
import type { Channel, ChannelModel } from 'amqplib';
import { InfrastructureError } from './errors.js';
import type { Logger } from './log.js';
import { TOPOLOGY } from './topology.js';
import { Connection, type ConnectionState } from './broker/connection.js';
import { Publisher, type PublishOptions } from './broker/publisher.js';
import { Consumers, type ConsumeOptions, type Delivery, type DeliveryHandler, type Subscription, type Tap } from './broker/consumer.js';

import { Lease } from './broker/lease.js';

export type { ConsumeOptions, Delivery, DeliveryHandler, Subscription, Tap } from './broker/consumer.js';
export type { Lease } from './broker/lease.js';
export type { PublishOptions } from './broker/publisher.js';
export { redact } from './config.js';
export { sleep } from './broker/publisher.js';
export type BrokerState = ConnectionState;

export interface BrokerOptions {
  /** One URL, or several comma-separated (the nodes of a cluster). */
  url: string;
  /** Shown as the connection name in the management UI. */
  name: string;
  log: Logger;
  /** Attempts for the first connection before start() fails (default: never give up, as a
   * service should; the CLI bounds it so that a wrong URL is an error, not a hang). */
  connectAttempts?: number;
  /** Declare the topology on each connection (default true). */
  declareTopology?: boolean;
  /**
   * Every name of the topology under this namespace (`warren.X` → `warren.<ns>.X`): a private
   * Warren on a shared broker (`warren run --local`), whose services see only each other.
   */
  namespace?: string;
}

/** How a namespace renames the topology's names (anything else is left alone). */
export function namespaced(ns: string | undefined): (name: string) => string {
  return (name) => (!ns || !name.startsWith('warren.') ? name : `warren.${ns}.${name.slice('warren.'.length)}`);
}

/** A namespace's queues go away once unused this long (a private Warren that crashed). */
const NAMESPACE_EXPIRES_MS = 3600_000;

export class Broker extends EventEmitter {
  private readonly connection: Connection;
  private readonly publisher: Publisher;
  private readonly consumers: Consumers;
  /** A topology name as this broker client sees it (its namespace). */
  readonly name: (name: string) => string;

  constructor(opts: BrokerOptions) {
    super();
    this.name = namespaced(opts.namespace);
    this.connection = new Connection(opts);
    this.publisher = new Publisher(this.connection);
    this.consumers = new Consumers(this.connection, this.publisher, this.name);
    // order matters: the topology before anything uses it, the publish channel before the
    // consumers (whose handlers publish)
    if (opts.declareTopology !== false) void this.connection.addSetup(async (conn) => {
      const chs = await Promise.all(Array.from({ length: DECLARE_CHANNELS }, () => conn.createChannel()));
      for (const ch of chs) ch.on('error', () => undefined);
      try {
        await declareTopology(chs, opts.namespace);
        await Promise.all(chs.map((ch) => ch.close().catch(() => undefined)));
      } catch (err) {
        // a user with least privilege may not declare (403: configure rights would let it
        // delete queues too): the operator declared the topology; check that it is there
        if (!/ACCESS_REFUSED|403/.test(String((err as Error).message))) throw err;
        await checkTopology(conn, opts.namespace);
      }
    });
    void this.connection.addSetup(this.publisher.setup);
    void this.connection.addSetup(async () => {
      for (const setup of this.queueSetups) await setup(this.publisher.channel!);
    });
    void this.connection.addSetup(this.consumers.setup);
    this.connection.on('connected', () => this.emit('connected'));
    this.connection.on('disconnected', () => this.emit('disconnected'));
  }

  get state(): BrokerState {
    return this.connection.state;
  }

  /** Connects (bounded attempts if asked) and declares the topology. Rejects with a one-line error. */
  start(): Promise<void> {
    return this.connection.start();
  }

  /** Resolves once a connection is up (immediately if it is). */
  whenConnected(): Promise<void> {
    return this.connection.whenConnected();
  }

  consume(queue: string, handler: DeliveryHandler, opts: ConsumeOptions): Promise<Subscription> {
    return this.consumers.consume(this.name(queue), handler, opts);
  }

  /** One message from `queue`, or null (broker/consumer.ts: Consumers.get). */
  get(queue: string): Promise<Delivery | null> {
    return this.consumers.get(this.name(queue));
  }

  /** A prefetch-1 consumer of `queue` whose deliveries are taken one by one (broker/consumer.ts: Tap). */
  tap(queue: string): Promise<Tap> {
    return this.consumers.tap(this.name(queue));
  }

  /** A lease on `queue` (broker/lease.ts), asked for every `pollMs` until held; not started. */
  lease(queue: string, pollMs: number): Lease {
    return new Lease(this.connection, this.name(queue), pollMs);
  }

  /** Stops delivering new messages to every consumer; in-flight deliveries can still be acked. */
  cancelConsumers(): Promise<void> {
    return this.consumers.cancelAll();
  }

  /** Publishes a JSON message and resolves on the broker's confirm. Survives reconnects. */
  publish(exchange: string, routingKey: string, message: unknown, opts: PublishOptions = {}): Promise<void> {
    return this.publisher.publish(this.name(exchange), exchange === '' ? this.name(routingKey) : routingKey, message, opts);
  }

  publishRaw(exchange: string, routingKey: string, content: Buffer, opts: PublishOptions = {}): Promise<void> {
    return this.publisher.publishRaw(this.name(exchange), exchange === '' ? this.name(routingKey) : routingKey, content, opts);
  }

  /** The message at the head of `queue`, left there (undefined if it is empty). */
  peek(queue: string): Promise<Buffer | undefined> {
    return this.connection.oneOff(async (ch) => {
      const msg = await ch.get(this.name(queue), { noAck: false });
      if (!msg) return undefined;
      ch.nack(msg, false, true);
      return msg.content;
    });
  }

  /** Message and consumer counts of a queue (passive; does not create it). */
  checkQueue(queue: string): Promise<{ messageCount: number; consumerCount: number }> {
    return this.connection.oneOff(async (ch) => {
      const q = await ch.checkQueue(this.name(queue));
      return { messageCount: q.messageCount, consumerCount: q.consumerCount };
    });
  }

  /**
   * A private queue bound to `exchange` with `routingKey`, for a watcher:
   * - `kept` (the CLI following a run): a quorum queue, so a report published while we
   *   reconnect, while the broker restarts, or after the node that held it died, waits for
   *   us; it expires once unused for `expiresMs`;
   * - `transient` (heartbeats, notices): an exclusive queue of this connection, declared
   *   again on whichever node we reconnect to; what is published meanwhile is missed.
   */
  async watch(exchange: string, routingKey: string | string[], queue: string, handler: DeliveryHandler, opts: { kind: 'kept' | 'transient'; expiresMs?: number } = { kind: 'kept' }): Promise<void> {
    exchange = this.name(exchange);
    queue = this.name(queue);
    if (opts.kind === 'kept') this.keptQueues.add(queue);
    const setup = async (ch: Channel) => {
      if (opts.kind === 'kept') await ch.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum', 'x-expires': opts.expiresMs ?? 600_000 } });
      else await ch.assertQueue(queue, { durable: false, exclusive: true, autoDelete: true });
      for (const key of typeof routingKey === 'string' ? [routingKey] : routingKey) await ch.bindQueue(queue, exchange, key);
    };
    this.queueSetups.push(setup);
    // Declared now on the live connection (each later one declares it as it connects). A
    // connection that goes under the declaration is not the caller's failure: again on the
    // next one; an error of the declaration itself (it closes the channel too) after a few.
    for (let attempt = 1; this.connection.state !== 'closed'; attempt++) {
      await this.connection.whenConnected();
      const ch = this.publisher.channel;
      try {
        if (ch) await setup(ch);
        break;
      } catch (err) {
        if (attempt >= 5) throw err;
        await new Promise((r) => setTimeout(r, 200 * attempt));
      }
    }
    await this.consumers.consume(queue, handler, { prefetch: 100 });
  }

  /** Deletes every queue and exchange of this client's namespace (a private Warren's end). */
  async deleteNamespace(): Promise<void> {
    const queues = [...TOPOLOGY.queues.map((x) => this.name(x.name)), ...this.keptQueues];
    const exchanges = TOPOLOGY.exchanges.map((e) => this.name(e.name));
    // (on several channels at once, as declareTopology)
    await Promise.all(Array.from({ length: DECLARE_CHANNELS }, (_, i) => this.connection.oneOff(async (ch) => {
      for (let j = i; j < queues.length; j += DECLARE_CHANNELS) await ch.deleteQueue(queues[j]!);
    })));
    await this.connection.oneOff(async (ch) => {
      for (const e of exchanges) await ch.deleteExchange(e);
    });
  }
  private readonly queueSetups: Array<(ch: Channel) => Promise<void>> = [];
  /** The `kept` queues this client declared (a namespace's end removes them too). */
  private readonly keptQueues = new Set<string>();

  async close(): Promise<void> {
    // Each channel before the connection: on RabbitMQ 3.10 an ack to a quorum queue
    // followed at once by connection.close is lost (the message is requeued), while a
    // channel.close handshake settles it (checked: test/e2e/drain.test.ts).
    await this.connection.close([...this.consumers.channels(), this.publisher.channel]);
  }
}

/** Declares every exchange, queue and binding of `TOPOLOGY` (idempotent), in a namespace if given. */
/** Passive checks of every exchange and queue (no rights needed); names the first missing one. */
async function checkTopology(conn: ChannelModel, namespace?: string): Promise<void> {
  const name = namespaced(namespace);
  const names = [...TOPOLOGY.exchanges.map((e) => ['exchange', name(e.name)] as const), ...TOPOLOGY.queues.map((q) => ['queue', name(q.name)] as const)];
  const ch = await conn.createChannel();
  ch.on('error', () => undefined);
  try {
    for (const [kind, n] of names) {
      try {
        if (kind === 'exchange') await ch.checkExchange(n);
        else await ch.checkQueue(n);
      } catch (err) {
        throw new InfrastructureError(`the broker has no ${kind} ${n} and this user may not declare it: load rabbitmq/definitions.json, or run \`warren broker-users\` with an administrator (${String((err as Error).message).split('\n')[0]})`);
      }
    }
  } finally {
    await ch.close().catch(() => undefined);
  }
}

/** Channels the topology is declared on at once (a channel has one request in flight at a
 * time; a new namespace's quorum queues are made in parallel: 206 -> 111 ms here, and a
 * declared one checked in 15 ms instead of 20). */
const DECLARE_CHANNELS = 6;

/** Each of `items` through `fn` on the channels, one item at a time per channel. */
async function onChannels<T>(chs: Channel[], items: readonly T[], fn: (ch: Channel, item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(chs.map(async (ch) => {
    while (next < items.length) await fn(ch, items[next++]!);
  }));
}

export async function declareTopology(chs: Channel[], namespace?: string): Promise<void> {
  const name = namespaced(namespace);
  await onChannels(chs, TOPOLOGY.exchanges, (ch, ex) => ch.assertExchange(name(ex.name), ex.type, { durable: ex.durable }));
  await onChannels(chs, TOPOLOGY.queues, (ch, q) => {
    const args: Record<string, string | number> = { ...q.arguments };
    if (typeof args['x-dead-letter-exchange'] === 'string') args['x-dead-letter-exchange'] = name(args['x-dead-letter-exchange']);
    // a namespace's queues go once unused (streams cannot expire: they keep an hour)
    if (namespace) {
      if (args['x-queue-type'] === 'stream') args['x-max-age'] = '1h';
      else args['x-expires'] = NAMESPACE_EXPIRES_MS;
    }
    return ch.assertQueue(name(q.name), { durable: q.durable, arguments: args });
  });
  await onChannels(chs, TOPOLOGY.bindings, (ch, b) => ch.bindQueue(name(b.queue), name(b.exchange), b.routingKey));
}
