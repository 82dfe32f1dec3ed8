/**
 * Publishes that resolve only on the broker's confirm, on one confirm channel per
 * connection, and survive reconnects (a publish whose channel went before its confirm is
 * sent again on the next connection: consumers deduplicate by message id).
 *
 * Rules (see ../shared/FACTS.md):
 * - every publish is `mandatory`: a `return` (312 NO_ROUTE) arrives *before* the positive
 *   confirm, so the confirm of a returned message is turned into an UnroutableError;
 * - `publish()` returning false means buffered: later publishes wait for 'drain', racing
 *   'close', so callers do not pile more onto a full socket.
 */
import { randomUUID } from 'node:crypto';
import type { ChannelModel, ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
import { InfrastructureError, UnroutableError } from '../errors.js';
import type { Connection } from './connection.js';

export interface PublishOptions {
  persistent?: boolean;
  mandatory?: boolean;
  headers?: Record<string, unknown>;
  /** Give up after this long without a confirm, reconnects included (default 60 s). */
  timeoutMs?: number;
  /** One attempt on the connection up now: fails if it is down or goes before the confirm,
   * instead of being sent again on the next connection (for a writer that may have lost
   * its right to write meanwhile: the aggregator's journal). */
  once?: boolean;
}

const NACKS_BEFORE_RECONNECT = 3;

export class Publisher {
  private ch?: ConfirmChannel;
  private readonly returned = new Set<string>();
  /** Rejecters of publishes awaiting their confirm on the current channel. */
  private readonly unconfirmed = new Set<(e: Error) => void>();
  /** Set while the channel's buffer is full. */
  private full?: Promise<void>;
  /** Nacks in a row on this connection. */
  private nacks = 0;
  private conn?: { conn: ChannelModel; generation: number };

  constructor(private readonly connection: Connection) {}

  /** The connection setup that opens this connection's publish channel. */
  readonly setup = async (conn: ChannelModel, generation: number): Promise<void> => {
    const ch = (await this.connection.channel(conn, generation, 'publish', true)) as ConfirmChannel;
    ch.on('return', (msg: ConsumeMessage) => {
      if (msg.properties.messageId) this.returned.add(String(msg.properties.messageId));
    });
    ch.on('close', () => {
      // every publish still waiting on this channel is sent again by its caller
      const pending = [...this.unconfirmed];
      this.unconfirmed.clear();
      for (const fail of pending) fail(new InfrastructureError('channel closed before the confirm'));
    });
    this.ch = ch;
    this.conn = { conn, generation };
    this.nacks = 0;
  };

  get channel(): ConfirmChannel | undefined {
    return this.ch;
  }

  /** Publishes a JSON message and resolves on the broker's confirm. */
  publish(exchange: string, routingKey: string, message: unknown, opts: PublishOptions = {}): Promise<void> {
    return this.publishRaw(exchange, routingKey, Buffer.from(JSON.stringify(message)), opts);
  }

  async publishRaw(exchange: string, routingKey: string, content: Buffer, opts: PublishOptions = {}): Promise<void> {
    const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
    for (let attempt = 1; ; attempt++) {
      if (this.connection.state === 'closed') throw new InfrastructureError('broker connection is closed');
      if (opts.once && this.connection.state !== 'connected') throw new InfrastructureError('broker connection is down');
      await withTimeout(this.connection.whenConnected(), deadline - Date.now(), 'broker unavailable while publishing');
      try {
        await this.once(exchange, routingKey, content, opts);
        return;
      } catch (err) {
        // Unroutable is a topology bug, not a transient: retrying would not help.
        if (err instanceof UnroutableError || opts.once || Date.now() >= deadline) throw err;
        this.connection.log.warn({ err, exchange, routingKey, attempt }, 'publish not confirmed, retrying');
        await sleep(Math.min(100 * attempt, 1000));
      }
    }
  }

  private async once(exchange: string, routingKey: string, content: Buffer, opts: PublishOptions): Promise<void> {
    if (this.full) await this.full;
    const ch = this.ch;
    if (!ch) throw new InfrastructureError('no publish channel');
    const messageId = randomUUID();
    const options: Options.Publish = {
      persistent: opts.persistent ?? true,
      mandatory: opts.mandatory ?? true,
      contentType: 'application/json',
      messageId,
      // who sends it: RabbitMQ refuses a user_id that is not the connection's user, so a
      // consumer can trust it (shared/roles.ts)
      userId: this.connection.user,
      headers: opts.headers,
    };
    await new Promise<void>((resolve, reject) => {
      const fail = (e: Error) => reject(e);
      this.unconfirmed.add(fail);
      const ok = ch.publish(exchange, routingKey, content, options, (err) => {
        this.unconfirmed.delete(fail);
        if (err) {
          // After a cluster node's death, a connection to a live node was seen to have its
          // publishes to a quorum queue nacked for minutes: a few nacks in a row, and the
          // connection is made again (on the next node).
          // (amqplib also fails the pending confirms of a channel that closed: not nacks)
          if (err.message === 'message nacked' && ch === this.ch && ++this.nacks >= NACKS_BEFORE_RECONNECT && this.conn) {
            this.connection.lost(this.conn.conn, this.conn.generation, `${this.nacks} publishes in a row nacked by the broker`);
          }
          return reject(new InfrastructureError(`publish to ${exchange} nacked by the broker`, { cause: err }));
        }
        this.nacks = 0;
        if (this.returned.delete(messageId)) {
          return reject(new UnroutableError(`unroutable: no queue bound to ${exchange} for ${JSON.stringify(routingKey)}`));
        }
        resolve();
      });
      if (!ok && !this.full) {
        // Buffered, not dropped: the confirm callback still settles it.
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
