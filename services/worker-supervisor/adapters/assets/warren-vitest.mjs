#!/usr/bin/env node
/*
 * warren-vitest.mjs: Warren's vitest adapter (see ../PROTOCOL.md for the events protocol).
 *
 *   cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl node /abs/warren-vitest.mjs discover
 *   cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl WARREN_IDS_FILE=/tmp/ids node /abs/warren-vitest.mjs run
 *   cd <suite dir> && node /abs/warren-vitest.mjs serve    (commands on stdin, see ../PROTOCOL.md)
 *
 * - Uses the suite's own vitest (resolved from the cwd, then from this script) through its
 *   Node API (`createVitest` from `vitest/node`): the suite's vite/vitest config applies.
 * - Discovery: `vitest.collect()`, the machinery of `vitest list`: the workers import each
 *   test file in collect mode (module code and describe callbacks run, no test body, no
 *   hook). Unlike `vitest list`, tests vitest would skip (`.skip`, `.todo`, not focused)
 *   are listed too: a run reports them as pending. A file that fails to load (throws,
 *   syntax error) is listed as a test whose id is the file, plus an `error` event.
 * - Run: `vitest.runTestSpecifications()` on the requested files, with this file as the
 *   test `runner` (a subclass of vitest's own VitestTestRunner, loaded by the workers) and
 *   a reporter object of ours as the only reporter. In the worker, once a file is
 *   collected (after vitest applied `.only`/`.skip`), the runner computes the ids of its
 *   tests (same walk, same order as discovery) and marks every test that was not asked
 *   for `skip` (and a suite left without a test to run `skip`, as vitest does, so its
 *   hooks do not run): exactly the requested tests run. The reporter maps vitest's tasks
 *   (by task id) onto our ids.
 * - Test ids: `<file> :: <describe > ... > test name>` (vitest's full name); duplicates
 *   within a file get ` #2`, ` #3`... in collection order. `name` is vitest's full name.
 * - Reporting: test_start on onTestCaseReady, test_end on onTestCaseResult (final, after
 *   vitest's own retries); a skipped test is settled when its file ends: pending, unless it
 *   was to run and a hook of its suite failed (vitest then skips the tests under it): that
 *   is a failure (`not run: ...`), never a silent pending. Messages: vitest's own failure
 *   text (the error's stack, or its message), `message` the lines before the stack (first
 *   line, plus the following lines collapsed when it ends with ':'), `details` the text.
 *   Errors outside tests (a file that fails to load, a failing beforeAll/afterAll, an
 *   unhandled error) are `error` events, with `file` when vitest knows it.
 * - Forced: watch off, coverage off, bail off, passWithNoTests; the suite's reporters are
 *   replaced. A custom `runner` in the suite's config is not supported (fatal).
 * - Serve (the warm runner): `run` is one batch of it. At the first batch the Vitest instance
 *   is built (config, vite server, its transform cache, then its worker pool at the first
 *   run) and kept; every batch is one `runTestSpecifications()` of the requested files on
 *   it, as vitest's own watch mode re-runs files: vitest's per-file isolation (`isolate`)
 *   and its pool settings stay the suite's, each batch gets a fresh reporter state, and the
 *   workers read the batch's ids from a file of this process (the env of the workers is
 *   fixed when the pool is built). A failure to load vitest or the config is an `error`
 *   event in the first batch's file, and, remembered, in every later batch's. Modules
 *   transformed once are not transformed again (no file watcher, as in `vitest run`: a
 *   file edited while the runner lives is not seen). At end of stdin vitest is closed
 *   (pool, vite server, globalSetup teardown) before the process exits.
 * - vitest versions: written against vitest 3's Node API (reporter hooks onTestCaseReady /
 *   onTestCaseResult / onTestModuleEnd / onTestRunEnd, globTestSpecifications,
 *   runTestSpecifications, collect); with vitest 1 and 2 the same reporter is driven by
 *   their onCollected / onTaskUpdate / onFinished, files are listed with globTestSpecs /
 *   globTestFiles and run with runFiles, and discovery on vitest 1 (no collect()) runs
 *   every file with no test selected (module code and describe callbacks only).
 * - WARREN_CACHE_DIR: when set and the suite's config chooses no cache directory (vite's
 *   `cacheDir`, vitest's deprecated `test.cache`), vite's cacheDir (vitest's results cache,
 *   vite's dependency cache) is $WARREN_CACHE_DIR/vitest instead of node_modules/.vite.
 *
 * Exit codes: discover 0 when it completed (load errors are events, not a failed
 * discovery); run 0 when every test passed or was pending and no `error` event was
 * written, 1 otherwise; 2 when the adapter itself could not work (no vitest, bad config,...).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

// shared with the other plug-ins; next to this file (only this directory may be mounted)
const common = createRequire(import.meta.url)('./warren-plugin-common.cjs');
common.adoptColorFlags(common.frameworkArgs()); // as vitest's own CLI sees them (tinyrainbow reads argv)

const TAG = 'warren-vitest';
const SELF = fileURLToPath(import.meta.url);
const isMain = !!process.argv[1] && path.resolve(process.argv[1]) === SELF;
const { stripAnsi, relPath, readIdsFile, groupIds } = common;

// --------------------------------------------------------------------------- helpers (both parts)

/** The message of a failure text ("Name: message\n    at frame..."): the lines before the first stack frame, one-lined. */
const messageOf = (text) => common.messageOfText(stripAnsi(text));

/** vitest's failure text for a serialized error (what its json reporter writes). */
const errorText = (e) => stripAnsi(e ? e.stack || e.message || String(e) : 'Error');

/** Every test of a vitest File task, in collection order, with its suite names. */
function collectTasks(task, ancestors, out) {
  for (const t of task.tasks || []) {
    if (t.type === 'suite') collectTasks(t, [...ancestors, t.name], out);
    else if (t.type === 'test') out.push({ task: t, titles: [...ancestors, t.name] });
  }
  return out;
}

/** ids: `<file> :: a > b > name`, duplicates suffixed ` #2`...; name = vitest's full name. */
function assignIds(rel, entries) {
  const seen = new Map();
  return entries.map((e) => {
    const name = e.titles.join(' > ');
    return Object.assign({}, e, { id: common.numberedId(rel, seen, name), name });
  });
}

// --------------------------------------------------------------------------- runner part (vitest worker)

const runnerRole = !isMain && !!process.env.WARREN_VITEST_RUNNERS;
const Base = runnerRole ? (await import(process.env.WARREN_VITEST_RUNNERS)).VitestTestRunner : class {};

/** vitest's VitestTestRunner, running only the requested tests of each file. */
export default class WarrenVitestRunner extends Base {
  onCollected(files) {
    const cwd = process.env.WARREN_VITEST_CWD || process.cwd();
    // WARREN_VITEST_IDS: set by the main process (serve: a file of its own, rewritten per batch)
    const byFile = groupIds(cwd, readIdsFile(process.env.WARREN_VITEST_IDS || process.env.WARREN_IDS_FILE));
    for (const file of files) {
      const want = byFile.get(relPath(cwd, file.filepath)) || { whole: false, ids: new Set() };
      if (want.whole) continue;
      for (const t of assignIds(relPath(cwd, file.filepath), collectTasks(file, [], []))) {
        if (!want.ids.has(t.id) && (t.task.mode === 'run' || t.task.mode === 'queued' || t.task.mode === 'only')) t.task.mode = 'skip';
      }
      // a suite with nothing left to run is skipped (its hooks do not run), as vitest does
      (function settle(suite) {
        for (const t of suite.tasks || []) if (t.type === 'suite') settle(t);
        if ((suite.mode === 'run' || suite.mode === 'queued') && suite.tasks && suite.tasks.length &&
          suite.tasks.every((t) => t.mode !== 'run' && t.mode !== 'queued')) suite.mode = 'skip';
      })(file);
    }
    return super.onCollected ? super.onCollected(files) : undefined;
  }
}

// --------------------------------------------------------------------------- events

const events = common.createEvents(TAG, formatError);
const { emit, fatal, guard, startTest, endTest } = events;

function formatError(err) {
  if (err === null || err === undefined || (typeof err !== 'object' && typeof err !== 'function')) return { message: 'Error: ' + String(err) };
  let text;
  try {
    const msg = err.message === undefined || err.message === null ? '' : String(err.message);
    const stack = typeof err.stack === 'string' ? err.stack : '';
    text = stack && stack.includes(msg) ? stack : (err.name || 'Error') + ': ' + msg + (stack ? '\n' + stack : '');
  } catch (_) {
    text = 'Error';
  }
  return { message: messageOf(text), details: stripAnsi(text) };
}

/**
 * The adapter cannot work (no vitest, a config that does not load, vitest failing to run):
 * thrown, then `fatal()` in run and discover mode (exit 2), an `error` event of the batch
 * in serve mode (the same event, see failureEvent).
 */
class AdapterFailure extends Error {
  constructor(reason, cause) {
    super(reason);
    this.reason = reason;
    this.failureCause = cause;
  }
}

const failure = (reason, cause) => new AdapterFailure(reason, cause);

/** The `error` event that events.fatal(f.reason, f.failureCause) writes, without the exit. */
function failureEvent(f) {
  const ev = { event: 'error', message: TAG + ': ' + f.reason };
  if (f.failureCause) {
    const x = formatError(f.failureCause);
    ev.message += ': ' + x.message;
    if (x.details) ev.details = x.details;
  }
  return ev;
}

function failNotFound(state, id, why) {
  const rec = common.recOfId(id);
  state.extra.push(rec);
  endTest(rec, 'failed', 0, 'WarrenTestNotFound: ' + why);
}

function errorEvent(prefix, error, file) {
  const text = errorText(error);
  const ev = { event: 'error', message: prefix + messageOf(text) };
  if (file) ev.file = file;
  if (text.trim()) ev.details = text.trim();
  return ev;
}

// --------------------------------------------------------------------------- reporter part (main process)

/**
 * The state of the batch running now, null between batches: {cwd, byFile, specFiles: Set of
 * the absolute paths run, modules: Map(moduleId -> m), byTask: Map(taskId -> rec), extra: []}.
 * Module-level, not a field of the reporter: vitest may copy the reporter objects of its
 * options; a later batch must see none of an earlier one's state.
 */
let batch = null;

class WarrenReporter {
  get s() {
    return batch;
  }

  /** Our record of a test module of this batch; null outside a batch, or for a module the batch did not run. */
  module(testModule) {
    const s = this.s;
    if (!s) return null;
    let m = s.modules.get(testModule.moduleId);
    if (m) return m;
    if (s.specFiles && !s.specFiles.has(path.resolve(testModule.moduleId))) return null;
    const rel = relPath(s.cwd, testModule.moduleId);
    const want = s.byFile.get(rel) || { whole: false, wholeIds: [], ids: new Set(), requested: [] };
    m = { rel, want, recs: [], ended: false, loadFailed: false, errorsReported: false };
    s.modules.set(testModule.moduleId, m);
    const all = assignIds(rel, collectTasks(testModule.task, [], []));
    for (const t of all) {
      if (!want.whole && !want.ids.has(t.id)) continue;
      const rec = Object.assign(common.newRec(t.id, rel, t.name), { taskId: t.task.id, mode: t.task.mode });
      m.recs.push(rec);
      s.byTask.set(t.task.id, rec);
    }
    m.found = new Set(m.recs.map((r) => r.id));
    return m;
  }

  onTestModuleCollected(testModule) {
    guard(() => this.module(testModule));
  }

  onTestCaseReady(testCase) {
    guard(() => {
      if (!this.module(testCase.module)) return;
      const rec = this.s.byTask.get(testCase.id);
      if (rec) startTest(rec);
    });
  }

  onTestCaseResult(testCase) {
    guard(() => {
      if (!this.module(testCase.module)) return;
      const rec = this.s.byTask.get(testCase.id);
      if (!rec) return;
      const task = testCase.task;
      const state = task.result && task.result.state;
      const duration = task.result && task.result.duration;
      if (state === 'pass') endTest(rec, 'passed', duration);
      else if (state === 'fail') {
        const f = common.failureOfTexts((task.result.errors || []).map(errorText), messageOf);
        endTest(rec, 'failed', duration, f.message, f.details);
      }
      // skipped: settled when the module ends (a failed hook above it makes it a failure)
    });
  }

  onTestModuleEnd(testModule) {
    guard(() => this.endModule(testModule));
  }

  endModule(testModule) {
    const m = this.module(testModule);
    if (!m || m.ended) return;
    m.ended = true;
    const task = testModule.task;
    const moduleErrors = (task.result && task.result.errors) || [];
    const hasTests = collectTasks(task, [], []).length > 0;
    if (moduleErrors.length && !hasTests) {
      // the file failed to load: its error stands for every id of it
      m.loadFailed = true;
      for (const e of moduleErrors) emit(errorEvent('failed to load ' + m.rel + ': ', e, m.rel));
      return;
    }
    // errors outside tests: the module's own (top-level hooks) and its suites' (hooks)
    const failedSuites = new Map(); // suite task -> first error
    for (const e of moduleErrors) emit(errorEvent('error outside the tests of ' + m.rel + ': ', e, m.rel));
    if (moduleErrors.length) failedSuites.set(task, moduleErrors[0]);
    (function walk(suite, names) {
      for (const t of suite.tasks || []) {
        if (t.type !== 'suite') continue;
        const errs = (t.result && t.result.errors) || [];
        const full = [...names, t.name];
        for (const e of errs) emit(errorEvent('error in suite "' + full.join(' > ') + '" of ' + m.rel + ': ', e, m.rel));
        if (errs.length) failedSuites.set(t, errs[0]);
        walk(t, full);
      }
    })(task, []);
    const byTaskId = new Map(collectTasks(task, [], []).map((x) => [x.task.id, x.task]));
    for (const rec of m.recs) {
      if (rec.ended) continue;
      const t = byTaskId.get(rec.taskId);
      const state = t && t.result && t.result.state;
      if (state === 'pass' || state === 'fail') {
        // result not seen through onTestCaseResult (should not happen): take it now
        const f = common.failureOfTexts(((t.result && t.result.errors) || []).map(errorText), messageOf);
        endTest(rec, state === 'pass' ? 'passed' : 'failed', t.result.duration, state === 'fail' ? f.message : undefined, f.details);
        continue;
      }
      if (state === 'skip' || state === 'todo' || t.mode === 'skip' || t.mode === 'todo') {
        // skipped because a hook above it failed (it was to run): a failure, not a pending test
        let failedAbove = null;
        if (rec.mode === 'run' || rec.mode === 'queued') {
          for (let p = t.suite; p && !failedAbove; p = p.suite) if (failedSuites.has(p)) failedAbove = failedSuites.get(p);
          if (!failedAbove && failedSuites.has(task)) failedAbove = failedSuites.get(task);
        }
        if (failedAbove) endTest(rec, 'failed', 0, 'not run: a hook of its suite failed: ' + messageOf(errorText(failedAbove)), errorText(failedAbove));
        else endTest(rec, 'pending', 0);
      }
    }
    for (const id of m.want.requested) {
      if (!m.found.has(id)) failNotFound(this.s, id, 'test not found in ' + m.rel + ' (renamed or removed since discovery, or defined conditionally)');
    }
  }

  onTestRunEnd(testModules, unhandledErrors) {
    if (!this.s) return;
    guard(() => {
      for (const tm of testModules || []) this.endModule(tm);
      for (const e of unhandledErrors || []) {
        const p = e && (e.VITEST_TEST_PATH || (e.meta && e.meta.VITEST_TEST_PATH));
        const where = e && e.VITEST_TEST_NAME ? ' (during "' + e.VITEST_TEST_NAME + '")' : '';
        emit(errorEvent('unhandled error' + where + ': ', e, p ? relPath(this.s.cwd, p) : undefined));
      }
    });
  }

  onUserConsoleLog(log) {
    const s = this.s;
    const where = s && log.taskId && s.byTask.get(log.taskId) ? s.byTask.get(log.taskId).id : log.origin || '';
    process.stderr.write('[' + where + '] ' + (log.type || 'stdout') + ': ' + String(log.content).replace(/\n$/, '') + '\n');
  }
}

/** A File task (vitest 1, 2) as the TestModule of vitest 3's reporter API, as far as WarrenReporter reads it. */
const legacyModule = (file) => ({ moduleId: file.filepath, task: file });

/**
 * vitest 1 and 2 have none of the reporter hooks above (vitest 3's): the same reporter,
 * driven by their onCollected / onTaskUpdate / onFinished. A test's result is taken when its
 * file ends (a file task's final state), never from an intermediate update (a test being
 * retried).
 */
class LegacyWarrenReporter extends WarrenReporter {
  onInit(ctx) {
    this.ctx = ctx;
  }

  onCollected(files) {
    for (const f of files || []) this.onTestModuleCollected(legacyModule(f));
  }

  onTaskUpdate(packs) {
    if (!this.s) return;
    const idMap = this.ctx && this.ctx.state && this.ctx.state.idMap;
    if (!idMap) return;
    for (const pack of packs || []) {
      const task = idMap.get(pack[0]);
      const state = pack[1] && pack[1].state;
      if (!task || !state) continue;
      if (task.type === 'test' && state === 'run' && task.file) {
        this.onTestCaseReady({ id: task.id, task, module: legacyModule(task.file) });
      } else if (task.type === 'suite' && typeof task.filepath === 'string' && !task.suite && (state === 'pass' || state === 'fail')) {
        this.onTestModuleEnd(legacyModule(task));
      }
    }
  }

  onFinished(files, errors) {
    this.onTestRunEnd((files || []).map(legacyModule), errors);
  }
}

/** The major version of vitest (3 when unknown). */
const majorOf = (V) => parseInt(String(V.version), 10) || 3;

// --------------------------------------------------------------------------- vitest

async function loadVitest(cwd) {
  let dir = null;
  for (const from of [path.join(cwd, 'package.json'), SELF]) {
    try {
      // vitest's package.json is exported; its main entry may be ESM-only
      dir = path.dirname(createRequire(from).resolve('vitest/package.json'));
      break;
    } catch (_) {
      try {
        dir = common.findPackageDir(createRequire(from).resolve('vitest'), 'vitest');
        if (dir) break;
      } catch (_) { /* next */ }
    }
  }
  if (!dir) throw failure('cannot find vitest (neither in the suite at ' + cwd + ' nor next to ' + SELF + ')');
  let pkg;
  try {
    pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  } catch (err) {
    throw failure('cannot read ' + path.join(dir, 'package.json'), err);
  }
  const entry = (sub) => {
    const e = pkg.exports && pkg.exports[sub];
    const target = typeof e === 'string' ? e : e && (e.import && (typeof e.import === 'string' ? e.import : e.import.default) || e.default);
    if (!target) throw failure('vitest ' + pkg.version + ' at ' + dir + ' has no export "' + sub + '"; this adapter supports vitest 1 to 3');
    return pathToFileURL(path.join(dir, target)).href;
  };
  let node;
  try {
    node = await import(entry('./node'));
  } catch (err) {
    if (err instanceof AdapterFailure) throw err;
    throw failure('cannot load vitest/node from ' + dir, err);
  }
  if (typeof node.createVitest !== 'function') throw failure('vitest ' + pkg.version + ' at ' + dir + ' has no createVitest; this adapter supports vitest 1 to 3');
  return { node, dir, version: pkg.version, runnersUrl: entry('./runners'), suite: suiteArgs(node, pkg.version) };
}

/**
 * The project's own vitest options and file filters (its test command's, PROTOCOL.md), read
 * by vitest's own CLI parser: {options, filter}.
 */
function suiteArgs(node, version) {
  const args = common.frameworkArgs();
  if (!args.length) return { options: {}, filter: [] };
  if (typeof node.parseCLI !== 'function') throw failure('vitest ' + version + ' has no parseCLI to read the options ' + JSON.stringify(args.join(' ')) + ' with');
  let parsed;
  try {
    parsed = node.parseCLI(['vitest', ...args]);
  } catch (err) {
    throw failure('cannot read the vitest options ' + JSON.stringify(args.join(' ')), err);
  }
  const options = Object.assign({}, parsed.options);
  delete options['--'];
  return { options, filter: (parsed.filter || []).map(String) };
}

/**
 * WARREN_CACHE_DIR set: a vite plugin pointing vite's cacheDir (vitest keeps its results
 * cache under it) at $WARREN_CACHE_DIR/vitest when the suite's config chose none.
 */
function cacheDirOverrides() {
  const base = process.env.WARREN_CACHE_DIR;
  if (!base) return {};
  const dir = path.resolve(base, 'vitest');
  return {
    plugins: [{
      name: 'warren:cache-dir',
      config(config) {
        const test = config && config.test;
        if (config && config.cacheDir != null) return undefined; // the suite's choice
        if (test && test.cache !== undefined) return undefined; // vitest's own (deprecated) cache.dir, or cache: false
        return { cacheDir: dir };
      },
    }],
  };
}

async function createVitest(V, options) {
  process.env.TEST = 'true';
  process.env.VITEST = 'true';
  process.env.NODE_ENV ??= 'test';
  try {
    return await V.node.createVitest('test', Object.assign({}, V.suite.options, {
      watch: false,
      run: true,
      bail: 0,
      passWithNoTests: true,
      coverage: { enabled: false },
      reporters: [{}],
    }, options), cacheDirOverrides(), { stdout: process.stderr, stderr: process.stderr });
  } catch (err) {
    throw failure('cannot start vitest with the suite configuration', err);
  }
}

// Where vitest's Node API differs between versions (feature-detected; 3 is the one tested).

/** Every test file of the configuration, as specifications runnable by runSpecs. */
function globSpecs(vitest, filter = []) {
  if (typeof vitest.globTestSpecifications === 'function') return vitest.globTestSpecifications(filter); // vitest 3
  if (typeof vitest.globTestSpecs === 'function') return vitest.globTestSpecs(filter); // 2.1
  return vitest.globTestFiles(filter); // 1, 2.0: [project, file] pairs
}

/** The absolute path of a specification (a TestSpecification, or a [project, file] pair). */
const specFile = (spec) => path.resolve(spec.moduleId || spec[1]);

/** Runs the specifications on the warm instance, as its watch mode re-runs files (no `onWatcher*` reports). */
function runSpecs(vitest, specs) {
  if (typeof vitest.runTestSpecifications === 'function') return vitest.runTestSpecifications(specs, false); // 3
  return vitest.runFiles(specs, false); // 1, 2
}

// --------------------------------------------------------------------------- discover

/**
 * vitest 1 has no collect(): every test file is run with no test selected (the runner marks
 * them all skipped, their suites too, so no hook runs): module code and describe callbacks
 * run, as in collect mode.
 */
async function collectByRunning(V, cwd) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-vitest-'));
  process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
  const idsPath = path.join(tmp, 'ids');
  fs.writeFileSync(idsPath, '');
  Object.assign(process.env, { WARREN_VITEST_RUNNERS: V.runnersUrl, WARREN_VITEST_CWD: cwd, WARREN_VITEST_IDS: idsPath });
  const vitest = await createVitest(V, { runner: SELF });
  const specs = await globSpecs(vitest, V.suite.filter);
  if (specs.length) await runSpecs(vitest, specs);
  const files = new Set(specs.map(specFile));
  return { vitest, result: { testModules: vitest.state.getFiles().filter((f) => files.has(path.resolve(f.filepath))).map(legacyModule), unhandledErrors: vitest.state.getUnhandledErrors() } };
}

async function discover(V, cwd) {
  let vitest;
  let result;
  if (majorOf(V) < 2) {
    try {
      ({ vitest, result } = await collectByRunning(V, cwd));
    } catch (err) {
      if (err instanceof AdapterFailure) throw err;
      fatal('vitest failed to collect the tests', err);
    }
  } else {
    vitest = await createVitest(V, {});
    try {
      result = await vitest.collect(V.suite.filter); // the suite's own file filters choose the files
    } catch (err) {
      fatal('vitest failed to collect the tests', err);
    }
    // vitest 2: {tests: File[], errors}
    if (!result.testModules) result = { testModules: (result.tests || []).map(legacyModule), unhandledErrors: result.errors };
  }
  const modules = [...result.testModules].sort((a, b) => {
    const x = relPath(cwd, a.moduleId);
    const y = relPath(cwd, b.moduleId);
    return x < y ? -1 : x > y ? 1 : 0;
  });
  const entries = [];
  const seenFiles = new Set();
  for (const tm of modules) {
    const rel = relPath(cwd, tm.moduleId);
    if (seenFiles.has(rel)) continue; // the same file in several projects: one entry (ids have no project)
    seenFiles.add(rel);
    const task = tm.task;
    const errors = (task.result && task.result.errors) || [];
    const tests = collectTasks(task, [], []);
    if (errors.length && tests.length === 0) {
      entries.push({ test: { event: 'test', id: rel, file: rel, name: rel + ' (failed to load)' }, errors: errors.map((e) => errorEvent('failed to load ' + rel + ': ', e, rel)) });
      continue;
    }
    const errs = errors.map((e) => errorEvent('error while collecting ' + rel + ': ', e, rel));
    for (const t of assignIds(rel, tests)) entries.push({ test: { event: 'test', id: t.id, file: rel, name: t.name }, errors: errs.splice(0) });
  }
  emit({ event: 'start', count: entries.length });
  for (const e of entries) {
    emit(e.test);
    for (const err of e.errors || []) emit(err);
  }
  for (const e of result.unhandledErrors || []) emit(errorEvent('unhandled error while collecting: ', e));
  events.done();
  try {
    await vitest.close();
  } catch (_) { /* ignore */ }
  process.exit(0);
}

// --------------------------------------------------------------------------- run: batches on one vitest

/**
 * The vitest of this process, built at the first batch and kept: runBatch(ids) runs one
 * batch (the `run` mode of one process, or one command of `serve`) and resolves to its exit
 * code (0 or 1); it throws an AdapterFailure when vitest cannot run at all (the first
 * batch's failure to build vitest is every later batch's too). `loadV()` gives vitest's
 * modules; `idsPath` is the file the workers read the batch's ids from.
 */
function createBatchRunner(cwd, loadV, idsPath) {
  let ready = null;
  let vitest = null;

  async function build() {
    const V = await loadV();
    Object.assign(process.env, { WARREN_VITEST_RUNNERS: V.runnersUrl, WARREN_VITEST_CWD: cwd, WARREN_VITEST_IDS: idsPath });
    const Reporter = majorOf(V) >= 3 ? WarrenReporter : LegacyWarrenReporter;
    vitest = await createVitest(V, { runner: SELF, reporters: [new Reporter()] });
    for (const p of vitest.projects || []) {
      if (p.config && p.config.runner && path.resolve(p.config.runner) !== SELF) {
        throw failure('project "' + (p.name || p.config.root) + '" has its own test runner ' + p.config.runner + ': not supported by this adapter');
      }
    }
    return vitest;
  }

  async function runBatch(ids) {
    const byFile = groupIds(cwd, ids);
    if (!ready) ready = build();
    const v = await ready;
    const state = { cwd, byFile, specFiles: new Set(), modules: new Map(), byTask: new Map(), extra: [] };
    batch = state;
    try {
      let specs = [];
      try {
        const all = await globSpecs(v);
        const wanted = new Set([...byFile.keys()].map((rel) => path.resolve(cwd, rel)));
        specs = all.filter((s) => wanted.has(specFile(s)));
      } catch (err) {
        throw failure('cannot list the test files', err);
      }
      for (const s of specs) state.specFiles.add(specFile(s));
      emit({ event: 'start', count: ids.length });
      if (specs.length) {
        try {
          await runSpecs(v, specs);
        } catch (err) {
          throw failure('vitest could not run', err);
        }
      }
      // anything requested that vitest never reported must not vanish
      const modByRel = new Map([...state.modules.values()].map((m) => [m.rel, m]));
      for (const [rel, want] of byFile) {
        const m = modByRel.get(rel);
        if (!m) {
          const why = fs.existsSync(path.resolve(cwd, rel)) ? rel + ' is not a test file of this vitest configuration' : rel + ' does not exist';
          events.fileNotRun(rel, want, why, (id, w) => failNotFound(state, id, w));
          continue;
        }
        if (m.loadFailed) continue; // its `error` event stands for its tests
        for (const rec of m.recs) if (!rec.ended) endTest(rec, 'failed', 0, 'WarrenNotRun: not run: vitest did not report it');
        for (const id of want.wholeIds) events.fileLoadsNow(id, rel, m.recs); // failed to load at discovery, loads now
      }
      events.done();
      return events.anyFailure ? 1 : 0;
    } finally {
      batch = null;
    }
  }

  /** Closes vitest (pool, vite server, globalSetup teardown); with timeoutMs, waits no longer than that. */
  async function close(timeoutMs) {
    const v = vitest;
    vitest = null;
    if (!v) return;
    const closing = Promise.resolve().then(() => v.close()).catch(() => { /* ignore */ });
    if (!timeoutMs) return closing;
    let timer;
    await Promise.race([closing, new Promise((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
    })]);
    clearTimeout(timer);
    return undefined;
  }

  return { runBatch, close, get vitest() {
    return vitest;
  } };
}

async function run(V, cwd) {
  const ids = common.splitIds(events.idsFileText());
  const runner = createBatchRunner(cwd, async () => V, process.env.WARREN_IDS_FILE);
  const code = await runner.runBatch(ids);
  await runner.close();
  process.exit(code); // as `vitest run` does once closed
}

// --------------------------------------------------------------------------- serve

function serveMode(cwd) {
  // the workers' env is fixed when vitest builds its pool: the ids go through a file of ours
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-vitest-'));
  const idsPath = path.join(tmp, 'ids');
  fs.writeFileSync(idsPath, '');
  process.on('exit', () => {
    try {
      fs.rmSync(tmp, { recursive: true, force: true });
    } catch (_) { /* gone */ }
  });
  const runner = createBatchRunner(cwd, () => loadVitest(cwd), idsPath);

  common.serve(events, async (ids) => {
    // the ids as WARREN_IDS_FILE carries them in run mode: one a line, read back the same way
    const text = ids.join('\n') + '\n';
    fs.writeFileSync(idsPath, text);
    try {
      return await runner.runBatch(common.splitIds(text));
    } catch (err) {
      if (!(err instanceof AdapterFailure)) throw err;
      const ev = failureEvent(err); // what run mode's fatal() writes, the runner staying up
      emit(ev);
      process.stderr.write(ev.message + '\n' + (ev.details ? ev.details + '\n' : ''));
      return 1;
    }
  }, formatError, {
    // at the end of stdin: vitest is closed first (its pool, the vite server, the suite's
    // globalSetup teardown), within vitest's teardownTimeout
    close: () => {
      const v = runner.vitest;
      if (!v) return undefined;
      return runner.close((v.config && Number(v.config.teardownTimeout)) || 10000);
    },
  });
}

// --------------------------------------------------------------------------- main

async function main() {
  const mode = process.argv[2];
  const cwd = process.cwd();
  events.open('vitest finished (process.exit() called by vitest, a test or a file, or an uncaught error)');
  events.checkMode(mode, 'warren-vitest.mjs');
  if (mode === 'serve') return serveMode(cwd);
  const V = await loadVitest(cwd);
  if (mode === 'discover') await discover(V, cwd);
  else await run(V, cwd);
  return undefined;
}

if (isMain) {
  main().catch((err) => {
    if (err instanceof AdapterFailure) fatal(err.reason, err.failureCause);
    else fatal('unexpected failure', err);
  });
}
