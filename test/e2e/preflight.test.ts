/**
 * A new user is never left waiting in silence (cli/preflight.ts): `warren run` on a broker
 * without the services it needs says what is missing within seconds and exits 2, or with
 * --wait-for-workers waits, saying so, and runs once a supervisor comes. Log lines on the
 * terminal are readable ones, not JSON. Each test waits on what the CLI prints or on a
 * service's log line, never on a sleep.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import amqp from 'amqplib';
import { BIN, runCli, stopService, tmpDir, watchService, type Watched } from '../helpers/cli.js';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';

let vhost: TestVhost;
const services: Watched[] = [];
before(async () => {
  vhost = await createVhost('warren-e2e-preflight');
});
after(async () => {
  for (const s of services) await stopService(s.child, 'SIGKILL');
  await vhost.delete();
});

const runArgs = (extra: string[] = []) => [
  'run', '--broker', vhost.url, '--adapter', 'command', '--cwd', tmpDir(), '--report-dir', tmpDir(), '--no-timings',
  '--discover-command', 'seq 1 3', '--run-command', 'true', ...extra,
];

async function messagesIn(queue: string): Promise<number> {
  const conn = await amqp.connect(vhost.url);
  try {
    const ch = await conn.createChannel();
    return (await ch.checkQueue(queue)).messageCount;
  } finally {
    await conn.close();
  }
}

test('no dispatcher nor aggregator on the broker: said at once with what to start, exit 2, nothing published', async () => {
  const t0 = Date.now();
  const res = await runCli(runArgs(), { timeoutMs: 60_000 });
  assert.equal(res.code, 2, res.stderr);
  assert.match(res.stderr, /no dispatcher consumes warren\.dispatcher and no aggregator consumes warren\.aggregator on amqp:\/\/guest:\*\*\*@/);
  assert.match(res.stderr, /warren dispatcher/);
  assert.ok(Date.now() - t0 < 30_000, 'said within seconds, not at the run timeout');
  assert.equal(await messagesIn('warren.dispatcher'), 0, 'no run request left behind for a dispatcher that may come later');
  assert.doesNotMatch(res.stderr, /^\{/m, 'no JSON log line on the terminal');
});

test('a control plane but no supervisor: exit 2 within seconds, saying none is connected; the run is cancelled', async () => {
  services.push(watchService(['dispatcher', '--broker', vhost.url, '--no-history']));
  const aggregator = watchService(['aggregator', '--broker', vhost.url, '--report-dir', tmpDir()]);
  services.push(aggregator);
  await aggregator.logged('aggregator active (holds the lease)');
  const res = await runCli(runArgs(['--run-id', 'preflight-none']), { timeoutMs: 60_000 });
  assert.equal(res.code, 2, res.stderr);
  assert.match(res.stderr, /no supervisor is connected to amqp:\/\/guest:\*\*\*@[^ ]+ \(no heartbeat in \d+ s\): nothing would run the tests; start `warren supervisor`/);
  assert.match(res.stderr, /run preflight-none cancelled/);
  // the aggregator ends it as cancelled: nothing waits for its deadline
  await aggregator.logged('run finished');
});

test('--wait-for-workers: waits, saying so, and the run goes through when a supervisor comes', async () => {
  const child = spawn(process.execPath, [BIN, ...runArgs(['--wait-for-workers'])], { env: { ...process.env, WARREN_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let onLine: (() => void) | undefined;
  child.stderr.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
    onLine?.();
  });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  await new Promise<void>((resolve) => {
    onLine = () => /waiting for a supervisor that may run it \(\d+ s; none connected\)/.test(stderr) && resolve();
    onLine();
  });
  services.push(watchService(['supervisor', '--broker', vhost.url, '--workers', '1', '--dir', tmpDir()]));
  const code = await new Promise<number | null>((r) => child.on('close', r));
  assert.equal(code, 0, stderr);
  assert.match(stdout, /passed: 3 tests, 3 passed/);
});

test('--labels no supervisor has: refused at once, naming the supervisors heard and their labels', async () => {
  const res = await runCli(runArgs(['--labels', 'gpu']), { timeoutMs: 60_000 });
  assert.equal(res.code, 2, res.stderr + res.stdout);
  // (the dispatcher knows the supervisors too, and refuses the run before anything waits)
  assert.match(res.stderr + res.stdout, /no live supervisor has the labels gpu \(live: [^)]+\)/);
});

test('a broker that cannot be reached: readable lines on the terminal, no JSON', async () => {
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const res = await runCli(['run', '--broker', `amqp://guest:guest@127.0.0.1:${port}`, '--adapter', 'command', '--cwd', tmpDir(), '--discover-command', 'true', '--run-command', 'true'], { timeoutMs: 60_000 });
  assert.equal(res.code, 2, res.stderr);
  assert.doesNotMatch(res.stderr, /^\{/m, 'no JSON log line on the terminal');
  assert.match(res.stderr, /ECONNREFUSED/);
});
