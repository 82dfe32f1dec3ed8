/**
 * End to end on the jest, vitest, node:test, pytest, Go and Playwright fixture suites: the real CLI with
 * --local on a vhost of its own, one round (`--max-rounds 1`, a fresh FLAKY_STATE_DIR: the
 * flaky test fails its first attempt, as in a plain run), then the fixture's compare.mjs
 * --report: Warren's report must list exactly the tests, statuses and failure messages of the
 * framework's own plain run, the file (package) that fails to load as a failed test.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';
import { FIXTURES, readReport, runCli, tmpDir } from '../helpers/cli.js';
import type { RunReport } from '../../shared/messages.js';

let vhost: TestVhost;
before(async () => {
  vhost = await createVhost('warren-e2e-adapters');
});
/** Temporary directories of the tests that passed (a failed test's stay, for a look). */
const cleanup: string[] = [];
after(async () => {
  await vhost.delete();
  for (const d of cleanup) fs.rmSync(d, { recursive: true, force: true });
});

interface Proc {
  code: number | null;
  signal: string | null;
  output: string;
}

/** Runs a command to its end (stdout and stderr together), killed after timeoutMs. */
function run(cmd: string, args: string[], opts: { cwd?: string; env?: Record<string, string>; timeoutMs: number }): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c) => (output += c));
    child.stderr.on('data', (c) => (output += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')} did not finish in ${opts.timeoutMs} ms\n${output}`));
    }, opts.timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

/** `npm ci` in a fixture whose node_modules is missing. */
async function ensureNodeModules(dir: string): Promise<void> {
  if (fs.existsSync(path.join(dir, 'node_modules'))) return;
  const res = await run('npm', ['ci', '--no-audit', '--no-fund'], { cwd: dir, timeoutMs: 600_000 });
  assert.equal(res.code, 0, `npm ci in ${dir}\n${res.output}`);
}

/** Debian's python3 when it has pytest; otherwise Warren (and compare.mjs) pick the interpreter. */
const systemPytest = spawnSync('/usr/bin/python3', ['-c', 'import pytest'], { stdio: 'ignore' }).status === 0;

interface Fixture {
  adapter: string;
  dir: string;
  /** Discovery entries, as the fixture's README says. */
  total: number;
  /** The id of the file (package) that fails to load. */
  brokenId: string;
  needsNodeModules?: boolean;
  /** Another version of the framework: a copy of the fixture with this directory's
   * package.json and package-lock.json (test/fixtures/versions/<name>). */
  version?: string;
  /** Environment for the test processes and for compare.mjs (fresh directories each call). */
  env?: () => { env: Record<string, string>; dirs: string[] };
}

const FIXTURE: Record<string, Fixture> = {
  jest: { adapter: 'jest', dir: 'jest-suite', total: 27, brokenId: 'test/broken.test.js', needsNodeModules: true },
  vitest: { adapter: 'vitest', dir: 'vitest-suite', total: 28, brokenId: 'test/broken.test.js', needsNodeModules: true },
  'node-test': { adapter: 'node-test', dir: 'node-test-suite', total: 25, brokenId: 'test/broken.test.js' },
  pytest: {
    adapter: 'pytest', dir: 'pytest-suite', total: 52, brokenId: 'tests/test_broken.py',
    env: () => ({ env: systemPytest ? { WARREN_PYTHON: '/usr/bin/python3' } : ({} as Record<string, string>), dirs: [] }),
  },
  playwright: { adapter: 'playwright', dir: 'playwright-suite', total: 13, brokenId: 'tests/broken.spec.js', needsNodeModules: true },
  go: {
    adapter: 'go', dir: 'go-suite', total: 23, brokenId: 'example.com/warrenfixture/broken',
    env: () => {
      const home = tmpDir('warren-go-');
      return { env: { GOCACHE: path.join(home, 'cache'), GOPATH: path.join(home, 'gopath'), HOME: home }, dirs: [home] };
    },
  },
};

const envFlags = (env: Record<string, string>) => Object.entries(env).flatMap(([k, v]) => ['--env', `${k}=${v}`]);

interface FixtureRun {
  report: RunReport;
  reportFile: string;
  /** Temporary directories of the run, removed when its test passes. */
  dirs: string[];
  env: Record<string, string>;
  cwd: string;
}

/** `warren run --local --workers 2 --max-rounds 1` on a fixture; asserts exit 1 (it has failures). */
async function runFixture(f: Fixture, extra: string[] = []): Promise<FixtureRun> {
  const { env, dirs } = f.env?.() ?? { env: {}, dirs: [] };
  let cwd = path.join(FIXTURES, f.dir);
  if (f.version) {
    // beside the fixture (compare.mjs finds Warren's plug-ins by its own place), git-ignored;
    // its node_modules stays for the next run, as the fixtures' own do
    const copy = path.join(FIXTURES, `${f.dir}-${f.version}`);
    fs.cpSync(cwd, copy, { recursive: true, filter: (src) => path.basename(src) !== 'node_modules' });
    for (const file of ['package.json', 'package-lock.json']) fs.copyFileSync(path.join(FIXTURES, 'versions', f.version, file), path.join(copy, file));
    cwd = copy;
  }
  if (f.needsNodeModules) await ensureNodeModules(cwd);
  const state = tmpDir('warren-flaky-');
  const reportDir = tmpDir('warren-report-');
  const res = await runCli([
    'run', '--local', '--workers', '2', '--adapter', f.adapter, '--cwd', cwd, '--max-rounds', '1',
    '--env', `FLAKY_STATE_DIR=${state}`, ...envFlags(env), '--report-dir', reportDir, '--broker', vhost.url, ...extra,
  ], { timeoutMs: 300_000 });
  assert.equal(res.code, 1, `warren run (${f.adapter}): exit 1 on failures (report in ${reportDir})\n${res.stdout}\n${res.stderr}`);
  return { report: readReport(reportDir), reportFile: path.join(reportDir, 'report.json'), dirs: [...dirs, state, reportDir], env, cwd };
}

const reportsByAdapter = new Map<string, FixtureRun>();

/**
 * Warren's report on a fixture, then `compare.mjs --report` against the framework's plain
 * run; `exclude` leaves files out of Warren's run (compare.mjs leaves them out of its own).
 */
function fidelityTest(name: string, f: Fixture, exclude?: string) {
  test(`${name}: Warren's report lists exactly what a plain ${name} run reports, the broken file failed`, async (ctx) => {
    const t0 = Date.now();
    const r = await runFixture(f, exclude ? ['--exclude', exclude] : []);
    reportsByAdapter.set(name, r);
    const warrenMs = Date.now() - t0;
    const { report } = r;
    const where = `(report: ${r.reportFile})`;
    assert.equal(report.totals.total, f.total, `every test of the README once${exclude ? ', but the excluded ones' : ''} ${where}`);
    assert.equal(new Set(report.tests.map((t) => t.id)).size, report.tests.length, `each test once ${where}`);
    if (exclude) {
      const excluded = new RegExp(exclude);
      assert.deepEqual(report.tests.filter((t) => excluded.test(t.file)).map((t) => t.id), [], `nothing of the excluded files ${where}`);
    }
    const broken = report.tests.find((t) => t.id === f.brokenId);
    assert.ok(broken, `the file that fails to load, ${f.brokenId}, is in the report ${where}`);
    assert.equal(broken.status, 'failed', `${f.brokenId} is failed: ${broken.message} ${where}`);

    const t1 = Date.now();
    const plainState = tmpDir('warren-flaky-plain-');
    const cmp = await run(process.execPath, [path.join(r.cwd, 'compare.mjs'), '--report', r.reportFile], {
      env: { ...r.env, FLAKY_STATE_DIR: plainState },
      timeoutMs: 600_000,
    });
    assert.equal(cmp.code, 0, `compare.mjs --report ${r.reportFile}: exit ${cmp.code}\n${cmp.output}`);
    ctx.diagnostic(`${name}: warren run ${warrenMs} ms, compare ${Date.now() - t1} ms: ${cmp.output.trim().split('\n').pop()}`);
    cleanup.push(...r.dirs, plainState);
  });
}

for (const name of ['jest', 'vitest', 'node-test', 'pytest', 'go', 'playwright']) fidelityTest(name, FIXTURE[name]!);

// the oldest supported majors, the same comparison
fidelityTest('jest 29', { ...FIXTURE.jest!, version: 'jest-29' });
fidelityTest('vitest 1', { ...FIXTURE.vitest!, version: 'vitest-1' });

/** The pytest on PATH when its major differs from Debian's (this machine: pyenv's, pytest 9). */
const otherPytest = (() => {
  const ask = (python: string) => spawnSync(python, ['-c', 'import pytest, sys; print(pytest.__version__.split(".")[0], sys.executable)'], { encoding: 'utf8' });
  const system = ask('/usr/bin/python3').stdout?.split(' ')[0];
  const [major, executable] = (ask('python3').stdout ?? '').trim().split(' ');
  return major && executable && major !== system ? { major, executable } : undefined;
})();
if (otherPytest) {
  fidelityTest(`pytest ${otherPytest.major}`, { ...FIXTURE.pytest!, env: () => ({ env: { WARREN_PYTHON: otherPytest.executable }, dirs: [] }) });
} else {
  test('pytest: a second major', { skip: 'only one pytest major on this machine (Debian\'s python3-pytest, no other python3 with pytest on PATH)' }, () => {});
}
/** pytest 8, in the venv .ci/run makes from the machine's local wheel mirror. */
const PYTEST8_PYTHON = process.env.WARREN_PYTEST8_PYTHON ?? '/opt/warren-pytest8/bin/python';
const pytest8 = spawnSync(PYTEST8_PYTHON, ['-c', 'import pytest; print(pytest.__version__)'], { encoding: 'utf8' }).stdout?.trim();
if (pytest8?.startsWith('8.')) {
  fidelityTest('pytest 8', { ...FIXTURE.pytest!, env: () => ({ env: { WARREN_PYTHON: PYTEST8_PYTHON }, dirs: [] }) });
} else {
  test('pytest 8', { skip: `no pytest 8 at ${PYTEST8_PYTHON} (.ci/run makes it from /opt/pypi)` }, () => {});
}

test('--only-failures-from runs again exactly the tests that failed in the earlier report', async () => {
  const f = FIXTURE.jest!;
  const first = reportsByAdapter.get('jest') ?? (await runFixture(f));
  const failed = first.report.tests.filter((t) => t.status === 'failed').map((t) => t.id).sort();
  assert.ok(failed.length > 0 && failed.length < first.report.tests.length, `some tests failed, not all (${first.reportFile})`);
  const second = await runFixture(f, ['--only-failures-from', first.reportFile]);
  const ids = second.report.tests.map((t) => t.id).sort();
  assert.deepEqual(ids, failed, `the second run (${second.reportFile}) has exactly the failures of the first (${first.reportFile})`);
  assert.equal(second.report.totals.total, failed.length);
  cleanup.push(...first.dirs, ...second.dirs);
});

/**
 * The same on the rspec and mocha fixture suites, less their killer file (it SIGKILLs the
 * worker that launched it, WARREN_SLOT_PID, by design) and their hanging one (it never ends):
 * `--exclude` leaves them out of Warren's run, compare.mjs out of the plain run. Both
 * frameworks abort a whole run on a file that fails to load, so compare.mjs runs them one
 * file at a time; the broken file must be in Warren's report as a failed test whose id is
 * the file.
 */
const EXCLUDE_UNRUNNABLE = 'killer|hanging|Killer|Hanging';
const EVENTS_FIXTURE: Record<string, Fixture> = {
  // the README's 31 (rspec) and 26 (mocha) entries, less 2 killer and 2 hanging tests
  rspec: { adapter: 'rspec', dir: 'rspec-suite', total: 27, brokenId: './spec/broken_spec.rb' },
  mocha: { adapter: 'mocha', dir: 'mocha-suite', total: 22, brokenId: 'test/broken.test.js' },
};

for (const name of ['rspec', 'mocha']) fidelityTest(name, EVENTS_FIXTURE[name]!, EXCLUDE_UNRUNNABLE);
// the oldest supported major (the fixture's own is Warren's mocha, 11)
fidelityTest('mocha 10', { ...EVENTS_FIXTURE.mocha!, version: 'mocha-10', needsNodeModules: true }, EXCLUDE_UNRUNNABLE);
