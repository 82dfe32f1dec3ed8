/**
 * Every bad input tried, each with its outcome: messages too big, of an unknown type or
 * version; run requests with path traversal in runId and cwd; a suite directory missing on
 * the worker; a test that prints 100 MB; a run with no tests; a supervisor with bad config;
 * a broker that refuses the login. Each gets one clear line (or a dead letter with the
 * reason), loses nothing, and no service restarts. The real CLI and services on a vhost of
 * the shared broker.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { EXCHANGES, QUEUES, ROUTING } from '../../shared/topology.js';
import { SCHEMA_VERSION } from '../../shared/messages.js';
import amqp from 'amqplib';
import { createVhost, drainQueue, publishRaw, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { readReport, runCli, startService, stopService, tmpDir } from '../helpers/cli.js';

let vhost: TestVhost;
const services: ChildProcess[] = [];
const allowed = tmpDir('warren-allowed-');
const outside = tmpDir('warren-outside-');

before(async () => {
  vhost = await createVhost('warren-e2e-bad-inputs');
  services.push(startService(['dispatcher', '--broker', vhost.url, '--no-history']));
  services.push(startService(['aggregator', '--broker', vhost.url, '--report-dir', tmpDir()]));
  services.push(startService(['supervisor', '--broker', vhost.url, '--workers', '2', '--allow-cwd', `${allowed},/tmp/warren-nowhere`]));
  // (the services declare the topology as they connect)
  await waitFor('the topology', () => topologyThere());
});
after(async () => {
  for (const s of services) await stopService(s, 'SIGKILL');
  await vhost.delete();
});

/** Whether the services have declared the topology (a passive check). */
async function topologyThere(): Promise<boolean> {
  const conn = await amqp.connect(vhost.url);
  conn.on('error', () => undefined);
  try {
    const ch = await conn.createChannel();
    ch.on('error', () => undefined);
    await ch.checkExchange(EXCHANGES.runs);
    await ch.checkQueue(QUEUES.aggregator);
    return true;
  } catch {
    return false;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

/** Dead letters until one matches `re`; returns its reason. */
async function deadLetter(re: RegExp): Promise<string> {
  const seen: string[] = [];
  return waitFor(`a dead letter matching ${re}`, async () => {
    for (const m of await drainQueue(vhost.url, QUEUES.deadLetters)) seen.push(String(m.properties.headers?.['x-warren-reason']));
    return seen.find((r) => re.test(r));
  }, 30_000);
}

function run(args: string[]) {
  const reportDir = tmpDir();
  return runCli(['run', '--broker', vhost.url, '--adapter', 'command', '--report-dir', reportDir, '--no-timings', '--max-rounds', '1', ...args]).then((res) => ({ ...res, reportDir }));
}

test('too big, unknown type, unknown version, path traversal in the run id: each dead-lettered with its reason; no service restarts', async () => {
  await publishRaw(vhost.url, EXCHANGES.runs, ROUTING.runRequest, JSON.stringify({ type: 'run.request', adapter: 'command', cwd: '/tmp', padding: 'x'.repeat(17 * 1024 * 1024) }));
  assert.match(await deadLetter(/^too big/), /^too big: 17\.0 MiB, over the 16 MiB a Warren message may have$/);
  await publishRaw(vhost.url, EXCHANGES.runs, ROUTING.runRequest, JSON.stringify({ type: 'run.bogus', v: SCHEMA_VERSION }));
  assert.match(await deadLetter(/run\.bogus/), /^invalid message \(type "run.bogus"\): type: /);
  await publishRaw(vhost.url, EXCHANGES.runs, ROUTING.runRequest, JSON.stringify({ type: 'run.request', v: 99, adapter: 'command', cwd: '/tmp' }));
  assert.match(await deadLetter(/: v: /), /^invalid message \(type "run.request"\): v: /);
  await publishRaw(vhost.url, EXCHANGES.runs, ROUTING.runRequest, JSON.stringify({ type: 'run.request', runId: '../../etc/passwd', adapter: 'command', cwd: '/tmp' }));
  assert.match(await deadLetter(/runId/), /runId: letters, digits/);
  assert.deepEqual(services.map((s) => s.exitCode), [null, null, null], 'every service still runs');
  const good = await run(['--cwd', allowed, '--discover-command', 'seq 1 3', '--run-command', 'true']);
  assert.equal(good.code, 0, `${good.stdout}\n${good.stderr}`);
});

test('a cwd that climbs out of --allow-cwd, and a suite directory missing on the worker: the run fails saying which', async () => {
  const climbing = await run(['--cwd', `${allowed}/../${path.basename(outside)}`, '--discover-command', 'echo t', '--run-command', 'true']);
  assert.equal(climbing.code, 2, `${climbing.stdout}\n${climbing.stderr}`);
  assert.match(readReport(climbing.reportDir).error ?? '', /is outside the directories this supervisor allows/);
  // a directory this host lacks (the CLI checks its own disk: published by hand, followed)
  await publishRaw(vhost.url, EXCHANGES.runs, ROUTING.runRequest, JSON.stringify({
    type: 'run.request', runId: 'missing-dir', adapter: 'command', cwd: '/tmp/warren-nowhere/suite', command: { discover: 'echo t', run: 'true' },
  }));
  const followed = await runCli(['follow', 'missing-dir', '--broker', vhost.url, '--report-dir', tmpDir()]);
  assert.equal(followed.code, 2, `${followed.stdout}\n${followed.stderr}`);
  assert.match(followed.stdout, /suite directory \/tmp\/warren-nowhere\/suite does not exist on worker/);
});

test('a test that prints 100 MB is failed with the tail of its output; a run with no tests ends at once, saying so', async () => {
  const loud = await run(['--cwd', allowed, '--discover-command', 'echo loud', '--run-command', "head -c 100000000 /dev/zero | tr '\\0' x; echo; echo the-last-line; exit 1"]);
  assert.equal(loud.code, 1, `${loud.stdout}\n${loud.stderr}`);
  const t = readReport(loud.reportDir).tests[0]!;
  assert.equal(t.status, 'failed');
  const kept = (t.message ?? '') + (t.details ?? '');
  assert.ok(kept.length < 64 * 1024, `the output is capped (${kept.length} characters kept)`);
  assert.match(kept, /the-last-line/, 'its end is kept');
  assert.ok(fs.statSync(path.join(loud.reportDir, 'report.json')).size < 256 * 1024, 'the report stays small');

  const none = await run(['--cwd', allowed, '--discover-command', 'true', '--run-command', 'true']);
  assert.equal(none.code, 2, `${none.stdout}\n${none.stderr}`);
  assert.match(readReport(none.reportDir).error ?? '', /^no tests found in .* by command$/);
});

test('a supervisor with bad config, a broker that refuses the login: one line each, exit 2', async () => {
  for (const [args, line] of [
    [['--workers', '0'], /^warren: supervisor config: workers: /],
    [['--allow-cwd', 'relative/dir'], /^warren: supervisor config: allowCwd\.0: an absolute path\n$/],
    [['--pass-env', 'BAD-NAME'], /^warren: supervisor config: passEnv\.0: an environment variable name/],
  ] as const) {
    const res = await runCli(['supervisor', '--broker', vhost.url, ...args], { timeoutMs: 30_000 });
    assert.equal(res.code, 2, `${args.join(' ')}: ${res.stdout}\n${res.stderr}`);
    assert.match(res.stderr, line);
    assert.equal(res.stderr.trim().split('\n').length, 1, res.stderr);
  }
  const wrong = vhost.url.replace('guest:guest', 'guest:not-the-password');
  const refused = await runCli(['status', '--broker', wrong], { timeoutMs: 60_000 });
  assert.equal(refused.code, 2);
  assert.equal(refused.stderr.trim().split('\n').length, 1, refused.stderr);
  assert.match(refused.stderr, /the broker refused the login of user guest: a wrong user name or password/);
  assert.ok(!refused.stderr.includes('not-the-password'), 'the password is not printed');
});
