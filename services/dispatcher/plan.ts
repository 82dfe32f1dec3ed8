/**
 * Pure: which discovered tests a run keeps, and how they are cut into specs (one framework
 * process each). Starting a framework costs hundreds of milliseconds, so tests travel in
 * batches; batches are small enough that every slot gets several, so the last ones to
 * finish do not leave the others idle.
 */
import type { TestRef } from '../../shared/messages.js';

export function filterTests(tests: TestRef[], pattern?: string, exclude?: string): TestRef[] {
  const inc = pattern ? new RegExp(pattern) : undefined;
  const exc = exclude ? new RegExp(exclude) : undefined;
  const matches = (re: RegExp, t: TestRef) => re.test(t.id) || re.test(t.name);
  return tests.filter((t) => (!inc || matches(inc, t)) && (!exc || !matches(exc, t)));
}

export interface BatchOptions {
  /** Hard cap on tests per spec. */
  maxBatch: number;
  /** Slots consuming the work queue now (at least 1). */
  slots: number;
  /** Specs to aim for per slot. */
  specsPerSlot?: number;
}

/** The batch size for a suite of `total` tests. */
export function batchSize(total: number, opts: BatchOptions): number {
  const target = Math.max(1, opts.slots) * (opts.specsPerSlot ?? 4);
  return Math.max(1, Math.min(opts.maxBatch, Math.ceil(total / target)));
}

/**
 * Cuts tests into specs of at most `batchSize(...)` tests. A file's tests stay together
 * (hooks like before(:all) run once per file) unless the file alone is larger than a batch;
 * small files share a batch. Order is kept.
 */
export function planBatches(tests: TestRef[], opts: BatchOptions): TestRef[][] {
  const size = batchSize(tests.length, opts);
  const byFile = new Map<string, TestRef[]>();
  for (const t of tests) {
    const group = byFile.get(t.file) ?? [];
    group.push(t);
    byFile.set(t.file, group);
  }
  const batches: TestRef[][] = [];
  let current: TestRef[] = [];
  const flush = () => {
    if (current.length) batches.push(current);
    current = [];
  };
  for (const group of byFile.values()) {
    if (group.length > size) {
      flush();
      for (let i = 0; i < group.length; i += size) batches.push(group.slice(i, i + size));
      continue;
    }
    if (current.length + group.length > size) flush();
    current.push(...group);
  }
  flush();
  return batches;
}
