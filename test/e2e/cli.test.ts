/** The CLI's contract: exit codes, one-line errors, per-worker environment. */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';
import { FIXTURES, readReport, runCli, tmpDir } from '../helpers/cli.js';

let vhost: TestVhost;
before(async () => {
  vhost = await createVhost('warren-e2e-cli');
});
after(async () => {
  await vhost.delete();
});

const oneLine = (s: string) => s.trim().split('\n').filter(Boolean);

test('a bad flag: one clear line, exit 2', async () => {
  const res = await runCli(['run', '--max-rounds', 'many', '--cwd', FIXTURES, '--adapter', 'rspec', '--broker', vhost.url]);
  assert.equal(res.code, 2);
  assert.deepEqual(oneLine(res.stderr), ['warren: --max-rounds: expected a whole number of at least 1, got "many"']);
  const unknown = await runCli(['run', '--no-such-flag']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown option '--no-such-flag'/);
  assert.equal(oneLine(unknown.stderr).length, 1);
});

test('a bad pattern or an unknown adapter is refused before anything is published', async () => {
  const res = await runCli(['run', '--adapter', 'rspec', '--cwd', path.join(FIXTURES, 'rspec-suite'), '--pattern', '(', '--broker', vhost.url]);
  assert.equal(res.code, 2);
  assert.match(res.stderr, /pattern: not a valid regular expression/);
  const adapter = await runCli(['run', '--adapter', 'cobol', '--cwd', FIXTURES, '--broker', vhost.url]);
  assert.equal(adapter.code, 2);
  assert.match(adapter.stderr, /--adapter: unknown adapter "cobol"/);
});

test('a missing suite directory: one clear line, exit 2', async () => {
  const res = await runCli(['run', '--adapter', 'rspec', '--cwd', '/nonexistent/suite', '--broker', vhost.url]);
  assert.equal(res.code, 2);
  assert.deepEqual(oneLine(res.stderr), ['warren: --cwd: suite directory /nonexistent/suite does not exist']);
});

test('an unreachable broker: one clear line, exit 2', async () => {
  const res = await runCli(['run', '--adapter', 'rspec', '--cwd', path.join(FIXTURES, 'rspec-suite'), '--broker', 'amqp://127.0.0.1:1']);
  assert.equal(res.code, 2);
  assert.equal(oneLine(res.stderr).length, 1, res.stderr);
  assert.match(res.stderr, /^warren: cannot reach RabbitMQ at amqp:\/\/127\.0\.0\.1:1: .*ECONNREFUSED/);
  // (a service keeps trying instead: test/integration/broker.test.ts)
});

test('each slot has its own TEST_ENV_NUMBER, WARREN_WORKER_INDEX and temp dir', async () => {
  const marks = tmpDir();
  const suite = tmpDir();
  const reportDir = tmpDir();
  const res = await runCli([
    'run', '--local', '--workers', '3', '--adapter', 'command', '--cwd', suite,
    '--discover-command', 'seq 1 12',
    '--run-command', 'echo "$WARREN_WORKER_INDEX|$TEST_ENV_NUMBER|$TMPDIR" > "$MARKS"/t{id}; sleep 0.5',
    '--env', `MARKS=${marks}`, '--report-dir', reportDir, '--broker', vhost.url,
  ]);
  assert.equal(res.code, 0, res.stderr);
  assert.equal(readReport(reportDir).totals.passed, 12);
  const seen = fs.readdirSync(marks).map((f) => fs.readFileSync(path.join(marks, f), 'utf8').trim().split('|'));
  assert.equal(seen.length, 12);
  const workers = new Map<string, { env: string; tmp: string }>();
  for (const [index, envNumber, tmp] of seen) {
    // parallel_tests' convention: '' for the first worker, then 2, 3, ...
    assert.equal(envNumber, index === '0' ? '' : String(Number(index) + 1));
    const prev = workers.get(index!);
    if (prev) assert.deepEqual(prev, { env: envNumber!, tmp: tmp! });
    workers.set(index!, { env: envNumber!, tmp: tmp! });
  }
  assert.ok(workers.size >= 2, `work spread over ${workers.size} slots`);
  assert.equal(new Set([...workers.values()].map((w) => w.tmp)).size, workers.size, 'each slot its own TMPDIR');
});

test('a test still out at the run deadline is failed as dropped, and the run ends on time', async () => {
  const reportDir = tmpDir();
  const res = await runCli([
    'run', '--local', '--workers', '2', '--adapter', 'command', '--cwd', tmpDir(),
    '--discover-command', 'echo quick; echo stuck', '--run-command', 'if [ {id} = stuck ]; then sleep 600; fi',
    '--test-timeout', '600', '--run-timeout', '4', '--report-dir', reportDir, '--broker', vhost.url,
  ]);
  assert.equal(res.code, 1, res.stderr);
  const t = new Map(readReport(reportDir).tests.map((x) => [x.id, x]));
  assert.equal(t.get('quick')!.status, 'passed');
  assert.equal(t.get('stuck')!.status, 'failed');
  assert.equal(t.get('stuck')!.message, "Example didn't run because of a timeout or a drop");
});
