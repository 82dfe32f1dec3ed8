import { test } from 'node:test';
import assert from 'node:assert/strict';
import { batchSize, filterTests, minBatchMsFor, planBatches } from '../../services/dispatcher/plan.js';
import type { TestRef } from '../../shared/messages.js';

const t = (file: string, n: number): TestRef => ({ id: `./${file}[1:${n}]`, file, name: `${file} example ${n}` });
const suite = (files: Record<string, number>) => Object.entries(files).flatMap(([f, n]) => Array.from({ length: n }, (_, i) => t(f, i + 1)));

test('filterTests matches the pattern against ids and full names, then removes excluded', () => {
  const tests = suite({ 'spec/a_spec.rb': 2, 'spec/b_spec.rb': 2 });
  assert.deepEqual(filterTests(tests, 'a_spec').map((x) => x.id), ['./spec/a_spec.rb[1:1]', './spec/a_spec.rb[1:2]']);
  assert.deepEqual(filterTests(tests, 'example 2$').length, 2);
  assert.deepEqual(filterTests(tests, undefined, 'b_spec|example 1').map((x) => x.id), ['./spec/a_spec.rb[1:2]']);
});

test('batches never split a file that fits and never exceed the size', () => {
  const tests = suite({ a: 3, b: 3, c: 10, d: 1 });
  const batches = planBatches(tests, { maxBatch: 4, slots: 1 });
  assert.ok(batches.every((b) => b.length <= 4));
  assert.deepEqual([...batches.flat()].sort((x, y) => x.id.localeCompare(y.id)), [...tests].sort((x, y) => x.id.localeCompare(y.id)), 'every test once');
  const files = batches.map((b) => [...new Set(b.map((x) => x.file))]);
  assert.deepEqual(files.slice(0, 3), [['c'], ['c'], ['c']], 'the file above the cap, cut in three, first (the biggest)');
  assert.deepEqual(batches.filter((b) => b[0]!.file === 'c').flat(), tests.filter((x) => x.file === 'c'), 'its pieces in file order');
  assert.ok(!batches.some((b) => b.some((x) => x.file === 'a') && b.some((x) => x.file === 'b')), 'a and b (3+3) do not fit together in 4');
});

test('batch size gives every slot several specs, within the cap', () => {
  assert.equal(batchSize(300, { maxBatch: 50, slots: 16 }), 5);
  assert.equal(batchSize(10_000, { maxBatch: 50, slots: 4 }), 50);
  assert.equal(batchSize(3, { maxBatch: 50, slots: 8 }), 1);
  assert.equal(batchSize(5000, { maxBatch: 50, slots: 0 }), 50, 'no consumers yet counts as one');
});

test('a suite of thousands does not start one process per example by default', () => {
  const tests = suite(Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`spec/f${i}_spec.rb`, 15])));
  const batches = planBatches(tests, { maxBatch: 50, slots: 8 });
  assert.ok(batches.length < tests.length / 10, `${batches.length} specs for ${tests.length} tests`);
});

test('with known durations, batches hold similar time and the longest go first', () => {
  const tests = suite({ a: 4, b: 4, c: 1, d: 1 });
  const durations: Record<string, number> = {};
  for (const x of tests) durations[x.id] = x.file === 'c' ? 9000 : 300;
  delete durations['./d[1:1]']; // unknown: counts as the median
  const batches = planBatches(tests, { maxBatch: 50, slots: 2, durations });
  assert.deepEqual(batches.flat().map((x) => x.id).sort(), tests.map((x) => x.id).sort(), 'every test once');
  assert.deepEqual(batches[0]!.map((x) => x.file), ['c'], 'the 9 s file is queued first, alone');
  const ms = (b: TestRef[]) => b.reduce((s, x) => s + (durations[x.id] ?? 300), 0);
  for (const b of batches.slice(1)) assert.ok(ms(b) <= Math.max(1000, ms(batches[0]!)), 'no batch outweighs the longest');
  for (let i = 1; i < batches.length; i++) assert.ok(ms(batches[i - 1]!) >= ms(batches[i]!), 'longest first');
});

test('with known durations, short tests share a process (at least a second of work each)', () => {
  const tests = suite({ a: 30 });
  const durations = Object.fromEntries(tests.map((x) => [x.id, 20]));
  const batches = planBatches(tests, { maxBatch: 50, slots: 8, durations });
  assert.equal(batches.length, 1, '30 tests of 20 ms: one process, not 32');
});

test('only: exact ids first, then pattern and exclude', () => {
  const tests = suite({ a: 3 });
  assert.deepEqual(filterTests(tests, undefined, undefined, ['./a[1:1]', './a[1:3]', 'gone']).map((x) => x.id), ['./a[1:1]', './a[1:3]']);
  assert.deepEqual(filterTests(tests, undefined, 'example 3', ['./a[1:1]', './a[1:3]']).map((x) => x.id), ['./a[1:1]']);
});

test('a file is never cut below the hard cap (its tests may depend on each other); above it, in order', () => {
  const tests = suite({ a: 3, big: 120, c: 2 });
  const batches = planBatches(tests, { maxBatch: 50, slots: 16, warm: true });
  const pieces = batches.filter((b) => b.some((x) => x.file === 'big'));
  assert.deepEqual(pieces.map((b) => b.length), [50, 50, 20]);
  assert.deepEqual(pieces.flat().map((x) => x.id), tests.filter((x) => x.file === 'big').map((x) => x.id), 'in file order');
  assert.ok(batches.every((b) => new Set(b.map((x) => x.file)).size === 1 || !b.some((x) => x.file === 'big')));
  const durations = Object.fromEntries(tests.map((x) => [x.id, x.file === 'a' ? 5000 : 10]));
  const timed = planBatches(tests, { maxBatch: 50, slots: 16, durations, warm: true });
  assert.ok(timed.some((b) => b.length === 3 && b.every((x) => x.file === 'a')), 'a 15 s file stays one batch');
});

test('without durations, the files with the most tests go first, each batch in the suite\'s order', () => {
  // a first run knows of a file's cost only its tests: a big file queued last would end the
  // run late (jest's sequencer and parallel_tests go by file size for the same reason)
  const tests = suite({ small1: 2, small2: 1, big: 12, mid: 6, small3: 2 });
  const batches = planBatches(tests, { maxBatch: 50, slots: 2 });
  assert.deepEqual(batches.map((b) => [...new Set(b.map((x) => x.file))]), [['big'], ['mid'], ['small1'], ['small3'], ['small2']]);
  // one batch of three files, queued biggest first: run as the suite lists them
  const one = suite({ x: 1, y: 2, big: 10 });
  assert.deepEqual(planBatches(one, { maxBatch: 50, slots: 1, specsPerSlot: 1 }), [one]);
});

test('without durations, batches shrink towards the end of the queue (guided)', () => {
  const tests = suite(Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`f${i}`, 1])));
  const sizes = planBatches(tests, { maxBatch: 50, slots: 16 }).map((b) => b.length);
  assert.equal(sizes.reduce((x, y) => x + y, 0), 300);
  for (let i = 1; i < sizes.length; i++) assert.ok(sizes[i]! <= sizes[i - 1]!, `non-increasing: ${sizes.join(',')}`);
  assert.ok(sizes[0]! > 1 && sizes[sizes.length - 1] === 1);
  assert.ok(sizes.length < 150, `${sizes.length} processes for 300 tests`);
});

test('a cheap batch (a warm runner) lets the plan cut finer than a cold process would', () => {
  const tests = Array.from({ length: 40 }, (_, i) => ({ id: `t${i}`, file: `f${i}`, name: `t${i}` }));
  const durations = Object.fromEntries(tests.map((t) => [t.id, 100]));
  const ms = (b: TestRef[]) => b.length * 100;
  const cold = planBatches(tests, { maxBatch: 50, slots: 2, durations, minBatchMs: minBatchMsFor(undefined) });
  const warm = planBatches(tests, { maxBatch: 50, slots: 2, durations, minBatchMs: minBatchMsFor(20) });
  assert.deepEqual(cold.map(ms), [1000, 1000, 1000, 1000], 'batches of at least a second of work, cut as for 4 slots at least (more may come)');
  assert.deepEqual(warm.map(ms), [800, 800, 800, 800, 100, 100, 100, 100, 100, 100, 100, 100], 'a first wave holding 85% of the work, then waves down to 3 times the batch\'s cost (60 ms)');
  assert.equal(minBatchMsFor(1), 50);
  assert.equal(minBatchMsFor(500), 1500);
  assert.equal(minBatchMsFor(1000), 2000);
});

/** When the last batch ends, slots taking batches from a FIFO queue as they come free, each
 * batch costing `gap` ms more than its tests (a process start, the trip through the broker). */
function simulate(batches: TestRef[][], slots: number, gap: number, cost: (t: TestRef) => number): number {
  const free = Array.from({ length: slots }, () => 0);
  for (const b of batches) {
    const i = free.indexOf(Math.min(...free));
    free[i] = free[i]! + gap + b.reduce((s, t) => s + cost(t), 0);
  }
  return Math.max(...free);
}

test('with durations, a skewed suite is cut in few batches that end together', () => {
  // the bench's sleeping suite: 300 tests, 85% short, some of seconds; 16 slots
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const tests = Array.from({ length: 300 }, (_, i) => ({ id: `t${i}`, file: '', name: `t${i}` }));
  const durations = Object.fromEntries(tests.map((t) => {
    const u = rand();
    return [t.id, Math.round(1000 * (u < 0.85 ? 0.02 + rand() * 0.15 : u < 0.97 ? 0.3 + rand() * 0.7 : 1.5 + rand() * 1.5))];
  }));
  const cost = (t: TestRef) => durations[t.id]!;
  const total = tests.reduce((s, t) => s + cost(t), 0);
  const bound = Math.max(total / 16, ...Object.values(durations));
  const batches = planBatches(tests, { maxBatch: 50, slots: 16, durations, minBatchMs: minBatchMsFor(50) });
  assert.deepEqual(batches.flat().map((t) => t.id).sort(), tests.map((t) => t.id).sort(), 'every test once');
  assert.ok(batches.length <= 4 * 16, `${batches.length} batches for 16 slots`);
  const first = batches.slice(0, 16).reduce((s, b) => s + b.reduce((x, t) => x + cost(t), 0), 0);
  assert.ok(first >= 0.7 * total, 'the first wave holds most of the work');
  // 50 ms between batches (this machine's, before TCP_NODELAY; so 150 ms batches at least):
  // within 7% of the bound (the old plan, 169 batches, came to 1.15)
  const makespan = simulate(batches, 16, 50, cost);
  assert.ok(makespan <= 1.07 * bound, `simulated makespan ${makespan} ms, bound ${bound.toFixed(0)} ms`);
  // and estimates 20% off either way (a noisy machine) still end within 15%
  const noisy = (t: TestRef) => cost(t) * (Number(t.id.slice(1)) % 2 ? 1.2 : 0.8);
  const noisyTotal = tests.reduce((s, t) => s + noisy(t), 0);
  assert.ok(simulate(batches, 16, 50, noisy) <= 1.15 * Math.max(noisyTotal / 16, ...tests.map(noisy)));
});

test('with durations, a batch runs its files in the suite\'s order, not by their durations', () => {
  const tests = suite({ z: 2, a: 2, m: 2 });
  const durations = Object.fromEntries(tests.map((x) => [x.id, x.file === 'a' ? 30 : x.file === 'm' ? 20 : 10]));
  const batches = planBatches(tests, { maxBatch: 50, slots: 2, durations });
  assert.equal(batches.length, 1, '120 ms of work: one batch');
  assert.deepEqual(batches[0]!.map((x) => x.id), tests.map((x) => x.id), 'z, a, m as discovered');
});
