/**
 * Warm runners on real processes (the local driver): a tiny plug-in of ours, built on the
 * plug-ins' shared serve loop, run batch after batch in one process; a hang, a crash, a
 * process that dies between batches and one that grew past its memory limit, each ending
 * the way the slot relies on.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createLogger } from '../../shared/log.js';
import type { TestRef } from '../../shared/messages.js';
import { assetsDir } from '../../services/worker-supervisor/adapters/adapter.js';
import { LocalDriver } from '../../services/worker-supervisor/drivers/local.js';
import { RunnerLostError, WarmRunner, runCold, type Batch } from '../../services/worker-supervisor/runner/runner.js';
import { resolveAttempt } from '../../services/worker-supervisor/resolve.js';
import { tmpDir } from '../helpers/cli.js';

const dir = tmpDir('warren-runner-');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Test ids are commands: `pass`, `hang`, `die` (exit 7), `die-after` (exit once the batch
 * is over), `exit-first` (exit before the batch's first event). */
const plugin = path.join(dir, 'tiny-plugin.cjs');
fs.writeFileSync(plugin, `
const common = require(${JSON.stringify(path.join(assetsDir(), 'warren-plugin-common.cjs'))});
const events = common.createEvents('tiny', (e) => ({ message: String(e && e.message || e) }));
events.open('tiny finished');
const run = async (ids) => {
  if (ids[0] === 'exit-first') process.exit(5); // before any event of the batch
  events.emit({ event: 'start', count: ids.length });
  for (const id of ids) {
    const rec = common.newRec(id, 'tiny', 'pid ' + process.pid);
    events.startTest(rec);
    if (id === 'hang') await new Promise(() => setInterval(() => {}, 1000));
    if (id === 'die') process.exit(7);
    if (id === 'die-after') setTimeout(() => process.exit(9), 0);
    events.endTest(rec, 'passed', 1);
  }
  events.done();
  return 0;
};
if (process.argv[2] === 'serve') common.serve(events, run, (e) => ({ message: String(e) }));
else run(common.splitIds(events.idsFileText())).then((code) => (process.exitCode = code));
`);

const driver = new LocalDriver();
const log = createLogger('runner-test', 'error');
let seq = 0;
const refs = (...ids: string[]): TestRef[] => ids.map((id) => ({ id, file: 'tiny', name: id }));
const batch = (tests: TestRef[], timeoutSec = 30): Batch => ({
  tests, events: path.join(dir, `events-${++seq}.jsonl`), timeoutSec, perTest: true, watchEvents: true,
});
const runner = (maxRssBytes = 2 ** 31) =>
  new WarmRunner({ driver, key: 'k', maxRssBytes, log, inv: { argv: [process.execPath, plugin, 'serve'], cwd: dir, env: {} } });
const pids = (events: Array<{ event: string; name?: string }>) =>
  [...new Set(events.filter((e) => e.event === 'test_end').map((e) => e.name))];
/** Resolves when the runner's process is gone (its exit is the event we wait for). */
async function gone(r: WarmRunner): Promise<void> {
  while (r.usable) await new Promise((res) => setImmediate(res));
}

test('a warm runner runs batch after batch in one process, each batch ending at its end event', async () => {
  const r = runner();
  const first = await r.run(batch(refs('pass', 'pass2')));
  const second = await r.run(batch(refs('pass3')));
  assert.deepEqual(resolveAttempt(refs('pass', 'pass2'), first).results.map((x) => x.status), ['passed', 'passed']);
  assert.deepEqual(resolveAttempt(refs('pass3'), second).results.map((x) => x.status), ['passed']);
  assert.equal(pids(first.events).length, 1);
  assert.deepEqual(pids(second.events), pids(first.events), 'the second batch ran in the same process');
  assert.equal(first.exit.code, 0);
  assert.ok(r.usable);
  await r.retire();
  assert.equal(r.usable, false);
});

test('a hung test is timed out, the runner killed and never reused', async () => {
  const r = runner();
  const out = await r.run(batch(refs('pass', 'hang', 'pass2'), 1));
  assert.equal(out.timedOutAfterSec, 1);
  assert.equal(r.usable, false);
  const res = resolveAttempt(refs('pass', 'hang', 'pass2'), out);
  assert.deepEqual(res.results.map((x) => [x.testId, x.status, x.message]), [['pass', 'passed', undefined], ['hang', 'failed', 'timed out after 1 s']]);
  assert.deepEqual(res.rerun.map((t) => t.id), ['pass2']);
});

test('a test that kills the runner is pinned as a crash, as with a cold process', async () => {
  const r = runner();
  await r.run(batch(refs('pass')));
  const out = await r.run(batch(refs('die', 'pass2')));
  assert.equal(out.exit.code, 7);
  assert.equal(r.usable, false);
  const res = resolveAttempt(refs('die', 'pass2'), out);
  assert.equal(res.results[0]!.message, 'crashed: the test process exited with code 7');
  assert.deepEqual(res.rerun.map((t) => t.id), ['pass2']);
});

test('a runner that dies before a later batch began does not sink that batch: RunnerLostError', async () => {
  const r = runner();
  await r.run(batch(refs('pass')));
  await assert.rejects(r.run(batch(refs('exit-first', 'pass2'))), RunnerLostError);
  assert.equal(r.usable, false);
  // a runner known to be gone is never written to
  const r2 = runner();
  const out = await r2.run(batch(refs('die-after')));
  assert.equal(resolveAttempt(refs('die-after'), out).results[0]!.status, 'passed');
  await gone(r2);
  await assert.rejects(r2.run(batch(refs('pass'))), /a runner that is gone/);
});

test('a runner past its memory limit is retired after its batch, the results kept', async () => {
  const r = runner(1);
  const out = await r.run(batch(refs('pass')));
  assert.equal(resolveAttempt(refs('pass'), out).results[0]!.status, 'passed');
  assert.equal(r.usable, false);
});

test('a cold process runs one batch through the same clock', async () => {
  const b = batch(refs('pass', 'hang'), 1);
  const ids = path.join(dir, 'ids.txt');
  fs.writeFileSync(ids, 'pass\nhang\n');
  const out = await runCold(driver, { argv: [process.execPath, plugin, 'run'], cwd: dir, env: { WARREN_EVENTS: b.events, WARREN_IDS_FILE: ids } }, b);
  assert.equal(out.timedOutAfterSec, 1, JSON.stringify(out));
  assert.deepEqual(resolveAttempt(refs('pass', 'hang'), out).results.map((x) => x.status), ['passed', 'failed']);
});
