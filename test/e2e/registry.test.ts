/**
 * The seed's registry step, for real: Debian's docker-registry on 127.0.0.1 with htpasswd
 * auth; the example suite's image built and pushed (docker/example-suite/push.sh), then
 * removed from the engine; a docker supervisor pulls it with the credentials, once however
 * many slots need it, and runs it. A wrong password fails the run, saying so.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Aggregator } from '../../services/aggregator/aggregator.js';
import { Dispatcher } from '../../services/dispatcher/dispatcher.js';
import { createLogger } from '../../shared/log.js';
import { createVhost, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { SUITE_IMAGE, ensureBaseImages } from '../helpers/docker.js';
import { ROOT, readReport, runCli, stopService, tmpDir, watchService } from '../helpers/cli.js';

const PORT = 5100 + Math.floor(Math.random() * 100);
const REGISTRY = `127.0.0.1:${PORT}`;
const USER = 'ci';
const PASSWORD = 'registry-password-3f9a';
let registry: ChildProcess;
let vhost: TestVhost;
let dispatcher: Dispatcher;
let aggregator: Aggregator;
let image: string;

before(async () => {
  ensureBaseImages();
  const dir = tmpDir('warren-registry-');
  fs.writeFileSync(path.join(dir, 'htpasswd'), execFileSync('htpasswd', ['-Bbn', USER, PASSWORD], { encoding: 'utf8' }));
  fs.writeFileSync(path.join(dir, 'config.yml'), [
    'version: 0.1', 'log:', '  level: warn', 'storage:', '  filesystem:', `    rootdirectory: ${dir}/data`,
    'http:', `  addr: ${REGISTRY}`, 'auth:', '  htpasswd:', '    realm: warren-test', `    path: ${dir}/htpasswd`, '',
  ].join('\n'));
  registry = spawn('docker-registry', ['serve', path.join(dir, 'config.yml')], { stdio: 'ignore' });
  await waitFor('the registry', () => fetch(`http://${REGISTRY}/v2/`).then((r) => r.status === 401, () => false), 30_000);
  // CI's step: log in, build, push; then the engine forgets the image (the hosts do not have it)
  execFileSync('docker', ['login', REGISTRY, '-u', USER, '--password-stdin'], { input: PASSWORD, stdio: ['pipe', 'ignore', 'inherit'] });
  image = execFileSync(path.join(ROOT, 'docker/example-suite/push.sh'), { encoding: 'utf8', env: { ...process.env, REGISTRY, TAG: 'test', BASE: SUITE_IMAGE } }).trim();
  spawnSync('docker', ['logout', REGISTRY], { stdio: 'ignore' });
  spawnSync('docker', ['rmi', '-f', image], { stdio: 'ignore' });
  const log = createLogger('test', 'error');
  vhost = await createVhost('warren-e2e-registry');
  dispatcher = new Dispatcher({ brokerUrl: vhost.url, log });
  aggregator = new Aggregator({ brokerUrl: vhost.url, reportDir: tmpDir(), log });
  await Promise.all([dispatcher.start(), aggregator.start()]);
});
after(async () => {
  await Promise.all([dispatcher?.stop(), aggregator?.stop()]);
  await vhost?.delete();
  registry?.kill('SIGKILL');
  if (image) spawnSync('docker', ['rmi', '-f', image], { stdio: 'ignore' });
});

const supervisor = (id: string, password: string) => watchService(['supervisor', '--broker', vhost.url, '--workers', '2', '--driver', 'docker', '--id', id], {
  WARREN_REGISTRY_AUTH: JSON.stringify({ username: USER, password, serveraddress: REGISTRY }),
});

test('a wrong registry password fails the run with a clear message', async () => {
  const wrong = supervisor('wrong-password', 'not-it');
  try {
    const reportDir = tmpDir();
    const res = await runCli(['run', '--broker', vhost.url, '--image', image, '--cwd', '/suite', '--adapter', 'rspec', '--report-dir', reportDir]);
    assert.equal(res.code, 2, `${res.stdout}\n${res.stderr}`);
    assert.match(readReport(reportDir).error ?? '', new RegExp(`cannot pull image ${image.replace(/[.:]/g, '\\$&')}: .*(unauthorized|authentication required)`, 'i'));
    assert.ok(!(res.stdout + res.stderr + wrong.lines.join('\n')).includes('not-it'), 'the password is not printed');
  } finally {
    await stopService(wrong.child);
  }
});

test('the pushed image is pulled with the credentials, once for both slots, and runs', async () => {
  const right = supervisor('registry-host', PASSWORD);
  try {
    const reportDir = tmpDir();
    const res = await runCli(['run', '--broker', vhost.url, '--image', image, '--cwd', '/suite', '--adapter', 'rspec', '--report-dir', reportDir]);
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
    const report = readReport(reportDir);
    assert.equal(report.totals.passed, 50);
    assert.equal(new Set(report.tests.map((t) => t.worker)).size, 2, 'both slots ran tests');
    const pulls = right.lines.filter((l) => l.includes('"image pulled"'));
    assert.equal(pulls.length, 1, `one pull for the host: ${pulls.join('\n')}`);
  } finally {
    await stopService(right.child);
  }
});
