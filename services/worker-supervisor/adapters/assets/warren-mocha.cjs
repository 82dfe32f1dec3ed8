#!/usr/bin/env node
/*
 * warren-mocha.cjs: Warren's mocha adapter (see ../PROTOCOL.md for the events protocol).
 *
 *   cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl node /abs/warren-mocha.cjs discover
 *   cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl WARREN_IDS_FILE=/tmp/ids node /abs/warren-mocha.cjs run
 *
 * - Uses the suite's own mocha (resolved from the cwd), falling back to the mocha
 *   resolvable from this script.
 * - Reads the suite's mocha config (.mocharc.*, package.json "mocha", MOCHA_OPTIONS)
 *   through mocha's lib/cli/options loadOptions, collects files through
 *   lib/cli/collect-files, loads `require` modules through lib/cli/run-helpers
 *   handleRequires (root hook plugins, global fixtures).
 * - Every spec file is loaded on its own (into its own root suite, with mocha's
 *   pre-require/require/post-require events and esm-utils requireOrImport), so a file that
 *   throws while loading is reported as an `error` event (and, in discovery, as a
 *   `<file> (failed to load)` test) and cannot leave the interface in a broken state for
 *   the next file. In run mode the per-file root suites are then merged into mocha's root
 *   suite (root-level hooks of a file stay global, exactly as with plain mocha).
 * - Test ids: `<file> :: <fullTitle>`; duplicate full titles within a file get ` #2`,
 *   ` #3`... in mocha's execution order (a suite's own tests, then its child suites),
 *   computed on the complete tree of the file, so discover and run agree.
 * - The suite's reporter is never used (nothing it would write), `parallel`/`watch` are
 *   forced off; `grep`/`fgrep`/`invert` and `.only` are honoured by discovery and ignored
 *   by run (the ids are the selection).
 *
 * Exit codes: discover 0 when it completed (load errors are events, not a failed
 * discovery); run 0 when every test passed or was pending and no `error` event was
 * written, 1 otherwise; 2 when the adapter itself could not work (bad config, no mocha,...).
 */
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const util = require('node:util');
const url = require('node:url');
// shared with the other plug-ins; next to this file (only this directory may be mounted)
const common = require(path.join(__dirname, 'warren-plugin-common.cjs'));

const { oneLine } = common;
const cwd = process.cwd();
const mode = process.argv[2];

// --------------------------------------------------------------------------- events

const events = common.createEvents('warren-mocha', formatError);
const { emit, fatal, startTest } = events;

/** `{message: "ErrorName: first line of message", details: stack (+ rest, diff)}` */
function formatError(err) {
  if (err === null || err === undefined || (typeof err !== 'object' && typeof err !== 'function')) {
    return { message: 'Error: ' + String(err) };
  }
  let name = 'Error';
  try {
    name = err.name || (err.constructor && err.constructor.name) || 'Error';
  } catch (_) { /* exotic object */ }
  let msg = '';
  try {
    msg = err.message === undefined || err.message === null ? '' : String(err.message);
  } catch (_) { /* ignore */ }
  const message = msg ? name + ': ' + oneLine(msg) : String(name);
  let stack = '';
  try {
    stack = typeof err.stack === 'string' ? err.stack : '';
  } catch (_) { /* ignore */ }
  const parts = [];
  const restOfMessage = msg.includes('\n') ? msg.slice(msg.indexOf('\n') + 1) : '';
  if (restOfMessage && !stack.includes(restOfMessage)) parts.push(restOfMessage);
  if (stack) parts.push(stack);
  // chai & co: mocha would show a diff of actual/expected; keep them in the details.
  try {
    if (err.showDiff !== false && 'actual' in err && 'expected' in err && !msg.includes('\n')) {
      const ins = (v) => util.inspect(v, { depth: 4, breakLength: 100, maxArrayLength: 50, maxStringLength: 2000 });
      parts.push('expected: ' + ins(err.expected) + '\nactual:   ' + ins(err.actual));
    }
  } catch (_) { /* ignore */ }
  const details = parts.join('\n');
  return details ? { message, details } : { message };
}

const relPath = (abs) => common.relPath(cwd, abs);

// --------------------------------------------------------------------------- mocha

/** mocha (its main file `main`: the suite's own, see main()) and the internals we use. */
function loadMocha(main) {
  const dir = common.findPackageDir(main, 'mocha') || path.dirname(main);
  const lib = (p) => path.join(dir, 'lib', p);
  let Mocha;
  try {
    Mocha = require(main);
  } catch (err) {
    fatal('cannot load mocha from ' + main, err);
  }
  const internal = (p, what) => {
    try {
      return require(lib(p));
    } catch (err) {
      fatal('cannot load mocha internal module lib/' + p + ' (' + what + ') from ' + dir +
        '; this adapter supports mocha 10/11', err);
    }
  };
  const { loadOptions } = internal('cli/options', 'config loading');
  const collectFiles = internal('cli/collect-files', 'spec file collection');
  let requireOrImport;
  try {
    requireOrImport = require(lib('nodejs/esm-utils')).requireOrImport;
  } catch (_) { /* fallback below */ }
  if (typeof requireOrImport !== 'function') {
    requireOrImport = async (file) => {
      try {
        return require(file);
      } catch (err) {
        if (err && err.code === 'ERR_REQUIRE_ESM') return import(url.pathToFileURL(file).href);
        throw err;
      }
    };
  }
  let handleRequires = null;
  try {
    handleRequires = require(lib('cli/run-helpers')).handleRequires;
  } catch (_) { /* fallback below */ }
  const version = common.packageVersion(dir, '?');
  return { Mocha, dir, version, loadOptions, collectFiles, requireOrImport, handleRequires };
}

const castArray = (v) => (v === undefined || v === null || v === false ? [] : Array.isArray(v) ? v : [v]);

function isTruthy(v) {
  return v === true || v === 'true';
}

/** The config, the `require` modules and the ui: loaded once per process (serve: once per
 * runner, as mocha's own watch mode does, and as soon as it starts: a runner started ahead
 * of its first batch loads them while the run's tests are discovered). */
let loadedOnce = null;
/** What loadedOnce resolved to. */
let loaded = null;

async function setup(M) {
  loadedOnce ??= loadConfig(M);
  loaded = await loadedOnce;
  return { opts: loaded.opts, mocha: newMocha(M, loaded), ui: loaded.ui };
}

async function loadConfig(M) {
  const { Mocha } = M;
  let opts;
  try {
    opts = M.loadOptions(common.frameworkArgs()); // the project's own options and spec paths, with its config files
  } catch (err) {
    fatal('cannot read the mocha configuration', err);
  }
  // loadOptions keeps the names as written (`check-leaks`); mocha's CLI (yargs) adds the
  // camelCase each Mocha option is read by (`checkLeaks`)
  for (const key of Object.keys(opts)) {
    const camel = key.replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (camel !== key && !(camel in opts)) opts[camel] = opts[key];
  }

  // `require` option: load those modules first (root hook plugins, global fixtures).
  const requires = castArray(opts.require).map((mod) => {
    if (fs.existsSync(mod) || fs.existsSync(mod + '.js')) return path.resolve(mod);
    try {
      // resolve bare names from the suite (mocha would resolve them from its own location)
      return require.resolve(mod, { paths: [cwd] });
    } catch (_) {
      return mod;
    }
  });
  let plugins = {};
  try {
    if (M.handleRequires) {
      plugins = (await M.handleRequires(requires)) || {};
    } else {
      const rootHooks = [];
      for (const mod of requires) {
        const m = await M.requireOrImport(mod);
        if (m && m.mochaHooks) rootHooks.push(typeof m.mochaHooks === 'function' ? await m.mochaHooks() : m.mochaHooks);
      }
      if (rootHooks.length) {
        const merged = { beforeAll: [], beforeEach: [], afterAll: [], afterEach: [] };
        for (const h of rootHooks) for (const k of Object.keys(merged)) merged[k].push(...castArray(h[k]));
        plugins = { rootHooks: merged };
      }
    }
  } catch (err) {
    fatal('a module from the mocha `require` option failed to load', err);
  }

  // `ui`: a built-in name, or a module (like mocha's validateLegacyPlugin does)
  let ui = opts.ui || 'bdd';
  if (Array.isArray(ui)) ui = ui[ui.length - 1];
  if (typeof ui === 'string' && !Mocha.interfaces[ui]) {
    let loaded;
    for (const candidate of [ui, path.resolve(ui)]) {
      try {
        loaded = require(require.resolve(candidate, { paths: [cwd] }));
        break;
      } catch (_) { /* next */ }
    }
    if (typeof loaded !== 'function') fatal('invalid mocha interface (ui) "' + ui + '"');
    Mocha.interfaces[ui] = loaded;
  }
  // what is loaded now stays loaded for every batch of a warm runner (see unloadSuite)
  const keep = new Set(Object.keys(require.cache));
  return { opts, plugins, ui, keep };
}

/** A fresh Mocha for one run (serve: one per batch). */
function newMocha(M, { opts, plugins, ui }) {
  const { Mocha } = M;
  const options = Object.assign({}, opts, plugins, {
    ui,
    reporter: WarrenReporter, // never the suite's reporter
    parallel: false,
    watch: false,
    dryRun: false,
    'dry-run': false,
    delay: false, // not supported: files are loaded (and discovered) synchronously one by one
    failHookAffectedTests: false, // handled by the adapter itself, for every mocha version
    'fail-hook-affected-tests': false,
  });
  delete options['reporter-option'];
  delete options.reporterOption;
  delete options.reporterOptions;
  let mocha;
  try {
    mocha = new Mocha(options);
  } catch (err) {
    fatal('cannot create mocha with the suite configuration', err);
  }
  return mocha;
}

/** serve: which batch this is (1, 2, ...); ES modules are imported afresh for each. */
let batchNo = 0;

/**
 * Before a warm runner's next batch: the suite's own modules (its spec files and the code
 * they loaded, under the suite directory, outside node_modules) are unloaded, as mocha's
 * watch mode does, so each batch loads them afresh and no module state of one batch is seen
 * by the next. The config's `require` modules stay loaded: they are what a warm runner saves.
 */
function unloadSuite() {
  const prefix = cwd + path.sep;
  const nm = path.sep + 'node_modules' + path.sep;
  for (const key of Object.keys(require.cache)) {
    if (key.startsWith(prefix) && !key.includes(nm) && !(loaded && loaded.keep.has(key))) delete require.cache[key];
  }
}

/**
 * Loads a spec file: the first batch as mocha does; later ones CommonJS afresh (unloadSuite),
 * an ES module under a new URL (ES modules cannot be unloaded; node 20.19+ would even give
 * `require()` of one its cached instance).
 */
async function requireSpec(M, abs) {
  if (batchNo <= 1 || !isEsm(abs)) return M.requireOrImport(abs);
  return import(url.pathToFileURL(abs).href + '?warren-batch=' + batchNo);
}

/** .mjs, or .js under a package.json with "type": "module". */
function isEsm(abs) {
  if (abs.endsWith('.mjs')) return true;
  if (!abs.endsWith('.js')) return false;
  for (let dir = path.dirname(abs); ; dir = path.dirname(dir)) {
    try {
      return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).type === 'module';
    } catch (_) { /* none here, or unreadable: look further up */ }
    if (path.dirname(dir) === dir) return false;
  }
}

const SuiteEvents = (Suite) => {
  const c = (Suite && Suite.constants) || {};
  return {
    PRE: c.EVENT_FILE_PRE_REQUIRE || 'pre-require',
    REQ: c.EVENT_FILE_REQUIRE || 'require',
    POST: c.EVENT_FILE_POST_REQUIRE || 'post-require',
  };
};

/**
 * Load one spec file into its own root suite (context inherits from mocha's root context).
 * Resolves to {abs, rel, root} or {abs, rel, error}.
 */
async function loadFile(M, mocha, ui, abs) {
  const { Mocha } = M;
  const rel = relPath(abs);
  const main = mocha.suite;
  const root = new Mocha.Suite('', main.ctx, true);
  root.timeout(main.timeout());
  root.slow(main.slow());
  root.retries(main.retries());
  root.bail(main.bail());
  root.file = abs; // so hooks at the top level of the file know their file
  const ev = SuiteEvents(Mocha.Suite);
  try {
    // bind the interface (describe/it/... + `import {describe} from 'mocha'`) to this root
    mocha.suite = root;
    try {
      mocha.ui(ui);
    } finally {
      mocha.suite = main;
    }
    root.emit(ev.PRE, global, abs, mocha);
    const mod = await requireSpec(M, abs);
    root.emit(ev.REQ, mod, abs, mocha);
    root.emit(ev.POST, global, abs, mocha);
    return { abs, rel, root };
  } catch (error) {
    return { abs, rel, error };
  }
}

function eachTest(suite, fn) {
  for (const t of suite.tests) fn(t);
  for (const s of suite.suites) eachTest(s, fn);
}

/** ids for every test of a file's tree, in execution order, duplicates suffixed. */
function assignIds(rel, root) {
  const seen = new Map();
  const list = [];
  eachTest(root, (test) => {
    const name = test.fullTitle();
    list.push({ test, id: common.numberedId(rel, seen, name), file: rel, name });
  });
  return list;
}

function loadErrorEvent(rel, err) {
  const f = formatError(err);
  const ev = { event: 'error', message: 'failed to load ' + rel + ': ' + f.message, file: rel, load: true };
  if (f.details) ev.details = f.details;
  return ev;
}

async function collect(M, opts) {
  const params = {
    ignore: castArray(opts.ignore),
    extension: castArray(opts.extension),
    file: castArray(opts.file),
    recursive: isTruthy(opts.recursive),
    sort: isTruthy(opts.sort),
    spec: opts._ && opts._.length ? opts._ : castArray(opts.spec).length ? castArray(opts.spec) : ['test'],
  };
  // collect-files calls process.exit(1) when nothing matches: turn that into an error
  const realExit = process.exit;
  let res;
  try {
    process.exit = (code) => {
      const e = new Error('No test files found (spec: ' + JSON.stringify(params.spec) + ')');
      e.warrenExit = code;
      throw e;
    };
    res = M.collectFiles(params);
  } catch (err) {
    if (err && err.warrenExit !== undefined) return { files: [], problems: [err.message] };
    throw err;
  } finally {
    process.exit = realExit;
  }
  const files = Array.isArray(res) ? res : res.files || [];
  const problems = ((res && res.unmatchedFiles) || []).map((u) =>
    'Cannot find any file matching --file "' + u.pattern + '" (' + u.absolutePath + ')');
  return { files, problems };
}

// --------------------------------------------------------------------------- discover

async function discover(M) {
  const { opts, mocha, ui } = await setup(M);
  let collected;
  try {
    collected = await collect(M, opts);
  } catch (err) {
    fatal('cannot collect the spec files', err);
  }
  const loaded = [];
  for (const abs of collected.files) loaded.push(await loadFile(M, mocha, ui, abs));

  // what mocha itself would run: `.only` (across all files) and grep/fgrep/invert
  const ok = loaded.filter((l) => l.root);
  const perFile = new Map(ok.map((l) => [l, assignIds(l.rel, l.root)]));
  const anyOnly = ok.some((l) => l.root.hasOnly());
  const grep = mocha.options.grep;
  const invert = !!mocha.options.invert;

  const entries = [];
  for (const l of loaded) {
    if (l.error) {
      entries.push({ test: { event: 'test', id: l.rel, file: l.rel, name: l.rel + ' (failed to load)' }, error: loadErrorEvent(l.rel, l.error) });
      continue;
    }
    let kept = null;
    if (anyOnly) {
      if (l.root.hasOnly()) {
        l.root.filterOnly();
        kept = new Set();
        eachTest(l.root, (t) => kept.add(t));
      } else {
        kept = new Set();
      }
    }
    for (const t of perFile.get(l)) {
      if (kept && !kept.has(t.test)) continue;
      if (grep) {
        if (typeof grep.lastIndex === 'number') grep.lastIndex = 0;
        let match = grep.test(t.name);
        if (invert) match = !match;
        if (!match) continue;
      }
      entries.push({ test: { event: 'test', id: t.id, file: t.file, name: t.name } });
    }
  }

  emit({ event: 'start', count: entries.length });
  for (const p of collected.problems) emit({ event: 'error', message: p });
  for (const e of entries) {
    emit(e.test);
    if (e.error) emit(e.error);
  }
  events.done();
  // nothing else to do; don't wait for handles the spec files may have opened
  process.exit(0);
}

// --------------------------------------------------------------------------- run

let reporterAttach = null;

/** Reporter given to mocha (instead of the suite's own): forwards the runner to us. */
function WarrenReporter(runner) {
  if (reporterAttach) reporterAttach(runner);
}

function isAncestorOrSelf(suite, of) {
  for (let s = of; s; s = s.parent) if (s === suite) return true;
  return false;
}

async function run(M) {
  const ids = common.splitIds(events.idsFileText());
  const code = await runIds(M, ids);
  if (isTruthy(loaded.opts.exit)) process.exit(code);
  process.exitCode = code; // like mocha without --exit: wait for the event loop to drain
}

/** Runs these ids with a fresh Mocha; resolves to the exit code run mode would have. */
async function runIds(M, ids) {
  const { opts, mocha, ui } = await setup(M);
  const { Mocha } = M;

  // requested ids (file part normalised), grouped by file in order of first appearance
  const byFile = common.groupIds(cwd, ids); // rel -> {whole, ids: Set, requested: [ids]}
  // the config's `file` entries (setup files with root hooks) are loaded first, always
  const fileArgs = castArray(opts.file).map((f) => relPath(path.resolve(cwd, f)));
  const order = [];
  for (const rel of fileArgs) if (!order.includes(rel)) order.push(rel);
  for (const rel of byFile.keys()) if (!order.includes(rel)) order.push(rel);

  const loadErrors = [];
  const selected = []; // {test, id, file, name}
  const notFound = [];
  const main = mocha.suite;
  const suiteFile = new Map(); // suite/hook -> rel, for error events
  for (const rel of order) {
    const l = await loadFile(M, mocha, ui, path.resolve(cwd, rel));
    if (l.error) {
      loadErrors.push(loadErrorEvent(rel, l.error));
      continue;
    }
    const want = byFile.get(rel) || { whole: false, ids: new Set(), requested: [] };
    const all = assignIds(rel, l.root);
    const keep = new Set();
    const found = new Set();
    for (const t of all) {
      if (want.whole || want.ids.has(t.id)) {
        keep.add(t.test);
        selected.push(t);
        found.add(t.id);
      }
    }
    for (const id of want.requested) if (!found.has(id) && !notFound.includes(id)) notFound.push(id);
    // remove every test not asked for
    (function prune(s) {
      s.tests = s.tests.filter((t) => keep.has(t));
      s._onlyTests = []; // the ids are the selection: no `.only` filtering at run time
      s._onlySuites = [];
      s.suites.forEach(prune);
    })(l.root);
    // merge this file's root into mocha's root suite (no addSuite(): it would reset timeouts)
    for (const s of l.root.suites) {
      s.parent = main;
      main.suites.push(s);
      suiteFile.set(s, rel);
    }
    for (const t of l.root.tests) {
      t.parent = main;
      main.tests.push(t);
      suiteFile.set(t, rel);
    }
    for (const k of ['_beforeAll', '_beforeEach', '_afterEach', '_afterAll']) {
      for (const h of l.root[k] || []) {
        h.parent = main;
        main[k].push(h);
        suiteFile.set(h, rel);
      }
    }
  }
  // runtime selection is by id only
  mocha.options.grep = undefined;
  mocha.options.invert = false;
  main._onlyTests = [];
  main._onlySuites = [];

  const fileOf = (runnable) => {
    if (!runnable) return undefined;
    if (suiteFile.has(runnable)) return suiteFile.get(runnable);
    for (let s = runnable.parent; s; s = s.parent) if (suiteFile.has(s)) return suiteFile.get(s);
    if (runnable.file) return relPath(runnable.file);
    return undefined;
  };

  // ---- bookkeeping per selected test
  const info = new Map(); // Test -> {id, file, name, started, ended, t0}
  for (const t of selected) info.set(t.test, common.newRec(t.id, t.file, t.name));
  const keyOf = (test) => {
    let t = test;
    try {
      while (t && typeof t.retriedTest === 'function' && t.retriedTest()) t = t.retriedTest();
    } catch (_) { /* ignore */ }
    return t;
  };
  /** test_end; a failure's message and details are those of err (with prefix/suffix). */
  const endTest = (rec, status, err, durationMs, prefix, suffix) => {
    if (rec.ended) return;
    if (status !== 'failed') return events.endTest(rec, status, durationMs);
    startTest(rec);
    const f = formatError(err);
    return events.endTest(rec, status, durationMs, (prefix || '') + f.message + (suffix || ''), f.details);
  };

  emit({ event: 'start', count: selected.length + notFound.length });
  for (const e of loadErrors) emit(e);
  for (const id of notFound) {
    const rec = common.recOfId(id);
    const err = new Error('test not found in ' + rec.file + ' (renamed or removed since discovery, or defined conditionally)');
    err.name = 'WarrenTestNotFound';
    err.stack = '';
    endTest(rec, 'failed', err, 0);
  }

  let aborted = false;
  reporterAttach = (runner) => {
    const C = (M.Mocha.Runner && M.Mocha.Runner.constants) || {};
    const E = {
      TEST_BEGIN: C.EVENT_TEST_BEGIN || 'test',
      TEST_PASS: C.EVENT_TEST_PASS || 'pass',
      TEST_FAIL: C.EVENT_TEST_FAIL || 'fail',
      TEST_PENDING: C.EVENT_TEST_PENDING || 'pending',
      TEST_END: C.EVENT_TEST_END || 'test end',
    };
    const state = new Map(); // rec -> {status, err}
    const guard = (fn) => (...args) => events.guard(() => fn(...args));
    const recOf = (test) => info.get(keyOf(test));

    runner.on(E.TEST_BEGIN, guard((test) => {
      const rec = recOf(test);
      if (rec) startTest(rec);
    }));
    runner.on(E.TEST_PASS, guard((test) => {
      const rec = recOf(test);
      if (rec) state.set(rec, { status: 'passed' });
    }));
    runner.on(E.TEST_PENDING, guard((test) => {
      const rec = recOf(test);
      if (rec) state.set(rec, { status: 'pending' });
    }));
    runner.on(E.TEST_FAIL, guard((runnable, err) => {
      if (runnable && runnable.type === 'test') {
        const rec = recOf(runnable);
        if (rec && !rec.ended) {
          state.set(rec, { status: 'failed', err });
          return;
        }
        // e.g. an async error after the test was reported passed (mocha then aborts)
        const f = formatError(err);
        const ev = { event: 'error', message: (rec ? rec.name : runnable.fullTitle()) + ' failed after it had ended: ' + f.message };
        const file = rec ? rec.file : fileOf(runnable);
        if (file) ev.file = file;
        if (f.details) ev.details = f.details;
        emit(ev);
        aborted = true;
        return;
      }
      if (runnable && runnable.type === 'hook') {
        // mocha's own hook title names tests[0] for "before all" hooks ('"before all" hook
        // for "a"'), which misleads once it's used for the other tests: name the suite instead
        const base = String(runnable.originalTitle || runnable.title || 'hook');
        const m = /^"(before|after) (all|each)" hook/.exec(base);
        const kind = m ? m[1] + ' ' + m[2] : 'hook';
        const parentTitle = runnable.parent ? runnable.parent.fullTitle() : '';
        const title = base + ' in "' + (parentTitle || '{root}') + '"';
        const current = runnable.ctx && runnable.ctx.currentTest;
        const curRec = current && recOf(current);
        const suffix = ' (in ' + title + ')';
        if (kind === 'before each' && curRec && curRec.started && !curRec.ended) {
          // the test was under way: it fails with the hook's error
          endTest(curRec, 'failed', err, undefined, '', suffix);
        } else {
          // a hook outside any test: before/after all, or after each once the test ended
          const f = formatError(err);
          const forTest = m && m[2] === 'each' && current ? ' for "' + current.title + '"' : '';
          const ev = { event: 'error', message: title + forTest + ': ' + f.message };
          const file = fileOf(runnable);
          if (file) ev.file = file;
          if (f.details) ev.details = f.details;
          emit(ev);
        }
        if (kind !== 'after all') {
          // mocha now skips what is left of the hook's suite: report those tests (never
          // silently dropped) as failed with the hook's error; statically pending ones as pending
          for (const [test, rec] of info) {
            if (rec.ended || !isAncestorOrSelf(runnable.parent, test.parent)) continue;
            if (kind === 'before all' || rec !== curRec) {
              if (typeof test.isPending === 'function' && test.isPending() && !rec.started) endTest(rec, 'pending', null, 0);
              else endTest(rec, 'failed', err, 0, '', ' (not run: ' + title + ' failed)');
            }
          }
        }
        return;
      }
      // phony runnable: "Uncaught error outside test suite" and the like
      const f = formatError(err);
      const ev = { event: 'error', message: String((runnable && runnable.title) || 'error') + ': ' + f.message };
      const file = fileOf(runnable);
      if (file) ev.file = file;
      if (f.details) ev.details = f.details;
      emit(ev);
      aborted = true;
    }));
    runner.on(E.TEST_END, guard((test) => {
      const rec = recOf(test);
      if (!rec || rec.ended) return;
      const st = state.get(rec) || { status: test.state === 'failed' ? 'failed' : test.state === 'pending' || test.isPending() ? 'pending' : 'passed' };
      endTest(rec, st.status, st.err, st.status === 'pending' ? 0 : test.duration);
    }));
  };

  await new Promise((resolve) => {
    try {
      mocha.run((failures) => resolve(failures));
    } catch (err) {
      fatal('mocha could not run', err);
    }
  });

  // anything selected that mocha never reported (bail, abort, ...) must not vanish
  const bail = !!(main.bail && main.bail());
  for (const rec of info.values()) {
    if (rec.ended) continue;
    const why = bail
      ? 'mocha stopped early (bail) after an earlier failure'
      : aborted
        ? 'mocha aborted the run after an error outside a test'
        : 'mocha did not run it';
    const err = new Error('not run: ' + why);
    err.name = 'WarrenNotRun';
    err.stack = '';
    endTest(rec, 'failed', err, 0);
  }
  events.done();
  try {
    if (mode === 'serve' && typeof mocha.dispose === 'function') mocha.dispose(); // its listeners, its suites
  } catch (_) { /* an older mocha */ }
  return events.anyFailure ? 1 : 0;
}

// --------------------------------------------------------------------------- main

async function main() {
  events.open('mocha finished (process.exit() called by a test or file, or an uncaught error)');
  events.checkMode(mode, 'warren-mocha.cjs');
  const M = loadMocha(common.resolveFramework(require, 'mocha', cwd, __filename, fatal));
  if (mode === 'discover') await discover(M);
  else if (mode === 'serve') {
    loadedOnce = loadConfig(M);
    loadedOnce.catch(() => undefined); // awaited (and reported) by the first batch
    common.serve(events, async (ids) => {
      batchNo++;
      if (batchNo > 1) unloadSuite();
      return runIds(M, ids);
    }, formatError);
  } else await run(M);
}

main().catch((err) => fatal('unexpected failure', err));
