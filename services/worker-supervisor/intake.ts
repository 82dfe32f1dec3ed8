/**
 * Where a slot takes its next job. Each run in progress has its work queue (a shard of
 * `warren.specs.<n>`, topology.ts); the active aggregator says every few seconds which runs
 * are in progress on which shard (`runs.state`), and whoever publishes jobs says which shard
 * got them (`work.wake`). A slot takes one job at a time (basic.get), round-robin over the
 * shards of the runs it may serve: after a job from shard n it looks at the next shard first,
 * so concurrent runs share the workers instead of waiting behind each other.
 *
 * With nothing to take it waits: woken at once by a wake or a new state, else it looks again
 * after a backoff (a redelivered job of a dead worker comes without a wake). An idle slot
 * also sweeps every shard now and then: what sits where no run in progress is (a
 * hand-published or malformed job, a leftover of a run long over) is dropped or
 * dead-lettered instead of waiting for a run to come to its shard.
 */
import type { Broker, Delivery } from '../../shared/broker.js';
import type { Logger } from '../../shared/log.js';
import { labelsMatch, type RunsState } from '../../shared/messages.js';
import { SPEC_SHARDS, specQueue } from '../../shared/topology.js';

/** A shard woken lately is looked at even before a state lists its run. */
const WAKE_KEEP_MS = 15_000;
const POLL_MIN_MS = 100;
const POLL_MAX_MS = 2_000;
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
  private lastSweep = Date.now();
  private stopped = false;
  private poke?: () => void;
  private onStop?: () => void;
  private readonly stopSignal = new Promise<void>((r) => (this.onStop = r));

  constructor(
    private readonly broker: Broker,
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
    this.onStop?.();
    this.poke?.();
  }

  /** The shards to look at, in rotation order (after the last one served). */
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
    return from <= 0 ? sorted : [...sorted.slice(from), ...sorted.slice(0, from)];
  }

  /** The next job, waiting while there is none; null once stopped. */
  async take(): Promise<Taken | null> {
    let waitMs = POLL_MIN_MS;
    while (!this.stopped) {
      let look = this.shards();
      if (Date.now() - this.lastSweep > SWEEP_MS) {
        this.lastSweep = Date.now();
        // (not the shards of runs in progress we may not serve: their jobs are not ours)
        const busy = new Set((this.state?.runs ?? []).map((r) => r.shard));
        const all = Array.from({ length: SPEC_SHARDS }, (_, n) => n).filter((n) => !look.includes(n) && !busy.has(n));
        look = [...look, ...all];
      }
      for (const shard of look) {
        if (this.stopped) break;
        let delivery: Delivery | null;
        try {
          const got = this.broker.get(specQueue(shard));
          // stopped meanwhile: a job the get brings is still run (given back, it would count
          // as a death); a get that hangs (the broker is away) is given up
          delivery = await Promise.race([got, this.stopSignal.then(() => Promise.race([got, sleep(STOP_WAIT_MS).then(() => null)]))]);
        } catch (err) {
          if (this.stopped) return null;
          // the connection went under the get: it comes back; look again then
          this.log.debug({ err, shard }, 'taking a job failed; trying again');
          break;
        }
        if (delivery) {
          this.lastShard = shard;
          return { delivery, shard };
        }
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
    return null;
  }
}
