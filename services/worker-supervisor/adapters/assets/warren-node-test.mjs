#!/usr/bin/env node
/*
 * warren-node-test.mjs: Warren's adapter for node's built-in test runner, node:test
 * (see ../PROTOCOL.md for the events protocol). Written for node 20 (tested on 20.20).
 *
 *   cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl node /abs/warren-node-test.mjs discover
 *   cd <suite dir> && WARREN_EVENTS=/tmp/ev.jsonl WARREN_IDS_FILE=/tmp/ids node /abs/warren-node-test.mjs run
 *   cd <suite dir> && node /abs/warren-node-test.mjs serve    (batches on stdin, PROTOCOL.md)
 *
 * How: the script runs node's own test runner,
 *
 *   node --expose-internals --import <this file> --test --test-name-pattern=<...>
 *        --test-reporter=<this file> --test-reporter-destination=stdout [files]
 *
 * (files: none in discovery, so node picks the test files with its own default rules; the
 * requested files in run). node runs each test file in a child process, with the same
 * flags; this one file then plays three parts:
 * - the script (above), which turns what the reporter prints into Warren's events;
 * - a preload (`--import`) in each test file's process, which decides which tests run.
 *   node 20 has no dry run and its --test-name-pattern matches a test's own name or any
 *   ancestor's, so it can neither list tests without running them nor pick exactly one
 *   test among several of the same name. The preload replaces the matcher node calls for
 *   every test and suite it creates once a name pattern is given
 *   (`Test.prototype.matchesTestNamePatterns` of node's internal test_runner/test module,
 *   reached with --expose-internals): it sees the test's parents, so it computes the
 *   test's id (full name, ` #n` for duplicates, in creation order: definition order) and
 *   answers "run" for exactly the requested ids (in discovery: for none). A test that does
 *   not match is skipped by node itself (its function replaced by a no-op); suites always
 *   match (node still runs describe bodies to register their tests). In a run, hooks
 *   (`Test.prototype.runHook`) run only for suites/tests that contain a selected test (a
 *   file-level `before()` still runs when the file loads: node runs it at once); in
 *   discovery every hook is registered as a no-op (`Test.prototype.createHook`). So
 *   discovery loads each file (module code and describe bodies run) and runs no test body
 *   and no hook; a run runs exactly the requested tests.
 *   Subtests created inside a running test (t.test()) run with it; they are not listed.
 * - node's test reporter (the default export, in node's orchestrating process): prints
 *   every test event as a JSON line on stdout, for the script.
 * Names come from node's report events (test:start / test:pass / test:fail, reported in
 * definition order with their nesting), not from the preload: the ids the script gives and
 * the ids the preload selects are computed the same way on the same tree.
 *
 * - Test ids: `<file> :: <suite > ... > test name>`, duplicates within a file get ` #2`,
 *   ` #3`...; `name` is the full name (node:test names joined with ' > '). A skipped
 *   describe (node never runs its body, so its tests are unknown) is listed as one test
 *   named after the describe, pending, as node reports it.
 * - Reporting: test_start on test:dequeue (when node is about to run it), test_end on the
 *   test's test:pass / test:fail. Status: skip or todo -> pending, pass -> passed, fail ->
 *   failed, message `<error name>: <message>` (its first line, plus the next lines
 *   collapsed when it ends with ':'), details the error's stack. A failing suite with an
 *   error of its own (a hook, an exception in the describe body) is an `error` event.
 * - A file that fails to load (node reports the file itself as a failed test and nothing
 *   else) is listed in discovery as a test whose id is the file, plus an `error` event; in
 *   run it is an `error` event with `file`. Its message is the error node printed on the
 *   file's stderr. A file whose process dies part-way (process.exit, a signal) fails the
 *   test that was running; the tests it never reached are left for Warren to run again.
 *
 * serve (the warm runner): each batch is run mode's batch (the same code, runBatch), on the
 * command's ids, written to a file of the batch's for the preloads. node 20 keeps one process
 * per test file (no --experimental-test-isolation before node 22.8), so what a warm process
 * saves is the rest of a cold run: this script's own process and node's orchestrating one
 * (`node --test`): node:test's run() does the orchestration in this process, with what node's
 * CLI gives it (concurrency true, timeout Infinity, the file list from process.argv, the test
 * processes' flags from process.execArgv, filtered as node filters the CLI's, the environment,
 * a reporter destination that is not a terminal), so the test processes start exactly as in
 * run mode and their events come through the same reporter to the same reader. When this
 * process has options of its own that run() would pick up (node flags, test or inspector
 * flags in NODE_OPTIONS, NODE_TEST_CONTEXT), every batch runs a cold `node --test` instead.
 *
 * Limits: node 20's internals (test_runner/test) are used, checked at start (a clear error
 * otherwise); describe blocks running their tests concurrently may make test_start go to
 * the wrong one of two tests with the same full name (test_end never does).
 *
 * Exit codes: discover 0 when it completed (load errors are events, not a failed
 * discovery); run 0 when every test passed or was pending and no `error` event was
 * written, 1 otherwise; 2 when the adapter itself could not work.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { setMaxListeners } from 'node:events';
import { createInterface } from 'node:readline';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

// shared with the other plug-ins; next to this file (only this directory may be mounted)
const common = createRequire(import.meta.url)('./warren-plugin-common.cjs');

const TAG = 'warren-node-test';
const SELF = fileURLToPath(import.meta.url);
const isMain = !!process.argv[1] && path.resolve(process.argv[1]) === SELF;
const { relPath, readIdsFile, groupIds, oneLine } = common;

// --------------------------------------------------------------------------- helpers (all parts)

/** `<file> :: a > b` plus ` #n` for the n-th item (n > 1) of that full name in the file. */
function idOf(rel, counts, names) {
  const key = names.join(' > ');
  return { id: common.numberedId(rel, counts, key), name: key };
}

// --------------------------------------------------------------------------- preload part (each test file's process)

function installPreload() {
  const mode = process.env.WARREN_NODE_TEST_MODE;
  const cwd = process.env.WARREN_NODE_TEST_CWD || process.cwd();
  const require = createRequire(import.meta.url);
  let T;
  try {
    T = require('internal/test_runner/test');
  } catch (err) {
    throw new Error(TAG + ': cannot reach node:test internals (internal/test_runner/test, needs --expose-internals): ' + err.message);
  }
  const { Test, Suite } = T || {};
  if (typeof Test !== 'function' || typeof Suite !== 'function' ||
    typeof Test.prototype.matchesTestNamePatterns !== 'function' || typeof Test.prototype.runHook !== 'function' ||
    typeof Test.prototype.createHook !== 'function') {
    throw new Error(TAG + ': node ' + process.version + ' test runner internals are not the ones of node 20 (Test.prototype.matchesTestNamePatterns, runHook, createHook)');
  }
  if (!process.execArgv.some((a) => a.startsWith('--test-name-pattern'))) {
    throw new Error(TAG + ': no --test-name-pattern in this test process: the selection would not apply');
  }
  const file = path.resolve(process.argv[1] || '');
  const rel = relPath(cwd, file);
  let want = { whole: false, ids: new Set() };
  if (mode === 'run') want = groupIds(cwd, readIdsFile(process.env.WARREN_IDS_FILE)).get(rel) || want;
  const counts = new Map();
  const SELECTED = Symbol('warren.selected');

  Test.prototype.matchesTestNamePatterns = function warrenMatches() {
    if (!this.parent) return true; // the root test
    const names = [];
    for (let t = this; t && t.parent; t = t.parent) names.unshift(t.name);
    let insideTest = false; // a subtest created by a running test (t.test())
    for (let p = this.parent; p && p.parent; p = p.parent) if (!(p instanceof Suite)) insideTest = true;
    const { id } = idOf(rel, counts, names);
    if (this instanceof Suite) return true; // build every suite: its body registers its tests
    if (mode !== 'run') return false; // discovery: node skips it (its function is never called)
    const selected = insideTest || want.whole || want.ids.has(id);
    if (selected) for (let p = this; p; p = p.parent) p[SELECTED] = true;
    return selected;
  };
  // discovery: every hook is registered as a no-op (a file-level before() would otherwise
  // run at once: node runs a `before` added to a test that has started immediately)
  const createHook = Test.prototype.createHook;
  if (mode !== 'run') {
    Test.prototype.createHook = function warrenCreateHook(name, fn, options) {
      return createHook.call(this, name, function warrenNoHook() {}, options);
    };
  }
  const runHook = Test.prototype.runHook;
  Test.prototype.runHook = function warrenRunHook(hook, args) {
    // hooks run only around selected tests, never in discovery
    if (mode !== 'run' || !this[SELECTED]) return Promise.resolve();
    return runHook.call(this, hook, args);
  };
  // tell the script this file's process was set up (a missing preload must not pass silently)
  if (process.env.WARREN_NODE_TEST_STATE) {
    fs.writeFileSync(path.join(process.env.WARREN_NODE_TEST_STATE, 'preload-' + process.pid), rel + '\n');
  }
}

if (!isMain && process.env.NODE_TEST_CONTEXT && process.env.WARREN_NODE_TEST_MODE) installPreload();

// --------------------------------------------------------------------------- reporter part (node's orchestrating process)

function plainError(e) {
  if (e === null || e === undefined) return undefined;
  if (typeof e !== 'object' && typeof e !== 'function') return { message: String(e), notAnError: true };
  const out = {};
  for (const k of ['name', 'message', 'code', 'stack', 'failureType', 'exitCode', 'signal']) {
    try {
      if (e[k] !== undefined && e[k] !== null) out[k] = typeof e[k] === 'number' ? e[k] : String(e[k]);
    } catch (_) { /* exotic */ }
  }
  if (!(e instanceof Error) && out.name === undefined && out.stack === undefined) out.notAnError = true;
  return out;
}

/** node:test reporter: one JSON line per event, for the script. */
export default async function* warrenNodeTestReporter(source) {
  for await (const ev of source) {
    const d = ev.data || {};
    const out = { type: ev.type };
    for (const k of ['name', 'nesting', 'file', 'skip', 'todo', 'message', 'testNumber']) if (d[k] !== undefined) out[k] = d[k];
    if (d.details) {
      if (d.details.type) out.kind = d.details.type;
      if (d.details.duration_ms !== undefined) out.durationMs = d.details.duration_ms;
      if (d.details.error) {
        const e = plainError(d.details.error);
        try {
          e.cause = plainError(d.details.error.cause);
        } catch (_) { /* ignore */ }
        out.error = e;
      }
    }
    yield JSON.stringify(out) + '\n';
  }
}

// --------------------------------------------------------------------------- script part

/** An adapter error as the script reports it: its message, its stack as details. */
const adapterError = (err) => ({ message: err && err.message ? err.message : String(err), details: err && err.stack ? String(err.stack) : undefined });
const events = common.createEvents(TAG, adapterError);
const { emit, fatal, startTest, endTest } = events;

/** `{message, details}` of a failed test's error (node wraps the thrown error as `cause`). */
function failureOf(error) {
  if (!error) return { message: 'Error: failed' };
  const c = error.cause && !error.cause.notAnError ? error.cause : null;
  const name = (c ? c.name : null) || 'Error';
  const msg = c ? c.message || '' : error.cause && error.cause.notAnError && error.failureType === 'testCodeFailure' ? error.cause.message : error.message || '';
  const message = name + ': ' + oneLine(msg);
  const details = (c && c.stack) || error.stack || '';
  return details ? { message, details } : { message };
}

/** The error a test file's process printed on stderr when it died (the lines before the first stack frame). */
function stderrError(text) {
  const lines = String(text).split('\n');
  const k = lines.findIndex((l) => /^\s+at \S/.test(l));
  if (k < 0) {
    const last = lines.map((l) => l.trim()).filter(Boolean);
    return last.length ? oneLine(last[last.length - 1]) : '';
  }
  let j = k - 1;
  while (j >= 0 && lines[j].trim() === '') j--;
  let i = j;
  while (i > 0 && lines[i - 1].trim() !== '' && !/^\s*\^+\s*$/.test(lines[i - 1])) i--;
  return i >= 0 && j >= i ? oneLine(lines.slice(i, j + 1).join('\n')) : '';
}

/**
 * Reads the reporter's JSON lines: per file, rebuilds each item's full name from the
 * report order (test:start, with nesting, in definition order) and calls back.
 */
class EventReader {
  constructor(cwd, handlers) {
    this.cwd = cwd;
    this.h = handlers;
    this.files = new Map(); // abs -> per-file state
  }

  file(abs) {
    let f = this.files.get(abs);
    if (!f) {
      f = {
        abs, rel: relPath(this.cwd, abs), stack: [], dstack: [], counts: new Map(), dcounts: new Map(),
        items: 0, dequeued: 0, stderr: [], fileFail: null, running: null,
      };
      this.files.set(abs, f);
    }
    return f;
  }

  line(text) {
    let ev;
    try {
      ev = JSON.parse(text);
    } catch (_) {
      process.stderr.write(text + '\n');
      return;
    }
    if (!ev.file) {
      if (ev.type === 'test:diagnostic' || ev.type === 'test:stderr' || ev.type === 'test:stdout') {
        if (ev.message) process.stderr.write('[node:test] ' + String(ev.message).replace(/\n$/, '') + '\n');
      }
      return;
    }
    const f = this.file(ev.file);
    const isFileItself = ev.nesting === 0 && ev.name === ev.file;
    switch (ev.type) {
      case 'test:stderr':
      case 'test:stdout': {
        const m = String(ev.message || '');
        if (ev.type === 'test:stderr') {
          f.stderr.push(m);
          if (f.stderr.length > 400) f.stderr.splice(0, f.stderr.length - 400);
        }
        process.stderr.write('[' + f.rel + '] ' + m.replace(/\n$/, '') + '\n');
        break;
      }
      case 'test:dequeue': {
        if (isFileItself) break;
        f.dstack.length = ev.nesting;
        f.dstack.push(ev.name);
        f.dequeued++;
        const { id } = idOf(f.rel, f.dcounts, f.dstack.slice());
        if (this.h.dequeue) this.h.dequeue(f, id);
        break;
      }
      case 'test:start': {
        if (isFileItself) break;
        f.stack.length = ev.nesting;
        if (ev.nesting > 0 && f.stack[ev.nesting - 1]) f.stack[ev.nesting - 1].children = true;
        f.stack.push({ name: ev.name, children: false });
        break;
      }
      case 'test:pass':
      case 'test:fail': {
        if (isFileItself) {
          if (ev.type === 'test:fail') f.fileFail = ev; // the file's process failed on its own
          break;
        }
        const own = f.stack[ev.nesting];
        const names = [...f.stack.slice(0, ev.nesting).map((s) => s.name), ev.name];
        const { id, name } = idOf(f.rel, f.counts, names);
        f.items++;
        const suite = ev.kind === 'suite';
        // a suite is listed as a test when node reports it without any test in it: skipped
        // or todo (node never runs its body), or failing on its own (its body threw)
        const ownFailure = ev.type === 'test:fail' && ev.error && ev.error.failureType === 'testCodeFailure';
        const leaf = !suite || ((ev.skip !== undefined || ev.todo !== undefined || ownFailure) && !(own && own.children));
        if (leaf) this.h.leaf(f, { id, name, ev });
        else if (this.h.suite) this.h.suite(f, { id, name, ev });
        break;
      }
      default:
        break;
    }
  }
}

/** The file's process failed and node reported nothing else of it: it failed to load. */
const isLoadFailure = (f) => !!f.fileFail && f.items === 0 && f.dequeued === 0;

function howItEnded(f) {
  const e = (f.fileFail && f.fileFail.error) || {};
  return e.signal ? 'was killed by ' + e.signal : e.exitCode !== undefined ? 'exited with code ' + e.exitCode : 'failed';
}

function stderrTail(f, n) {
  const t = f.stderr.join('').trim();
  return t ? t.split('\n').slice(-n).join('\n') : undefined;
}

function loadErrorEvent(f) {
  const err = stderrError(f.stderr.join(''));
  // without an error on stderr (process.exit(), a signal) it may as well have died in its
  // first test: node 20 loses the last events of a process that dies
  const ev = {
    event: 'error',
    message: err ? 'failed to load ' + f.rel + ': ' + err : 'the test process of ' + f.rel + ' ' + howItEnded(f) + ' before reporting any test',
    file: f.rel,
    // (an error on stderr: it failed to load; without one, it may have died in a test)
    ...(err ? { load: true } : {}),
  };
  const details = stderrTail(f, 60);
  if (details) ev.details = details;
  return ev;
}

/** node's flags that take the next word as their value. */
const VALUE_FLAGS = new Set(['--import', '--require', '-r', '--loader', '--experimental-loader', '--conditions', '-C', '--env-file', '--input-type', '--test-name-pattern', '--test-skip-pattern', '--test-timeout']);

/**
 * The project's own `node --test` command line (PROTOCOL.md): its node flags (`--import tsx`,
 * `--test-timeout=5000`) for node's runner and its test processes, and its file patterns
 * (`test/**\/*.test.js`), which choose the files at discovery.
 */
const SUITE = (() => {
  const flags = [];
  const files = [];
  const args = common.frameworkArgs();
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith('-')) files.push(a);
    else {
      flags.push(a);
      if (VALUE_FLAGS.has(a) && i + 1 < args.length) flags.push(args[++i]);
    }
  }
  return { flags, files };
})();

/** The flags of node's orchestrating process: `node <flags> [files]` (runNode). */
function nodeFlags(mode) {
  return [
    ...SUITE.flags,
    '--expose-internals',
    '--import', import.meta.url,
    '--test',
    '--test-name-pattern=' + (mode === 'run' ? 'warren-selection' : 'warren-discovery'),
    '--test-reporter=' + import.meta.url,
    '--test-reporter-destination=stdout',
    // discovery loads every file in a process of its own (node 20 has no dry run) while the
    // other slots wait for its list: all the host's cores, not node's default of one less
    ...(mode === 'discover' ? ['--test-concurrency=' + os.availableParallelism()] : []),
  ];
}

/** What the script tells the preloads (through the environment of node's processes). */
const nodeEnv = (mode, cwd, stateDir) => ({
  WARREN_NODE_TEST_MODE: mode,
  WARREN_NODE_TEST_CWD: cwd,
  WARREN_NODE_TEST_STATE: stateDir,
});

/**
 * Runs node's test runner with our preload and reporter; resolves with its exit status.
 * `serving` (serve mode, a batch run cold): {env, signal}: more environment (the batch's
 * WARREN_IDS_FILE and WARREN_EVENTS), the batch's abort signal (kills node's runner);
 * failures reject instead of exiting.
 */
function runNode(cwd, mode, files, stateDir, reader, serving) {
  const args = [...nodeFlags(mode), ...files];
  const env = Object.assign({}, process.env, nodeEnv(mode, cwd, stateDir), serving ? serving.env : {});
  return new Promise((resolve, reject) => {
    const failed = serving ? (message, err) => reject(new Error(message + ': ' + (err && err.message ? err.message : String(err)))) : fatal;
    let child;
    try {
      child = spawn(process.execPath, args, { cwd, env, stdio: ['ignore', 'pipe', 'inherit'], signal: serving ? serving.signal : undefined });
    } catch (err) {
      failed('cannot start node --test', err);
      return;
    }
    const rl = createInterface({ input: child.stdout, crlfDelay: Infinity });
    rl.on('line', (l) => {
      try {
        reader.line(l);
      } catch (err) {
        emit({ event: 'error', message: TAG + ' internal error: ' + (err && err.message), details: err && err.stack });
      }
    });
    let exit = null;
    let closed = false;
    const done = () => {
      if (exit && closed) resolve(exit);
    };
    rl.on('close', () => {
      closed = true;
      done();
    });
    child.on('error', (err) => failed('node --test failed to run', err));
    child.on('exit', (code, signal) => {
      exit = { code, signal };
      done();
    });
    if (serving) return; // serve mode's own handlers abort the batch (serveMode)
    // terminated: end node's runner too, and end as an unfinished run (no `done`)
    for (const sig of ['SIGTERM', 'SIGINT']) {
      process.on(sig, () => {
        try {
          child.kill(sig);
        } catch (_) { /* already gone */ }
        process.exit(sig === 'SIGINT' ? 130 : 143);
      });
    }
  });
}

function preloadSeen(stateDir) {
  const seen = new Set();
  for (const n of fs.readdirSync(stateDir)) {
    if (n.startsWith('preload-')) seen.add(fs.readFileSync(path.join(stateDir, n), 'utf8').trim());
  }
  return seen;
}

function checkNode() {
  const major = parseInt(process.versions.node.split('.')[0], 10);
  if (major !== 20) {
    process.stderr.write(TAG + ': written for node 20 (this is ' + process.version + '); its internals are checked in each test process\n');
  }
}

// --------------------------------------------------------------------------- discover

async function discover(cwd, stateDir) {
  const entries = [];
  const reader = new EventReader(cwd, {
    leaf: (f, t) => entries.push({ f, test: { event: 'test', id: t.id, file: f.rel, name: t.name } }),
    suite: (f, t) => {
      const e = t.ev.error;
      if (t.ev.type === 'test:fail' && e && e.failureType !== 'subtestsFailed') {
        const fl = failureOf(e);
        entries.push({ f, error: { event: 'error', message: 'error in suite "' + t.name + '" of ' + f.rel + ': ' + fl.message, file: f.rel, details: fl.details } });
      }
    },
  });
  const exit = await runNode(cwd, 'discover', SUITE.files, stateDir, reader);
  const out = [];
  const seen = preloadSeen(stateDir);
  const files = [...reader.files.values()].sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  for (const f of files) {
    if (isLoadFailure(f)) {
      out.push({ event: 'test', id: f.rel, file: f.rel, name: f.rel + ' (failed to load)' });
      out.push(loadErrorEvent(f));
      continue;
    }
    if (!seen.has(f.rel)) out.push({ event: 'error', message: TAG + ': the preload did not run in the process of ' + f.rel + ' (its tests were not listed reliably)', file: f.rel });
    if (f.fileFail) out.push({ event: 'error', message: 'the test process of ' + f.rel + ' ' + howItEnded(f) + ' while its tests were listed' + (stderrError(f.stderr.join('')) ? ': ' + stderrError(f.stderr.join('')) : ''), file: f.rel, details: stderrTail(f, 40) });
    for (const e of entries) if (e.f === f) out.push(e.test || e.error);
  }
  if (exit.signal) fatal('node --test was killed by ' + exit.signal + ' during discovery');
  emit({ event: 'start', count: out.filter((e) => e.event === 'test').length });
  for (const e of out) emit(e);
  events.done();
  process.exit(0);
}

// --------------------------------------------------------------------------- run (one batch)

/**
 * Runs one batch: `ids` (as run mode reads them from WARREN_IDS_FILE, which the test
 * processes' preload reads too), its events from `start` to `done` (no `done` when a test
 * process crashed). `engine(files, reader)` runs node's test runner on the batch's existing
 * files and resolves when it is over: a cold `node --test` (runNode) in run mode, node:test's
 * run() in this process in serve mode (runInProcess). `stateDir`: the batch's own directory
 * (the preloads sign in there). Resolves to run mode's exit code, 0 or 1; never exits.
 */
async function runBatch(cwd, ids, stateDir, engine) {
  const byFile = groupIds(cwd, ids);
  const recs = new Map(); // id -> rec
  const recOf = (f, id) => {
    const want = byFile.get(f.rel);
    if (!want || !(want.whole || want.ids.has(id))) return null;
    let rec = recs.get(id);
    if (!rec) {
      rec = common.newRec(id, f.rel, id.slice(id.indexOf(' :: ') + 4));
      recs.set(id, rec);
    }
    return rec;
  };
  const reader = new EventReader(cwd, {
    dequeue: (f, id) => {
      const rec = recOf(f, id);
      if (rec && !rec.ended) {
        startTest(rec);
        f.running = rec;
      }
    },
    leaf: (f, t) => {
      const rec = recOf(f, t.id);
      if (!rec) return;
      rec.name = t.name;
      const ev = t.ev;
      if (f.running === rec) f.running = null;
      if (ev.skip !== undefined || ev.todo !== undefined) endTest(rec, 'pending', 0);
      else if (ev.type === 'test:pass') endTest(rec, 'passed', ev.durationMs);
      else {
        const fl = failureOf(ev.error);
        endTest(rec, 'failed', ev.durationMs, fl.message, fl.details);
      }
    },
    suite: (f, t) => {
      const e = t.ev.error;
      if (t.ev.type === 'test:fail' && e && e.failureType !== 'subtestsFailed') {
        const fl = failureOf(e);
        const ev = { event: 'error', message: 'error in suite "' + t.name + '" of ' + f.rel + ': ' + fl.message, file: f.rel };
        if (fl.details) ev.details = fl.details;
        emit(ev);
      }
    },
  });
  const existing = [...byFile.keys()].filter((rel) => fs.existsSync(path.resolve(cwd, rel)));
  emit({ event: 'start', count: ids.length });
  if (existing.length) await engine(existing.map((rel) => path.resolve(cwd, rel)), reader);
  const seen = preloadSeen(stateDir);
  const byRel = new Map([...reader.files.values()].map((f) => [f.rel, f]));
  const notFound = (id, why) => {
    const rec = recs.get(id) || common.recOfId(id);
    recs.set(id, rec);
    endTest(rec, 'failed', 0, 'WarrenTestNotFound: ' + why);
  };
  let crashed = false;
  for (const [rel, want] of byFile) {
    const f = byRel.get(rel);
    if (!f) {
      const why = fs.existsSync(path.resolve(cwd, rel)) ? 'node did not run ' + rel : rel + ' does not exist';
      events.fileNotRun(rel, want, why, notFound);
      continue;
    }
    if (isLoadFailure(f)) {
      emit(loadErrorEvent(f));
      continue; // its `error` event stands for its tests
    }
    if (!seen.has(rel)) {
      emit({ event: 'error', message: TAG + ': the preload did not run in the process of ' + rel + ': the selection of its tests was not applied', file: rel });
      continue;
    }
    const mine = [...recs.values()].filter((r) => r.file === rel);
    const reported = new Set(mine.map((r) => r.id));
    const unreported = want.requested.filter((id) => !reported.has(id) || !recs.get(id).ended);
    if (f.fileFail && unreported.length) {
      // the file's process died part-way (process.exit, a signal, a fatal error): what it
      // had not reported is unknown (node 20 loses the last events of a dying process).
      // The test it was running is the culprit; the adapter then ends as a crashed run
      // (no `done`), so Warren runs the others again instead of failing them all.
      const err = stderrError(f.stderr.join(''));
      const what = 'crashed: the test process of ' + rel + ' ' + howItEnded(f) + (err ? ': ' + err : '');
      if (f.running && !f.running.ended) endTest(f.running, 'failed', undefined, what, stderrTail(f, 40));
      const ev = { event: 'error', message: what + ' (' + unreported.length + ' requested test(s) of it not reported)' };
      const details = stderrTail(f, 40);
      if (details) ev.details = details;
      emit(ev);
      crashed = true;
      continue;
    }
    if (f.fileFail) {
      // every test reported, yet the file's process failed (process.exitCode, an error
      // after the tests...)
      const err = stderrError(f.stderr.join(''));
      const ev = { event: 'error', message: 'the test process of ' + rel + ' ' + howItEnded(f) + ' after its tests' + (err ? ': ' + err : ''), file: rel };
      const details = stderrTail(f, 40);
      if (details) ev.details = details;
      emit(ev);
    }
    for (const id of want.requested) {
      if (!reported.has(id)) notFound(id, 'test not found in ' + rel + ' (renamed or removed since discovery, or defined conditionally)');
    }
    for (const rec of mine) if (!rec.ended) endTest(rec, 'failed', 0, 'WarrenNotRun: not run: node did not report it');
    for (const id of want.wholeIds) events.fileLoadsNow(id, rel, mine); // failed to load at discovery, loads now
  }
  if (crashed) {
    events.finish(); // nothing more to say: the error events above tell what happened
    return 1;
  }
  events.done();
  return events.anyFailure ? 1 : 0;
}

/** run mode: one batch, the ids of WARREN_IDS_FILE, in a cold `node --test`. */
async function run(cwd, stateDir) {
  const ids = common.splitIds(events.idsFileText());
  const code = await runBatch(cwd, ids, stateDir, (files, reader) => runNode(cwd, 'run', files, stateDir, reader));
  process.exit(code);
}

// --------------------------------------------------------------------------- serve (warm runner)

/**
 * node's filterExecArgv (internal/test_runner/runner): the flags of the orchestrating
 * process that its test processes do not get.
 */
function testProcessFlags(flags) {
  const drop = ['--test', '--experimental-test-coverage', '--watch'];
  const dropWithValue = ['--test-reporter', '--test-reporter-destination'];
  return flags.filter((a, i, arr) => !drop.includes(a) &&
    !dropWithValue.some((p) => a === p || (i > 0 && arr[i - 1] === p) || a.startsWith(p + '=')));
}

/**
 * Why this process cannot stand in for run mode's `node --test` (then every batch runs one,
 * cold, as run mode does), or null. node:test's run() reads the options of the process it
 * runs in (test flags, the inspector, NODE_TEST_CONTEXT): they must be those `node --test`
 * has in run mode, i.e. none of its own (runNode's flags do not reach it) and none in
 * NODE_OPTIONS.
 */
function warmBlocker(nodeTest) {
  if (process.versions.node.split('.')[0] !== '20') return 'node ' + process.version + ': run() stands in for the CLI of node 20 only';
  if (!nodeTest || typeof nodeTest.run !== 'function') return 'node:test has no run()';
  if (process.execArgv.length) return 'this process has node flags of its own (' + process.execArgv.join(' ') + ')';
  if (process.env.NODE_TEST_CONTEXT !== undefined) return 'NODE_TEST_CONTEXT is set';
  if (/(^|\s)--?(test|experimental-test|inspect|debug|watch)/.test(process.env.NODE_OPTIONS || '')) return 'NODE_OPTIONS has test runner or inspector flags';
  return null;
}

/**
 * One batch's `node --test <files>` (runNode, run mode) done by node:test's run() in this
 * process: the same options as node's CLI gives it (internal/main/test_runner: concurrency
 * true, timeout Infinity), the same list of files (node's own, from process.argv as the CLI
 * has it), its test processes started with the same flags (process.execArgv, filtered by
 * node as it filters the CLI's) and environment (process.env, the batch's for the
 * preload), the same event stream through the same reporter to the same reader. What it
 * saves: a node process (its start, node:test's and this file's loading) per batch.
 */
async function runInProcess(nodeTest, cwd, files, env, signal, reader) {
  // node's CLI stats its files first (an error is its exit, without any test): the same here
  for (const f of files) {
    try {
      fs.statSync(f);
    } catch (err) {
      process.stderr.write(err && err.code === 'ENOENT' ? "Could not find '" + f + "'\n" : String(err && err.stack) + '\n');
      return;
    }
  }
  const saved = { argv: process.argv, execArgv: process.execArgv, exitCode: process.exitCode, env: {}, isTTY: Object.getOwnPropertyDescriptor(process.stdout, 'isTTY') };
  for (const k of Object.keys(env)) {
    saved.env[k] = process.env[k];
    process.env[k] = env[k];
  }
  process.execArgv = testProcessFlags(nodeFlags('run')); // read at each test process's start
  try {
    let stream;
    process.argv = [process.execPath, ...files]; // run() lists the files from it, as the CLI does
    // `node --test`'s reporter writes to a pipe (runNode): node colours the test processes
    // (FORCE_COLOR) only when its destination is a terminal; it looks once, in run()
    Object.defineProperty(process.stdout, 'isTTY', { value: false, configurable: true, writable: true });
    try {
      stream = nodeTest.run({ concurrency: true, timeout: Infinity, signal });
    } finally {
      process.argv = saved.argv;
      if (saved.isTTY) Object.defineProperty(process.stdout, 'isTTY', saved.isTTY);
      else delete process.stdout.isTTY;
    }
    for await (const line of warrenNodeTestReporter(stream)) {
      try {
        reader.line(line.slice(0, -1));
      } catch (err) {
        emit({ event: 'error', message: TAG + ' internal error: ' + (err && err.message), details: err && err.stack });
      }
    }
  } finally {
    process.execArgv = saved.execArgv;
    for (const [k, v] of Object.entries(saved.env)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    process.exitCode = saved.exitCode; // node's runner marks failures on the process it runs in
  }
}

/**
 * serve mode (PROTOCOL.md): batch after batch in this process, each one run mode's batch
 * (runBatch) on ids written to a file of the batch's for the preloads, node's orchestrating
 * runner being node:test's run() in this process (runInProcess) unless warmBlocker() says
 * it cannot be (then a cold `node --test` per batch, as in run mode). node 20 keeps a
 * process per test file either way (no --experimental-test-isolation before node 22.8).
 */
function serveMode(cwd, stateDir) {
  let nodeTest;
  let blocker; // undefined until the first batch
  let current = null; // the running batch's AbortController
  // terminated: end the batch's test processes, and end as an unfinished batch (no `done`)
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
      if (current) current.abort();
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
  let n = 0;
  let eventsFile; // the batch's events file: WARREN_EVENTS of its test processes, as in run mode
  const batchEvents = { emit: events.emit, finish: events.finish, retarget: (file) => events.retarget((eventsFile = file)) };
  common.serve(batchEvents, async (batchIds) => {
    if (blocker === undefined) {
      // loaded at the first command, so that a failure is that batch's error event
      nodeTest = await import('node:test');
      blocker = warmBlocker(nodeTest);
      if (blocker) process.stderr.write(TAG + ': serve: a cold node --test per batch: ' + blocker + '\n');
    }
    const ids = common.splitIds(batchIds.join('\n')); // as run mode reads them from its ids file
    const dir = fs.mkdtempSync(path.join(stateDir, 'batch-' + ++n + '-'));
    const idsFile = path.join(dir, 'ids');
    fs.writeFileSync(idsFile, ids.map((id) => id + '\n').join(''));
    const env = { WARREN_IDS_FILE: idsFile, WARREN_EVENTS: eventsFile };
    current = new AbortController();
    const signal = current.signal;
    setMaxListeners(0, signal); // node:test adds a listener per test file (node warns past 10)
    try {
      return await runBatch(cwd, ids, dir, blocker
        ? (files, reader) => runNode(cwd, 'run', files, dir, reader, { env, signal })
        : (files, reader) => runInProcess(nodeTest, cwd, files, Object.assign(nodeEnv('run', cwd, dir), env), signal, reader));
    } finally {
      current = null;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, adapterError);
}

// --------------------------------------------------------------------------- main

async function main() {
  const mode = process.argv[2];
  const cwd = process.cwd();
  events.open('node --test finished');
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-node-test-'));
  process.on('exit', () => {
    try {
      fs.rmSync(stateDir, { recursive: true, force: true });
    } catch (_) { /* ignore */ }
  });
  events.checkMode(mode, 'warren-node-test.mjs');
  checkNode();
  if (mode === 'discover') await discover(cwd, stateDir);
  else if (mode === 'serve') serveMode(cwd, stateDir);
  else await run(cwd, stateDir);
}

if (isMain) main().catch((err) => fatal('unexpected failure', err));
