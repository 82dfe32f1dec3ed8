/**
 * End to end, the warm-runner promises through the real CLI with --local: batches of a run
 * share one framework process per worker (and `--fresh-process` gives each its own), no
 * module state of one batch is seen by the next, and discovery is paid once per version of
 * a suite (a changed file discovers again).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';
import { readReport, runCli, tmpDir } from '../helpers/cli.js';

let vhost: TestVhost;
const cleanup: string[] = [];
before(async () => {
  vhost = await createVhost('warren-e2e-warm');
});
after(async () => {
  await vhost.delete();
  for (const d of cleanup) fs.rmSync(d, { recursive: true, force: true });
});

/** A mocha suite of `files` files; each test records its process id and counts the loads of a shared module. */
function suite(files: number): { dir: string; pids: string } {
  const dir = tmpDir('warren-warm-suite-');
  const pids = tmpDir('warren-warm-pids-');
  cleanup.push(dir, pids);
  fs.mkdirSync(path.join(dir, 'test'));
  fs.mkdirSync(path.join(dir, 'lib'));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'warm-suite', private: true }));
  // module state: a second batch in the same process must get a fresh copy
  fs.writeFileSync(path.join(dir, 'lib/counter.js'), 'let n = 0;\nexports.next = () => ++n;\n');
  for (let i = 1; i <= files; i++) {
    fs.writeFileSync(path.join(dir, `test/f${i}.test.js`), `
const fs = require('node:fs');
const path = require('node:path');
const counter = require('../lib/counter');
describe('file ${i}', () => {
  it('sees fresh module state', () => {
    fs.writeFileSync(path.join(process.env.PIDS_DIR, 'f${i}-' + process.pid), '');
    if (counter.next() !== 1) throw new Error('module state left over from an earlier batch');
  });
});
`);
  }
  return { dir, pids };
}

const run = (dir: string, pids: string, extra: string[], env: Record<string, string> = {}) => {
  const reportDir = tmpDir();
  cleanup.push(reportDir);
  return runCli([
    'run', '--local', '--workers', '1', '--adapter', 'mocha', '--cwd', dir, '--max-batch', '1', '--no-timings',
    '--env', `PIDS_DIR=${pids}`, '--report-dir', reportDir, '--broker', vhost.url, ...extra,
  ], { env }).then((res) => ({ res, report: fs.existsSync(path.join(reportDir, 'report.json')) ? readReport(reportDir) : undefined }));
};
const processes = (pids: string) => new Set(fs.readdirSync(pids).map((f) => f.split('-')[1]));

test('one warm process runs every batch of a worker, each batch with fresh module state; --fresh-process gives each batch its own', async () => {
  const s = suite(4);
  const warm = await run(s.dir, s.pids, []);
  assert.equal(warm.res.code, 0, warm.res.stderr);
  assert.equal(warm.report!.totals.passed, 4);
  assert.equal(fs.readdirSync(s.pids).length, 4);
  assert.equal(processes(s.pids).size, 1, 'four batches, one framework process');

  fs.rmSync(s.pids, { recursive: true });
  fs.mkdirSync(s.pids);
  const fresh = await run(s.dir, s.pids, ['--fresh-process']);
  assert.equal(fresh.res.code, 0, fresh.res.stderr);
  assert.equal(fresh.report!.totals.passed, 4);
  assert.equal(processes(s.pids).size, 4, 'a process per batch');
  assert.match(fresh.res.stderr, /a fresh process per batch/);
});

test('discovery is paid once per version of a suite: an unchanged suite (or one rewritten unchanged) comes from the cache, a changed one is discovered again', async () => {
  const s = suite(2);
  const cache = tmpDir('warren-warm-cache-');
  cleanup.push(cache);
  const env = { XDG_CACHE_HOME: cache };
  const first = await run(s.dir, s.pids, [], env);
  assert.equal(first.res.code, 0, first.res.stderr);
  assert.match(first.res.stderr, /2 tests found \(discovered in/);

  const second = await run(s.dir, s.pids, [], env);
  assert.equal(second.res.code, 0, second.res.stderr);
  assert.match(second.res.stderr, /2 tests found \(from the worker's discovery cache/);
  // another report directory: the durations come from the dispatcher's history
  assert.match(second.res.stderr, /2 to run, 2 with known durations/);
  assert.equal(second.report!.totals.total, 2);

  // a file rewritten with the same content (jest saves its snapshot files so): still cached
  const later = new Date(Date.now() + 60_000);
  fs.utimesSync(path.join(s.dir, 'test/f1.test.js'), later, later);
  const touched = await run(s.dir, s.pids, [], env);
  assert.match(touched.res.stderr, /2 tests found \(from the worker's discovery cache/);

  // a new test in a file: the cached list would miss it
  fs.appendFileSync(path.join(s.dir, 'test/f2.test.js'), "describe('file 2, later', () => { it('is new', () => {}); });\n");
  const third = await run(s.dir, s.pids, [], env);
  assert.equal(third.res.code, 0, third.res.stderr);
  assert.match(third.res.stderr, /3 tests found \(discovered in/);
  assert.equal(third.report!.totals.total, 3);
});

test('the workers start their warm runners while the run is discovered, not after it', async () => {
  const { dir, pids } = suite(4);
  const marks = tmpDir('warren-warm-marks-');
  cleanup.push(marks);
  // a helper every mocha process loads: a warm runner marks that it loaded it; discovery
  // waits (bounded) for both workers' runners to have loaded it, and says how many it saw
  fs.writeFileSync(path.join(dir, 'helper.js'), `
const fs = require('node:fs');
const path = require('node:path');
const marks = process.env.MARKS_DIR;
if (process.argv[2] === 'serve') fs.writeFileSync(path.join(marks, 'serve-' + process.pid), '');
if (process.argv[2] === 'discover') {
  const seen = () => fs.readdirSync(marks).filter((f) => f.startsWith('serve-')).length;
  const until = Date.now() + 20000;
  while (seen() < 2 && Date.now() < until) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  fs.writeFileSync(path.join(marks, 'discovery-saw-' + seen()), '');
}
`);
  fs.writeFileSync(path.join(dir, '.mocharc.json'), JSON.stringify({ require: ['./helper.js'] }));
  const reportDir = tmpDir();
  cleanup.push(reportDir);
  const res = await runCli([
    'run', '--local', '--workers', '2', '--adapter', 'mocha', '--cwd', dir, '--no-timings',
    '--env', `PIDS_DIR=${pids}`, '--env', `MARKS_DIR=${marks}`, '--report-dir', reportDir, '--broker', vhost.url,
  ], { env: { XDG_CACHE_HOME: tmpDir() } });
  assert.equal(res.code, 0, res.stderr);
  assert.equal(readReport(reportDir).totals.passed, 4);
  assert.deepEqual(fs.readdirSync(marks).filter((f) => f.startsWith('discovery-')), ['discovery-saw-2'], 'both runners loaded the helper during discovery');
  // and the batches ran on those runners: no third mocha process
  assert.equal(fs.readdirSync(marks).filter((f) => f.startsWith('serve-')).length, 2);
});
