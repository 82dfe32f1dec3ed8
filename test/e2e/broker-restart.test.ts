/**
 * The broker goes away in the middle of a run (a RabbitMQ node of this test's own is
 * stopped, then started again): every service reconnects with backoff, re-declares, resumes,
 * and the run completes with every test reported once.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { privateRabbit, type PrivateRabbit } from '../helpers/private-rabbit.js';
import { waitFor } from '../helpers/rabbit.js';
import { readReport, runCli, tmpDir } from '../helpers/cli.js';

let rabbit: PrivateRabbit;
before(async () => {
  rabbit = privateRabbit(5690 + Math.floor(Math.random() * 100));
  await rabbit.start();
});
after(() => {
  rabbit.destroy();
});

test('a broker restart mid-run: services reconnect, the run completes, each test once', async () => {
  const marks = tmpDir();
  const reportDir = tmpDir();
  const run = runCli([
    'run', '--local', '--workers', '3', '--adapter', 'command', '--cwd', tmpDir(), '--broker', rabbit.url,
    '--discover-command', 'seq 1 30',
    '--run-command', 'echo x >> "$MARKS"/t{id}; sleep 0.3',
    '--env', `MARKS=${marks}`, '--report-dir', reportDir,
  ], { env: { WARREN_LOG_LEVEL: 'error' } });
  await waitFor('some tests to run', () => fs.readdirSync(marks).length >= 6);
  rabbit.stop();
  await new Promise((r) => setTimeout(r, 1000));
  await rabbit.start();
  const res = await run;
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  assert.equal(report.totals.total, 30);
  assert.equal(report.totals.passed, 30);
  assert.equal(new Set(report.tests.map((t) => t.id)).size, 30);
  assert.ok(fs.readdirSync(marks).length === 30, 'every test ran');
});
