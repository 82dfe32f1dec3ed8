import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PatternTooSlow, filterTestsBounded } from '../../services/dispatcher/filter.js';
import type { TestRef } from '../../shared/messages.js';

const t = (id: string): TestRef => ({ id, file: 'f', name: id });

test('patterns are matched off the event loop: the same tests as filterTests', async () => {
  const tests = ['a1', 'a2', 'b1', 'b2'].map(t);
  assert.deepEqual((await filterTestsBounded(tests, '^a', '2$')).map((x) => x.id), ['a1']);
  assert.deepEqual((await filterTestsBounded(tests, undefined, undefined, ['b2'])).map((x) => x.id), ['b2']);
});

test('a pattern that backtracks catastrophically is stopped at its budget, and the event loop runs meanwhile', async () => {
  const tests = [t(`${'a'.repeat(40)}!`)];
  let ticks = 0;
  const ticker = setInterval(() => (ticks += 1), 20);
  const started = Date.now();
  try {
    await assert.rejects(filterTestsBounded(tests, '^(a+)+$', undefined, undefined, 500), (err: Error) => {
      assert.ok(err instanceof PatternTooSlow, String(err));
      assert.match(err.message, /took more than 0.5 s/);
      return true;
    });
  } finally {
    clearInterval(ticker);
  }
  assert.ok(ticks > 0, `the event loop ran while the pattern was matched (${ticks} ticks in ${Date.now() - started} ms)`);
});
