/**
 * Pure: which discovered tests a run keeps, and how they are cut into specs (one framework
 * process each). Starting a framework costs hundreds of milliseconds, so tests travel in
 * batches; batches are small enough that every slot gets several, so the last ones to
 * finish do not leave the others idle.
 */
import type { TestRef } from '../../shared/messages.js';

/**
 * The tests a run keeps: those named in `only` (when given), whose id or full name matches
 * `pattern`, and neither of which matches `exclude`. The same rule for every adapter.
 */
export function filterTests(tests: TestRef[], pattern?: string, exclude?: string, only?: string[]): TestRef[] {
  const inc = pattern ? new RegExp(pattern) : undefined;
  const exc = exclude ? new RegExp(exclude) : undefined;
  const wanted = only ? new Set(only) : undefined;
  const matches = (re: RegExp, t: TestRef) => re.test(t.id) || re.test(t.name);
  return tests.filter((t) => (!wanted || wanted.has(t.id)) && (!inc || matches(inc, t)) && (!exc || !matches(exc, t)));
}

export interface BatchOptions {
  /** Hard cap on tests per spec. */
  maxBatch: number;
  /** Slots consuming the work queue now (at least 1). */
  slots: number;
  /** Specs to aim for per slot. */
  specsPerSlot?: number;
  /** Known durations (ms) by test id, from an earlier run. */
  durations?: Record<string, number>;
  /** With durations: the least work worth a batch (default MIN_BATCH_MS). */
  minBatchMs?: number;
  /** A batch is cheap (a warm runner, a measured small overhead): cut finer. */
  warm?: boolean;
}

/**
 * Without durations, each batch takes 1/(2 × slots) of the tests still to plan (guided
 * self-scheduling): on the bench's skewed suite this cut the makespan ratio from 1.82 (fixed
 * size, 4 specs a slot) to 1.29; 1 or 4 instead of 2 did no better.
 */
const GUIDED_SPECS_PER_SLOT = 2;
/** With warm runners a batch costs tens of ms: a share 4x smaller (the tail is what a
 * first run loses against the frameworks' own file-by-file parallel modes). */
const GUIDED_SPECS_PER_SLOT_WARM = 8;
/** With durations, the share of a slot's part of the work in each wave (planByDuration). */
const HEAD_SHARE = 0.85;
/** A wave is cut for at least this many slots: the slots counted may be fewer than those
 * that come (a supervisor not heard yet, a host joining), and one head batch per slot
 * would then leave the late ones little to take (planned for 1 slot while 2 ran, the
 * bench's mocha suite took 18.9 s instead of 13.6). */
const MIN_WAVE_SLOTS = 4;

/** Below this much work, a cold framework process costs more than the balance it buys
 * (the default when a suite's batch overhead was never measured). */
export const MIN_BATCH_MS = 1000;
/** The same for a warm runner whose overhead was never measured. */
export const WARM_MIN_BATCH_MS = 200;
/** A batch overhead below this is cheap (a warm runner, a shell command): cut finer. */
export const CHEAP_BATCH_MS = 100;

/**
 * The least work worth a batch, from what a batch was measured to cost beyond its tests
 * (its process's start, and the wait between batches: the result's confirm, the ack, the
 * next delivery; tens of ms with a warm runner): three times that, between 50 ms and 2 s.
 * With durations, the waves of planByDuration bound how many batches a slot takes; this
 * bounds only how fine the last ones are cut (their size is what the slots' ends differ
 * by), and on the bench's sleeping suite, batches of 2 to 3 times the cost ended closest
 * to the bound.
 */
export function minBatchMsFor(overheadMs: number | undefined, warm = false): number {
  if (overheadMs === undefined) return warm ? WARM_MIN_BATCH_MS : MIN_BATCH_MS;
  return Math.min(2000, Math.max(50, 3 * overheadMs));
}

/** The batch size for a suite of `total` tests. */
export function batchSize(total: number, opts: BatchOptions): number {
  const target = Math.max(1, opts.slots) * (opts.specsPerSlot ?? 4);
  return Math.max(1, Math.min(opts.maxBatch, Math.ceil(total / target)));
}

/**
 * A suite's tests by file, in order. A file's tests always travel together (up to
 * `maxBatch`): suites depend on it, as they do under the frameworks' own parallel modes
 * (a test that reads what an earlier test of its file did, hooks like before(:all) run once
 * per file). Tests without a file (`command`, `junit`) are groups of one.
 */
function fileGroups(tests: TestRef[]): TestRef[][] {
  const byFile = new Map<string, TestRef[]>();
  for (const t of tests) {
    const key = t.file === '' ? `\0${t.id}` : t.file;
    const group = byFile.get(key) ?? [];
    group.push(t);
    byFile.set(key, group);
  }
  return [...byFile.values()];
}

/**
 * Cuts tests into specs. A file's tests stay together unless the file alone has more than
 * `maxBatch` tests; small files share a batch. Without durations the files with the most
 * tests are queued first (a file's test count is all a first run knows of its cost, as
 * jest's sequencer and parallel_tests go by file size: a big file queued last ends the run
 * late), each batch running its files in the suite's order. Batch sizes shrink as the plan
 * goes on (guided), never above `maxBatch`.
 */
export function planBatches(tests: TestRef[], opts: BatchOptions): TestRef[][] {
  if (opts.durations && tests.some((t) => opts.durations![t.id] !== undefined)) return planByDuration(tests, opts, opts.durations);
  // Guided sizes: a batch holds a share of what is left, so batches shrink towards the end
  // of the queue and the last ones to start are short (the tail that idles other slots).
  let remaining = tests.length;
  const size = () => batchSize(remaining, { ...opts, specsPerSlot: opts.specsPerSlot ?? (opts.warm ? GUIDED_SPECS_PER_SLOT_WARM : GUIDED_SPECS_PER_SLOT) });
  // the suite's order: files by their first test, each file's tests in order
  const groups = fileGroups(tests);
  const position = new Map(groups.flatMap((g, gi) => g.map((t, i) => [t, gi * tests.length + i] as const)));
  const batches: TestRef[][] = [];
  let current: TestRef[] = [];
  let limit = size();
  const flush = () => {
    if (current.length) {
      batches.push(current.sort((a, b) => position.get(a)! - position.get(b)!));
      remaining -= current.length;
    }
    current = [];
    limit = size();
  };
  // (a stable sort: files of one size keep the suite's order)
  for (const group of [...groups].sort((a, b) => b.length - a.length)) {
    let rest = group;
    if (current.length && current.length + rest.length > limit) flush();
    // only a file above the hard cap is cut; a file larger than the guided size is a batch
    while (rest.length > opts.maxBatch) {
      if (current.length) flush();
      current = rest.slice(0, opts.maxBatch);
      rest = rest.slice(opts.maxBatch);
      flush();
    }
    current.push(...rest);
    if (current.length >= limit) flush();
  }
  flush();
  return batches;
}

/**
 * With durations known, the plan is cut in waves. The first wave is one batch per slot
 * holding HEAD_SHARE of that slot's part of the work, packed longest-processing-time-first
 * (each file, longest first, to the wave's batch with the least work so far); the next wave
 * does the same with what is left, and so on, until a slot's part of a wave would be below
 * minBatchMs: the last wave takes the rest. Queued wave after wave, longest first, a slot
 * that finishes early takes more, and the run ends together with few batches (each costs a
 * process start or at least a trip through the broker: 11 ms between a worker's batches on
 * this 2-core machine, 50 ms before TCP_NODELAY; cutting every slot's work in 16 paid it 10
 * times over). A file's tests
 * travel together (only a file above maxBatch is cut, in file order). Tests with no known
 * duration count as the median.
 */
export function planByDuration(tests: TestRef[], opts: BatchOptions, durations: Record<string, number>): TestRef[][] {
  const known = tests.map((t) => durations[t.id]).filter((d): d is number => d !== undefined).sort((a, b) => a - b);
  const median = known[Math.floor(known.length / 2)] ?? 0;
  const cost = (t: TestRef) => durations[t.id] ?? median;
  const minMs = opts.minBatchMs ?? MIN_BATCH_MS;
  let left: Piece[] = [];
  for (const group of fileGroups(tests)) {
    for (let i = 0; i < group.length; i += opts.maxBatch) {
      const part = group.slice(i, i + opts.maxBatch);
      left.push({ tests: part, ms: part.reduce((s, t) => s + cost(t), 0), order: left.length });
    }
  }
  left.sort((a, b) => b.ms - a.ms);
  let leftMs = left.reduce((s, p) => s + p.ms, 0);
  const batches: TestRef[][] = [];
  while (left.length) {
    // below minBatchMs a slot's part is not worth a batch: fewer slots share the work
    const slots = Math.max(1, Math.min(Math.max(opts.slots, MIN_WAVE_SLOTS), Math.floor(leftMs / minMs)));
    const cap = (leftMs / slots) * HEAD_SHARE;
    const last = cap < minMs;
    const wave = Array.from({ length: slots }, () => ({ pieces: [] as Piece[], count: 0, ms: 0 }));
    const rest: Piece[] = [];
    for (const p of left) {
      let to: (typeof wave)[number] | undefined;
      for (const b of wave) if (b.count + p.tests.length <= opts.maxBatch && (!to || b.ms < to.ms)) to = b;
      if (to && (to.count === 0 || last || to.ms + p.ms <= cap)) {
        to.pieces.push(p);
        to.count += p.tests.length;
        to.ms += p.ms;
      } else {
        rest.push(p);
      }
    }
    // within a batch, the files in the suite's order (as the framework would run them)
    batches.push(...wave.filter((b) => b.count).sort((a, b) => b.ms - a.ms).map((b) => b.pieces.sort((x, y) => x.order - y.order).flatMap((x) => x.tests)));
    left = rest;
    leftMs = rest.reduce((s, p) => s + p.ms, 0);
  }
  return batches;
}

interface Piece {
  tests: TestRef[];
  ms: number;
  /** Its place in the suite's order. */
  order: number;
}
