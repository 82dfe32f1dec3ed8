/**
 * End to end: Warren runs what the project's own test command runs. For each adapter, a
 * command with options and paths that change what runs (package.json scripts.test, or the
 * words after `warren run --`), run by the real CLI with --local; then the same command run
 * by the framework itself: the same tests (and, where the framework says, the same
 * statuses). The first line of warren's output names what it took from where.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';
import { FIXTURES, ROOT, readReport, runCli, tmpDir } from '../helpers/cli.js';

let vhost: TestVhost;
before(async () => {
  vhost = await createVhost('warren-e2e-test-command');
});
const cleanup: string[] = [];
after(async () => {
  await vhost.delete();
  for (const d of cleanup) fs.rmSync(d, { recursive: true, force: true });
});

/** A command's stdout (stderr kept for the message), killed after 5 minutes. */
function output(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    // not a child of this test run's own node --test (its NODE_TEST_CONTEXT would make it one)
    const { NODE_TEST_CONTEXT: _, ...inherited } = process.env;
    const child = spawn(cmd, args, { cwd, env: { ...inherited, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** `warren run --local` in `cwd` (one round); the report's tests as "name → status", and warren's first line. */
async function warren(cwd: string, extra: string[], env: Record<string, string> = {}) {
  const reportDir = tmpDir('warren-report-');
  const envFlags = Object.entries(env).flatMap(([k, v]) => ['--env', `${k}=${v}`]);
  const res = await runCli(['run', '--local', '--workers', '2', '--cwd', cwd, '--max-rounds', '1', '--report-dir', reportDir, '--broker', vhost.url, ...envFlags, ...extra], { timeoutMs: 300_000 });
  assert.notEqual(res.code, 2, `warren run in ${cwd}\n${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  cleanup.push(reportDir);
  return { first: res.stderr.split('\n')[0]!, report, tests: new Map(report.tests.map((t) => [t.name, t.status])), ids: report.tests.map((t) => t.id).sort() };
}

const sortedEntries = (m: Map<string, string>) => [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));

test('mocha: scripts.test through npm run and &&, with --require, --check-leaks and a second directory, runs exactly as the script', async () => {
  const cwd = path.join(FIXTURES, 'mocha-script-suite');
  const w = await warren(cwd, []);
  assert.equal(w.first, "warren: mocha --require test/support/env --check-leaks test/ test/acceptance/ (from package.json scripts.test); env NODE_ENV=test; left out: --reporter dot (Warren reports)");
  // the script's own command, with mocha's JSON reporter instead of dot
  const mocha = path.join(ROOT, 'node_modules/mocha/bin/mocha.js');
  const own = await output(process.execPath, [mocha, '--require', 'test/support/env', '--reporter', 'json', '--check-leaks', 'test/', 'test/acceptance/'], cwd, { NODE_ENV: 'test' });
  const json = JSON.parse(own.stdout) as { passes: Array<{ fullTitle: string }>; failures: Array<{ fullTitle: string }> };
  const expected = new Map([...json.passes.map((t) => [t.fullTitle, 'passed'] as const), ...json.failures.map((t) => [t.fullTitle, 'failed'] as const)]);
  assert.equal(expected.size, 4, own.stdout);
  assert.equal(expected.get('acceptance leaks a global'), 'failed', 'the leak fails under --check-leaks');
  assert.deepEqual(sortedEntries(w.tests), sortedEntries(expected));
});

test('jest: --color=true from scripts.test reaches chalk, so coloured snapshots match as in the project\'s run', async () => {
  // a copy with the jest-suite fixture's node_modules (jest 30, chalk 4)
  const jestSuite = path.join(FIXTURES, 'jest-suite');
  if (!fs.existsSync(path.join(jestSuite, 'node_modules'))) {
    assert.equal(spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: jestSuite, stdio: 'ignore' }).status, 0, 'npm ci in the jest-suite fixture');
  }
  const cwd = tmpDir('warren-jest-script-');
  fs.cpSync(path.join(FIXTURES, 'jest-script-suite'), cwd, { recursive: true });
  fs.symlinkSync(path.join(jestSuite, 'node_modules'), path.join(cwd, 'node_modules'));
  const w = await warren(cwd, []);
  assert.equal(w.first, 'warren: jest --color=true --ci test/ (from package.json scripts.test)');
  const own = await output(process.execPath, ['node_modules/jest/bin/jest.js', '--color=true', '--ci', 'test/', '--json'], cwd);
  const json = JSON.parse(own.stdout) as { testResults: Array<{ assertionResults: Array<{ fullName: string; status: string }> }> };
  const expected = new Map(json.testResults.flatMap((f) => f.assertionResults.map((a) => [a.fullName, a.status] as const)));
  assert.deepEqual([...expected.values()], ['passed', 'passed', 'passed'], own.stdout);
  assert.deepEqual(sortedEntries(w.tests), sortedEntries(expected));
  cleanup.push(cwd);
});

/** Debian's python3 when it has pytest (Warren picks the interpreter otherwise). */
const python = spawnSync('/usr/bin/python3', ['-c', 'import pytest'], { stdio: 'ignore' }).status === 0 ? '/usr/bin/python3' : 'python3';

test('pytest: the command after -- (-k and two files) selects the same tests as pytest itself; -n is left out', async () => {
  const cwd = path.join(FIXTURES, 'pytest-suite');
  const select = ['-k', 'not three', 'tests/test_params.py', 'tests/test_passing.py'];
  const w = await warren(cwd, ['--', 'python3', '-m', 'pytest', '-n', '2', ...select], { WARREN_PYTHON: python });
  assert.equal(w.first, "warren: pytest -k 'not three' tests/test_params.py tests/test_passing.py (from the command after --); left out: -n 2 (Warren parallelises)");
  const own = await output(python, ['-m', 'pytest', '--collect-only', '-q', ...select], cwd);
  const ids = own.stdout.split('\n').filter((l) => l.includes('::')).sort();
  assert.ok(ids.length > 10 && !ids.some((id) => id.includes('three')), own.stdout);
  assert.deepEqual(w.ids, ids);
});

test('rspec: a path and a tag exclusion after -- choose what runs, as rspec --dry-run lists', async () => {
  const cwd = path.join(FIXTURES, 'rspec-suite');
  const select = ['--tag', '~flaky', 'spec/passing_spec.rb', 'spec/pending_spec.rb', 'spec/shapes_spec.rb'];
  const w = await warren(cwd, ['--', 'rspec', '--format', 'progress', ...select]);
  assert.equal(w.first, "warren: rspec --tag '~flaky' spec/passing_spec.rb spec/pending_spec.rb spec/shapes_spec.rb (from the command after --); left out: --format progress (Warren reports)");
  const own = await output('rspec', ['--dry-run', '--format', 'json', ...select], cwd);
  const json = JSON.parse(own.stdout) as { examples: Array<{ full_description: string }> };
  assert.ok(json.examples.length > 3, own.stdout);
  assert.equal(w.report.tests.length, json.examples.length, `${w.report.tests.map((t) => t.name).join('\n')}\n---\n${own.stdout}`);
});

test('vitest: file filters and an option after -- (vitest run …) run the same tests as vitest', async () => {
  const cwd = path.join(FIXTURES, 'vitest-suite');
  if (!fs.existsSync(path.join(cwd, 'node_modules'))) {
    assert.equal(spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd, stdio: 'ignore' }).status, 0, 'npm ci in the vitest-suite fixture');
  }
  const w = await warren(cwd, ['--', 'vitest', 'run', '--testTimeout=20000', 'test/passing', 'test/each']);
  assert.equal(w.first, 'warren: vitest --testTimeout=20000 test/passing test/each (from the command after --); left out: run (Warren runs once)');
  const own = await output(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', '--testTimeout=20000', 'test/passing', 'test/each', '--reporter=json'], cwd);
  const json = JSON.parse(own.stdout.slice(own.stdout.indexOf('{'))) as { numTotalTests: number };
  assert.ok(json.numTotalTests > 4, own.stdout);
  assert.equal(w.report.tests.length, json.numTotalTests);
});

test('go: package patterns and flags after -- (go test -count=1 ./calc/...): the flags as GOFLAGS, the tests go lists', async () => {
  const cwd = path.join(FIXTURES, 'go-suite');
  const home = tmpDir('warren-go-');
  const env = { GOCACHE: path.join(home, 'cache'), GOPATH: path.join(home, 'gopath'), HOME: home };
  const w = await warren(cwd, ['--', 'go', 'test', '-count=1', '-p', '2', './calc/...'], env);
  assert.equal(w.first, 'warren: go ./calc/... (from the command after --); env GOFLAGS=-count=1; left out: -p 2 (Warren parallelises)');
  const own = await output('go', ['test', '-list', '.*', './calc/...'], cwd, env);
  const names = own.stdout.split('\n').filter((l) => /^(Test|Example|Fuzz)/.test(l));
  assert.ok(names.length > 3, own.stdout);
  assert.equal(w.report.tests.length, names.length, `${w.ids.join('\n')}\n---\n${own.stdout}`);
  cleanup.push(home);
});

test('node:test: node flags and files after -- (node --test-timeout=… --test file …) run those files only', async () => {
  const cwd = path.join(FIXTURES, 'node-test-suite');
  const state = tmpDir('warren-flaky-');
  const files = ['test/passing.test.js', 'test/each.test.js'];
  const w = await warren(cwd, ['--', 'node', '--test-timeout=60000', '--test', ...files], { FLAKY_STATE_DIR: state });
  assert.equal(w.first, 'warren: node-test --test-timeout=60000 test/passing.test.js test/each.test.js (from the command after --)');
  const own = await output(process.execPath, ['--test-timeout=60000', '--test', '--test-reporter=tap', ...files], cwd, { FLAKY_STATE_DIR: state });
  const total = Number(/^# tests (\d+)/m.exec(own.stdout)?.[1]);
  assert.ok(total > 3, own.stdout);
  assert.deepEqual([...new Set(w.report.tests.map((t) => t.file))].sort(), [...files].sort());
  assert.equal(w.report.tests.length, total);
  cleanup.push(state);
});

test('playwright: --grep and a file after -- (npx playwright test …) list and run what playwright test --list lists', async () => {
  const cwd = path.join(FIXTURES, 'playwright-suite');
  if (!fs.existsSync(path.join(cwd, 'node_modules'))) {
    assert.equal(spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd, stdio: 'ignore' }).status, 0, 'npm ci in the playwright-suite fixture');
  }
  const select = ['--grep', 'todo page', 'tests/todo.spec.js'];
  const w = await warren(cwd, ['--', 'npx', 'playwright', 'test', '--reporter=dot', ...select]);
  assert.equal(w.first, "warren: playwright --grep 'todo page' tests/todo.spec.js (from the command after --); left out: --reporter=dot (Warren reports)");
  const own = await output('npx', ['playwright', 'test', '--list', '--reporter=json', ...select], cwd);
  const json = JSON.parse(own.stdout) as { suites: Array<{ specs: unknown[]; suites?: Array<{ specs: unknown[]; suites?: unknown[] }> }> };
  const count = (s: { specs?: unknown[]; suites?: unknown[] }): number => (s.specs?.length ?? 0) + ((s.suites ?? []) as Array<{ specs?: unknown[]; suites?: unknown[] }>).reduce((n, x) => n + count(x), 0);
  const total = json.suites.reduce((n, s) => n + count(s), 0);
  assert.equal(total, 3, own.stdout); // the describe's three, not the file's fourth test
  assert.equal(w.report.tests.length, total);
  assert.deepEqual(w.report.tests.map((t) => t.status), ['passed', 'passed', 'passed']);
});
