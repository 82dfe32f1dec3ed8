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
  assert.deepEqual(batches.flat(), tests, 'every test once, order kept');
  const files = batches.map((b) => [...new Set(b.map((x) => x.file))]);
  assert.deepEqual(files[0], ['a']);
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
  const cold = planBatches(tests, { maxBatch: 50, slots: 2, durations, minBatchMs: minBatchMsFor(undefined) });
  const warm = planBatches(tests, { maxBatch: 50, slots: 2, durations, minBatchMs: minBatchMsFor(20) });
  assert.equal(cold.length, 4, 'batches of at least 1 s of work');
  assert.equal(warm.length, 8, 'batches of total / (4 x slots)');
  assert.equal(minBatchMsFor(1), 50);
  assert.equal(minBatchMsFor(500), 2000);
});
