#!/usr/bin/env node
/*
 * warren-jest.cjs: Warren's jest adapter (see ../EVENTS.md for the events protocol).
 *
 *   cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl node /abs/warren-jest.cjs discover
 *   cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl WARREN_IDS_FILE=/tmp/ids node /abs/warren-jest.cjs run
 *
 * - Uses the suite's own jest (resolved from the cwd, then from this script), through its
 *   programmatic API (`buildArgv` + `runCLI`): the suite's configuration (jest.config.*,
 *   package.json "jest", projects) applies as with plain `jest`.
 * - This one file plays three parts: the script; jest's `testRunner` (a function: a thin
 *   wrapper around the project's own jest-circus runner); jest's reporter (a class: jest
 *   calls it with `new`). jest loads it by path for those two parts.
 * - Discovery never runs a test body or a hook:
 *   - jest >= 30.5: jest's own `--collectTests` (jest-circus loads each file, registers
 *     its describe/test blocks, walks the tree, runs nothing; no globalSetup either);
 *   - older jest: the wrapper runner marks every test `skip` at circus' `run_start`
 *     (after the file has loaded, before anything runs), so circus reports each one as
 *     pending without calling any hook (circus only calls the hooks of blocks that have an
 *     enabled test). WARREN_JEST_DISCOVERY=collect|runner forces one of the two.
 *   Both list each file's tests in circus' tree order (definition order).
 * - Run: `runCLI` on the requested files (`runTestsByPath`), with the wrapper runner as
 *   testRunner and this file as the only reporter. At circus' `run_start` the wrapper
 *   computes the ids of every test of the file (same walk, same order as discovery) and
 *   removes from the tree every test that was not asked for, so exactly the requested
 *   tests run (hooks of blocks left without tests do not run); it writes the kept ids to
 *   a side file the reporter maps jest's per-test reports onto. A file that throws while
 *   loading never reaches `run_start`: jest reports it as a failed suite (testExecError),
 *   which becomes an `error` event with `file`.
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
 * `randomize` or concurrent tests (test.concurrent) may not keep.
 *
 * Exit codes: discover 0 when it completed (load errors are events, not a failed
 * discovery); run 0 when every test passed or was pending and no `error` event was
 * written, 1 otherwise; 2 when the adapter itself could not work (no jest, bad config,...).
 */
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
// shared with the other plug-ins; next to this file (only this directory may be mounted)
const common = require(path.join(__dirname, 'warren-plugin-common.cjs'));

const TAG = 'warren-jest';
const { relPath, readIdsFile, groupIds } = common;

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
    const byFile = groupIds(cwd, readIdsFile(process.env.WARREN_IDS_FILE));
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
        const ev = { event: 'error', message, file: f.rel };
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

/** jest (its main file `main`: the suite's own, see main()), its version and jest-config. */
function loadJest(cwd, main) {
  const dir = findPackageDir(main, 'jest');
  let jest;
  try {
    jest = require(main);
  } catch (err) {
    fatal('cannot load jest from ' + main, err);
  }
  if (typeof jest.runCLI !== 'function' || typeof jest.buildArgv !== 'function') {
    fatal('the jest at ' + dir + ' has no runCLI/buildArgv; this adapter supports jest 29/30');
  }
  const version = common.packageVersion(dir, '0.0.0');
  // jest-config, as jest itself resolves it (jest -> jest-cli/@jest/core -> jest-config)
  let jestConfig = null;
  for (const from of ['jest-cli', '@jest/core']) {
    try {
      const fromMain = require.resolve(from, { paths: [dir] });
      jestConfig = require(require.resolve('jest-config', { paths: [findPackageDir(fromMain, from)] }));
      break;
    } catch (_) { /* next */ }
  }
  if (!jestConfig || typeof jestConfig.readConfigs !== 'function') fatal('cannot load jest-config next to the jest at ' + dir);
  return { jest, dir, version, jestConfig };
}

const versionAtLeast = (v, want) => {
  const a = String(v).split(/[.-]/).map((x) => parseInt(x, 10) || 0);
  const b = want.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((a[i] || 0) !== b[i]) return (a[i] || 0) > b[i];
  return true;
};

/** argv for runCLI: the suite's config, with what the adapter needs forced. */
async function makeArgv(J, extra) {
  let argv;
  try {
    argv = await J.jest.buildArgv([]);
  } catch (err) {
    fatal('cannot build the jest arguments', err);
  }
  return Object.assign(argv, {
    _: [],
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

/** The project's own test runner per project config id; only jest-circus is supported. */
async function innerRunners(J, cwd, argv) {
  let configs;
  try {
    ({ configs } = await J.jestConfig.readConfigs(argv, [cwd]));
  } catch (err) {
    fatal('cannot read the jest configuration', err);
  }
  const map = {};
  for (const c of configs) {
    if (!/jest-circus/.test(c.testRunner) || process.env.JEST_JASMINE === '1') {
      fatal('unsupported jest testRunner ' + c.testRunner + ' (project ' + c.rootDir + '): this adapter supports jest-circus (jest\'s default runner) only');
    }
    map[c.id] = c.testRunner;
  }
  return map;
}

// --------------------------------------------------------------------------- discover

async function discover(J, cwd) {
  const forced = process.env.WARREN_JEST_DISCOVERY;
  const useCollect = forced ? forced === 'collect' : versionAtLeast(J.version, '30.5.0');
  const probe = await makeArgv(J, {});
  const runners = await innerRunners(J, cwd, probe);
  let argv;
  if (useCollect) {
    argv = await makeArgv(J, { collectTests: true });
  } else {
    process.env.WARREN_JEST_MODE = 'discover';
    process.env.WARREN_JEST_CWD = cwd;
    process.env.WARREN_JEST_RUNNERS = JSON.stringify(runners);
    argv = await makeArgv(J, { testRunner: __filename, reporters: [__filename] });
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
      const err = { event: 'error', message: 'failed to load ' + rel + ': ' + messageOf(text), file: rel };
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

// --------------------------------------------------------------------------- run

async function run(J, cwd) {
  const ids = common.splitIds(events.idsFileText());
  const byFile = groupIds(cwd, ids);
  const probe = await makeArgv(J, {});
  const runners = await innerRunners(J, cwd, probe);
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-jest-'));
  process.on('exit', () => {
    try {
      fs.rmSync(stateDir, { recursive: true, force: true });
    } catch (_) { /* ignore */ }
  });
  Object.assign(process.env, {
    WARREN_JEST_MODE: 'run',
    WARREN_JEST_STATE: stateDir,
    WARREN_JEST_CWD: cwd,
    WARREN_JEST_RUNNERS: JSON.stringify(runners),
  });
  runState = { cwd, stateDir, files: new Map(), info: new Map() };
  const existing = [...byFile.keys()].filter((rel) => fs.existsSync(path.resolve(cwd, rel)));
  const argv = await makeArgv(J, {
    _: existing.map((rel) => path.resolve(cwd, rel)),
    runTestsByPath: true,
    testRunner: __filename,
    reporters: [__filename],
  });
  emit({ event: 'start', count: ids.length });
  let globalConfig = null;
  if (existing.length > 0) {
    try {
      ({ globalConfig } = await J.jest.runCLI(argv, [cwd]));
    } catch (err) {
      fatal('jest could not run', err);
    }
  }
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
  const code = events.anyFailure ? 1 : 0;
  if (globalConfig && globalConfig.forceExit) process.exit(code);
  process.exitCode = code; // like jest without --forceExit: let the event loop drain
}

// --------------------------------------------------------------------------- main

async function main() {
  const mode = process.argv[2];
  const cwd = process.cwd();
  events.open('jest finished (process.exit() called by jest, a test or a file, or an uncaught error)');
  events.checkMode(mode, 'warren-jest.cjs');
  const J = loadJest(cwd, common.resolveFramework(require, 'jest', cwd, __filename, fatal));
  if (mode === 'discover') await discover(J, cwd);
  else await run(J, cwd);
}

if (require.main === module) main().catch((err) => fatal('unexpected failure', err));
