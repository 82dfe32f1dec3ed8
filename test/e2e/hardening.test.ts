/**
 * Worker containers are hardened by default, checked on live containers of a real engine: a
 * user that is not root, every capability dropped, no-new-privileges, memory, CPU and pids
 * limits, no Docker socket; a fork bomb is stopped by the pids limit while the other slot
 * carries on; what a spec leaves running is gone before the next spec.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Aggregator } from '../../services/aggregator/aggregator.js';
import { Dispatcher } from '../../services/dispatcher/dispatcher.js';
import { createLogger } from '../../shared/log.js';
import { DEFAULT_CONTAINER_USER, DEFAULT_MEMORY, DEFAULT_PIDS_LIMIT } from '../../services/worker-supervisor/config.js';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';
import { SUITE_IMAGE, containersWithLabel, docker, ensureBaseImages } from '../helpers/docker.js';
import { readReport, runCli, startService, stopService, tmpDir } from '../helpers/cli.js';

let vhost: TestVhost;
let dispatcher: Dispatcher;
let aggregator: Aggregator;
before(async () => {
  ensureBaseImages();
  vhost = await createVhost('warren-e2e-hardening');
  const log = createLogger('test', 'error');
  dispatcher = new Dispatcher({ brokerUrl: vhost.url, log });
  aggregator = new Aggregator({ brokerUrl: vhost.url, reportDir: tmpDir(), log });
  await Promise.all([dispatcher.start(), aggregator.start()]);
});
after(async () => {
  await Promise.all([dispatcher.stop(), aggregator.stop()]);
  await vhost.delete();
});

/** One test per spec, each test's body by its id. */
function run(cases: Record<string, string>) {
  const reportDir = tmpDir();
  const body = Object.entries(cases).map(([id, sh]) => `${id}) ${sh} ;;`).join(' ');
  return runCli([
    'run', '--broker', vhost.url, '--image', SUITE_IMAGE, '--cwd', '/tmp', '--adapter', 'command', '--report-dir', reportDir,
    '--no-timings', '--max-rounds', '1', '--test-timeout', '120',
    '--discover-command', `printf '%s\\n' ${Object.keys(cases).join(' ')}`,
    '--run-command', `case {id} in ${body} esac`,
  ]).then((res) => ({ ...res, reportDir }));
}

// forks until the kernel refuses (the pids limit: the shell gives up with "can't fork"),
// then ends what it started: passes only if something stopped it before 5,000
const BOMB = `( n=0; while [ $n -lt 5000 ]; do sleep 60 & n=$((n+1)); done ) 2>/dev/null; r=$?; kill -9 -1; [ $r -ne 0 ]`;

test('containers are hardened by default; a fork bomb hits the pids limit and the other slot carries on', async () => {
  const supervisor = startService(['supervisor', '--broker', vhost.url, '--workers', '2', '--driver', 'docker', '--id', 'hardened']);
  try {
    const res = await run({
      checks: `[ "$(id -u)" != 0 ] && grep -q "^NoNewPrivs:[[:space:]]*1" /proc/self/status && grep -q "^CapEff:[[:space:]]*0000000000000000" /proc/self/status && touch "$HOME/h" "$TMPDIR/t" && ! touch /etc/x 2>/dev/null`,
      bomb: BOMB,
      'other-1': 'true', 'other-2': 'true', 'other-3': 'true', 'other-4': 'true',
    });
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
    const report = readReport(res.reportDir);
    assert.deepEqual(report.tests.map((t) => [t.id, t.status]).sort(), [['bomb', 'passed'], ['checks', 'passed'], ['other-1', 'passed'], ['other-2', 'passed'], ['other-3', 'passed'], ['other-4', 'passed']]);
    assert.equal(new Set(report.tests.map((t) => t.worker)).size, 2, 'both slots worked');
    const ids = containersWithLabel('warren.supervisor=hardened');
    assert.equal(ids.length, 2);
    for (const id of ids) {
      const c = JSON.parse(docker('inspect', id))[0] as {
        Config: { User: string };
        HostConfig: { CapDrop: string[]; SecurityOpt: string[]; PidsLimit: number; Memory: number; NanoCpus: number; ReadonlyRootfs: boolean };
        Mounts: Array<{ Source: string }>;
      };
      assert.equal(c.Config.User, DEFAULT_CONTAINER_USER);
      assert.deepEqual(c.HostConfig.CapDrop, ['ALL']);
      assert.ok(c.HostConfig.SecurityOpt.includes('no-new-privileges'), c.HostConfig.SecurityOpt.join(','));
      assert.equal(c.HostConfig.PidsLimit, DEFAULT_PIDS_LIMIT);
      assert.equal(c.HostConfig.Memory, DEFAULT_MEMORY);
      assert.ok(c.HostConfig.NanoCpus > 0);
      assert.ok(!c.Mounts.some((m) => m.Source.includes('docker.sock')), 'no Docker socket');
    }
  } finally {
    await stopService(supervisor);
  }
});

test("what a spec leaves running is killed, and its TMPDIR (a bounded tmpfs) emptied, before the slot's next spec; --read-only keeps the image read-only", async () => {
  const supervisor = startService(['supervisor', '--broker', vhost.url, '--workers', '1', '--driver', 'docker', '--id', 'clean', '--read-only', '--tmp-size', '8m']);
  try {
    const res = await run({
      // (the numbers computed: the command line, which every test's process shows, must not
      // hold what b looks for)
      'a-leaves': '(sleep $((999 + 1)) &) ; (sleep $((1000 + 1)) &) ; true',
      'b-finds-none': 'ps | grep "sleep 100[01]" >&2 && exit 3; touch "$TMPDIR/t" || exit 4; touch /tmp/t || exit 5; touch /x 2>/dev/null && exit 6; true',
      // TMPDIR is a tmpfs of --tmp-size: filling it fails the writer, not the host's disk
      'c-fills-tmp': 'head -c 20000000 /dev/zero > "$TMPDIR/big" 2>/dev/null && exit 7; [ -s "$TMPDIR/big" ]',
      'd-clean-tmp': '[ -z "$(ls -A "$TMPDIR")" ]',
    });
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
    assert.deepEqual(readReport(res.reportDir).tests.map((t) => [t.id, t.status]), [['a-leaves', 'passed'], ['b-finds-none', 'passed'], ['c-fills-tmp', 'passed'], ['d-clean-tmp', 'passed']]);
    const [id] = containersWithLabel('warren.supervisor=clean');
    assert.equal((JSON.parse(docker('inspect', id!))[0] as { HostConfig: { ReadonlyRootfs: boolean } }).HostConfig.ReadonlyRootfs, true);
  } finally {
    await stopService(supervisor);
  }
});

test('a mounted suite is read-only unless the operator says --mount-suite-rw', async () => {
  const suite = tmpDir('warren-mounted-');
  fs.chmodSync(suite, 0o777);
  fs.writeFileSync(path.join(suite, 'data'), 'the suite\n', { mode: 0o644 });
  const probe = (id: string) => runCli([
    'run', '--broker', vhost.url, '--image', SUITE_IMAGE, '--cwd', suite, '--adapter', 'command', '--report-dir', tmpDir(), '--no-timings', '--max-rounds', '1',
    '--discover-command', 'echo probe', '--run-command', `grep -q 'the suite' data && touch wrote-${id}`,
  ]);
  for (const [id, flag, code] of [['ro', '--mount-suite', 1], ['rw', '--mount-suite-rw', 0]] as const) {
    const supervisor = startService(['supervisor', '--broker', vhost.url, '--workers', '1', '--driver', 'docker', '--id', `mount-${id}`, flag]);
    try {
      const res = await probe(id);
      assert.equal(res.code, code, `${flag}: ${res.stdout}\n${res.stderr}`);
      assert.equal(fs.existsSync(path.join(suite, `wrote-${id}`)), code === 0);
    } finally {
      await stopService(supervisor);
    }
  }
});
