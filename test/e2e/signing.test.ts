/**
 * A cluster with a signing key: the dispatcher takes only signed, intact, fresh run
 * requests, the slots run only suites signed for their run, and a secret env value reaches
 * the test and nothing else (every log line of every service, the reports, the journal,
 * the dead letters and the slots' directories are searched for it). End to end with the
 * real CLI and services on a vhost of the shared broker.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import amqp from 'amqplib';
import { RunRequest, SCHEMA_VERSION, suiteOf, type SpecJob } from '../../shared/messages.js';
import { signRequest } from '../../shared/signing.js';
import { EXCHANGES, QUEUES, ROUTING, jobKey } from '../../shared/topology.js';
import { createVhost, drainQueue, publishRaw, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { readReport, runCli, stopService, tmpDir, watchService, type Watched } from '../helpers/cli.js';

const KEY = 'a-signing-key-of-the-test-cluster-0123456789';
const SECRET = 'planted-secret-7f3e9a';
let vhost: TestVhost;
const services: Watched[] = [];
const aggregatorReports = tmpDir();
const slotsDir = tmpDir();

before(async () => {
  vhost = await createVhost('warren-e2e-signing');
  const env = { WARREN_SIGNING_KEY: KEY, WARREN_LOG_LEVEL: 'debug' };
  services.push(watchService(['dispatcher', '--broker', vhost.url, '--no-history'], env));
  services.push(watchService(['aggregator', '--broker', vhost.url, '--report-dir', aggregatorReports], env));
  services.push(watchService(['supervisor', '--broker', vhost.url, '--workers', '2', '--dir', slotsDir], env));
  await services[1]!.logged('aggregator active (holds the lease)');
});
after(async () => {
  for (const s of services) await stopService(s.child, 'SIGKILL');
  await vhost.delete();
});

function run(extra: string[], env: Record<string, string> = {}) {
  const reportDir = tmpDir();
  return runCli([
    'run', '--broker', vhost.url, '--adapter', 'command', '--cwd', tmpDir(), '--report-dir', reportDir, '--no-timings', '--max-rounds', '1',
    '--discover-command', 'seq 1 2', ...extra,
  ], { env }).then((res) => ({ ...res, reportDir }));
}

/** Every file under `dir`, as text. */
function allFiles(dir: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    const p = path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name);
    if (e.isFile()) out.push([p, fs.readFileSync(p, 'latin1')]);
  }
  return out;
}

/** The journal stream, from its start up to the entry saying `runId`'s report was sent. */
async function journal(runId: string): Promise<string[]> {
  const conn = await amqp.connect(vhost.url);
  try {
    const ch = await conn.createChannel();
    const bodies: string[] = [];
    await ch.prefetch(1000);
    await new Promise<void>((resolve) => {
      void ch.consume(QUEUES.journal, (m) => {
        if (!m) return;
        const body = m.content.toString();
        bodies.push(body);
        ch.ack(m);
        if (body.includes('"report-sent"') && body.includes(runId)) resolve();
      }, { arguments: { 'x-stream-offset': 'first' } });
    });
    return bodies;
  } finally {
    await conn.close();
  }
}

test('a signed run with a secret env value: the test gets it, and it is nowhere else in clear', async () => {
  // the test checks the value by its hash: the command itself holds no secret
  const digest = createHash('sha256').update(SECRET).digest('hex');
  const res = await run(['--run-id', 'with-secret', '--run-command', `[ "$(printf %s "$TOKEN" | sha256sum | cut -c1-64)" = ${digest} ]`, '--secret-env', 'TOKEN'], { WARREN_SIGNING_KEY: KEY, TOKEN: SECRET });
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  assert.equal(readReport(res.reportDir).totals.passed, 2, 'the tests saw the value');
  const places: Array<[string, string]> = [
    ...services.map((s, i): [string, string] => [`log of service ${i}`, s.lines.join('\n')]),
    ['cli output', res.stdout + res.stderr],
    ...allFiles(res.reportDir), ...allFiles(aggregatorReports), ...allFiles(slotsDir),
    ...(await journal('with-secret')).map((b, i): [string, string] => [`journal entry ${i}`, b]),
  ];
  for (const [where, text] of places) assert.ok(!text.includes(SECRET), `the secret is in clear in ${where}: ${text.slice(0, 3000)}`);
});

test('an unsigned request is refused at once, with the reason; so are an altered one and a replay', async () => {
  const unsigned = await run(['--run-command', 'true']);
  assert.equal(unsigned.code, 2, `${unsigned.stdout}\n${unsigned.stderr}`);
  assert.match(unsigned.stdout, /run request refused: not signed/);

  const request = RunRequest.parse({ type: 'run.request', runId: 'by-hand', adapter: 'command', cwd: '/tmp', command: { discover: 'echo t', run: 'true' } });
  const signed = signRequest(request, Buffer.from(KEY));
  const altered = { ...signed, runId: 'altered', command: { discover: 'echo t', run: 'echo pwned' } };
  await publishRaw(vhost.url, EXCHANGES.runs, ROUTING.runRequest, JSON.stringify(altered));
  await publishRaw(vhost.url, EXCHANGES.runs, ROUTING.runRequest, JSON.stringify(signed));
  await publishRaw(vhost.url, EXCHANGES.runs, ROUTING.runRequest, JSON.stringify(signed));
  const reasons: string[] = [];
  await waitFor('three refusals dead-lettered', async () => {
    for (const m of await drainQueue(vhost.url, QUEUES.deadLetters)) reasons.push(String(m.properties.headers?.['x-warren-reason']));
    return reasons.filter((r) => r.startsWith('run request refused')).length >= 2 || undefined;
  }, 30_000);
  assert.ok(reasons.some((r) => /run request refused: its signature does not match/.test(r)), reasons.join('\n'));
  assert.ok(reasons.some((r) => /run request refused: seen before \(its nonce\): a replay/.test(r)), reasons.join('\n'));
});

test('a job whose suite is not the one signed for its run is dead-lettered by the slot, never run', async () => {
  const marks = tmpDir();
  const request = RunRequest.parse({ type: 'run.request', runId: 'forged-job', adapter: 'command', cwd: '/tmp', command: { discover: 'echo t', run: 'true' } });
  const signed = signRequest(request, Buffer.from(KEY));
  const suite = { ...suiteOf(signed), command: { discover: 'echo t', run: `touch ${marks}/ran` } };
  const job: SpecJob = {
    type: 'spec', v: SCHEMA_VERSION, id: 'forged-job/1/0', runId: 'forged-job', round: 1, tests: [{ id: 't', file: '', name: 't' }], suite, expiresAt: Date.now() + 600_000, shard: 5,
  };
  await publishRaw(vhost.url, EXCHANGES.work, jobKey(5), JSON.stringify(job));
  await publishRaw(vhost.url, EXCHANGES.reports, ROUTING.wake, JSON.stringify({ type: 'work.wake', v: SCHEMA_VERSION, runId: 'forged-job', shard: 5, labels: [] }));
  const dead = await waitFor('the forged job dead-lettered', async () => {
    const got = await drainQueue(vhost.url, QUEUES.deadLetters);
    return got.find((m) => String(m.properties.headers?.['x-warren-reason']).includes('forged-job'));
  }, 30_000);
  assert.match(String(dead.properties.headers?.['x-warren-reason']), /its suite is not the one signed for run forged-job/);
  assert.deepEqual(fs.readdirSync(marks), [], 'the forged command did not run');
});
