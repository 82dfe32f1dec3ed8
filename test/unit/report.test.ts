import { test } from 'node:test';
import assert from 'node:assert/strict';
import { XMLParser } from 'fast-xml-parser';
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
  assert.match(xml, /<failure message="RuntimeError: boom &lt;x&gt;">trace#x01<\/failure>/);
  assert.match(xml, /name="B &lt;fails&gt; &amp; &quot;quotes&quot;"/);
  assert.match(xml, /<skipped message="not yet"\/>/);
  assert.match(xml, /<testsuites [^>]*tests="4" failures="1"/);
  assert.ok(!xml.includes('\u0001'), 'no character XML 1.0 cannot hold');
});

test('junit.xml read back by an XML parser: names differing by a NUL stay two testcases, TAB and newlines survive attributes', () => {
  const names = ['x\u0000a', 'x\u0000b', 'same', 'same\u0000', 'tab\there', 'two\nlines', 'cr\rhere', 'emoji 🎉 and \uD800 lone'];
  const r: RunReport = {
    ...report, totals: { ...report.totals, total: names.length },
    tests: names.map((name, i) => ({ id: `id-${name}`, file: 'f.js', name, status: 'passed', durationMs: 1, attempts: ['passed'] as const }) as RunReport['tests'][number]),
  };
  const parsed = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '', processEntities: true, htmlEntities: true }).parse(junitXml(r)) as {
    testsuites: { testsuite: { testcase: Array<{ name: string; properties: { property: Array<{ name: string; value: string }> } }> } };
  };
  const cases = parsed.testsuites.testsuite.testcase;
  assert.equal(new Set(cases.map((c) => c.name)).size, names.length, 'every test a distinct testcase');
  assert.equal(cases[0]!.name, 'x#x00a');
  assert.equal(cases[4]!.name, 'tab\there', 'TAB read back as TAB, not a space');
  assert.equal(cases[5]!.name, 'two\nlines');
  assert.equal(cases[6]!.name, 'cr\rhere');
  assert.equal(cases[7]!.name, 'emoji 🎉 and #xD800 lone');
  assert.equal(new Set(cases.map((c) => c.properties.property[0]!.value)).size, names.length, 'ids distinct too');
});

test('summary.md lists failures and flaky tests', () => {
  const md = summaryMarkdown(report);
  assert.match(md, /❌ Warren: failed/);
  assert.match(md, /\| B <fails> & "quotes" \| `b` \| RuntimeError: boom <x> \|/);
  assert.match(md, /### Flaky/);
});
