import { test } from 'node:test';
import assert from 'node:assert/strict';
import { actionsAnnotations, commentBody, parsePullRequest } from '../../services/github/reporter.js';
import type { RunReport } from '../../shared/messages.js';

const report = (tests: RunReport['tests']): RunReport => ({
  type: 'run.report', v: 1, id: 'r', runId: 'r', status: 'failed', adapter: 'rspec', cwd: '/s', startedAt: 0, finishedAt: 2500, rounds: 2,
  totals: { total: tests.length, passed: 0, failed: tests.filter((t) => t.status === 'failed').length, flaky: tests.filter((t) => t.status === 'flaky').length, pending: 0, notRun: 0 },
  tests,
});

test('annotations name the file and, when the backtrace has it, the line', () => {
  const r = report([{ id: './spec/a_spec.rb[1:1]', file: './spec/a_spec.rb', name: 'A does x', status: 'failed', durationMs: 1, message: 'expected 1\ngot 2', details: "./spec/a_spec.rb:12:in `block (2 levels)'", attempts: ['failed'] }]);
  assert.deepEqual(actionsAnnotations(r), ['::error file=spec/a_spec.rb,line=12,title=A does x::expected 1']);
});

test('the comment lists failures (at most 30) and flaky tests with their attempts', () => {
  const failed = Array.from({ length: 35 }, (_, i) => ({ id: `t${i}`, file: '', name: `t${i}`, status: 'failed' as const, durationMs: 1, message: `boom ${i} | pipe`, attempts: ['failed' as const] }));
  const body = commentBody(report([...failed, { id: 'f', file: '', name: 'flaky one', status: 'flaky', durationMs: 1, attempts: ['failed', 'passed'] }]));
  assert.equal(body.match(/^\| `t\d+` \|/gm)?.length, 30);
  assert.match(body, /…and 5 more in the report\./);
  assert.match(body, /boom 0 \\\| pipe/, 'a | in a message does not break the table');
  assert.match(body, /- `flaky one` \(failed → passed\)/);
});

test('OWNER/REPO#N is parsed; anything else refused in one line', () => {
  assert.deepEqual(parsePullRequest('acme/app.js#12'), { owner: 'acme', repo: 'app.js', number: 12 });
  assert.throws(() => parsePullRequest('acme/app'), /--github-pr: expected OWNER\/REPO#NUMBER, got "acme\/app"/);
});
