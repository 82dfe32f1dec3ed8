import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DispatcherMessage, Job, RunRequest, parseMessage, runRequestProblem } from '../../shared/messages.js';

test('a hand-written run request needs only the adapter and the directory', () => {
  const r = parseMessage(DispatcherMessage, JSON.stringify({ type: 'run.request', adapter: 'rspec', cwd: '/srv/app' }));
  assert.ok(r.ok);
  assert.equal(r.value.type, 'run.request');
  if (r.value.type === 'run.request') {
    assert.equal(r.value.rerunThreshold, 0.1);
    assert.equal(r.value.maxRounds, 3);
    assert.equal(r.value.testTimeoutSec, 300);
  }
});

test('bad messages get a one-line reason naming the field', () => {
  const notJson = parseMessage(Job, 'nope{');
  assert.ok(!notJson.ok && /^not JSON/.test(notJson.reason));
  const unknown = parseMessage(Job, JSON.stringify({ type: 'launch-missiles' }));
  assert.ok(!unknown.ok && /type/.test(unknown.reason), !unknown.ok ? unknown.reason : '');
  const bad = parseMessage(DispatcherMessage, JSON.stringify({ type: 'run.request', adapter: 'cobol', cwd: '/x' }));
  assert.ok(!bad.ok && bad.reason.includes('adapter'), !bad.ok ? bad.reason : '');
  assert.ok(!bad.ok && !bad.reason.includes('\n'));
});

test('problems the schema cannot see are refused with the field named', () => {
  const base = RunRequest.parse({ type: 'run.request', adapter: 'rspec', cwd: '/x' });
  assert.match(runRequestProblem({ ...base, pattern: '(' })!, /^pattern: not a valid regular expression/);
  assert.match(runRequestProblem({ ...base, adapter: 'command' })!, /^command: required/);
  assert.match(runRequestProblem({ ...base, cwd: 'relative/dir' })!, /^cwd: must be an absolute path/);
  assert.equal(runRequestProblem(base), null);
});

test('durations are bounded: a timeout past a week is refused with the field named (timers overflow at 24.8 days)', () => {
  const base = { type: 'run.request', adapter: 'rspec', cwd: '/s' };
  const long = parseMessage(RunRequest, JSON.stringify({ ...base, runTimeoutSec: 30 * 24 * 3600 }));
  assert.equal(long.ok, false);
  assert.match(long.ok ? '' : long.reason, /runTimeoutSec: at most 604800 s \(a week\)/);
  const test2 = parseMessage(RunRequest, JSON.stringify({ ...base, testTimeoutSec: 1e10 }));
  assert.match(test2.ok ? '' : test2.reason, /testTimeoutSec: at most/);
  assert.equal(parseMessage(RunRequest, JSON.stringify({ ...base, runTimeoutSec: 7 * 24 * 3600 })).ok, true);
});
