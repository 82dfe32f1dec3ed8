import { test } from 'node:test';
import assert from 'node:assert/strict';
import { junitXml, summaryMarkdown } from '../../shared/report.js';
import type { RunReport } from '../../shared/messages.js';

const report: RunReport = {
  type: 'run.report', v: 1, id: 'r/report', runId: 'r', status: 'failed', adapter: 'rspec', cwd: '/s',
  startedAt: 0, finishedAt: 2500, rounds: 2,
  totals: { total: 4, passed: 1, failed: 1, flaky: 1, pending: 1, notRun: 0 },
  tests: [
    { id: 'a', file: 'spec/a_spec.rb', name: 'A works', status: 'passed', durationMs: 10, attempts: ['passed'] },
    { id: 'b', file: 'spec/a_spec.rb', name: 'B <fails> & "quotes"', status: 'failed', durationMs: 10, message: 'RuntimeError: boom <x>', details: 'trace\u0001', attempts: ['failed', 'failed'] },
    { id: 'c', file: 'spec/c_spec.rb', name: 'C flakes', status: 'flaky', durationMs: 10, message: 'flaky: first attempt fails', attempts: ['failed', 'passed'] },
    { id: 'd', file: 'spec/c_spec.rb', name: 'D later', status: 'pending', durationMs: 0, message: 'not yet', attempts: ['pending'] },
  ],
};

test('junit.xml: one testcase per test, failures with their messages, escaped', () => {
  const xml = junitXml(report);
  assert.equal(xml.match(/<testcase /g)!.length, 4);
  assert.match(xml, /<failure message="RuntimeError: boom &lt;x&gt;">trace<\/failure>/);
  assert.match(xml, /name="B &lt;fails&gt; &amp; &quot;quotes&quot;"/);
  assert.match(xml, /<skipped message="not yet"\/>/);
  assert.match(xml, /<testsuites [^>]*tests="4" failures="1"/);
  assert.ok(!xml.includes('\u0001'), 'control characters are dropped');
});

test('summary.md lists failures and flaky tests', () => {
  const md = summaryMarkdown(report);
  assert.match(md, /❌ Warren: failed/);
  assert.match(md, /\| B <fails> & "quotes" \| `b` \| RuntimeError: boom <x> \|/);
  assert.match(md, /### Flaky/);
});
