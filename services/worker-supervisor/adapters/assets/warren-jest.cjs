#!/usr/bin/env node
/*
 * warren-jest.cjs: Warren's jest adapter (see ../PROTOCOL.md for the events protocol).
 *
 *   cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl node /abs/warren-jest.cjs discover
 *   cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl WARREN_IDS_FILE=/tmp/ids node /abs/warren-jest.cjs run
 *   cd <suite dir> && node /abs/warren-jest.cjs serve     (batches on stdin, PROTOCOL.md)
 *
 * - Uses the suite's own jest (resolved from the cwd, then from this script), jest 29 or 30:
 *   the suite's configuration (jest.config.*, package.json "jest", projects) applies as with
 *   plain `jest`. `buildArgv` comes from jest (30) or jest-cli's build/run.js (29).
 * - This one file plays three parts: the script; jest's `testRunner` (a function: a thin
 *   wrapper around the project's own jest-circus runner); jest's reporter (a class: jest
 *   calls it with `new`). jest loads it by path for those two parts.
 * - Discovery (`runCLI`) never runs a test body or a hook:
 *   - jest >= 30.5: jest's own `--collectTests` (jest-circus loads each file, registers
 *     its describe/test blocks, walks the tree, runs nothing; no globalSetup either);
 *   - older jest: the wrapper runner marks every test `skip` at circus' `run_start`
 *     (after the file has loaded, before anything runs), so circus reports each one as
 *     pending without calling any hook (circus only calls the hooks of blocks that have an
 *     enabled test). WARREN_JEST_DISCOVERY=collect|runner forces one of the two.
 *   Both list each file's tests in circus' tree order (definition order).
 * - Run and serve share one engine (see prepare/runJest below): what runCLI builds before
 *   it runs anything (the configuration, each project's haste map, module map and resolver:
 *   jest's "contexts") is built once per process; each batch is then what runCLI's runJest
 *   does with `--runTestsByPath <the batch's files>` on those contexts (test sequencer,
 *   globalSetup, a fresh scheduler with this file as the only reporter, globalTeardown), as
 *   jest's watch mode re-runs on contexts it keeps. `run` is one batch; `serve` builds the
 *   contexts at its first batch and keeps them. runInBand: one jest worker, the tests run in
 *   this process (the slot is the unit of parallelism), each test file still in its own vm
 *   context with a fresh module registry, as jest always does.
 * - Selecting the tests: at circus' `run_start` the wrapper runner computes the ids of every
 *   test of the file (same walk, same order as discovery) and removes from the tree every
 *   test that was not asked for, so exactly the requested tests run (hooks of blocks left
 *   without tests do not run); it writes the kept ids to a side file the reporter maps
 *   jest's per-test reports onto. A file that throws while loading never reaches
 *   `run_start`: jest reports it as a failed suite (testExecError), which becomes an `error`
 *   event with `file`.
 * - WARREN_CACHE_DIR (every mode): jest's cacheDirectory (haste map, transform cache, test
 *   timings) is $WARREN_CACHE_DIR/jest for each project whose config leaves cacheDirectory
 *   at jest's default (discover: only when no project sets its own, runCLI takes one for all).
 * - Test ids: `<file> :: <describe > ... > test title>`; duplicates within a file get
 *   ` #2`, ` #3`... in tree order. `name` is jest's `fullName` (titles joined by spaces).
 * - Reporting: test_start on jest's onTestCaseStart; test_end on onTestCaseResult for a
 *   passed or todo test; a failed result waits for the file's final result (jest may retry
 *   it, jest.retryTimes), and skipped tests (never reported one by one by circus) come
 *   from the file's result too. Messages are jest's own failure messages, ANSI-stripped:
 *   `message` the lines before the stack (first line, plus the following lines collapsed
 *   when it ends with ':'), `details` the whole text.
 * - The suite's reporters, coverage, watch and bail are forced off; `.only` and
 *   `test.skip` behave exactly as in plain jest (a selected test that jest would skip is
 *   reported pending).
 *
 * Limits: only the jest-circus runner (jest's default) is supported; with several tests of
 * one file sharing a full name, jest's per-test reports are mapped in tree order, which
 * `randomize` or concurrent tests (test.concurrent) may not keep. serve, as jest's watch
 * mode: the haste map is the one of the first batch (a file added later is still run when
 * asked for by path; a haste module or manual mock added later is not seen), and the
 * globalSetup/globalTeardown modules are loaded once (called again every batch: their own
 * module state lives on).
 *
 * Exit codes: discover 0 when it completed (load errors are events, not a failed
 * discovery); run 0 when every test passed or was pending and no `error` event was
 * written, 1 otherwise; 2 when the adapter itself could not work (no jest, bad config,...).
 * serve: each batch's `end` has run's 0 or 1 (jest failing in a later batch, e.g. a
 * globalSetup that throws, is that batch's `error` event and code 1, the runner stays up);
 * a failure to load jest or its configuration at the first batch is that batch's `error`
 * event, then exit 2; end of stdin: exit 0.
 */
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
// shared with the other plug-ins; next to this file (only this directory may be mounted)
const common = require(path.join(__dirname, 'warren-plugin-common.cjs'));
/** The project's own jest options and path patterns (its test command's, PROTOCOL.md). */
const SUITE_ARGS = common.frameworkArgs();
common.adoptColorFlags(SUITE_ARGS); // before anything loads chalk

const TAG = 'warren-jest';
const { relPath, groupIds } = common;

// --------------------------------------------------------------------------- helpers

/** ANSI colours out, and the stack frames of the adapter (the wrapper runner) with them. */
const stripAnsi = (s) => common.stripAnsi(s).split('\n').filter((l) => !/^\s+at .*(warren-jest|warren-plugin-common)\.cjs\b/.test(l)).join('\n');

/** The message of a formatted failure ("Name: message\n    at frame..."): lines before the first stack frame, one-lined. */
const messageOf = (text) => common.messageOfText(stripAnsi(text));

function formatError(err) {
  if (err === null || err === undefined || (typeof err !== 'object' && typeof err !== 'function')) {
    return { message: 'Error: ' + String(err) };
  }
  let stack = '';
  try {
    stack = typeof err.stack === 'string' ? err.stack : '';
  } catch (_) { /* ignore */ }
  let name = 'Error';
  let msg = '';
  try {
    name = err.name || 'Error';
    msg = err.message === undefined || err.message === null ? '' : String(err.message);
  } catch (_) { /* exotic object */ }
  const head = msg ? name + ': ' + msg : name;
  const text = stack && stack.includes(msg) ? stack : head + (stack ? '\n' + stack : '');
  return { message: messageOf(text), details: stripAnsi(text) };
}

/** Every test of a circus describe tree, in tree (definition) order, with its title path. */
function circusTests(block, ancestors, out) {
  for (const child of block.children) {
    if (child.type === 'describeBlock') circusTests(child, [...ancestors, child.name], out);
    else if (child.type === 'test') out.push({ test: child, titles: [...ancestors, child.name] });
  }
  return out;
}

/**
 * ids for a file's tests given in tree order as title paths: `<file> :: a > b > title`,
 * duplicates suffixed ` #2`, ` #3`...; name = jest's fullName (titles joined by spaces).
 */
function assignIds(rel, entries) {
  const seen = new Map();
  return entries.map((e) => {
    const key = e.titles.join(' > ');
    return Object.assign({}, e, { id: common.numberedId(rel, seen, key), name: e.titles.join(' '), key });
  });
}

const sideFile = (dir, testPath) => path.join(dir, crypto.createHash('sha1').update(testPath).digest('hex') + '.json');

// --------------------------------------------------------------------------- testRunner part (jest's worker)

async function warrenTestRunner(globalConfig, config, environment, runtime, testPath, sendMessageToJest) {
  const mode = process.env.WARREN_JEST_MODE;
  const cwd = process.env.WARREN_JEST_CWD || process.cwd();
  let runners = {};
  try {
    runners = JSON.parse(process.env.WARREN_JEST_RUNNERS || '{}');
  } catch (_) { /* below */ }
  const innerPath = runners[config.id] || Object.values(runners)[0];
  if (!innerPath) throw new Error(TAG + ': no inner test runner known for project ' + (config.id || config.rootDir));
  let inner = require(innerPath);
  if (inner && typeof inner !== 'function' && typeof inner.default === 'function') inner = inner.default;
  if (typeof inner !== 'function') throw new Error(TAG + ': the test runner ' + innerPath + ' exports no function');

  const rel = relPath(cwd, testPath);
  let selectError = null;
  const select = (state) => {
    const all = assignIds(rel, circusTests(state.rootDescribeBlock, [], []));
    if (mode === 'discover') {
      // list everything, run nothing: circus reports skipped tests as pending, todo as todo
      for (const t of all) if (t.test.mode !== 'todo') t.test.mode = 'skip';
      return;
    }
    const byFile = groupIds(cwd, JSON.parse(fs.readFileSync(path.join(process.env.WARREN_JEST_STATE, 'ids.json'), 'utf8')));
    const want = byFile.get(rel) || { whole: false, ids: new Set(), requested: [] };
    const keep = new Set();
    const kept = [];
    for (const t of all) {
      if (want.whole || want.ids.has(t.id)) {
        keep.add(t.test);
        kept.push({ id: t.id, key: t.key, name: t.name });
      }
    }
    const found = new Set(kept.map((k) => k.id));
    const notFound = want.requested.filter((id) => !found.has(id));
    (function prune(block) {
      block.children = block.children.filter((c) => c.type !== 'test' || keep.has(c));
      for (const c of block.children) if (c.type === 'describeBlock') prune(c);
    })(state.rootDescribeBlock);
    fs.writeFileSync(sideFile(process.env.WARREN_JEST_STATE, testPath), JSON.stringify({ file: rel, total: all.length, kept, notFound }));
  };
  const original = environment.handleTestEvent;
  environment.handleTestEvent = function warrenHandleTestEvent(event, state) {
    if (event && event.name === 'run_start') {
      try {
        select(state);
      } catch (err) {
        selectError = err;
        // never run an unselected test: empty the tree
        state.rootDescribeBlock.children = [];
      }
    }
    if (typeof original === 'function') return original.call(this, event, state);
    return undefined;
  };
  const result = await inner(globalConfig, config, environment, runtime, testPath, sendMessageToJest);
  if (selectError) {
    const e = formatError(selectError);
    result.testExecError = { message: TAG + ': could not select the tests to run: ' + e.message, stack: e.details || '' };
  }
  return result;
}

// --------------------------------------------------------------------------- reporter part (jest's parent process)

/** Set by the script in run mode; the reporter is a no-op otherwise. */
let runState = null;

class WarrenReporter {
  constructor(globalConfig) {
    this.globalConfig = globalConfig;
  }

  fileState(testPath) {
    const st = runState;
    let f = st.files.get(testPath);
    if (f && f.kept) return f;
    if (!f) {
      f = { rel: relPath(st.cwd, testPath), kept: null, notFound: [], live: new Map(), liveStart: new Map(), final: new Map(), started: new Set() };
      st.files.set(testPath, f);
    }
    let side = null;
    try {
      side = JSON.parse(fs.readFileSync(sideFile(st.stateDir, testPath), 'utf8'));
    } catch (_) { /* not (yet) there: the file did not reach run_start */ }
    if (side) {
      f.kept = side.kept;
      f.total = side.total;
      f.notFound = side.notFound;
      for (const k of side.kept) {
        for (const m of [f.live, f.liveStart, f.final]) {
          if (!m.has(k.key)) m.set(k.key, []);
          m.get(k.key).push(k);
        }
        st.info.set(k.id, common.newRec(k.id, f.rel, k.name));
      }
    }
    return f;
  }

  onTestCaseStart(test, info) {
    if (!runState) return;
    guard(() => {
      const f = this.fileState(test.path);
      const q = f.liveStart.get([...info.ancestorTitles, info.title].join(' > '));
      const k = q && q.shift();
      if (k) startTest(runState.info.get(k.id));
    });
  }

  onTestCaseResult(test, r) {
    if (!runState) return;
    guard(() => {
      const f = this.fileState(test.path);
      const q = f.live.get([...r.ancestorTitles, r.title].join(' > '));
      const k = q && q.shift();
      if (!k) return; // a retry of a test already seen
      // passed and todo are final; a failure may be retried (jest.retryTimes): its final
      // status comes with the file's result
      if (r.status === 'passed' || r.status === 'todo') endFromResult(runState.info.get(k.id), r);
    });
  }

  onTestFileResult(test, result) {
    if (!runState) return;
    guard(() => {
      const f = this.fileState(test.path);
      if (Array.isArray(result.console) && result.console.length) {
        for (const c of result.console) process.stderr.write('[' + f.rel + '] console.' + c.type + ': ' + c.message + '\n');
      }
      f.done = true;
      // jest fails a file that reports no test ("Your test suite must contain at least one
      // test."): when the file has tests but none of them was asked for (only ids that
      // are not found), that is our doing, not an error of the file
      const emptied = f.kept && f.kept.length === 0 && f.total > 0 && (result.testResults || []).length === 0;
      f.execError = !!result.testExecError && !emptied;
      for (const r of result.testResults || []) {
        const q = f.final.get([...r.ancestorTitles, r.title].join(' > '));
        const k = q && q.shift();
        if (k) endFromResult(runState.info.get(k.id), r);
      }
      for (const id of f.notFound) notFoundTest(id, 'test not found in ' + f.rel + ' (renamed or removed since discovery, or defined conditionally)');
      if (f.execError) {
        const e = result.testExecError;
        const text = stripAnsi(e.stack && String(e.stack).includes(String(e.message || '')) ? e.stack : (e.message || '') + '\n' + (e.stack || ''));
        const message = f.kept
          ? 'error outside the tests of ' + f.rel + ': ' + messageOf(text)
          : 'failed to load ' + f.rel + ': ' + messageOf(text);
        const ev = { event: 'error', message, file: f.rel, ...(f.kept ? {} : { load: true }) };
        // a load failure: jest's own rendering (with the code frame); otherwise the error
        // (the file's failureMessage also holds every failed test of the file)
        const details = (f.kept ? text : stripAnsi(result.failureMessage || text)).trim();
        if (details) ev.details = details;
        emit(ev);
      }
    });
  }

  getLastError() {
    return undefined;
  }
}

/** jest loads this file both as testRunner (a function call) and as a reporter (`new`). */
function WarrenJest(...args) {
  if (new.target) return new WarrenReporter(...args);
  return warrenTestRunner(...args);
}
module.exports = WarrenJest;

// --------------------------------------------------------------------------- events

const events = common.createEvents(TAG, formatError);
const { emit, fatal, guard, startTest, endTest } = events;

/** test_end from a jest assertion result (per-test report or the file's final list). */
function endFromResult(rec, r) {
  if (!rec) return;
  if (r.status === 'failed') {
    const f = common.failureOfTexts((r.failureMessages || []).map((m) => stripAnsi(m)), messageOf);
    endTest(rec, 'failed', r.duration, f.message, f.details);
  } else if (r.status === 'passed') {
    endTest(rec, 'passed', r.duration);
  } else {
    // pending (skip, not focused), todo, disabled
    endTest(rec, 'pending', 0);
  }
}

function notFoundTest(id, why, name = 'WarrenTestNotFound') {
  const st = runState;
  let rec = st.info.get(id);
  if (!rec) {
    rec = common.recOfId(id);
    st.info.set(id, rec);
  }
  if (rec.ended) return;
  startTest(rec);
  endTest(rec, 'failed', 0, name + ': ' + why);
}

// --------------------------------------------------------------------------- jest

const findPackageDir = (resolvedMain, name) => common.findPackageDir(resolvedMain, name) || path.dirname(resolvedMain);

/** A package's main module, resolved as `fromDir`'s package would resolve it. */
const requireFrom = (fromDir, name) => require(require.resolve(name, { paths: [fromDir] }));
const defaultOf = (m) => (m && m.__esModule && m.default ? m.default : m);

/**
 * jest (its main file `main`: the suite's own, see main()), its version, jest-config and
 * buildArgv (exported by jest 30; jest 29 has it in jest-cli's build/run.js, which jest-cli's
 * exports map hides: loaded by its file path).
 */
function loadJest(cwd, main) {
  const dir = findPackageDir(main, 'jest');
  let jest;
  try {
    jest = require(main);
  } catch (err) {
    fatal('cannot load jest from ' + main, err);
  }
  if (typeof jest.runCLI !== 'function') fatal('the jest at ' + dir + ' has no runCLI; this adapter supports jest 29/30');
  const version = common.packageVersion(dir, '0.0.0');
  let cliDir = null;
  try {
    cliDir = findPackageDir(require.resolve('jest-cli', { paths: [dir] }), 'jest-cli');
  } catch (_) { /* jest without jest-cli: buildArgv from jest itself, or none */ }
  let buildArgv = typeof jest.buildArgv === 'function' ? jest.buildArgv : null;
  for (const file of cliDir && !buildArgv ? [path.join(cliDir, 'build', 'index.js'), path.join(cliDir, 'build', 'run.js')] : []) {
    try {
      const m = require(file);
      if (typeof m.buildArgv === 'function') {
        buildArgv = m.buildArgv;
        break;
      }
    } catch (_) { /* next */ }
  }
  // jest-config, as jest itself resolves it (jest -> jest-cli/@jest/core -> jest-config)
  let jestConfig = null;
  for (const from of ['jest-cli', '@jest/core']) {
    try {
      const fromMain = require.resolve(from, { paths: [dir] });
      jestConfig = requireFrom(findPackageDir(fromMain, from), 'jest-config');
      break;
    } catch (_) { /* next */ }
  }
  if (!jestConfig || typeof jestConfig.readConfigs !== 'function') fatal('cannot load jest-config next to the jest at ' + dir);
  return { jest, dir, version, jestConfig, buildArgv };
}

/**
 * The parts of jest that runCLI uses, as @jest/core resolves them: what the run engine
 * (below) drives directly. Throws when one is missing (not jest 29/30).
 */
function jestParts(J) {
  const coreDir = findPackageDir(require.resolve('@jest/core', { paths: [J.dir] }), '@jest/core');
  const core = requireFrom(coreDir, '@jest/core');
  const parts = {
    core,
    Runtime: defaultOf(requireFrom(coreDir, 'jest-runtime')),
    Resolver: defaultOf(requireFrom(coreDir, 'jest-resolve')),
    util: requireFrom(coreDir, 'jest-util'),
    transform: requireFrom(coreDir, '@jest/transform'),
    watcher: requireFrom(coreDir, 'jest-watcher'),
    console: requireFrom(coreDir, '@jest/console'),
    prettyFormat: null,
  };
  try {
    const pf = requireFrom(coreDir, 'pretty-format');
    parts.prettyFormat = typeof pf.format === 'function' ? pf.format : defaultOf(pf);
  } catch (_) { /* messages without it */ }
  const missing = [
    ['@jest/core SearchSource', core.SearchSource], ['@jest/core createTestScheduler', core.createTestScheduler],
    ['jest-runtime createHasteMap', parts.Runtime && parts.Runtime.createHasteMap], ['jest-runtime createResolver', parts.Runtime && parts.Runtime.createResolver],
    ['jest-util requireOrImportModule', parts.util.requireOrImportModule], ['@jest/transform createScriptTransformer', parts.transform.createScriptTransformer],
    ['jest-watcher TestWatcher', parts.watcher.TestWatcher], ['@jest/console CustomConsole', parts.console.CustomConsole],
  ].filter(([, f]) => typeof f !== 'function').map(([n]) => n);
  if (missing.length) throw new Error('this jest lacks ' + missing.join(', ') + ' (supported: jest 29/30)');
  return parts;
}

const versionAtLeast = (v, want) => {
  const a = String(v).split(/[.-]/).map((x) => parseInt(x, 10) || 0);
  const b = want.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((a[i] || 0) !== b[i]) return (a[i] || 0) > b[i];
  return true;
};

/** argv for readConfigs/runCLI: the suite's config, with what the adapter needs forced. */
async function makeArgv(J, extra) {
  let argv = { _: [], $0: 'jest' };
  if (J.buildArgv) {
    try {
      argv = await J.buildArgv(SUITE_ARGS);
    } catch (err) {
      fatal('cannot build the jest arguments from ' + JSON.stringify(SUITE_ARGS.join(' ')), err);
    }
  } else if (SUITE_ARGS.length) {
    fatal('this jest has no buildArgv to read the options ' + JSON.stringify(SUITE_ARGS.join(' ')) + ' with');
  }
  return Object.assign(argv, {
    // the suite's path patterns choose the files at discovery; a batch names its files
    _: extra.runTestsByPath ? [] : (argv._ || []).map(String),
    $0: 'jest',
    watch: false,
    watchAll: false,
    coverage: false,
    collectCoverage: false,
    bail: 0,
    useStderr: true,
    json: false,
    listTests: false,
    onlyChanged: false,
    onlyFailures: false,
    passWithNoTests: true,
  }, extra);
}

async function readConfigs(J, cwd, argv) {
  try {
    return await J.jestConfig.readConfigs(argv, [cwd]);
  } catch (err) {
    fatal('cannot read the jest configuration', err);
  }
  return undefined;
}

/** The project's own test runner per project config id; only jest-circus is supported. */
function innerRunnersOf(configs) {
  const map = {};
  for (const c of configs) {
    if (!/jest-circus/.test(c.testRunner) || process.env.JEST_JASMINE === '1') {
      fatal('unsupported jest testRunner ' + c.testRunner + ' (project ' + c.rootDir + '): this adapter supports jest-circus (jest\'s default runner) only');
    }
    map[c.id] = c.testRunner;
  }
  return map;
}

/**
 * jest's cacheDirectory for a project: $WARREN_CACHE_DIR/jest (a cache that outlives the
 * run: haste map, transforms, test timings) when WARREN_CACHE_DIR is set and the project's
 * config leaves cacheDirectory at jest's default; else null (keep the project's own).
 */
function warrenCacheDir(J, config) {
  const base = process.env.WARREN_CACHE_DIR;
  if (!base) return null;
  const dflt = J.jestConfig.defaults && J.jestConfig.defaults.cacheDirectory;
  if (!dflt || config.cacheDirectory !== dflt) return null;
  return path.join(path.resolve(base), 'jest');
}

// --------------------------------------------------------------------------- discover

async function discover(J, cwd) {
  const forced = process.env.WARREN_JEST_DISCOVERY;
  const useCollect = forced ? forced === 'collect' : versionAtLeast(J.version, '30.5.0');
  const { configs } = await readConfigs(J, cwd, await makeArgv(J, {}));
  const runners = innerRunnersOf(configs);
  // runCLI takes one cacheDirectory for all the projects: ours only when none has its own
  const cacheDirs = configs.map((c) => warrenCacheDir(J, c));
  const extra = cacheDirs.every(Boolean) ? { cacheDirectory: cacheDirs[0] } : {};
  let argv;
  if (useCollect) {
    argv = await makeArgv(J, Object.assign({ collectTests: true }, extra));
  } else {
    process.env.WARREN_JEST_MODE = 'discover';
    process.env.WARREN_JEST_CWD = cwd;
    process.env.WARREN_JEST_RUNNERS = JSON.stringify(runners);
    argv = await makeArgv(J, Object.assign({ testRunner: __filename, reporters: [__filename] }, extra));
  }
  let results;
  try {
    ({ results } = await J.jest.runCLI(argv, [cwd]));
  } catch (err) {
    fatal('jest failed to collect the tests', err);
  }
  const files = (results.testResults || []).slice().sort((a, b) => {
    const x = relPath(cwd, a.testFilePath);
    const y = relPath(cwd, b.testFilePath);
    return x < y ? -1 : x > y ? 1 : 0;
  });
  const entries = [];
  for (const f of files) {
    const rel = relPath(cwd, f.testFilePath);
    if (f.testExecError) {
      const e = f.testExecError;
      const text = stripAnsi(e.stack && String(e.stack).includes(String(e.message || '')) ? e.stack : (e.message || '') + '\n' + (e.stack || ''));
      const err = { event: 'error', message: 'failed to load ' + rel + ': ' + messageOf(text), file: rel, load: true };
      const details = stripAnsi(f.failureMessage || text).trim();
      if (details) err.details = details;
      entries.push({ test: { event: 'test', id: rel, file: rel, name: rel + ' (failed to load)' }, error: err });
      continue;
    }
    const list = assignIds(rel, (f.testResults || []).map((r) => ({ titles: [...r.ancestorTitles, r.title] })));
    for (const t of list) entries.push({ test: { event: 'test', id: t.id, file: rel, name: t.name } });
  }
  emit({ event: 'start', count: entries.length });
  for (const e of entries) {
    emit(e.test);
    if (e.error) emit(e.error);
  }
  events.done();
  process.exit(0);
}

// --------------------------------------------------------------------------- the run engine (run and serve)

/**
 * What runCLI builds before it runs anything, built once (serve: at the first batch, then
 * kept, as jest's watch mode keeps it): the configuration (read once), one context per
 * project (haste map built once, module map, resolver) and the jest modules. Every failure
 * here is fatal(): the adapter cannot work (an `error` event, exit 2).
 *
 * Each project's config gets this file as testRunner (wrapping the project's own
 * jest-circus runner) and the global config this file as the only reporter, runInBand
 * (the slot is the unit of parallelism: one jest worker, the tests run in this process,
 * each test file still in its own vm context with its own module registry, as jest does).
 */
async function prepare(J, cwd) {
  let P;
  try {
    P = jestParts(J);
  } catch (err) {
    fatal('cannot load jest\'s own modules next to the jest at ' + J.dir, err);
  }
  const argv = await makeArgv(J, { runTestsByPath: true, runInBand: true });
  const read = await readConfigs(J, cwd, argv);
  const runners = innerRunnersOf(read.configs);
  const configs = read.configs.map((c) => Object.freeze(Object.assign({}, c, { testRunner: __filename, cacheDirectory: warrenCacheDir(J, c) || c.cacheDirectory })));
  const globalConfig = Object.freeze(Object.assign({}, read.globalConfig, { reporters: [[__filename, {}]] }));
  const contexts = [];
  try {
    const hasteConsole = new P.console.CustomConsole(process.stderr, process.stderr);
    for (const config of configs) {
      P.util.createDirectory(config.cacheDirectory);
      const hasteMap = await P.Runtime.createHasteMap(config, {
        console: hasteConsole,
        maxWorkers: Math.max(1, Math.floor(globalConfig.maxWorkers / configs.length)),
        resetCache: !config.cache,
        watch: false,
        watchman: globalConfig.watchman,
        workerThreads: globalConfig.workerThreads,
      });
      const { hasteFS, moduleMap } = await hasteMap.build();
      contexts.push({ config, hasteFS, moduleMap, resolver: P.Runtime.createResolver(config, moduleMap) });
    }
  } catch (err) {
    fatal('jest could not map the project files (haste map)', err);
  }
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-jest-'));
  process.on('exit', () => {
    try {
      fs.rmSync(stateDir, { recursive: true, force: true });
    } catch (_) { /* ignore */ }
  });
  Object.assign(process.env, {
    WARREN_JEST_MODE: 'run',
    WARREN_JEST_CWD: cwd,
    WARREN_JEST_RUNNERS: JSON.stringify(runners),
  });
  return { J, P, cwd, globalConfig, contexts, stateDir, batches: 0 };
}

/** jest's runGlobalHook (not exported by @jest/core): globalSetup / globalTeardown of the run's projects. */
async function runGlobalHook(S, tests, globalConfig, moduleName) {
  const modulePaths = new Set(tests.map((t) => t.context.config[moduleName]));
  if (globalConfig[moduleName]) modulePaths.add(globalConfig[moduleName]);
  for (const modulePath of modulePaths) {
    if (!modulePath) continue;
    const owner = tests.find((t) => t.context.config[moduleName] === modulePath);
    const projectConfig = owner ? owner.context.config : tests[0].context.config;
    const transformer = await S.P.transform.createScriptTransformer(projectConfig);
    try {
      await transformer.requireAndTranspileModule(modulePath, async (globalModule) => {
        if (typeof globalModule !== 'function') throw new TypeError(moduleName + ' file must export a function at ' + modulePath);
        await globalModule(globalConfig, projectConfig);
      });
    } catch (error) {
      const writable = (o) => { const d = o && Object.getOwnPropertyDescriptor(o, 'message'); return !!(d && d.writable); };
      if (require('node:util').types.isNativeError(error) && (writable(error) || writable(Object.getPrototypeOf(error)))) {
        error.message = 'Jest: Got error running ' + moduleName + ' - ' + modulePath + ', reason: ' + error.message;
        throw error;
      }
      const shown = S.P.prettyFormat ? S.P.prettyFormat(error, { maxDepth: 3 }) : String(error);
      throw new Error('Jest: Got error running ' + moduleName + ' - ' + modulePath + ', reason: ' + shown);
    }
  }
}

/**
 * One jest run of the test files `absPaths` on the prepared contexts: what runCLI ->
 * runJest does with `--runTestsByPath <files>` (the files that are test files of a project,
 * sorted by the project's test sequencer, globalSetup, the scheduler with its reporters,
 * the timings cached, globalTeardown, testResultsProcessor), minus what the adapter forces
 * off (watch, coverage, bail, onlyChanged/onlyFailures, json, listTests). Resolves to
 * {globalConfig, results} (results null when no file is a test file); throws on a jest
 * failure, never exits.
 */
async function runJest(S, absPaths) {
  const { P } = S;
  P.Resolver.clearDefaultResolverCache();
  const Sequencer = defaultOf(await P.util.requireOrImportModule(S.globalConfig.testSequencer));
  const sequencer = versionAtLeast(S.J.version, '30.0.0') ? new Sequencer({ contexts: S.contexts, globalConfig: S.globalConfig }) : new Sequencer();
  let tests = [];
  for (const context of S.contexts) tests.push(...new P.core.SearchSource(context).findTestsByPaths(absPaths).tests);
  tests = await sequencer.sort(tests);
  let globalConfig = Object.assign({}, S.globalConfig, { nonFlagArgs: absPaths });
  // as runJest: a single test file is reported verbosely (its console output live)
  if (tests.length === 1 && globalConfig.silent !== true && globalConfig.verbose !== false) globalConfig.verbose = true;
  globalConfig = Object.freeze(globalConfig);
  if (tests.length === 0) return { globalConfig, results: null };
  await runGlobalHook(S, tests, globalConfig, 'globalSetup');
  const scheduler = await P.core.createTestScheduler(globalConfig, { startRun: () => {}, firstRun: true, previousSuccess: true });
  let results = await scheduler.scheduleTests(tests, new P.watcher.TestWatcher({ isWatchMode: false }));
  sequencer.cacheResults(tests, results);
  await runGlobalHook(S, tests, globalConfig, 'globalTeardown');
  if (globalConfig.testResultsProcessor) {
    const processor = defaultOf(await P.util.requireOrImportModule(globalConfig.testResultsProcessor));
    results = await processor(results);
  }
  return { globalConfig, results };
}

/**
 * One batch: the ids' files run by jest (runJest above), the events of the requested ids
 * written (the reporter part), then what jest never reported. Resolves to the exit code of
 * run mode (0: all passed or pending, no error; 1 otherwise) and jest's globalConfig;
 * throws when jest itself failed (never exits).
 */
async function runBatch(S, ids) {
  const { cwd } = S;
  const byFile = groupIds(cwd, ids);
  const batchDir = path.join(S.stateDir, String(++S.batches));
  fs.mkdirSync(batchDir);
  fs.writeFileSync(path.join(batchDir, 'ids.json'), JSON.stringify(ids));
  process.env.WARREN_JEST_STATE = batchDir;
  runState = { cwd, stateDir: batchDir, files: new Map(), info: new Map() };
  let globalConfig = S.globalConfig;
  try {
    // a macrotask between the command and the run: the batch's promise chain then starts
    // from the event loop as in a fresh process, not from the microtasks of stdin's
    // 'data' callback (which shows in the async stack traces of failures:
    // `at processTicksAndRejections`)
    await new Promise((resolve) => setImmediate(resolve));
    emit({ event: 'start', count: ids.length });
    const existing = [...byFile.keys()].filter((rel) => fs.existsSync(path.resolve(cwd, rel)));
    if (existing.length > 0) ({ globalConfig } = await runJest(S, existing.map((rel) => path.resolve(cwd, rel))));
    // anything requested that jest never reported must not vanish
    const seenFiles = new Map([...runState.files.values()].map((f) => [f.rel, f]));
    for (const [rel, want] of byFile) {
      const f = seenFiles.get(rel);
      if (!f) {
        const why = fs.existsSync(path.resolve(cwd, rel))
          ? rel + ' is not a test file of this jest configuration'
          : rel + ' does not exist';
        events.fileNotRun(rel, want, why, notFoundTest);
        continue;
      }
      if (!f.kept) continue; // failed to load: its `error` event stands for its tests
      for (const k of f.kept) {
        const rec = runState.info.get(k.id);
        if (rec.ended) continue;
        if (f.execError) continue; // an error outside the tests (afterAll, ...) was reported for the file
        const err = 'WarrenNotRun: not run: jest did not report it';
        endTest(rec, 'failed', 0, err);
      }
      // a whole-file id (a file that failed to load at discovery) of a file that loads now
      for (const id of want.wholeIds) {
        if (f.execError) endTest(common.newRec(id, rel, rel + ' (failed to load)'), 'failed', 0, 'failed to load ' + rel + ' (see the error event)');
        else events.fileLoadsNow(id, rel, f.kept.map((k) => runState.info.get(k.id)));
      }
    }
    events.done();
    return { code: events.anyFailure ? 1 : 0, globalConfig };
  } finally {
    runState = null;
    try {
      fs.rmSync(batchDir, { recursive: true, force: true });
    } catch (_) { /* ignore */ }
  }
}

// --------------------------------------------------------------------------- run

async function run(J, cwd) {
  const ids = common.splitIds(events.idsFileText());
  const S = await prepare(J, cwd);
  let out;
  try {
    out = await runBatch(S, ids);
  } catch (err) {
    fatal('jest could not run', err);
  }
  if (out.globalConfig.forceExit) process.exit(out.code);
  process.exitCode = out.code; // like jest without --forceExit: let the event loop drain
}

// --------------------------------------------------------------------------- serve

/**
 * The warm runner (PROTOCOL.md, serve): jest, its configuration and the projects' contexts
 * (haste maps, resolvers) are loaded as the process starts (a runner started ahead of its
 * first batch, while the run's tests are discovered, is ready when the batch comes); a
 * failure there is the first batch's `error` event, then exit 2, as in run mode. Then
 * every batch is one runJest on them:
 * a fresh scheduler, reporter and test runner per batch, each test file in its own vm
 * context with a fresh module registry (jest's isolation), the transform cache warm.
 */
function serve(cwd) {
  const J = loadJest(cwd, common.resolveFramework(require, 'jest', cwd, __filename, fatal));
  const ready = prepare(J, cwd);
  ready.catch(() => undefined); // awaited (and reported) by the first batch
  let S = null;
  common.serve(events, async (ids) => {
    if (!S) S = await ready;
    try {
      return (await runBatch(S, ids)).code;
    } catch (err) {
      // the event run mode writes before it exits 2; this runner stays up
      const f = formatError(err);
      emit({ event: 'error', message: TAG + ': jest could not run: ' + f.message, details: f.details });
      return 1;
    }
  }, formatError);
}

// --------------------------------------------------------------------------- main

async function main() {
  const mode = process.argv[2];
  const cwd = process.cwd();
  events.open('jest finished (process.exit() called by jest, a test or a file, or an uncaught error)');
  events.checkMode(mode, 'warren-jest.cjs');
  if (mode === 'serve') {
    serve(cwd);
    return;
  }
  const J = loadJest(cwd, common.resolveFramework(require, 'jest', cwd, __filename, fatal));
  if (mode === 'discover') await discover(J, cwd);
  else await run(J, cwd);
}

if (require.main === module) main().catch((err) => fatal('unexpected failure', err));
