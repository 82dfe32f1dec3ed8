/**
 * The docker driver end to end: a real engine, images built here from the host's own
 * binaries, the real CLI with --local --driver docker.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createVhost, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { execFileSync, spawnSync } from 'node:child_process';
import { FIXTURES, ROOT, readReport, runCli, startService, stopService, tmpDir, watchService } from '../helpers/cli.js';
import { createLogger } from '../../shared/log.js';
import { Aggregator } from '../../services/aggregator/aggregator.js';
import { Dispatcher } from '../../services/dispatcher/dispatcher.js';
import { SUITE_IMAGE, containersWithLabel, docker, ensureBaseImages } from '../helpers/docker.js';

let vhost: TestVhost;
before(async () => {
  ensureBaseImages();
  vhost = await createVhost('warren-e2e-docker');
});
after(async () => {
  await vhost.delete();
});

/** A copy of a fixture suite in a fresh directory (mounted into the containers). */
function copySuite(name: string): string {
  const dir = tmpDir('warren-suite-');
  fs.cpSync(path.join(FIXTURES, name), dir, { recursive: true });
  fs.chmodSync(dir, 0o777);
  return dir;
}

const dockerRun = (suite: string, extra: string[]) =>
  runCli(['run', '--local', '--driver', 'docker', '--image', SUITE_IMAGE, '--cwd', suite, '--broker', vhost.url, ...extra]);

test('the RSpec fixture on containers: statuses as on local workers, no container left behind', async () => {
  const suite = copySuite('rspec-suite');
  const state = path.join(suite, 'state');
  fs.mkdirSync(state, { mode: 0o777 });
  const reportDir = tmpDir();
  const res = await dockerRun(suite, [
    '--workers', '2', '--adapter', 'rspec', '--exclude', 'killer', '--test-timeout', '4',
    '--rerun-threshold', '0.6', '--max-rounds', '2', '--env', `FLAKY_STATE_DIR=${state}`, '--report-dir', reportDir,
  ]);
  assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  const t = new Map(report.tests.map((x) => [x.id, x]));
  assert.equal(report.totals.total, 29);
  assert.equal(t.get('./spec/failing_spec.rb[1:3]')!.message, 'RuntimeError: boom from failing_spec');
  assert.equal(t.get('./spec/flaky_spec.rb[1:1]')!.status, 'flaky');
  assert.equal(t.get('./spec/hanging_spec.rb[1:1]')!.message, 'timed out after 4 s');
  assert.equal(t.get('./spec/hanging_spec.rb[1:2]')!.status, 'passed');
  assert.match(t.get('./spec/broken_spec.rb')!.message!, /this_method_does_not_exist!/);
  assert.equal(report.totals.pending, 2);
  // the env spec ran in a container: it saw a worker number, and not this host's pid space
  const env = fs.readdirSync(state).filter((f) => f.startsWith('env-'));
  assert.equal(env.length, 1);
  assert.match(fs.readFileSync(path.join(state, env[0]!), 'utf8'), /WARREN_WORKER_INDEX=\d/);
  assert.deepEqual(containersWithLabel('warren.supervisor'), [], 'every worker container removed, the hung test\'s included');
});

test('each slot is its own container with its own TEST_ENV_NUMBER; --isolation spec gives each spec a fresh one', async () => {
  const suite = tmpDir('warren-suite-');
  fs.chmodSync(suite, 0o777);
  const common = ['--adapter', 'command', '--discover-command', 'seq 1 8', '--run-command', 'echo "$TEST_ENV_NUMBER|$(hostname)" > marks-{id}; sleep 0.5'];
  const res = await dockerRun(suite, ['--workers', '3', ...common, '--report-dir', tmpDir()]);
  assert.equal(res.code, 0, res.stderr);
  const seen = fs.readdirSync(suite).filter((f) => f.startsWith('marks-')).map((f) => fs.readFileSync(path.join(suite, f), 'utf8').trim().split('|'));
  assert.equal(seen.length, 8);
  const byHost = new Map<string, Set<string>>();
  for (const [envNumber, host] of seen) byHost.set(host!, (byHost.get(host!) ?? new Set()).add(envNumber!));
  assert.ok(byHost.size >= 2, `tests ran in ${byHost.size} containers`);
  assert.ok(!byHost.has(os.hostname()), 'not on the host');
  for (const [host, numbers] of byHost) assert.equal(numbers.size, 1, `container ${host} is one worker`);
  assert.equal(new Set([...byHost.values()].map((s) => [...s][0])).size, byHost.size, 'different containers, different TEST_ENV_NUMBER');

  for (const f of fs.readdirSync(suite)) fs.rmSync(path.join(suite, f));
  const fresh = await dockerRun(suite, ['--workers', '1', '--isolation', 'spec', ...common, '--report-dir', tmpDir()]);
  assert.equal(fresh.code, 0, fresh.stderr);
  const hosts = new Set(fs.readdirSync(suite).map((f) => fs.readFileSync(path.join(suite, f), 'utf8').trim().split('|')[1]));
  assert.equal(hosts.size, 8, 'one container per spec');
});

test('docker kill of a worker container mid-test: the run completes, every test reported once', async () => {
  const suite = tmpDir('warren-suite-');
  fs.chmodSync(suite, 0o777);
  const reportDir = tmpDir();
  // Test 3's first attempt holds its container until the kill: the victim is known to have
  // a test in hand (a container between two tests would prove nothing).
  const run = dockerRun(suite, [
    '--workers', '2', '--adapter', 'command', '--discover-command', 'seq 1 16',
    '--run-command', 'echo "$(hostname)" >> started-{id}; if [ {id} = 3 ] && [ "$(wc -l < started-3)" = 1 ]; then sleep 60; else sleep 0.6; fi',
    '--report-dir', reportDir,
  ]);
  const victim = await waitFor('test 3 running in a worker container', () => {
    const file = path.join(suite, 'started-3');
    if (!fs.existsSync(file)) return undefined;
    const host = fs.readFileSync(file, 'utf8').trim().split('\n')[0];
    return host ? containersWithLabel('warren.slot').find((id) => host.startsWith(id) || id.startsWith(host)) : undefined;
  }, 120_000);
  docker('kill', victim);
  const res = await run;
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  assert.equal(report.totals.passed, 16, JSON.stringify(report.tests.filter((t) => t.status !== 'passed')));
  assert.deepEqual(report.tests.map((t) => Number(t.id)).sort((a, b) => a - b), Array.from({ length: 16 }, (_, i) => i + 1));
  const again = fs.readFileSync(path.join(suite, 'started-3'), 'utf8').trim().split('\n');
  assert.equal(again.length, 2, 'the test in the killed container ran again');
  assert.notEqual(again[1], again[0], 'in another container');
});

test('a test that runs out of memory is failed as such; the others run', async () => {
  const suite = tmpDir('warren-suite-');
  fs.chmodSync(suite, 0o777);
  const reportDir = tmpDir();
  const res = await dockerRun(suite, [
    '--workers', '1', '--memory', '64m', '--adapter', 'command', '--discover-command', 'printf "small\\nhog\\n"',
    '--run-command', 'if [ {id} = hog ]; then ruby -e "a = %q(x) * 400_000_000; puts a.size"; else true; fi',
    '--report-dir', reportDir, '--max-rounds', '1',
  ]);
  assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
  const t = new Map(readReport(reportDir).tests.map((x) => [x.id, x]));
  assert.equal(t.get('small')!.status, 'passed');
  assert.equal(t.get('hog')!.status, 'failed');
  assert.equal(t.get('hog')!.message, 'killed: out of memory (container memory limit 64 MiB)');
});

test('an image that cannot be had ends the run with one clear error', async () => {
  const res = await runCli([
    'run', '--local', '--driver', 'docker', '--image', 'warren-no-such-image:never', '--workers', '1',
    '--adapter', 'rspec', '--cwd', path.join(FIXTURES, 'rspec-suite'), '--broker', vhost.url, '--report-dir', tmpDir(),
  ]);
  assert.equal(res.code, 2, res.stdout);
  assert.match(res.stdout, /could not run[\s\S]*discovery failed: .*cannot pull image warren-no-such-image:never/);
});

test('the code baked into the image (the example suite image), on a supervisor of the docker driver', async () => {
  execFileSync('docker', ['build', '-q', '-f', path.join(ROOT, 'docker/example-suite/Dockerfile'), '--build-arg', `BASE=${SUITE_IMAGE}`, '-t', 'warren-example-suite:test', ROOT], { stdio: 'ignore' });
  const log = createLogger('test', 'error');
  const url = vhost.url;
  const dispatcher = new Dispatcher({ brokerUrl: url, log });
  const aggregator = new Aggregator({ brokerUrl: url, reportDir: tmpDir(), log });
  await Promise.all([dispatcher.start(), aggregator.start()]);
  const supervisor = startService(['supervisor', '--broker', url, '--workers', '2', '--driver', 'docker', '--id', 'baked', '--memory', '256m']);
  try {
    const reportDir = tmpDir();
    const res = await runCli(['run', '--broker', url, '--image', 'warren-example-suite:test', '--cwd', '/suite', '--adapter', 'rspec', '--report-dir', reportDir]);
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
    const report = readReport(reportDir);
    assert.equal(report.totals.passed, 50);
    assert.ok(report.tests.every((t) => /^baked\/[01]$/.test(t.worker!)));
    const noAdapter = await runCli(['run', '--broker', url, '--image', 'warren-example-suite:test', '--cwd', '/suite']);
    assert.equal(noAdapter.code, 2);
    assert.match(noAdapter.stderr, /--adapter: required when --cwd is a path inside --image/);
  } finally {
    await stopService(supervisor);
    await Promise.all([dispatcher.stop(), aggregator.stop()]);
  }
  assert.deepEqual(containersWithLabel('warren.supervisor=baked'), [], 'a drained supervisor removes its containers');
});

test('a supervisor that starts removes the containers its earlier, crashed self left behind', async () => {
  const orphan = docker('run', '-d', '--network', 'none', '--label', 'warren.supervisor=phoenix', '--label', 'warren.slot=0', SUITE_IMAGE, 'sleep', '3600');
  const stranger = docker('run', '-d', '--network', 'none', '--label', 'warren.supervisor=someone-else', SUITE_IMAGE, 'sleep', '3600');
  try {
    assert.deepEqual(containersWithLabel('warren.supervisor=phoenix'), [orphan.slice(0, 12)]);
    const supervisor = startService(['supervisor', '--broker', vhost.url, '--workers', '1', '--driver', 'docker', '--id', 'phoenix']);
    try {
      await waitFor('the orphan to be removed', () => containersWithLabel('warren.supervisor=phoenix').length === 0, 30_000);
    } finally {
      await stopService(supervisor);
    }
    assert.deepEqual(containersWithLabel('warren.supervisor=someone-else'), [stranger.slice(0, 12)], 'other supervisors\' containers are left alone');
  } finally {
    docker('rm', '-f', stranger);
    spawnSync('docker', ['rm', '-f', orphan], { stdio: 'ignore' });
  }
});

test('a host whose worker containers keep dying is drained; its jobs pass elsewhere, none is failed for it', async () => {
  const log = createLogger('test', 'error');
  const url = vhost.url;
  const dispatcher = new Dispatcher({ brokerUrl: url, log });
  const aggregator = new Aggregator({ brokerUrl: url, reportDir: tmpDir(), log });
  await Promise.all([dispatcher.start(), aggregator.start()]);
  const suite = tmpDir('warren-suite-');
  fs.chmodSync(suite, 0o777);
  // (the tests write markers into their suite: mounted writable)
  // The sick host: every one of its containers that starts a test is killed under it (its
  // engine, say, keeps losing them). Until the fix, each death was counted against the test
  // in hand and healthy tests failed "crashed its worker 4 times".
  const sick = watchService(['supervisor', '--broker', url, '--workers', '2', '--driver', 'docker', '--mount-suite-rw', '--id', 'sick']);
  let well: ReturnType<typeof startService> | undefined;
  let injecting = true;
  const killed = new Set<string>();
  const injector = (async () => {
    while (injecting) {
      const running = containersWithLabel('warren.supervisor=sick');
      for (const f of fs.readdirSync(suite).filter((n) => n.startsWith('started-'))) {
        for (const host of fs.readFileSync(path.join(suite, f), 'utf8').trim().split('\n')) {
          const victim = running.find((id) => host && (host.startsWith(id) || id.startsWith(host)));
          if (victim && !killed.has(victim)) {
            killed.add(victim);
            spawnSync('docker', ['kill', victim], { stdio: 'ignore' });
          }
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  try {
    const reportDir = tmpDir();
    const run = runCli(['run', '--broker', url, '--image', SUITE_IMAGE, '--cwd', suite, '--adapter', 'command',
      '--discover-command', 'seq 1 12', '--run-command', 'echo "$(hostname)" >> started-{id}; sleep 1', '--report-dir', reportDir]);
    const drained = await sick.logged('this host is drained: no more jobs are taken here until the supervisor is restarted', 180_000);
    assert.match(String(drained.reason), /3 worker environments broke under different jobs within 10 min; last: container [0-9a-f]{12} died/);
    injecting = false;
    await injector;
    well = startService(['supervisor', '--broker', url, '--workers', '2', '--driver', 'docker', '--mount-suite-rw', '--id', 'well']);
    const res = await run;
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
    const report = readReport(reportDir);
    assert.equal(report.totals.passed, 12, JSON.stringify(report.tests.filter((t) => t.status !== 'passed')));
    // (the jobs in hand when the host was drained finish there: the injector stopped)
    assert.ok(report.tests.some((t) => t.worker!.startsWith('well/')), 'the rest ran on the healthy host');
    const hostsOut = await runCli(['hosts', '--broker', url, '--listen', '3']);
    assert.match(hostsOut.stdout, /^sick .* drained /m);
    assert.match(hostsOut.stdout, /drained: 3 worker environments broke/);
    assert.match(hostsOut.stdout, /^well .* running /m);
  } finally {
    injecting = false;
    await injector;
    if (well) await stopService(well);
    await stopService(sick.child);
    await Promise.all([dispatcher.stop(), aggregator.stop()]);
  }
});
