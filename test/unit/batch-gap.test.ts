import { test } from 'node:test';
import assert from 'node:assert/strict';
import { batchGap } from '../../services/aggregator/aggregator.js';

test('a batch costs the wait since its worker\'s previous results too', () => {
  // previous results at t=1000; this batch ran 500 ms and its results came at t=1520
  assert.equal(batchGap(1000, { at: 1520, elapsedMs: 500 }), 20);
  assert.equal(batchGap(undefined, { at: 1520, elapsedMs: 500 }), undefined, 'a worker\'s first batch: no wait known');
  assert.equal(batchGap(1000, { at: 1520 }), undefined, 'no wall time: no wait known');
  assert.equal(batchGap(1000, { at: 1490, elapsedMs: 500 }), 0, 'clocks a few ms apart: never negative');
  assert.equal(batchGap(1000, { at: 5000, elapsedMs: 500 }), undefined, 'seconds idle (another run, an empty queue) are not the batch\'s cost');
});
