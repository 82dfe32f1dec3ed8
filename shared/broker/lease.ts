/**
 * A lease held through the broker: an exclusive queue of that name, which only one
 * connection can hold at a time and which the broker deletes when that connection goes
 * (the process killed, its host gone, the node it was on stopped). Of several processes
 * asking for the same lease, one holds it; the others try again every `pollMs` and one of
 * them takes it over once the holder's connection is gone.
 *
 * The holder loses the lease the moment its own connection drops (even if the broker has
 * not noticed yet, it cannot act through a dead connection); after a reconnect it asks
 * again like everyone else. Events: 'acquired', 'lost'.
 */
import { EventEmitter } from 'node:events';
import type { Connection } from './connection.js';

export class Lease extends EventEmitter {
  held = false;
  private stopped = false;
  private timer?: NodeJS.Timeout;
  private wake?: () => void;

  constructor(private readonly connection: Connection, readonly queue: string, private readonly pollMs: number) {
    super();
    connection.on('disconnected', () => {
      if (!this.held) return;
      this.held = false;
      this.emit('lost');
    });
    connection.on('connected', () => this.wake?.());
  }

  start(): void {
    void this.loop();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.wake?.();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      if (!this.held && this.connection.state === 'connected') await this.tryOnce();
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.timer = setTimeout(resolve, this.pollMs);
      });
    }
  }

  private async tryOnce(): Promise<void> {
    let conn;
    let generation;
    try {
      ({ conn, generation } = await this.connection.current());
    } catch {
      return; // closed
    }
    let ch;
    try {
      ch = await conn.createChannel();
      ch.on('error', () => undefined);
      // held by another connection: 405 RESOURCE_LOCKED, and the broker closes the channel
      await ch.assertQueue(this.queue, { exclusive: true, durable: false, autoDelete: false });
    } catch {
      return;
    } finally {
      await ch?.close().catch(() => undefined);
    }
    if (this.stopped || this.held || generation !== this.connection.generation || this.connection.state !== 'connected') return;
    this.held = true;
    this.emit('acquired');
  }
}
