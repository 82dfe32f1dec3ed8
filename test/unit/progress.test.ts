/**
 * The terminal is never silent while tests are discovered: a live line counting the seconds
 * and naming the worker (a terminal), a line every 10 s (a log), gone once tests are found.
 */
import { mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { ProgressView } from '../../cli/follow.js';

const stream = (isTTY: boolean) => {
  const chunks: string[] = [];
  return { chunks, out: { isTTY, write: (s: string) => chunks.push(s) > 0 } as unknown as NodeJS.WriteStream };
};
const progress = { round: 1, done: 0, total: 3, passed: 0, failed: 0, flaky: 0, pending: 0, activeWorkers: 0, etaSec: null, discovery: { cached: false, found: 3 } };

test('on a terminal: one live line, rewritten each second with the worker, ended when the tests are found', () => {
  mock.timers.enable({ apis: ['setInterval', 'Date'] });
  try {
    const { chunks, out } = stream(true);
    const view = new ProgressView(out);
    let worker: string | undefined;
    view.discovering(() => worker);
    assert.deepEqual(chunks, ['warren: discovering tests...\n']);
    mock.timers.tick(1000);
    assert.equal(chunks.at(-1), '\rwarren: discovering tests... 1 s');
    worker = 'vm-1/0';
    for (let s = 0; s < 7; s++) mock.timers.tick(1000);
    assert.equal(chunks.at(-1), '\rwarren: discovering tests on worker vm-1/0... 8 s');
    view.show(progress as never);
    const after = chunks.length;
    mock.timers.tick(5000);
    assert.equal(chunks.length, after, 'no discovery line once the tests are found');
    assert.ok(chunks.includes('\n'), 'the live line is ended before the next output');
    assert.match(chunks.join(''), /warren: 3 tests found \(discovered in 8\.0 s\), 3 to run/);
  } finally {
    mock.timers.reset();
  }
});

test('in a log: a line every 10 s, not one a second', () => {
  mock.timers.enable({ apis: ['setInterval', 'Date'] });
  try {
    const { chunks, out } = stream(false);
    new ProgressView(out).discovering(() => 'vm-1/1');
    for (let s = 0; s < 25; s++) mock.timers.tick(1000); // a second at a time, as the clock goes
    assert.deepEqual(chunks, [
      'warren: discovering tests...\n',
      'warren: discovering tests on worker vm-1/1... 10 s\n',
      'warren: discovering tests on worker vm-1/1... 20 s\n',
    ]);
  } finally {
    mock.timers.reset();
  }
});
