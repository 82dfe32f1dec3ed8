/**
 * What a run request may reach on a worker host: only the directories the supervisor allows
 * (--allow-cwd, symlinks resolved), only the environment it passes (never Warren's own
 * variables: the broker URL, registry credentials), test ids that stay text in command
 * templates, and patterns that cannot stall the shared dispatcher. End to end with the real
 * CLI and services on a vhost of the shared broker.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';
import { readReport, runCli, startService, stopService, tmpDir } from '../helpers/cli.js';

let vhost: TestVhost;
const services: ChildProcess[] = [];
const allowed = tmpDir('warren-allowed-');
const outside = tmpDir('warren-outside-');

before(async () => {
  vhost = await createVhost('warren-e2e-confinement');
  services.push(startService(['dispatcher', '--broker', vhost.url, '--no-history']));
  services.push(startService(['aggregator', '--broker', vhost.url, '--report-dir', tmpDir()]));
  // the broker URL and registry credentials in the supervisor's environment, as deployed
  services.push(startService(['supervisor', '--workers', '2', '--allow-cwd', allowed, '--allow-image', 'registry.local/*'], {
    WARREN_BROKER_URL: vhost.url,
    WARREN_REGISTRY_AUTH: JSON.stringify({ username: 'ci', password: 'registry-secret' }),
    HOST_ONLY_SECRET: 'host-secret',
  }));
});
after(async () => {
  for (const s of services) await stopService(s, 'SIGKILL');
  await vhost.delete();
});

function run(cwd: string, discover: string, runCommand: string, extra: string[] = []) {
  const reportDir = tmpDir();
  return runCli([
    'run', '--broker', vhost.url, '--adapter', 'command', '--cwd', cwd, '--report-dir', reportDir, '--no-timings', '--max-rounds', '1',
    '--discover-command', discover, '--run-command', runCommand, ...extra,
  ]).then((res) => ({ ...res, reportDir }));
}

test("tests see the run's env, Warren's worker variables and the passed names, never the supervisor's secrets", async () => {
  const out = tmpDir();
  const res = await run(allowed, 'echo t1', `env > ${out}/env.txt`, ['--env', 'RUN_VAR=from-the-run']);
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  const env = fs.readFileSync(path.join(out, 'env.txt'), 'utf8');
  const names = env.split('\n').map((l) => l.split('=')[0]);
  for (const name of ['PATH', 'RUN_VAR', 'WARREN_WORKER_INDEX', 'TEST_ENV_NUMBER', 'TMPDIR']) assert.ok(names.includes(name), `${name} is there`);
  for (const name of ['WARREN_BROKER_URL', 'WARREN_REGISTRY_AUTH', 'WARREN_SLOT', 'HOST_ONLY_SECRET']) assert.ok(!names.includes(name), `${name} is not`);
  for (const secret of ['registry-secret', 'host-secret', 'amqp://']) assert.ok(!env.includes(secret), `no ${secret} in a test's environment`);
});

test('a suite outside --allow-cwd is refused, through a symlink too; the run fails saying so', async () => {
  const res = await run(outside, 'echo t1', 'true');
  assert.equal(res.code, 2, `${res.stdout}\n${res.stderr}`);
  assert.match(readReport(res.reportDir).error ?? '', /suite directory .*warren-outside-.* is outside the directories this supervisor allows \(--allow-cwd /);
  const link = path.join(allowed, 'sneaky');
  fs.symlinkSync(outside, link);
  const viaLink = await run(link, 'echo t1', 'true');
  assert.equal(viaLink.code, 2, `${viaLink.stdout}\n${viaLink.stderr}`);
  assert.match(readReport(viaLink.reportDir).error ?? '', /is outside the directories this supervisor allows/);
});

test('test ids are text in command templates: neither shell nor placeholders', async () => {
  const out = tmpDir();
  const ids = ['a{id};touch INJECTED;#', '$(touch INJECTED2)', "b'c", '`touch INJECTED3`'];
  fs.writeFileSync(path.join(out, 'ids.txt'), ids.join('\n') + '\n');
  const res = await run(allowed, `cat ${out}/ids.txt`, `printf '%s\\n' {ids} >> ${out}/ran.txt; printf '%s\\n' {id} >> ${out}/first.txt`, ['--max-batch', '10']);
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  assert.deepEqual(fs.readFileSync(path.join(out, 'ran.txt'), 'utf8').trim().split('\n').sort(), [...ids].sort());
  for (const dir of [allowed, out]) {
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('INJECTED')), [], `nothing was executed in ${dir}`);
  }
});

test('a pattern that backtracks catastrophically fails its own run, and another run goes through meanwhile', async () => {
  const [slow, other] = await Promise.all([
    run(allowed, `echo ${'a'.repeat(40)}!`, 'true', ['--pattern', '^(a+)+$']),
    run(allowed, 'seq 1 3', 'true'),
  ]);
  assert.equal(slow.code, 2, `${slow.stdout}\n${slow.stderr}`);
  assert.match(readReport(slow.reportDir).error ?? '', /took more than 5 s \(a pattern that backtracks/);
  assert.equal(other.code, 0, `${other.stdout}\n${other.stderr}`);
  assert.equal(readReport(other.reportDir).totals.passed, 3);
});

test('an image outside --allow-image is refused by every worker: the run fails naming it', async () => {
  const refused = await run(allowed, 'echo t1', 'true', ['--image', 'docker.io/someone/miner:latest']);
  assert.equal(refused.code, 2, `${refused.stdout}\n${refused.stderr}`);
  assert.match(readReport(refused.reportDir).error ?? '', /image docker\.io\/someone\/miner:latest is not one this supervisor runs \(--allow-image registry\.local\/\*\)/);
  const allowedImage = await run(allowed, 'echo t1', 'true', ['--image', 'registry.local/app:1']);
  assert.equal(allowedImage.code, 0, `${allowedImage.stdout}\n${allowedImage.stderr}`);
});
