/**
 * Generated suites for the side-by-side benchmark of issue 7: Warren `--local --workers 2`
 * against each framework's own 2-worker mode, on the same suite.
 *
 * `generateSuite(framework, dir)` writes a deterministic (seeded) rspec, mocha, jest or
 * pytest suite of realistic shape: ~40 files, ~400 tests, skewed durations (most tests a few
 * ms of CPU work, a few `*_flow_*` files of slow tests up to ~1 s, ~24 s serial in all),
 * and a helper that every test process loads and that costs ~300 ms, as Rails or a big
 * transform does. `nativeSerial` / `nativeParallel` give the framework's own one-process and
 * N-worker commands for it; `parseCounts` reads their summaries.
 *
 * Where the ~300 ms goes, per framework (each the cost a real suite pays once per process):
 * - rspec: `spec/spec_helper.rb`, required by `.rspec` (`--require spec_helper`): loaded once
 *   per rspec process, as a Rails app's boot is.
 * - mocha: `test/helper.js`, a `require` of `.mocharc.json`: loaded once per mocha process,
 *   and in `--parallel` once per worker (plus once in the main process), as mocha does for
 *   `--require`.
 * - jest: a custom transformer, `transform.cjs`, whose module costs ~300 ms to load (ts-jest
 *   or babel loading its compiler). jest loads transformers once per process (main and each
 *   worker) and caches the transformed files on disk, so this is a per-process cost like the
 *   others. `setupFiles` would not model it: jest re-runs them for every test FILE (each file
 *   has its own module registry), a cost Warren and `jest -w 2` pay alike; `globalSetup` runs
 *   only in the main process, never in the workers.
 * - pytest: the root `conftest.py`, whose import costs ~300 ms (a Django or pandas import):
 *   pytest imports it once per session, xdist once in the controller and once per worker.
 * The helper's cost and each test's work are CPU spins calibrated in wall time, not fixed
 * amounts of work, so that a 300 ms helper is 300 ms in Ruby, Python and Node alike and the
 * suite has the same shape on any machine; a spin keeps a core busy, as real loading does.
 * Long tests spin for a quarter of their time and sleep the rest (a database, a browser).
 *
 * History on the native side: a fresh directory is cold for every framework. Native runs
 * leave what the framework keeps between runs: parallel_rspec's runtime log
 * (tmp/parallel_runtime_rspec.log, via .rspec_parallel), which its next run groups files by;
 * jest's cache (transforms, haste map, past durations that order the next run) in its default
 * cacheDirectory under os.tmpdir(), keyed by the suite's rootDir, so a new directory starts
 * cold; pytest's .pytest_cache (xdist's `--dist load` schedules dynamically and does not use
 * it). mocha keeps nothing.
 *
 * How the frameworks are found: the suite directory gets a `node_modules` symlink, to the
 * project's own node_modules for mocha (a devDependency) and to the jest fixture's
 * (test/fixtures/jest-suite/node_modules, jest 30) for jest, so that `require('mocha')` /
 * `require('jest')` from the suite directory resolve exactly as in a real project, both for
 * the native commands and for Warren's adapters (which resolve the framework from the cwd).
 * rspec and parallel_rspec are Debian's (/usr/bin). For pytest, `pytestPython()` picks the
 * first interpreter that has both pytest and pytest-xdist (Debian's /usr/bin/python3 with
 * python3-pytest-xdist; pyenv's python has pytest 9 but no xdist here); the suite's `env`
 * carries it as WARREN_PYTHON, which Warren's pytest adapter honours, so both sides run the
 * same Python and pytest.
 */
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export type Framework = 'rspec' | 'mocha' | 'jest' | 'pytest';
export const FRAMEWORKS: readonly Framework[] = ['rspec', 'mocha', 'jest', 'pytest'];

export interface SuiteOptions {
  /** Number of test files (default 40). */
  files?: number;
  /** Number of tests in all (default 10 per file). */
  tests?: number;
  /** PRNG seed: the same seed gives the same suite, byte for byte (default 1). */
  seed?: number;
  /** Sum of all tests' durations, in ms (default 24,000: a 2-worker run of ~12 s). */
  serialMs?: number;
  /** Cost of loading the helper in each test process, in ms (default 300). */
  helperMs?: number;
  /**
   * Where the slow files go. 'mixed' (default): all test files in one directory, the slow
   * ones spread evenly through the sorted file order. 'grouped': the slow files in their own
   * directory (spec/features, test/integration, tests/integration), which sorts before the
   * unit tests' and so is collected first: a common real layout, and the worst case for
   * schedulers that hand out consecutive chunks (pytest-xdist 3.1's `--dist load` gives all
   * the slow tests to one worker).
   */
  layout?: 'mixed' | 'grouped';
}

export interface SuiteTest {
  /** Path of the test's file, relative to the suite directory. */
  file: string;
  /** Its name as written in the file (the innermost `it`/`test`/function name). */
  name: string;
  /** Its planned duration: `cpuMs` of spinning, then `sleepMs` asleep. */
  ms: number;
  cpuMs: number;
  sleepMs: number;
}

export interface GeneratedSuite {
  framework: Framework;
  /** The suite directory (absolute); run every command in it. */
  dir: string;
  /** Warren's adapter for it (`--adapter`). */
  adapter: Framework;
  /** Test files, relative to `dir`. */
  files: string[];
  tests: SuiteTest[];
  /** Sum of the tests' planned durations, ms (without per-process or per-file overhead). */
  serialMs: number;
  /** The longest file's planned duration, ms (a bound for file-granular schedulers). */
  longestFileMs: number;
  helperMs: number;
  /** Environment both sides must get (Warren: `--env K=V` each): WARREN_PYTHON for pytest. */
  env: Record<string, string>;
}

export interface Command {
  cmd: string;
  args: string[];
  env?: Record<string, string>;
}

/** mulberry32: small, fast, and identical everywhere for a given seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// sorted, so that file f's noun, NOUNS[f * len / files], keeps the stems in file order
const NOUNS = ['account', 'billing', 'cart', 'coupon', 'export', 'import', 'invoice', 'order', 'payment', 'product',
  'profile', 'report', 'review', 'search', 'session', 'shipment', 'team', 'token', 'user', 'webhook'];
const VERBS = ['creates', 'updates', 'validates', 'rejects', 'renders', 'serializes', 'computes', 'filters', 'sorts', 'notifies'];
const CONTEXTS = ['with valid input', 'with missing fields', 'when the user is an admin', 'when the record exists',
  'when it is archived', 'with a large payload', 'on the first call', 'after a retry'];

interface PlannedFile {
  /** Basename stem, unique across the suite (pytest's default import mode needs that);
   * stems sort in file order, so 'mixed' spreads the slow files through the sorted order. */
  stem: string;
  slow: boolean;
  title: string;
  /** Contexts, each a list of tests. */
  groups: { title: string; tests: { name: string; ms: number; cpuMs: number; sleepMs: number }[] }[];
}

/** The suite's shape, framework-independent: files, groups, tests and their durations. */
function plan(opts: Required<SuiteOptions>): PlannedFile[] {
  const rand = prng(opts.seed);
  const nFiles = Math.max(2, opts.files);
  const nSlow = Math.max(1, Math.round(nFiles / 8));
  // the slow files are spread through the file order, not bunched at one end
  const slowAt = new Set(Array.from({ length: nSlow }, (_, i) => Math.floor(((i + 0.5) * nFiles) / nSlow)));
  const slowCounts = [...slowAt].map(() => 5 + Math.floor(rand() * 4));
  const unitTotal = Math.max(nFiles - nSlow, opts.tests - slowCounts.reduce((a, b) => a + b, 0));
  // unit files get skewed sizes (weights ~ r²): a few big files, many small ones
  const weights = Array.from({ length: nFiles - nSlow }, () => 0.25 + 3 * rand() ** 2);
  const wsum = weights.reduce((a, b) => a + b, 0);
  const exact = weights.map((w) => (w / wsum) * unitTotal);
  const counts = exact.map((x) => Math.max(1, Math.floor(x)));
  // largest remainder, so the total is exactly `tests`
  const order = exact.map((x, i) => [x - Math.floor(x), i] as const).sort((a, b) => b[0] - a[0]);
  for (let k = 0; counts.reduce((a, b) => a + b, 0) < unitTotal; k++) counts[order[k % order.length]![1]]!++;

  const files: PlannedFile[] = [];
  let unit = 0;
  let slow = 0;
  for (let f = 0; f < nFiles; f++) {
    const isSlow = slowAt.has(f);
    const n = isSlow ? slowCounts[slow++]! : counts[unit++]!;
    const noun = NOUNS[Math.floor((f * NOUNS.length) / nFiles)]!;
    const stem = `${noun}_${isSlow ? 'flow' : 'model'}_${String(f).padStart(2, '0')}`;
    const raw: number[] = Array.from({ length: n }, () => {
      const u = rand();
      const r = rand();
      if (isSlow) return u < 0.6 ? 300 + 700 * r : 30 + 150 * r; // browser/DB-backed flows
      return u < 0.88 ? 1 + 14 * r * r : u < 0.98 ? 30 + 170 * r : 200 + 400 * r; // unit tests, a tail
    });
    const groups: PlannedFile['groups'] = [];
    for (let i = 0; i < n; i++) {
      // titles unique within a file: a repeated Python class name would hide the first one's tests
      const k = groups.length;
      if (i % 5 === 0) groups.push({ title: CONTEXTS[(f + k) % CONTEXTS.length]! + (k >= CONTEXTS.length ? ` ${k}` : ''), tests: [] });
      const verb = VERBS[(f * 7 + i) % VERBS.length]!;
      groups[groups.length - 1]!.tests.push({ name: `${verb} ${noun} case ${i + 1}`, ms: raw[i]!, cpuMs: 0, sleepMs: 0 });
    }
    files.push({ stem, slow: isSlow, title: `${noun[0]!.toUpperCase()}${noun.slice(1)} ${isSlow ? 'flow' : 'model'} ${f}`, groups });
  }
  // scale to the wanted serial time; short tests are pure CPU work, long ones a quarter CPU
  const all = files.flatMap((f) => f.groups.flatMap((g) => g.tests));
  const factor = opts.serialMs / all.reduce((a, t) => a + t.ms, 0);
  for (const t of all) {
    t.ms = Math.max(1, Math.min(1100, Math.round(t.ms * factor)));
    t.cpuMs = t.ms <= 20 ? t.ms : Math.round(t.ms / 4);
    t.sleepMs = t.ms - t.cpuMs;
  }
  return files;
}

const HEADER = 'generated by warren test/bench/suites.ts for the issue 7 benchmark; do not edit';

/** The repository's root (holds package.json "warren"), from this file in test/bench or dist/test/bench. */
export function repoRoot(): string {
  let d = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = path.join(d, 'package.json');
    if (fs.existsSync(pj) && JSON.parse(fs.readFileSync(pj, 'utf8')).name === 'warren') return d;
    const up = path.dirname(d);
    if (up === d) throw new Error('suites.ts: cannot find the warren repository root');
    d = up;
  }
}

/** The node_modules a JS suite links to (see the header). */
function nodeModulesFor(framework: 'mocha' | 'jest'): string {
  const root = repoRoot();
  const nm = framework === 'mocha' ? path.join(root, 'node_modules') : path.join(root, 'test/fixtures/jest-suite/node_modules');
  if (!fs.existsSync(path.join(nm, framework, 'package.json'))) {
    throw new Error(`suites.ts: no ${framework} in ${nm} (run npm ci ${framework === 'jest' ? 'in test/fixtures/jest-suite' : 'at the root'})`);
  }
  return nm;
}

let pythonCache: string | null | undefined;
/** The first Python that has pytest and pytest-xdist, or null. */
export function pytestPython(): string | null {
  if (pythonCache !== undefined) return pythonCache;
  const candidates = [process.env.WARREN_PYTHON, '/usr/bin/python3', 'python3'].filter((p): p is string => !!p);
  pythonCache = candidates.find((p) => spawnSync(p, ['-c', 'import pytest, xdist'], { stdio: 'ignore' }).status === 0) ?? null;
  return pythonCache;
}

const q = JSON.stringify; // a double-quoted string literal valid in JS, Ruby and Python alike (ASCII names)
const write = (dir: string, rel: string, text: string) => {
  fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
  fs.writeFileSync(path.join(dir, rel), text);
};
const pyName = (s: string) => s.replace(/[^A-Za-z0-9]+/g, '_').toLowerCase();
const pyClass = (s: string) => s.replace(/(^|[^A-Za-z0-9]+)([A-Za-z0-9])/g, (_, __, c: string) => c.toUpperCase());

/** The directory of a test file under the suite's test root. */
const subdir = (f: PlannedFile, layout: Required<SuiteOptions>['layout'], slowDir: string, unitDir: string) =>
  layout === 'grouped' ? (f.slow ? slowDir : unitDir) : unitDir;

function writeRspec(dir: string, files: PlannedFile[], helperMs: number, layout: Required<SuiteOptions>['layout']): string[] {
  write(dir, '.rspec', '--require spec_helper\n');
  // parallel_rspec reads this instead of .rspec (rspec -O replaces the project's .rspec, so
  // the helper is required again): its runtime logger records each file's time, and the next
  // parallel_rspec groups files by those runtimes instead of by file size (its own history)
  write(dir, '.rspec_parallel', '--require spec_helper\n--format progress\n' +
    '--format ParallelTests::RSpec::RuntimeLogger --out tmp/parallel_runtime_rspec.log\n');
  write(dir, 'spec/spec_helper.rb', `# ${HEADER}
# Costs ~${helperMs} ms to load, once per rspec process, as booting a Rails app does.
module Bench
  def self.now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  # spin (CPU) for cpu_ms, then sleep for sleep_ms
  def self.work(cpu_ms, sleep_ms)
    t = now
    x = 0
    x += 1 while (now - t) * 1000 < cpu_ms
    sleep(sleep_ms / 1000.0) if sleep_ms > 0
    x
  end
end

Bench.work(${helperMs}, 0)

RSpec.configure do |config|
  config.expect_with(:rspec) { |c| c.syntax = :expect }
end
`);
  return files.map((f) => {
    const rel = `spec/${subdir(f, layout, 'features', 'models')}/${f.stem}_spec.rb`;
    const body = f.groups.map((g) => `  context ${q(g.title)} do
${g.tests.map((t) => `    it ${q(t.name)} do
      Bench.work(${t.cpuMs}, ${t.sleepMs})
      expect(1 + 1).to eq(2)
    end
`).join('')}  end
`).join('');
    write(dir, rel, `# ${HEADER}\nRSpec.describe ${q(f.title)} do\n${body}end\n`);
    return rel;
  });
}

const JS_WORK = (helperMs: number, why: string) => `// ${HEADER}
'use strict';
// from perf_hooks: jest's sandbox need not expose the global
const { performance } = require('node:perf_hooks');
// spin (CPU) for cpuMs, then sleep for sleepMs
function spin(ms) {
  const t = performance.now();
  let x = 0;
  while (performance.now() - t < ms) x++;
  return x;
}
function work(cpuMs, sleepMs) {
  spin(cpuMs);
  return sleepMs > 0 ? new Promise((r) => setTimeout(r, sleepMs)) : Promise.resolve();
}
${helperMs > 0 ? `// ${why}\nspin(${helperMs});\n` : ''}module.exports = { spin, work };
`;

function writeJs(dir: string, framework: 'mocha' | 'jest', files: PlannedFile[], helperMs: number, layout: Required<SuiteOptions>['layout']): string[] {
  fs.symlinkSync(nodeModulesFor(framework), path.join(dir, 'node_modules'), 'dir');
  const pkg = { name: `warren-bench-${framework}`, version: '0.0.0', private: true, description: HEADER, type: 'commonjs' };
  write(dir, 'package.json', JSON.stringify(pkg, null, 2) + '\n');
  let helper: string;
  if (framework === 'mocha') {
    write(dir, '.mocharc.json', JSON.stringify({ require: ['test/helper.js'], spec: ['test/**/*.spec.js'], timeout: 20000 }, null, 2) + '\n');
    write(dir, 'test/helper.js', JS_WORK(helperMs, `~${helperMs} ms once per mocha process (and per --parallel worker), as a framework load does`));
    helper = '../helper';
  } else {
    write(dir, 'jest.config.js', `// ${HEADER}
module.exports = {
  testEnvironment: 'node',
  testMatch: ['<rootDir>/test/**/*.test.js'],
  // the "big transform": loaded once per jest process (main and each worker)
  transform: { '\\\\.js$': '<rootDir>/transform.cjs' },
  testTimeout: 20000,
};
`);
    write(dir, 'transform.cjs', `// ${HEADER}
// A transformer whose module costs ~${helperMs} ms to load, as ts-jest or babel loading its
// compiler does; jest loads it once per process and caches what it transforms on disk.
'use strict';
const crypto = require('node:crypto');
const t = performance.now();
while (performance.now() - t < ${helperMs});
module.exports = {
  getCacheKey: (src, file) => crypto.createHash('sha1').update('warren-bench-1\\0' + file + '\\0' + src).digest('hex'),
  process(src) {
    // a small per-file compile cost, paid only when jest's cache misses
    const t0 = performance.now();
    while (performance.now() - t0 < 5);
    return { code: src };
  },
};
`);
    write(dir, 'test/support/work.js', JS_WORK(0, ''));
    helper = '../support/work';
  }
  const ext = framework === 'mocha' ? 'spec.js' : 'test.js';
  const it = framework === 'mocha' ? 'it' : 'test';
  const check = framework === 'mocha' ? 'assert.strictEqual(1 + 1, 2);' : 'expect(1 + 1).toBe(2);';
  return files.map((f) => {
    const rel = `test/${subdir(f, layout, 'integration', 'unit')}/${f.stem}.${ext}`;
    const body = f.groups.map((g) => `  describe(${q(g.title)}, () => {
${g.tests.map((t) => `    ${it}(${q(t.name)}, async () => {
      await work(${t.cpuMs}, ${t.sleepMs});
      ${check}
    });
`).join('')}  });
`).join('');
    const imports = `${framework === 'mocha' ? "const assert = require('node:assert');\n" : ''}const { work } = require(${q(helper)});\n`;
    write(dir, rel, `// ${HEADER}\n'use strict';\n${imports}\ndescribe(${q(f.title)}, () => {\n${body}});\n`);
    return rel;
  });
}

function writePytest(dir: string, files: PlannedFile[], helperMs: number, layout: Required<SuiteOptions>['layout']): string[] {
  write(dir, 'pytest.ini', `# ${HEADER}\n[pytest]\ntestpaths = tests\npythonpath = .\n`);
  write(dir, 'benchwork.py', `# ${HEADER}
import time


def work(cpu_ms, sleep_ms):
    """Spin (CPU) for cpu_ms, then sleep for sleep_ms."""
    t = time.perf_counter()
    x = 0
    while (time.perf_counter() - t) * 1000 < cpu_ms:
        x += 1
    if sleep_ms > 0:
        time.sleep(sleep_ms / 1000)
    return x
`);
  write(dir, 'conftest.py', `# ${HEADER}
# Costs ~${helperMs} ms to import, once per pytest session (xdist: controller and each
# worker), as importing Django or pandas does.
import benchwork

benchwork.work(${helperMs}, 0)
`);
  return files.map((f) => {
    const rel = `tests/${subdir(f, layout, 'integration', 'unit')}/test_${f.stem}.py`;
    const body = f.groups.map((g) => `class Test${pyClass(g.title)}:
${g.tests.map((t) => `    def test_${pyName(t.name)}(self):
        work(${t.cpuMs}, ${t.sleepMs})
        assert 1 + 1 == 2
`).join('\n')}`).join('\n\n');
    write(dir, rel, `# ${HEADER}\n"""${f.title}"""\nfrom benchwork import work\n\n\n${body}`);
    return rel;
  });
}

/** Writes a suite into `dir` (created if missing; meant to be a fresh temp dir). */
export function generateSuite(framework: Framework, dir: string, opts: SuiteOptions = {}): GeneratedSuite {
  const o: Required<SuiteOptions> = {
    files: opts.files ?? 40,
    tests: opts.tests ?? (opts.files ?? 40) * 10,
    seed: opts.seed ?? 1,
    serialMs: opts.serialMs ?? 24_000,
    helperMs: opts.helperMs ?? 300,
    layout: opts.layout ?? 'mixed',
  };
  const abs = path.resolve(dir);
  fs.mkdirSync(abs, { recursive: true });
  const planned = plan(o);
  const rels =
    framework === 'rspec' ? writeRspec(abs, planned, o.helperMs, o.layout)
    : framework === 'pytest' ? writePytest(abs, planned, o.helperMs, o.layout)
    : writeJs(abs, framework, planned, o.helperMs, o.layout);
  const tests: SuiteTest[] = planned.flatMap((f, i) => f.groups.flatMap((g) => g.tests.map((t) => ({ file: rels[i]!, ...t }))));
  const env: Record<string, string> = {};
  if (framework === 'pytest') {
    const py = pytestPython();
    if (py) env.WARREN_PYTHON = py;
  }
  return {
    framework, dir: abs, adapter: framework, files: rels, tests,
    serialMs: tests.reduce((a, t) => a + t.ms, 0),
    longestFileMs: Math.max(...planned.map((f) => f.groups.reduce((a, g) => a + g.tests.reduce((b, t) => b + t.ms, 0), 0))),
    helperMs: o.helperMs, env,
  };
}

function jsBin(dir: string, framework: 'mocha' | 'jest'): string {
  // the framework as the suite resolves it (through its node_modules link)
  const pj = path.join(dir, 'node_modules', framework, 'package.json');
  const bin = JSON.parse(fs.readFileSync(pj, 'utf8')).bin;
  return path.join(path.dirname(pj), typeof bin === 'string' ? bin : bin[framework]);
}

function python(): string {
  const py = pytestPython();
  if (!py) throw new Error('suites.ts: no Python with pytest and pytest-xdist (apt-get install python3-pytest-xdist)');
  return py;
}

/** The framework in one process, in `dir`. */
export function nativeSerial(framework: Framework, dir: string): Command {
  switch (framework) {
    case 'rspec': return { cmd: 'rspec', args: [] };
    case 'mocha': return { cmd: process.execPath, args: [jsBin(dir, 'mocha'), '--reporter', 'dot'] };
    // -i (runInBand): the tests in jest's own process, no workers
    case 'jest': return { cmd: process.execPath, args: [jsBin(dir, 'jest'), '-i', '--ci'] };
    // no -n: xdist stays idle, one session
    case 'pytest': { const py = python(); return { cmd: py, args: ['-m', 'pytest', '-q'], env: { WARREN_PYTHON: py } }; }
  }
}

/** The framework's own parallel mode with `workers` worker processes (default 2), in `dir`. */
export function nativeParallel(framework: Framework, dir: string, workers = 2): Command {
  const n = String(workers);
  switch (framework) {
    // parallel_tests: one rspec process per group of files, grouped by file size on a first
    // run, then by the runtimes the previous run logged in tmp/parallel_runtime_rspec.log
    case 'rspec': return { cmd: 'parallel_rspec', args: ['-n', n, 'spec'] };
    case 'mocha': return { cmd: process.execPath, args: [jsBin(dir, 'mocha'), '--reporter', 'dot', '--parallel', '-j', n] };
    case 'jest': return { cmd: process.execPath, args: [jsBin(dir, 'jest'), '-w', n, '--ci'] };
    case 'pytest': { const py = python(); return { cmd: py, args: ['-m', 'pytest', '-q', '-n', n], env: { WARREN_PYTHON: py } }; }
  }
}

export interface Counts {
  passed: number;
  failed: number;
  total: number;
}

/** Test counts from a native run's output (stdout and stderr together), or null if no summary. */
export function parseCounts(framework: Framework, output: string): Counts | null {
  // eslint-disable-next-line no-control-regex
  const text = output.replace(/\u001b\[[0-9;]*m/g, '');
  const last = (re: RegExp) => [...text.matchAll(re)].at(-1);
  switch (framework) {
    case 'rspec': {
      // parallel_rspec prints each process's summary, then the total last
      const m = last(/^(\d+) examples?, (\d+) failures?(?:, (\d+) pending)?/gm);
      return m ? { total: +m[1]!, failed: +m[2]!, passed: +m[1]! - +m[2]! - +(m[3] ?? 0) } : null;
    }
    case 'mocha': {
      const p = last(/^\s*(\d+) passing/gm);
      const f = last(/^\s*(\d+) failing/gm);
      const pend = last(/^\s*(\d+) pending/gm);
      if (!p) return null;
      return { passed: +p[1]!, failed: f ? +f[1]! : 0, total: +p[1]! + (f ? +f[1]! : 0) + (pend ? +pend[1]! : 0) };
    }
    case 'jest': {
      const m = last(/^Tests:\s+(.*?)(\d+) total/gm);
      if (!m) return null;
      const num = (what: string) => +(m[1]!.match(new RegExp(`(\\d+) ${what}`))?.[1] ?? 0);
      return { passed: num('passed'), failed: num('failed'), total: +m[2]! };
    }
    case 'pytest': {
      const m = last(/^=*\s*(.*\d+ (?:passed|failed|error).*?) in [\d.]+s/gm);
      if (!m) return null;
      const num = (what: string) => +(m[1]!.match(new RegExp(`(\\d+) ${what}`))?.[1] ?? 0);
      const passed = num('passed');
      const failed = num('failed') + num('errors?');
      return { passed, failed, total: passed + failed + num('skipped') };
    }
  }
}
