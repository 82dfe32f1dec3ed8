/**
 * The aggregators' journal: a RabbitMQ stream (`warren.journal`), replicated by the broker
 * like the quorum queues, so an aggregator's state outlives its process, its disk and its
 * host.
 *
 * Every aggregator reads the stream from the start of what it keeps (a replica), and
 * applies each entry in stream order; the state of every run is the fold of its entries.
 * Only the active aggregator (the one holding the lease) writes. A write is one stream
 * message holding every entry appended in one turn of the event loop (group commit), and
 * `append` resolves once the writer's own replica has applied it: the caller acks the
 * message it journaled only then, and whatever its entries decided is carried out by the
 * replica, whoever holds the lease at the time.
 *
 * An entry the stream does not confirm is not applied anywhere: it is the caller's to retry
 * (its message goes back to the queue). A writer that loses the lease fails every append in
 * flight (`abort`) and writes nothing more until it is active again.
 */
import { randomUUID } from 'node:crypto';
import type { Broker, Delivery, Subscription } from '../../shared/broker.js';
import type { Logger } from '../../shared/log.js';
import { QUEUES } from '../../shared/topology.js';

/** One stream message: the entries of one group commit by one writer. */
interface Record<E> {
  /** Writer (an aggregator process) and its write number. */
  w: string;
  s: number;
  entries: E[];
}

/** The append could not be made durable by this writer (it may have lost the lease). */
export class NotJournaled extends Error {}

export class Journal<E> {
  readonly writer = randomUUID();
  private seq = 0;
  /** The next stream offset to apply (everything before it has been). */
  private next = 0;
  private queued: E[] = [];
  private queuedWaiters: Waiter[] = [];
  private flushScheduled = false;
  /** Writes of ours confirmed or in flight, by write number, until our replica applies them. */
  private readonly inFlight = new Map<number, Waiter[]>();
  private tail?: Subscription;

  constructor(
    private readonly broker: Broker,
    private readonly log: Logger,
    /** Applies one entry (in stream order, every entry exactly once per process). */
    private readonly apply: (entry: E, offset: number) => void,
    /** The stream was deleted under us: what every aggregator knew is gone. */
    private readonly onLost: (err: Error) => void,
  ) {}

  /**
   * Starts reading the stream from `from` (a checkpoint's offset; 0: its first entry). A
   * checkpoint past the stream's end belongs to an older stream (deleted, declared again):
   * then from the start.
   */
  async open(from = 0): Promise<void> {
    if (from > 0) {
      const end = await this.end();
      if (from > end) {
        this.log.warn({ from, streamEnd: end }, 'the journal checkpoint is past the end of the stream (an older stream); reading it from its start');
        from = 0;
      }
    }
    this.next = from;
    await this.subscribe();
  }

  private async subscribe(): Promise<void> {
    this.tail = await this.broker.consume(QUEUES.journal, (d) => this.onRecord(d), {
      prefetch: 1000,
      // after a reconnect, from where we were: the broker starts at the chunk that holds it
      arguments: () => ({ 'x-stream-offset': this.next }),
      onCancel: () => void this.cancelled(),
    });
  }

  /**
   * The broker cancelled our reading: the stream was deleted (what every aggregator knew is
   * gone), or only the replica we read from went (a node of the cluster stopping): then we
   * read on from where we were.
   */
  private async cancelled(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.broker.checkQueue(QUEUES.journal);
        break;
      } catch (err) {
        if (/NOT_FOUND|404/.test((err as Error).message)) {
          return this.onLost(new Error(`the journal stream ${QUEUES.journal} was deleted`));
        }
        // the broker is away: ask again once it is back
        await new Promise((r) => setTimeout(r, Math.min(5000, 250 * attempt)));
      }
    }
    this.log.warn({ at: this.next }, 'the broker cancelled our reading of the journal, which still exists (a replica went); reading on');
    await this.subscribe().catch((err) => this.onLost(new Error(`cannot read the journal stream again: ${(err as Error).message}`)));
  }

  /** The stream's last offset now: writes an empty record and reads the last chunk for it. */
  private async end(): Promise<number> {
    const s = ++this.seq;
    let found!: (offset: number) => void;
    const seen = new Promise<number>((r) => (found = r));
    const probe = await this.broker.consume(QUEUES.journal, async (d) => {
      d.ack();
      try {
        const r = JSON.parse(d.body.toString('utf8')) as Record<E>;
        if (r.w === this.writer && r.s === s) found(Number(d.headers['x-stream-offset']));
      } catch {
        // not ours
      }
    }, { prefetch: 100, arguments: () => ({ 'x-stream-offset': 'last' }) });
    try {
      await this.broker.publish('', QUEUES.journal, { w: this.writer, s, entries: [] } satisfies Record<E>);
      return await seen;
    } finally {
      await probe.cancel();
    }
  }

  /** The offset of the next entry to apply. */
  get position(): number {
    return this.next;
  }

  /** Resolves once `entry` is in the stream and applied by this replica. */
  append(entry: E): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queued.push(entry);
      this.queuedWaiters.push({ resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  /** Resolves once this replica has applied everything written before the call. */
  barrier(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const s = ++this.seq;
      this.inFlight.set(s, [{ resolve, reject }]);
      this.write({ w: this.writer, s, entries: [] }, s);
    });
  }

  /** Fails every append not applied yet (the writer lost the lease). */
  abort(why: string): void {
    const err = new NotJournaled(why);
    for (const waiters of this.inFlight.values()) for (const w of waiters) w.reject(err);
    this.inFlight.clear();
    for (const w of this.queuedWaiters) w.reject(err);
    this.queued = [];
    this.queuedWaiters = [];
  }

  async close(): Promise<void> {
    await this.tail?.cancel();
    this.abort('the aggregator is stopping');
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.queued.length === 0) return;
    const s = ++this.seq;
    this.inFlight.set(s, this.queuedWaiters);
    const record: Record<E> = { w: this.writer, s, entries: this.queued };
    this.queued = [];
    this.queuedWaiters = [];
    this.write(record, s);
  }

  private write(record: Record<E>, s: number): void {
    // one attempt: sent again after a reconnect, it could land after another writer's
    this.broker.publish('', QUEUES.journal, record, { once: true }).catch((err: Error) => {
      const waiters = this.inFlight.get(s);
      this.inFlight.delete(s);
      for (const w of waiters ?? []) w.reject(new NotJournaled(`not journaled: ${err.message}`));
    });
  }

  private async onRecord(d: Delivery): Promise<void> {
    const offset = Number(d.headers['x-stream-offset']);
    d.ack();
    let record: Record<E>;
    try {
      record = JSON.parse(d.body.toString('utf8')) as Record<E>;
      if (!Array.isArray(record.entries)) throw new Error('no entries');
    } catch (err) {
      this.log.error({ err, offset }, 'an unreadable journal record, skipped');
      if (offset >= this.next) this.next = offset + 1;
      return;
    }
    if (!Number.isFinite(offset)) return;
    if (offset < this.next) return; // before where we started: the broker starts at the chunk holding it
    this.next = offset + 1;
    for (const entry of record.entries) {
      try {
        this.apply(entry, offset);
      } catch (err) {
        this.log.error({ err, offset }, 'a journal entry could not be applied, skipped');
      }
    }
    if (record.w === this.writer) {
      const waiters = this.inFlight.get(record.s);
      this.inFlight.delete(record.s);
      for (const w of waiters ?? []) w.resolve();
    }
  }
}

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
}
