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
import type { Channel } from 'amqplib';
import type { Logger } from './log.js';
import { TOPOLOGY } from './topology.js';
import { Connection, type ConnectionState } from './broker/connection.js';
import { Publisher, type PublishOptions } from './broker/publisher.js';
import { Consumers, type ConsumeOptions, type DeliveryHandler, type Subscription } from './broker/consumer.js';

import { Lease } from './broker/lease.js';

export type { ConsumeOptions, Delivery, DeliveryHandler, Subscription } from './broker/consumer.js';
export type { Lease } from './broker/lease.js';
export type { PublishOptions } from './broker/publisher.js';
export { redact } from './broker/connection.js';
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
}

export class Broker extends EventEmitter {
  private readonly connection: Connection;
  private readonly publisher: Publisher;
  private readonly consumers: Consumers;

  constructor(opts: BrokerOptions) {
    super();
    this.connection = new Connection(opts);
    this.publisher = new Publisher(this.connection);
    this.consumers = new Consumers(this.connection, this.publisher);
    // order matters: the topology before anything uses it, the publish channel before the
    // consumers (whose handlers publish)
    if (opts.declareTopology !== false) void this.connection.addSetup(async (conn) => {
      const ch = await conn.createChannel();
      ch.on('error', () => undefined);
      try {
        await declareTopology(ch);
      } finally {
        await ch.close().catch(() => undefined);
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
    return this.consumers.consume(queue, handler, opts);
  }

  /** A lease on `queue` (broker/lease.ts), asked for every `pollMs` until held; not started. */
  lease(queue: string, pollMs: number): Lease {
    return new Lease(this.connection, queue, pollMs);
  }

  /** Stops delivering new messages to every consumer; in-flight deliveries can still be acked. */
  cancelConsumers(): Promise<void> {
    return this.consumers.cancelAll();
  }

  /** Publishes a JSON message and resolves on the broker's confirm. Survives reconnects. */
  publish(exchange: string, routingKey: string, message: unknown, opts: PublishOptions = {}): Promise<void> {
    return this.publisher.publish(exchange, routingKey, message, opts);
  }

  publishRaw(exchange: string, routingKey: string, content: Buffer, opts: PublishOptions = {}): Promise<void> {
    return this.publisher.publishRaw(exchange, routingKey, content, opts);
  }

  /** The message at the head of `queue`, left there (undefined if it is empty). */
  peek(queue: string): Promise<Buffer | undefined> {
    return this.connection.oneOff(async (ch) => {
      const msg = await ch.get(queue, { noAck: false });
      if (!msg) return undefined;
      ch.nack(msg, false, true);
      return msg.content;
    });
  }

  /** Message and consumer counts of a queue (passive; does not create it). */
  checkQueue(queue: string): Promise<{ messageCount: number; consumerCount: number }> {
    return this.connection.oneOff(async (ch) => {
      const q = await ch.checkQueue(queue);
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
  async watch(exchange: string, routingKey: string, queue: string, handler: DeliveryHandler, opts: { kind: 'kept' | 'transient'; expiresMs?: number } = { kind: 'kept' }): Promise<void> {
    const setup = async (ch: Channel) => {
      if (opts.kind === 'kept') await ch.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum', 'x-expires': opts.expiresMs ?? 600_000 } });
      else await ch.assertQueue(queue, { durable: false, exclusive: true, autoDelete: true });
      await ch.bindQueue(queue, exchange, routingKey);
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
    await this.consume(queue, handler, { prefetch: 100 });
  }
  private readonly queueSetups: Array<(ch: Channel) => Promise<void>> = [];

  async close(): Promise<void> {
    // Each channel before the connection: on RabbitMQ 3.10 an ack to a quorum queue
    // followed at once by connection.close is lost (the message is requeued), while a
    // channel.close handshake settles it (checked: test/e2e/drain.test.ts).
    await this.connection.close([...this.consumers.channels(), this.publisher.channel]);
  }
}

/** Declares every exchange, queue and binding of `TOPOLOGY` (idempotent). */
export async function declareTopology(ch: Channel): Promise<void> {
  for (const ex of TOPOLOGY.exchanges) await ch.assertExchange(ex.name, ex.type, { durable: ex.durable });
  for (const q of TOPOLOGY.queues) await ch.assertQueue(q.name, { durable: q.durable, arguments: q.arguments });
  for (const b of TOPOLOGY.bindings) await ch.bindQueue(b.queue, b.exchange, b.routingKey);
}
