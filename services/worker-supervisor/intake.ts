/**
 * Where a slot takes its next job. Each run in progress has its work queue (a shard of
 * `warren.specs.<n>`, topology.ts); the active aggregator says every few seconds which runs
 * are in progress on which shard (`runs.state`), and whoever publishes jobs says which shard
 * got them (`work.wake`). A slot takes one job at a time (basic.get) from the shards of the
 * runs it may serve, so concurrent runs share the workers instead of waiting behind each
 * other. Which shard first:
 *
 * - two takes in three: the one with the fewest jobs waiting, as the last get there said
 *   (basic.get-ok counts what is left), and first of all a shard just woken (a new run, a
 *   new round): a small run started during a big one gets most of the workers until it is
 *   done, and the big one loses little;
 * - every third take: the one this slot served longest ago, so no run, however big, gets
 *   less than its turn while small runs keep coming.
 *
 * Ties go round-robin, after the shard served last; a shard found empty comes last.
 *
 * While there is only one shard to serve (one run in progress, the common case), the slot
 * does not ask for each job: it consumes that shard with prefetch 1 (a tap), so the broker
 * hands it the next job as it acks the last, without a basic.get per job (each is a Raft
 * command of its own on a quorum queue: the get alone doubled the broker's cost per spec).
 * As soon as a second shard is to be served, the tap is cancelled before the ack of the job
 * in hand (so that the ack brings nothing more), and the takes above resume.
 *
 * With nothing to take it waits: woken at once by a wake or a new state, else it looks again
 * after a backoff (a redelivered job of a dead worker comes without a wake). An idle slot
 * also sweeps every shard now and then: what sits where no run in progress is (a
 * hand-published or malformed job, a leftover of a run long over) is dropped or
 * dead-lettered instead of waiting for a run to come to its shard.
 */
import type { Broker, Delivery, Tap } from '../../shared/broker.js';
import type { Logger } from '../../shared/log.js';
import { labelsMatch, type RunsState } from '../../shared/messages.js';
import { SPEC_SHARDS, specQueue } from '../../shared/topology.js';

/** A shard woken lately is looked at even before a state lists its run. */
const WAKE_KEEP_MS = 15_000;
const POLL_MIN_MS = 100;
const POLL_MAX_MS = 2_000;
/** Every this many takes, the shard served longest ago goes first. */
const TURN_EVERY = 3;
/** An idle slot looks at every shard this often. */
const SWEEP_MS = 10_000;
/** A get under way when the slot stops: waited for this long. */
const STOP_WAIT_MS = 2_000;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export interface Taken {
  delivery: Delivery;
  shard: number;
}

export class Intake {
  private state?: RunsState;
  /** Shards woken lately, with when the wake stops counting. */
  private readonly woken = new Map<number, number>();
  /** Runs this slot is out of (its setup failed there). */
  private readonly excluded = new Set<string>();
  private lastShard = -1;
  /** Jobs left on a shard after this slot's last get there (0: found empty); none known: not
   * looked at since jobs came. */
  private readonly backlog = new Map<number, number>();
  /** This slot's takes so far, and the take it last served each shard at (or first saw it). */
  private takes = 0;
  private readonly servedAt = new Map<number, number>();
  private lastSweep = Date.now();
  private stopped = false;
  private poke?: () => void;
  /** Waits cut short by stop() (each removes itself when done: a slot takes jobs for days). */
  private readonly stopWaiters = new Set<() => void>();

  /** The consumer of the one shard served, while there is only one. */
  private tap?: { shard: number; tap: Tap };
  /** A tap being cancelled, and the job it still brought, if any. */
  private closing?: Promise<Taken | null>;

  constructor(
    private readonly broker: Pick<Broker, 'get'> & Partial<Pick<Broker, 'tap'>>,
    private readonly labels: Record<string, string>,
    private readonly log: Logger,
  ) {}

  /** The latest runs in progress (from the aggregator, through the supervisor). */
  setState(state: RunsState): void {
    if (this.state && state.at < this.state.at) return;
    this.state = state;
    this.poke?.();
  }

  /** Jobs were published to `shard` for a run with these labels. */
  wake(runId: string, shard: number, labels: readonly string[]): void {
    if (this.excluded.has(runId) || !labelsMatch(labels, this.labels)) return;
    this.woken.set(shard, Date.now() + WAKE_KEEP_MS);
    this.backlog.delete(shard);
    if (!this.servedAt.has(shard)) this.servedAt.set(shard, this.takes);
    this.poke?.();
  }

  /** This slot takes no more work of `runId`. */
  exclude(runId: string): void {
    this.excluded.add(runId);
  }

  isExcluded(runId: string): boolean {
    return this.excluded.has(runId);
  }

  /** take() returns null from now on (a job it is getting still comes back). */
  stop(): void {
    this.stopped = true;
    for (const w of [...this.stopWaiters]) w();
    this.poke?.();
  }

  /** The shards to look at, in the order to look (the header says which first). */
  shards(now = Date.now()): number[] {
    const set = new Set<number>();
    const runs = this.state?.runs ?? [];
    const byShard = new Map<number, typeof runs>();
    for (const r of runs) byShard.set(r.shard, [...(byShard.get(r.shard) ?? []), r]);
    // a shard is ours when we may serve every run in progress on it (a job we cannot run
    // must not be taken: routing, not rejecting); one with none left holds the leftovers of
    // runs just ended, which any slot drops
    const ours = (shard: number) => (byShard.get(shard) ?? []).every((r) => !this.excluded.has(r.runId) && labelsMatch(r.labels, this.labels));
    for (const shard of this.state?.shards ?? []) if (ours(shard)) set.add(shard);
    for (const [shard, until] of this.woken) {
      if (until < now) this.woken.delete(shard);
      else if (ours(shard)) set.add(shard);
    }
    const sorted = [...set].sort((a, b) => a - b);
    const from = sorted.findIndex((s) => s > this.lastShard);
    const rotation = from <= 0 ? sorted : [...sorted.slice(from), ...sorted.slice(0, from)];
    for (const shard of rotation) if (!this.servedAt.has(shard)) this.servedAt.set(shard, this.takes);
    const empty = (s: number) => (this.backlog.get(s) === 0 ? 1 : 0);
    const waiting = (s: number) => this.backlog.get(s) ?? -1;
    const longestAgo = (s: number) => this.servedAt.get(s)!;
    const turn = this.takes % TURN_EVERY === TURN_EVERY - 1;
    // a stable sort: ties keep the round-robin order
    return rotation.sort((a, b) => empty(a) - empty(b) || (turn ? longestAgo(a) - longestAgo(b) : waiting(a) - waiting(b)));
  }

  /** Notes a take from `shard`, and what the get said is left there. */
  private served(shard: number, remaining: number | undefined): void {
    this.lastShard = shard;
    if (remaining === undefined) this.backlog.delete(shard);
    else this.backlog.set(shard, remaining);
    this.servedAt.set(shard, this.takes);
    this.takes += 1;
  }

  /** The next job, waiting while there is none; null once stopped (or a job still in hand then). */
  async take(): Promise<Taken | null> {
    let waitMs = POLL_MIN_MS;
    while (!this.stopped) {
      const eligible = this.shards();
      if (this.tapShard(eligible) !== undefined) {
        const got = await this.fromTap(eligible[0]!);
        if (got) return got;
        continue; // something changed (a state, a wake, a sweep due, a reconnect): look again
      }
      const held = await this.closeTap();
      if (held) return held;
      let look = eligible;
      if (Date.now() - this.lastSweep > SWEEP_MS) {
        this.lastSweep = Date.now();
        // (not the shards of runs in progress we may not serve: their jobs are not ours)
        const busy = new Set((this.state?.runs ?? []).map((r) => r.shard));
        const all = Array.from({ length: SPEC_SHARDS }, (_, n) => n).filter((n) => !eligible.includes(n) && !busy.has(n));
        look = [...eligible, ...all];
      }
      for (const shard of look) {
        if (this.stopped) break;
        let delivery: Delivery | null;
        try {
          const got = this.broker.get(specQueue(shard));
          // stopped meanwhile: a job the get brings is still run (given back, it would count
          // as a death); a get that hangs (the broker is away) is given up
          delivery = await this.raceStop(got, () => Promise.race([got, sleep(STOP_WAIT_MS).then(() => null)]));
        } catch (err) {
          if (this.stopped) return null;
          // the connection went under the get: it comes back; look again then
          this.log.debug({ err, shard }, 'taking a job failed; trying again');
          break;
        }
        if (delivery) {
          this.served(shard, delivery.remaining);
          return { delivery, shard };
        }
        this.backlog.set(shard, 0);
      }
      const poked = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => done(false), waitMs);
        const done = (woken: boolean) => {
          clearTimeout(timer);
          this.poke = undefined;
          resolve(woken);
        };
        this.poke = () => done(true);
      });
      waitMs = poked ? POLL_MIN_MS : Math.min(POLL_MAX_MS, waitMs * 2);
    }
    // a job a tap brought before it stopped is still run, as a get's is
    return this.closeTap();
  }

  /** `p`, or what `onStop` gives if the intake stops first. */
  private raceStop<T, U>(p: Promise<T>, onStop: () => U | Promise<U>): Promise<T | U> {
    return new Promise<T | U>((resolve, reject) => {
      const stop = () => {
        this.stopWaiters.delete(stop);
        Promise.resolve(onStop()).then(resolve, reject);
      };
      if (this.stopped) return stop();
      this.stopWaiters.add(stop);
      p.then(
        (v) => {
          this.stopWaiters.delete(stop);
          resolve(v);
        },
        (err: unknown) => {
          this.stopWaiters.delete(stop);
          reject(err);
        },
      );
    });
  }

  /** The shard to consume with a tap, when there is exactly one to serve and no sweep is due. */
  private tapShard(eligible: number[]): number | undefined {
    if (!this.broker.tap || this.stopped || eligible.length !== 1 || Date.now() - this.lastSweep > SWEEP_MS) return undefined;
    return eligible[0];
  }

  /** The next job of `shard` from its tap (made if need be), or null when something changed first. */
  private async fromTap(shard: number): Promise<Taken | null> {
    // another shard's tap, a dead one, or one being cancelled: gone first (with what it brought)
    if (this.closing || (this.tap && (this.tap.shard !== shard || !this.tap.tap.live))) {
      const held = await this.closeTap();
      if (held) return held;
    }
    if (!this.tap) {
      try {
        const made = this.broker.tap!(specQueue(shard));
        const tap = await this.raceStop(made, () => null);
        if (!tap) {
          // stopped while the connection was away: that tap is not wanted
          void made.then((t) => t.cancel()).catch(() => undefined);
          return null;
        }
        this.tap = { shard, tap };
      } catch (err) {
        // the connection went under it: it comes back; look again then
        this.log.debug({ err, shard }, 'consuming a shard failed; trying again');
        await this.raceStop(sleep(POLL_MIN_MS), () => undefined);
        return null;
      }
    }
    const tap = this.tap;
    if (this.stopped) return null; // (stop() pokes: it must not come before the poke is set)
    let timer: NodeJS.Timeout | undefined;
    const changed = new Promise<void>((resolve) => {
      this.poke = resolve;
      // a sweep comes due while the shard stays quiet
      timer = setTimeout(resolve, Math.max(0, SWEEP_MS - (Date.now() - this.lastSweep)) + 1);
      timer.unref();
    });
    const delivery = await tap.tap.next(changed);
    clearTimeout(timer);
    this.poke = undefined;
    if (!delivery) return null;
    this.served(shard, undefined);
    return { delivery: this.cancelBeforeAck(delivery, shard), shard };
  }

  /**
   * The delivery, whose ack first cancels the tap it came from when that tap is not to bring
   * the next job (another shard is to be served, a sweep is due, the slot stops): with
   * basic.cancel sent before the ack, the ack brings nothing more.
   */
  private cancelBeforeAck(d: Delivery, shard: number): Delivery {
    return {
      ...d,
      ack: () => {
        if (this.tap?.shard === shard && this.tapShard(this.shards()) !== shard) void this.closeTap(false);
        d.ack();
      },
    };
  }

  /**
   * Cancels the tap, if any; resolves (when `wait`) once it is cancelled, with a job it
   * brought before that (noted as served), or null.
   */
  private closeTap(wait = true): Promise<Taken | null> {
    if (this.tap) {
      const { shard, tap } = this.tap;
      this.tap = undefined;
      // cancel() sends basic.cancel now, before whatever the caller does next (an ack)
      const cancelled = tap.cancel().then((d) => (d ? { delivery: d, shard } : null), () => null);
      const before = this.closing;
      this.closing = before ? before.then((held) => held ?? cancelled) : cancelled;
    }
    if (!wait || !this.closing) return Promise.resolve(null);
    const closing = this.closing;
    this.closing = undefined;
    return closing.then((held) => {
      if (held) this.served(held.shard, undefined);
      return held;
    });
  }
}
