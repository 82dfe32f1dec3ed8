/**
 * report.html as a person sees it: a real run (two workers, a failure, a flaky test, a
 * timeout) writes it; headless Chromium (Debian's, driven by playwright-core) opens the file
 * with the network off, logs no console error, shows the failures and flaky tests, and draws
 * a lane per worker with a bar per batch. A screenshot is kept beside the report
 * (WARREN_REPORT_SCREENSHOT names where to copy it).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';
import { readReport, runCli, tmpDir } from '../helpers/cli.js';

const CHROMIUM = process.env.WARREN_CHROMIUM ?? '/usr/bin/chromium';
let vhost: TestVhost;
let browser: Browser;
before(async () => {
  vhost = await createVhost('warren-e2e-html');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});
after(async () => {
  await browser?.close();
  await vhost.delete();
});

test('report.html opens offline in Chromium with no console error: summary, failures, flaky, a lane per worker', async () => {
  const suite = tmpDir();
  const reportDir = tmpDir();
  const res = await runCli([
    'run', '--local', '--workers', '2', '--broker', vhost.url, '--adapter', 'command', '--cwd', suite, '--report-dir', reportDir, '--no-timings',
    '--max-batch', '1', '--test-timeout', '2', '--rerun-threshold', '0.5', '--discover-command', 'seq 1 12',
    // 3 fails, 5 fails once (flaky), 7 hangs (timed out), the rest take a moment
    '--run-command', `case {id} in 3) echo "expected <b>1</b>, got 2" >&2; exit 1;; 5) [ -e flaked ] || { touch flaked; exit 1; };; 7) sleep 30;; *) sleep 0.2;; esac`,
  ]);
  assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  const file = path.join(reportDir, 'report.html');
  assert.ok(fs.existsSync(file));

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  const requests: string[] = [];
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(`file://${file}`);
  assert.deepEqual(errors, [], 'no console errors');
  assert.deepEqual(requests.filter((u) => !u.startsWith('file://')), [], 'nothing fetched: one self-contained file');
  assert.match(await page.title(), new RegExp(`^Warren: failed ${report.runId}$`));
  assert.match(await page.locator('#totals').innerText(), /12\s*tests[\s\S]*2\s*failed[\s\S]*1\s*flaky/);
  const failures = await page.locator('#failures + table').innerText();
  assert.match(failures, /exited with code 1/);
  // (its stderr, behind "details": text, not markup)
  assert.match(await page.locator('#failures + table').textContent() ?? '', /expected <b>1<\/b>, got 2/, 'messages are text, not markup');
  assert.match(failures, /timed out after 2 s/);
  assert.match(await page.locator('#flaky + table').innerText(), /failed → passed/);
  const workers = new Set(report.batches!.map((b) => b.worker));
  assert.equal(workers.size, 2);
  assert.equal(await page.locator('#timeline [data-lane]').count(), workers.size, 'a lane per worker');
  assert.equal(await page.locator('#timeline [data-lane] rect[fill]:not([x="150"])').count(), report.batches!.length, 'a bar per batch');
  const shot = path.join(reportDir, 'report.png');
  await page.screenshot({ path: shot, fullPage: true });
  assert.ok(fs.statSync(shot).size > 10_000);
  if (process.env.WARREN_REPORT_SCREENSHOT) fs.copyFileSync(shot, process.env.WARREN_REPORT_SCREENSHOT);
  await page.close();
});
