/**
 * The generic junit adapter on a command that writes JUnit XML: Warren's report lists
 * exactly the tests, statuses and failure messages of the command's own full run.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { XMLParser } from 'fast-xml-parser';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';
import { FIXTURES, readReport, runCli, tmpDir } from '../helpers/cli.js';

let vhost: TestVhost;
before(async () => {
  vhost = await createVhost('warren-e2e-junit');
});
after(async () => {
  await vhost.delete();
});

const suite = path.join(FIXTURES, 'junit-suite');
const args = ['--adapter', 'junit', '--cwd', suite, '--discover-command', 'node tiny-runner.mjs --list', '--run-command', 'node tiny-runner.mjs {junit} {ids}'];

test('junit adapter: the report matches the command\'s own run, test by test', async () => {
  // the plain run, all tests, its own XML
  const plainXml = path.join(tmpDir(), 'plain.xml');
  try {
    execFileSync(process.execPath, ['tiny-runner.mjs', plainXml], { cwd: suite, env: { ...process.env, FLAKY_STATE_DIR: tmpDir() } });
  } catch {
    // exits 1: it has failures
  }
  const parsed = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '', isArray: (n) => n === 'testcase' }).parse(fs.readFileSync(plainXml, 'utf8'));
  const plain = (parsed.testsuites.testsuite.testcase as Array<Record<string, unknown>>).map((c) => {
    const failure = c.failure as { message: string; type: string } | undefined;
    return {
      id: `${c.classname}.${c.name}`,
      status: failure ? 'failed' : c.skipped !== undefined ? 'pending' : 'passed',
      message: failure ? `${failure.type}: ${failure.message}` : undefined,
    };
  });

  const reportDir = tmpDir();
  const res = await runCli(['run', '--local', '--workers', '2', ...args, '--max-rounds', '1', '--env', `FLAKY_STATE_DIR=${tmpDir()}`, '--report-dir', reportDir, '--broker', vhost.url]);
  assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
  const warren = readReport(reportDir).tests.map((t) => ({ id: t.id, status: t.status, message: t.status === 'failed' ? t.message : undefined }));
  assert.deepEqual(warren, plain);
  assert.ok(plain.some((t) => t.id === 'strings.größer — 日本語 ✓' && t.status === 'passed'));
  assert.ok(plain.some((t) => t.id === 'math.divides <by zero> & "fails"' && t.message === 'RangeError: division by zero: 1 / 0'));
});

test('junit adapter: re-runs tell the flaky test; a command that writes no XML fails its tests with the reason', async () => {
  const reportDir = tmpDir();
  const res = await runCli(['run', '--local', '--workers', '2', ...args, '--rerun-threshold', '0.5', '--env', `FLAKY_STATE_DIR=${tmpDir()}`, '--report-dir', reportDir, '--broker', vhost.url]);
  assert.equal(res.code, 1);
  const t = new Map(readReport(reportDir).tests.map((x) => [x.id, x]));
  assert.equal(t.get('io.flaky network')!.status, 'flaky');
  assert.equal(t.get('io.reads later')!.status, 'pending');

  const silent = tmpDir();
  const none = await runCli(['run', '--local', '--workers', '1', '--adapter', 'junit', '--cwd', suite, '--discover-command', 'echo a; echo b',
    '--run-command', 'true {ids}', '--max-rounds', '1', '--report-dir', silent, '--broker', vhost.url]);
  assert.equal(none.code, 1);
  for (const x of readReport(silent).tests) assert.match(x.message!, /the run command wrote no JUnit XML to \{junit\} \(\$WARREN_JUNIT_FILE\) and exited with code 0/);
});
