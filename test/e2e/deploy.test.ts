/**
 * `warren deploy` over real SSH to 127.0.0.1: the worker compose file brings up a
 * supervisor (the services image, built here) that takes part in a run; `warren hosts`
 * shows it; `--down` removes it. The compose files pass `docker-compose config`.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { createLogger } from '../../shared/log.js';
import { Aggregator } from '../../services/aggregator/aggregator.js';
import { Dispatcher } from '../../services/dispatcher/dispatcher.js';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';
import { ROOT, readReport, runCli, tmpDir } from '../helpers/cli.js';
import { SERVICES_IMAGE, SUITE_IMAGE, docker, ensureBaseImages, ensureServicesImage } from '../helpers/docker.js';
import { startSshd, type TestSshd } from '../helpers/sshd.js';

let vhost: TestVhost;
let sshd: TestSshd;
let dispatcher: Dispatcher;
let aggregator: Aggregator;
const hostName = `deploy-test-${randomBytes(3).toString('hex')}`;
const project = `warren-${hostName}`;

before(async () => {
  ensureBaseImages();
  ensureServicesImage();
  vhost = await createVhost('warren-e2e-deploy');
  sshd = await startSshd(2200 + Math.floor(Math.random() * 500));
  const log = createLogger('test', 'error');
  dispatcher = new Dispatcher({ brokerUrl: vhost.url, log });
  aggregator = new Aggregator({ brokerUrl: vhost.url, reportDir: tmpDir(), log });
  await Promise.all([dispatcher.start(), aggregator.start()]);
});
after(async () => {
  spawnSync('docker-compose', ['-p', project, 'down', '--timeout', '5'], { cwd: path.join(process.env.HOME ?? '/root', project), stdio: 'ignore' });
  await Promise.all([dispatcher?.stop(), aggregator?.stop()]);
  sshd?.stop();
  await vhost?.delete();
});

test('the compose files pass docker-compose config', () => {
  const env = {
    ...process.env, WARREN_BROKER_URL: 'amqp://x', WARREN_DISPATCHER_URL: 'amqp://d', WARREN_AGGREGATOR_URL: 'amqp://a', WARREN_BROKER_HOST: 'warren-broker-1', RABBITMQ_ERLANG_COOKIE: 'x',
    WARREN_TLS_DIR: '/tmp', WARREN_GITHUB_SUBMITTER_URL: 'amqp://s', WARREN_GITHUB_WEBHOOK_SECRET: 'x', GITHUB_TOKEN: 't', WARREN_GITHUB_ARGS: '--adapter rspec --cwd /suite',
  };
  // (the overrides are laid over the control plane's file)
  for (const files of [['control-plane'], ['worker'], ['cluster-node'], ['control-plane', 'tls'], ['control-plane', 'github']]) {
    const r = spawnSync('docker-compose', [...files.flatMap((f) => ['-f', path.join(ROOT, `deploy/${f}.compose.yml`)]), 'config', '-q'], { encoding: 'utf8', env });
    assert.equal(r.status, 0, `${files.join(' + ')}: ${r.stderr}`);
  }
});

test('deploy brings a supervisor up over SSH; it takes part in a run; hosts shows it; --down removes it', async () => {
  const matrixFile = path.join(tmpDir(), 'matrix.json');
  fs.writeFileSync(matrixFile, JSON.stringify({
    // (the test vhost's guest user has no role: no --require-roles)
    broker: vhost.url, image: SERVICES_IMAGE, suiteImage: SUITE_IMAGE, requireRoles: false,
    hosts: [{ name: hostName, address: '127.0.0.1', port: sshd.port, user: 'root', key: sshd.key, workers: 2, labels: { rack: 'test' } }],
  }));
  const compose = path.join(ROOT, 'deploy/worker.compose.yml');
  const up = await runCli(['deploy', '--matrix', matrixFile, '--compose', compose]);
  assert.equal(up.code, 0, `${up.stdout}\n${up.stderr}`);
  assert.match(up.stdout, new RegExp(`ok +${hostName}: supervisor up, 2 workers`));
  assert.equal(docker('ps', '-q', '--filter', `label=com.docker.compose.project=${project}`).split('\n').filter(Boolean).length, 1);

  const listed = await runCli(['hosts', '--broker', vhost.url, '--matrix', matrixFile, '--listen', '6']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.match(listed.stdout, new RegExp(`${hostName} +\\S+ +docker +running +2 +\\d+ .*rack=test`));

  const reportDir = tmpDir();
  const res = await runCli([
    'run', '--broker', vhost.url, '--adapter', 'command', '--cwd', '/tmp', '--image', SUITE_IMAGE,
    '--discover-command', 'seq 1 6', '--run-command', 'test -n "$TEST_ENV_NUMBER$WARREN_WORKER_INDEX"', '--report-dir', reportDir,
  ]);
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  assert.equal(report.totals.passed, 6);
  for (const t of report.tests) assert.match(t.worker!, new RegExp(`^${hostName}/[01]$`), 'run by the deployed supervisor');

  const down = await runCli(['deploy', '--down', '--matrix', matrixFile, '--compose', compose]);
  assert.equal(down.code, 0, down.stdout);
  assert.match(down.stdout, new RegExp(`ok +${hostName}: supervisor down`));
  assert.equal(docker('ps', '-aq', '--filter', `label=com.docker.compose.project=${project}`), '');
  assert.equal(docker('ps', '-aq', '--filter', `label=warren.supervisor=${hostName}`), '', 'its worker containers are gone too');
});

test('a host that does not answer is retried until the deadline, and reported; the others are not held up', async () => {
  const matrixFile = path.join(tmpDir(), 'matrix.json');
  fs.writeFileSync(matrixFile, JSON.stringify({
    broker: vhost.url, image: SERVICES_IMAGE,
    hosts: [{ name: 'down-host', address: '127.0.0.1', port: 1, user: 'root', key: sshd.key, workers: 1 }],
  }));
  const res = await runCli(['deploy', '--down', '--matrix', matrixFile, '--deadline', '3', '--retry', '1']);
  assert.equal(res.code, 1);
  assert.match(res.stdout, /down-host: not answering \(connect ECONNREFUSED 127\.0\.0\.1:1\), retrying in 1 s/);
  assert.match(res.stdout, /FAILED down-host: unreachable after \d+ attempts/);
});

test('a bad matrix is refused with the field named', async () => {
  const matrixFile = path.join(tmpDir(), 'matrix.json');
  fs.writeFileSync(matrixFile, JSON.stringify({ broker: 'amqp://x', image: 'i', hosts: [{ name: 'a', address: 'h', user: 'u', key: 'k', workers: 0 }] }));
  const res = await runCli(['deploy', '--matrix', matrixFile]);
  assert.equal(res.code, 2);
  assert.match(res.stderr, /^warren: --matrix .*: hosts\.0\.workers: /);
});
