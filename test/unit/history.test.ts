/** The dispatcher's history (SQLite): what a report teaches, and the estimates it gives. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { History } from '../../services/dispatcher/history.js';
import type { ReportTest, RunReport } from '../../shared/messages.js';
import { tmpDir } from '../helpers/cli.js';

const t = (id: string, file: string, durationMs: number, status: ReportTest['status'] = 'passed'): ReportTest =>
  ({ id, file, name: id, status, durationMs, attempts: status === 'flaky' ? ['failed', 'passed'] : [status === 'failed' ? 'failed' : 'passed'] });
const report = (tests: ReportTest[], cwd = '/suite'): RunReport => ({
  type: 'run.report', v: 1, id: 'r/report', runId: 'r', status: 'passed', adapter: 'mocha', cwd, startedAt: 0, finishedAt: 1, rounds: 1,
  totals: { total: tests.length, passed: tests.length, failed: 0, flaky: 0, pending: 0 }, tests,
} as RunReport);
const refs = (...ids: Array<[string, string]>) => ids.map(([id, file]) => ({ id, file, name: id }));

test('durations outlive the process; the newest run weighs half; unknown tests of a known file get its mean', () => {
  const file = path.join(tmpDir(), 'h', 'history.sqlite');
  const h = new History(file);
  assert.equal(h.record(report([t('a', 'f1', 100), t('b', 'f1', 300), t('c', 'f2', 0), t('p', 'f2', 0, 'pending')])), 3);
  h.record(report([t('a', 'f1', 200)]));
  h.close();

  const again = new History(file);
  const d = again.durations('mocha', '/suite', refs(['a', 'f1'], ['b', 'f1'], ['c', 'f2'], ['new', 'f1'], ['lost', 'f9'], ['p', 'f2']));
  assert.equal(d.a, 150, '0.5 × 200 + 0.5 × 100');
  assert.equal(d.b, 300);
  assert.equal(d.c, 0, 'a fast test is known to be fast');
  assert.equal(d.new, 225, "the mean of f1's known tests");
  assert.equal(d.lost, undefined, 'nothing known of its file');
  assert.equal(d.p, 0, 'pending tests teach nothing: estimated from their file');
  assert.deepEqual(again.durations('mocha', '/other-suite', refs(['a', 'f1'])), {}, 'per suite');
  again.close();
});

test("a suite's batch overhead is remembered, the newest run weighing half", () => {
  const h = new History(path.join(tmpDir(), 'history.sqlite'));
  assert.equal(h.batchOverheadMs('mocha', '/suite'), undefined);
  h.record({ ...report([t('a', 'f1', 100)]), batchOverheadMs: 40 });
  h.record({ ...report([t('a', 'f1', 100)]), batchOverheadMs: 20 });
  assert.equal(h.batchOverheadMs('mocha', '/suite'), 30);
  h.close();
});
