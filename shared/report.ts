/**
 * The final report in its three files: report.json (the message itself), junit.xml (one
 * testcase per test, failures with their messages; flaky tests pass with the flake noted)
 * and summary.md (for a pull-request comment). Written by the aggregator on its host and by
 * the CLI where the user ran it.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ReportTest, RunReport } from './messages.js';
import { htmlReport } from './report-html.js';

/**
 * XML 1.0 cannot hold some characters at all, not even as references (NUL, most C0
 * controls, U+FFFE/U+FFFF, lone surrogates): they are written as `#xNN`, as pytest's own
 * junitxml does, so that two tests whose names differ only there stay two testcases.
 */
const UNWRITABLE = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
const unwritable = (c: string) => `#x${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`;
/** Element text: markup escaped, CR kept as a reference (a parser would turn it into LF). */
const text = (s: string) => s.replace(UNWRITABLE, unwritable).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\r/g, '&#13;');
/** An attribute value: also quotes, and TAB/LF as references (a parser reads them raw as spaces). */
const xml = (s: string) => text(s).replace(/"/g, '&quot;').replace(/\t/g, '&#9;').replace(/\n/g, '&#10;');

const seconds = (ms: number) => (ms / 1000).toFixed(3);

export function junitXml(report: RunReport): string {
  const byFile = new Map<string, ReportTest[]>();
  for (const t of report.tests) {
    const list = byFile.get(t.file || '(no file)') ?? [];
    list.push(t);
    byFile.set(t.file || '(no file)', list);
  }
  const out: string[] = ['<?xml version="1.0" encoding="UTF-8"?>'];
  const time = seconds(report.finishedAt - report.startedAt);
  out.push(
    `<testsuites name="warren ${xml(report.runId)}" tests="${report.totals.total}" failures="${report.totals.failed}" errors="${report.status === 'error' ? 1 : 0}" skipped="${report.totals.pending + (report.totals.notRun ?? 0)}" time="${time}">`,
  );
  if (report.error) {
    out.push(`  <testsuite name="warren" tests="1" failures="0" errors="1" skipped="0">`);
    out.push(`    <testcase classname="warren" name="run"><error message="${xml(report.error)}"/></testcase>`);
    out.push('  </testsuite>');
  }
  for (const [file, tests] of byFile) {
    const failures = tests.filter((t) => t.status === 'failed').length;
    const skipped = tests.filter((t) => t.status === 'pending' || t.status === 'not_run').length;
    const t0 = tests.reduce((s, t) => s + t.durationMs, 0);
    out.push(`  <testsuite name="${xml(file)}" tests="${tests.length}" failures="${failures}" errors="0" skipped="${skipped}" time="${seconds(t0)}">`);
    for (const t of tests) {
      const open = `    <testcase classname="${xml(file)}" name="${xml(t.name)}" file="${xml(file)}" time="${seconds(t.durationMs)}"`;
      const props = `<properties><property name="warren.id" value="${xml(t.id)}"/><property name="warren.attempts" value="${xml(t.attempts.join(','))}"/>${t.worker ? `<property name="warren.worker" value="${xml(t.worker)}"/>` : ''}</properties>`;
      if (t.status === 'failed') {
        out.push(`${open}>${props}<failure message="${xml(t.message ?? 'failed')}">${text(t.details ?? t.message ?? '')}</failure></testcase>`);
      } else if (t.status === 'pending') {
        out.push(`${open}>${props}<skipped${t.message ? ` message="${xml(t.message)}"` : ''}/></testcase>`);
      } else if (t.status === 'not_run') {
        out.push(`${open}>${props}<skipped message="${xml(`not run: ${report.stopped ?? 'the run stopped first'}`)}"/></testcase>`);
      } else if (t.status === 'flaky') {
        out.push(`${open}>${props}<system-out>${text(`flaky: failed, then passed on a re-run. First failure: ${t.message ?? ''}`)}</system-out></testcase>`);
      } else {
        out.push(`${open}>${props}</testcase>`);
      }
    }
    out.push('  </testsuite>');
  }
  out.push('</testsuites>');
  return out.join('\n') + '\n';
}

const md = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

export function summaryMarkdown(report: RunReport): string {
  const t = report.totals;
  const icon = report.status === 'passed' ? '✅' : report.status === 'cancelled' ? '⏹️' : '❌';
  const lines = [
    `## ${icon} Warren: ${report.status === 'error' ? 'run error' : report.status}`,
    '',
    `**${t.total}** tests: **${t.passed}** passed, **${t.failed}** failed, **${t.flaky}** flaky, **${t.pending}** pending${t.notRun ? `, **${t.notRun}** not run` : ''}, in ${report.rounds} round${report.rounds === 1 ? '' : 's'} (${((report.finishedAt - report.startedAt) / 1000).toFixed(1)} s).`,
  ];
  if (report.error) lines.push('', `Run error: ${report.error}`);
  if (report.stopped) lines.push('', `Stopped early: ${report.stopped}.`);
  for (const f of report.setupFailures ?? []) lines.push('', `Setup failed on ${f.worker} (taken out of the run): ${md(f.message)}`);
  const failed = report.tests.filter((x) => x.status === 'failed');
  if (failed.length) {
    lines.push('', '### Failed', '', '| test | id | message |', '| --- | --- | --- |');
    for (const x of failed) lines.push(`| ${md(x.name)} | \`${md(x.id)}\` | ${md(x.message ?? '')} |`);
  }
  const flaky = report.tests.filter((x) => x.status === 'flaky');
  if (flaky.length) {
    lines.push('', '### Flaky (failed, then passed)', '', '| test | id | first failure |', '| --- | --- | --- |');
    for (const x of flaky) lines.push(`| ${md(x.name)} | \`${md(x.id)}\` | ${md(x.message ?? '')} |`);
  }
  return lines.join('\n') + '\n';
}

/** Writes report.json, junit.xml and summary.md into `dir` (created). Returns the paths. */
export function writeReportFiles(dir: string, report: RunReport): string[] {
  fs.mkdirSync(dir, { recursive: true });
  const files: Array<[string, string]> = [
    ['report.json', JSON.stringify(report, null, 2) + '\n'],
    ['junit.xml', junitXml(report)],
    ['summary.md', summaryMarkdown(report)],
    ['report.html', htmlReport(report)],
  ];
  return files.map(([name, text]) => {
    const file = path.join(dir, name);
    // write-then-rename, so a reader never sees half a report
    fs.writeFileSync(`${file}.tmp`, text);
    fs.renameSync(`${file}.tmp`, file);
    return file;
  });
}
