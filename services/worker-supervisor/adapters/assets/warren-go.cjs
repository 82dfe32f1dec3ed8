#!/usr/bin/env node
/*
 * warren-go.cjs: Warren's Go adapter (see ../EVENTS.md for the events protocol).
 *
 *   cd <go module dir> && WARREN_EVENTS=/tmp/ev.jsonl node /abs/warren-go.cjs discover
 *   cd <go module dir> && WARREN_EVENTS=/tmp/ev.jsonl WARREN_IDS_FILE=/tmp/ids node /abs/warren-go.cjs run
 *
 * Uses `go` from PATH (or WARREN_GO). The suite's environment applies as with a plain
 * `go test` (GOFLAGS such as -tags, GOCACHE, GOPATH, ...).
 *
 * Ids, files, names
 * - id: `<package import path>.<TestName>`, e.g. `example.com/m/calc.TestAdd`. Tests are the
 *   top-level Test*, Example* (with an output comment) and Fuzz* (seed corpus) functions:
 *   what `go test -list` lists, minus benchmarks (which `go test` does not run).
 * - file: the package directory relative to the suite directory (`calc`; `.` for the package
 *   at the root of the module).
 * - name: `<package path relative to the module>/<TestName>` (`calc/TestAdd`); the module
 *   root package uses the last element of the module path (`m/TestX`).
 * - A package whose tests cannot be listed (it fails to build -- compile error, missing
 *   import --, or its test binary fails before listing: init panic, TestMain exiting) is
 *   listed as a test whose id is the package import path, name `<short> (failed to build)`
 *   (or `(failed to load)`), plus an `error` event with `file` = its directory. Run with
 *   that id, the package is built and all its tests run: a build failure is an `error`
 *   event with `file`; otherwise the id gets one `test_end` summing up the package.
 *
 * Subtests (t.Run, table-driven tests): a subtest cannot be listed without running its
 * parent, so Warren's unit is the top-level test. Its status is Go's own (a parent fails
 * when any of its subtests fails); the message names the first failing subtest
 * (`TestTable/case_2: calc_test.go:30: got 3, want 4`) and the details hold the whole
 * output of the test, with Go's own `--- PASS/FAIL/SKIP: TestTable/case_2` line for every
 * subtest. No event is written for a subtest (Warren ignores ids it did not request, and a
 * `test_start` for a subtest id would hide the running test from Warren's crash handling).
 *
 * Discovery: `go list -e -json ./...` (package directories, module paths) and
 * `go test -json -list '.*' ./...` (builds every test binary and runs it with -test.list:
 * no test runs, but init() and TestMain do, as with any `go test -list`).
 *
 * Run: per package, in the order of the ids, `go test -json -count=1 -run '^(A|B)$' <pkg>`
 * (-count=1: tests really run, never replayed from go's test cache), converting go's JSON
 * events as they come: `run` of a requested top-level test -> test_start; its
 * `pass`/`fail`/`skip` -> test_end passed/failed/pending (durationMs from Elapsed);
 * message = the first line of the (first failing sub)test's own output that is not one of
 * go's `=== RUN` / `--- FAIL` lines (the `file_test.go:12: ...` line of t.Error/t.Fatal/t.Skip),
 * or the `panic: ...` line; details = the test's whole output.
 * A panic (or os.Exit) kills the package's test binary: the test that was running is
 * reported failed with the panic (when several were running -- t.Parallel -- the one go's
 * test2json attributed the panic output to, or the only one running); the tests of the
 * package that had not run (or were running beside it) get no event, so Warren runs them
 * again in a fresh process. A package that fails before any test starts (init panic,
 * TestMain) is an `error` event with `file`. A requested test that go does not know (the
 * package passed without running it) is reported failed (WarrenTestNotFound).
 *
 * Written against go 1.19 (build failures as text: `FAIL <pkg> [build failed]` on stdout, the
 * compiler output on stderr); the JSON forms of newer go (that line as an `output` event,
 * compiler output as `build-output` events, go >= 1.24) are read too.
 *
 * Exit codes: discover 0 when it completed (build failures are events); run 0 when every
 * test passed or was pending and no `error` event was written, 1 otherwise; 2 when the
 * adapter itself could not work (no go, not a module, ...).
 */
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
// shared with the other plug-ins; next to this file (only this directory may be mounted)
const common = require(path.join(__dirname, 'warren-plugin-common.cjs'));

const cwd = process.cwd();
const mode = process.argv[2];
const GO = process.env.WARREN_GO || 'go';
const TEST_NAME = /^(Test|Example|Fuzz)[\p{L}\p{N}_]*$/u;
const MAX_DETAILS = 100000;

// --------------------------------------------------------------------------- events

// an error of the adapter is reported by its message only (go's own output is the details)
const events = common.createEvents('warren-go', (err) => ({ message: err.message }));
const { emit, startTest } = events;
/** fatal(message, details?): an `error` event, exit code 2. */
const fatal = events.fail;

// --------------------------------------------------------------------------- helpers

/** The package directory relative to the suite directory (`.` for the suite directory itself). */
function relDir(abs) {
  return common.relPath(cwd, abs) || '.';
}

function cap(s) {
  if (s.length <= MAX_DETAILS) return s;
  const half = Math.floor(MAX_DETAILS / 2);
  return s.slice(0, half) + `\n... (${s.length - MAX_DETAILS} characters cut) ...\n` + s.slice(-half);
}

const escapeRe = (s) => s.replace(/[\\.+*?()|[\]{}^$]/g, '\\$&');

/** Lines of go's test output that are framework bookkeeping, not what the test said. */
const FRAMEWORK_LINE = /^(=== (RUN|PAUSE|CONT|NAME)\s|--- (FAIL|PASS|SKIP):\s|(FAIL|PASS|ok)(\s|$)|testing: warning: no tests to run)/;

function contentLines(text) {
  return text.split('\n').map((l) => l.trim()).filter((l) => l && !FRAMEWORK_LINE.test(l));
}

function panicLine(text) {
  for (const l of text.split('\n')) {
    if (/^panic: /.test(l)) return l.replace(/ \[recovered\]\s*$/, '').trim();
  }
  return null;
}

/** Concatenated JSON objects (`go list -json`) -> array. */
function parseJsonStream(text) {
  const out = [];
  let depth = 0;
  let start = -1;
  let inStr = false;
  let esc = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inStr) {
      if (esc) esc = false;
      else if (c === '\\') esc = true;
      else if (c === '"') inStr = false;
      continue;
    }
    if (c === '"') inStr = true;
    else if (c === '{') {
      if (depth === 0) start = i;
      depth++;
    } else if (c === '}') {
      depth--;
      if (depth === 0 && start >= 0) {
        out.push(JSON.parse(text.slice(start, i + 1)));
        start = -1;
      }
    }
  }
  return out;
}

function runGoSync(args) {
  const r = spawnSync(GO, args, { cwd, encoding: 'utf8', maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) {
    if (r.error.code === 'ENOENT') fatal(`cannot run "${GO}": not found on PATH (install Go, or set WARREN_GO)`);
    fatal(`cannot run ${GO} ${args.join(' ')}: ${r.error.message}`);
  }
  return r;
}

/** go list -e -json <patterns> -> Map importPath -> {importPath, dir, file, short, error} */
function listPackages(patterns) {
  const r = runGoSync(['list', '-e', '-json', ...patterns]);
  let pkgs;
  try {
    pkgs = parseJsonStream(r.stdout || '');
  } catch (err) {
    fatal('cannot parse the output of go list -json: ' + err.message, r.stdout);
  }
  if (r.status !== 0 && pkgs.length === 0) {
    fatal(`go list ${patterns.join(' ')} failed (exit code ${r.status}): ${(r.stderr || '').trim().split('\n')[0]}`, r.stderr);
  }
  const map = new Map();
  for (const p of pkgs) {
    const modPath = p.Module && p.Module.Path;
    let short = p.ImportPath;
    if (modPath && p.ImportPath === modPath) short = modPath.split('/').pop();
    else if (modPath && p.ImportPath.startsWith(modPath + '/')) short = p.ImportPath.slice(modPath.length + 1);
    map.set(p.ImportPath, {
      importPath: p.ImportPath,
      dir: p.Dir || '',
      file: p.Dir ? relDir(p.Dir) : p.ImportPath,
      short,
      error: p.Error ? String(p.Error.Err || '').trim() : '',
      hasTests: ((p.TestGoFiles || []).length + (p.XTestGoFiles || []).length) > 0,
    });
  }
  return map;
}

/**
 * go's stderr for failed builds: blocks headed `# <pkg>` or `# <pkg> [<pkg>.test]`.
 * -> Map importPath -> text. A block naming a dependency (no `[x.test]`) goes to its own name.
 */
function buildErrorBlocks(stderr) {
  const blocks = new Map();
  let key = null;
  for (const line of stderr.split('\n')) {
    const m = /^# (\S+)(?: \[(\S+)\.test\])?\s*$/.exec(line);
    if (m) {
      key = m[2] || m[1].replace(/_test$/, '');
      if (!blocks.has(key)) blocks.set(key, []);
      blocks.get(key).push(line);
      continue;
    }
    if (key !== null) blocks.get(key).push(line);
  }
  const out = new Map();
  for (const [k, lines] of blocks) out.set(k, lines.join('\n').trim());
  return out;
}

/** The first error line of a build error block (skipping `# pkg` headers). */
function firstBuildError(text) {
  for (const l of text.split('\n')) {
    const t = l.trim();
    if (t && !t.startsWith('#')) return t;
  }
  return '';
}

/** A go test -json stream from a child process, line by line (non-JSON lines passed on as such). */
function runGoTest(args, onEvent, onText) {
  return new Promise((resolve) => {
    let child;
    try {
      child = spawn(GO, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      fatal(`cannot run ${GO}: ${err.message}`);
    }
    let buf = '';
    let stderr = '';
    let buildOutput = ''; // go >= 1.24: compiler output as `build-output` events, not on stderr
    const handleLine = (line) => {
      if (line.startsWith('{')) {
        let ev;
        try {
          ev = JSON.parse(line);
        } catch (_) {
          ev = null;
        }
        if (ev && typeof ev.Action === 'string') {
          if (ev.Action === 'build-output' || ev.Action === 'build-fail') {
            if (typeof ev.Output === 'string') {
              buildOutput += ev.Output;
              process.stderr.write(ev.Output);
            }
            return;
          }
          if (ev.Action === 'output' && typeof ev.Output === 'string') {
            process.stdout.write(ev.Output);
            // newer go: `FAIL <pkg> [build failed]` is an output event of the package
            if (!ev.Test && /^FAIL\s+\S+\s+\[(build|setup) failed\]/.test(ev.Output)) onText(ev.Output.trimEnd());
          }
          onEvent(ev);
          return;
        }
      }
      process.stdout.write(line + '\n');
      onText(line);
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        handleLine(line);
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
      process.stderr.write(chunk);
    });
    child.on('error', (err) => {
      if (err.code === 'ENOENT') fatal(`cannot run "${GO}": not found on PATH (install Go, or set WARREN_GO)`);
      fatal(`cannot run ${GO}: ${err.message}`);
    });
    child.on('close', (code, signal) => {
      if (buf) handleLine(buf);
      resolve({ code, signal, stderr: buildOutput ? buildOutput + '\n' + stderr : stderr });
    });
  });
}

/** The requested ids, trimmed (go ids have no spaces), each once. */
function readIds() {
  const text = events.idsFileText();
  const ids = [];
  for (const l of text.split('\n')) {
    const id = l.replace(/\r$/, '').trim();
    if (id && !ids.includes(id)) ids.push(id);
  }
  return ids;
}

/** `example.com/m/calc.TestAdd` -> {pkg, name}; a package id -> {pkg, name: null}. */
function parseId(id) {
  const i = id.lastIndexOf('.');
  if (i > 0) {
    const name = id.slice(i + 1);
    if (TEST_NAME.test(name)) return { pkg: id.slice(0, i), name };
  }
  return { pkg: id, name: null };
}

// --------------------------------------------------------------------------- discover

async function discover() {
  const pkgs = listPackages(['./...']);
  const listed = new Map(); // importPath -> {names: [], output: '', status}
  const textFailures = new Map(); // importPath -> '[build failed]' | '[setup failed]'
  const get = (p) => {
    if (!listed.has(p)) listed.set(p, { names: [], output: '', status: null });
    return listed.get(p);
  };
  const { code, signal, stderr } = await runGoTest(
    ['test', '-json', '-list', '.*', './...'],
    (ev) => {
      if (!ev.Package) return;
      const rec = get(ev.Package);
      if (ev.Action === 'output' && !ev.Test) {
        rec.output += ev.Output;
        const name = ev.Output.trim();
        if (TEST_NAME.test(name) && ev.Output.endsWith('\n') && !rec.names.includes(name)) rec.names.push(name);
      } else if (!ev.Test && (ev.Action === 'pass' || ev.Action === 'fail' || ev.Action === 'skip')) {
        rec.status = ev.Action;
      }
    },
    (line) => {
      const m = /^FAIL\s+(\S+)\s+\[(build failed|setup failed)\]/.exec(line);
      if (m) textFailures.set(m[1], m[2]);
    },
  );
  if (signal) fatal(`go test -list was killed by ${signal}`);
  const blocks = buildErrorBlocks(stderr);
  if (listed.size === 0 && textFailures.size === 0 && code !== 0) {
    fatal(`go test -list ./... failed (exit code ${code}): ${stderr.trim().split('\n').slice(-1)[0] || ''}`, stderr);
  }

  const tests = [];
  const errors = [];
  // every package go list knows, in its order, then any other package go test talked about
  const order = [...pkgs.keys()];
  for (const p of [...listed.keys(), ...textFailures.keys()]) if (!order.includes(p)) order.push(p);
  for (const importPath of order) {
    const info = pkgs.get(importPath) || { importPath, file: importPath, short: importPath };
    const rec = listed.get(importPath);
    const buildFailure = textFailures.get(importPath);
    for (const name of rec ? rec.names : []) {
      if (name.startsWith('Benchmark')) continue;
      tests.push({ event: 'test', id: `${importPath}.${name}`, file: info.file, name: `${info.short}/${name}` });
    }
    if (buildFailure || (rec && rec.status === 'fail')) {
      let message;
      let details;
      if (buildFailure) {
        details = blocks.get(importPath) || [...blocks.values()].join('\n') || stderr.trim() || `${buildFailure}`;
        const first = firstBuildError(blocks.get(importPath) || '') || firstBuildError(details);
        message = `${buildFailure.replace(' failed', '')} failed for ${importPath}: ${first || buildFailure}`;
      } else {
        details = rec.output;
        const first = panicLine(rec.output) || contentLines(rec.output)[0] || 'the test binary failed';
        message = `listing the tests of ${importPath} failed: ${first}`;
      }
      tests.push({ event: 'test', id: importPath, file: info.file, name: `${info.short} (${buildFailure ? 'failed to build' : 'failed to load'})` });
      errors.push({ event: 'error', message, details: cap(details), file: info.file });
    }
  }
  emit({ event: 'start', count: tests.length });
  for (const t of tests) emit(t);
  for (const e of errors) emit(e);
  events.done();
  process.exit(0);
}

// --------------------------------------------------------------------------- run

/** test_end: no empty message; details capped. */
function endRec(rec, status, durationMs, message, details) {
  events.endTest(rec, status, durationMs, message || undefined, details ? cap(details) : undefined);
}

/**
 * One top-level test as go reports it: its own output, its subtests' outputs and statuses.
 */
class GoTest {
  constructor(name) {
    this.name = name;
    this.started = false; // `run` seen
    this.status = null; // pass | fail | skip
    this.elapsed = 0;
    this.output = ''; // everything, subtests included, in order
    this.own = new Map(); // (sub)test name -> its own output
    this.failedOrder = []; // (sub)test names in the order their `fail` came
    this.lastOutputAt = 0;
  }
}

const sourceCache = new Map();
function sourceLine(dir, file, line) {
  const p = path.join(dir, file);
  if (!sourceCache.has(p)) {
    let lines = null;
    try {
      lines = fs.readFileSync(p, 'utf8').split('\n');
    } catch (_) { /* not there */ }
    sourceCache.set(p, lines);
  }
  const lines = sourceCache.get(p);
  return lines ? lines.slice(Math.max(0, line - 3), line).join('\n') : '';
}

const FAILING_CALL = /\.(Error|Errorf|Fatal|Fatalf|Fail|FailNow)\(|\b(assert|require)\.\w+\(/;

/**
 * The line of a (sub)test's own output that says why it failed. go 1.19 prints t.Log and
 * t.Error alike (`    file_test.go:12: text`): prefer a line whose source line (in the
 * package dir) is a t.Error/t.Fatal/assert/require call, else the first line. A line with
 * nothing after `file.go:N:` (testify and the like) gets the following lines appended.
 */
function failureLine(text, dir) {
  const lines = contentLines(text);
  if (!lines.length) return '';
  let i = 0;
  if (dir) {
    const k = lines.findIndex((l) => {
      const m = /^([^\s:/]+\.go):(\d+): /.exec(l + ' ');
      return m && FAILING_CALL.test(sourceLine(dir, m[1], Number(m[2])));
    });
    if (k >= 0) i = k;
  }
  let out = lines[i];
  if (/^[^\s:]+\.go:\d+:\s*$/.test(out)) {
    const rest = lines.slice(i + 1).join(' ').replace(/\s+/g, ' ');
    if (rest) out += ' ' + (rest.length > 200 ? rest.slice(0, 200) + '…' : rest);
  }
  return out;
}

/** message (one line) for a finished top-level test */
function testMessage(t, dir) {
  if (t.status === 'skip') {
    return contentLines(t.own.get(t.name) || '')[0] || 'skipped';
  }
  if (t.status !== 'fail' && t.status !== null) return undefined;
  // a panic anywhere in the test (subtests included) is the story
  for (const [name, text] of t.own) {
    const p = panicLine(text);
    if (p) return name === t.name ? p : `${name}: ${p}`;
  }
  const subs = t.failedOrder.filter((n) => n !== t.name);
  for (const n of [...subs, t.name]) {
    const line = failureLine(t.own.get(n) || '', dir);
    if (line) return n === t.name ? line : `${n}: ${line}`;
  }
  if (subs.length) return `${subs[0]} failed`;
  return t.status === 'fail' ? `${t.name} failed (no output)` : undefined;
}

async function runPackage(importPath, info, group) {
  // group: {whole: rec|null, tests: Map name -> rec}
  const tests = new Map(); // top-level name -> GoTest
  const topOf = (name) => name.split('/')[0];
  const getTest = (name) => {
    if (!tests.has(name)) tests.set(name, new GoTest(name));
    return tests.get(name);
  };
  let pkgStatus = null;
  let pkgOutput = '';
  let textFailure = null;
  let seq = 0;
  const recOf = (top) => group.tests.get(top) || null;

  const args = ['test', '-json', '-count=1'];
  if (!group.whole) args.push('-run', `^(${[...group.tests.keys()].map(escapeRe).join('|')})$`);
  args.push(importPath);
  if (group.whole) {
    startTest(group.whole); // the package as a whole is under way (building it included)
  }

  const finishTop = (t) => {
    const rec = recOf(t.name);
    if (!rec || rec.ended) return;
    const status = t.status === 'pass' ? 'passed' : t.status === 'skip' ? 'pending' : 'failed';
    endRec(rec, status, t.elapsed * 1000, testMessage(t, info.dir), status === 'failed' ? t.output : undefined);
  };

  const { stderr } = await runGoTest(args, (ev) => {
    if (ev.Package && ev.Package !== importPath) return;
    if (!ev.Test) {
      if (ev.Action === 'output') pkgOutput += ev.Output;
      else if (ev.Action === 'pass' || ev.Action === 'fail' || ev.Action === 'skip') pkgStatus = ev.Action;
      return;
    }
    const top = topOf(ev.Test);
    const t = getTest(top);
    switch (ev.Action) {
      case 'run':
        if (ev.Test === top) {
          t.started = true;
          const rec = recOf(top);
          if (rec) startTest(rec);
        }
        break;
      case 'output':
        t.output += ev.Output;
        t.own.set(ev.Test, (t.own.get(ev.Test) || '') + ev.Output);
        t.lastOutputAt = ++seq;
        break;
      case 'pass':
      case 'fail':
      case 'skip':
        if (ev.Action === 'fail') t.failedOrder.push(ev.Test);
        if (ev.Test === top) {
          t.status = ev.Action;
          t.elapsed = typeof ev.Elapsed === 'number' ? ev.Elapsed : 0;
          finishTop(t);
        }
        break;
      default: // pause, cont, bench
        break;
    }
  }, (line) => {
    const m = /^FAIL\s+(\S+)\s+\[(build failed|setup failed)\]/.exec(line);
    if (m && m[1] === importPath) textFailure = m[2];
  });

  // ---- what the stream did not settle
  if (textFailure) {
    const blocks = buildErrorBlocks(stderr);
    const details = blocks.get(importPath) || [...blocks.values()].join('\n') || stderr.trim();
    const first = firstBuildError(blocks.get(importPath) || '') || firstBuildError(details);
    emit({
      event: 'error', file: info.file, details: cap(details || textFailure),
      message: `${textFailure.replace(' failed', '')} failed for ${importPath}: ${first || textFailure}`,
    });
    return; // the `error` event accounts for every test of the package
  }

  const anyStarted = [...tests.values()].some((t) => t.started);
  const unfinished = [...tests.values()].filter((t) => t.started && t.status === null);
  if (pkgStatus !== 'pass' && unfinished.length > 0) {
    // the test binary died (panic, os.Exit, go's own -timeout) while these were running:
    // the culprit is the only one running, or the one go attributed the last output to
    let culprit = unfinished.length === 1 ? unfinished[0] : null;
    if (!culprit) {
      const withPanic = unfinished.filter((t) => panicLine(t.output));
      const pool = withPanic.length ? withPanic : unfinished;
      culprit = pool.reduce((a, b) => (b.lastOutputAt > a.lastOutputAt ? b : a));
      if (!culprit.lastOutputAt) culprit = null;
    }
    if (culprit) {
      culprit.status = 'fail';
      const p = panicLine(culprit.output);
      const why = p || 'the test binary exited before the test ended (os.Exit, a crash or a signal)';
      const tail = pkgOutput.trim() ? '\n' + pkgOutput : '';
      const rec = recOf(culprit.name);
      if (rec) endRec(rec, 'failed', undefined, p ? testMessage(culprit, info.dir) || why : 'WarrenTestNotFinished: ' + why, culprit.output + tail);
      else culprit.crashMessage = p ? testMessage(culprit, info.dir) || why : 'WarrenTestNotFinished: ' + why;
    }
    // the others that were running, and those that never started: no event (Warren re-runs them)
  } else if (pkgStatus === 'fail' && !anyStarted) {
    // the binary failed before any test: init() panic, TestMain exiting, ...
    const first = panicLine(pkgOutput) || contentLines(pkgOutput)[0] || `the test binary of ${importPath} failed`;
    emit({ event: 'error', file: info.file, message: `${importPath} failed before running any test: ${first}`, details: cap(pkgOutput || stderr) });
    return;
  } else if (pkgStatus === null) {
    // go itself did not finish the package (killed, crashed): say so; unstarted tests go back to Warren
    emit({ event: 'error', message: `go test ${importPath} ended without a result for the package`, details: cap(stderr || pkgOutput) });
  }

  if (pkgStatus === 'pass' || pkgStatus === 'skip') {
    for (const [name, rec] of group.tests) {
      if (rec.ended) continue;
      endRec(rec, 'failed', 0, `WarrenTestNotFound: ${importPath} has no test ${name} (renamed or removed since discovery)`);
    }
  }

  if (group.whole && !group.whole.ended) {
    const all = [...tests.values()].filter((t) => t.started || t.status);
    const failed = all.filter((t) => t.status === 'fail');
    const elapsed = all.reduce((s, t) => s + t.elapsed * 1000, 0);
    if (failed.length) {
      const f = failed[0];
      endRec(group.whole, 'failed', elapsed, `${failed.length} of ${all.length} tests failed, first ${f.name}: ${f.crashMessage || testMessage(f, info.dir)}`,
        failed.map((t) => t.output).join('\n'));
    } else if (pkgStatus === 'pass' && all.length === 0) {
      endRec(group.whole, 'failed', elapsed, `WarrenTestNotFound: ${importPath} has no tests`, pkgOutput);
    } else if (pkgStatus === 'pass' || pkgStatus === 'skip') {
      endRec(group.whole, all.length && all.every((t) => t.status === 'skip') ? 'pending' : 'passed', elapsed);
    }
    // else: the binary died outside any test after some ran: no event, Warren runs it again
  }
}

async function run() {
  const ids = readIds();
  const groups = new Map(); // importPath -> {whole, tests}
  for (const id of ids) {
    const { pkg, name } = parseId(id);
    if (!groups.has(pkg)) groups.set(pkg, { whole: null, tests: new Map() });
    const g = groups.get(pkg);
    if (name === null) g.whole = { id, pkg, file: '', name: '' };
    else g.tests.set(name, { id, pkg, name: '', file: '' });
  }
  const pkgs = listPackages([...groups.keys()]);
  emit({ event: 'start', count: ids.length });
  for (const [importPath, g] of groups) {
    const info = pkgs.get(importPath);
    const recs = [...g.tests.values(), ...(g.whole ? [g.whole] : [])];
    if (info) {
      for (const r of recs) {
        r.file = info.file;
        r.name = r === g.whole ? `${info.short} (whole package)` : `${info.short}/${[...g.tests].find(([, v]) => v === r)[0]}`;
      }
    }
    if (!info || !info.dir || !fs.existsSync(info.dir)) {
      const why = info && info.error ? info.error : 'no such package';
      for (const r of recs) {
        if (!r.file) r.file = importPath;
        if (!r.name) r.name = r.id;
        endRec(r, 'failed', 0, `WarrenTestNotFound: package ${importPath} not found (${why.split('\n')[0]})`, why);
      }
      continue;
    }
    await runPackage(importPath, info, g);
  }
  events.done();
  process.exitCode = events.anyFailure ? 1 : 0;
}

// --------------------------------------------------------------------------- main

async function main() {
  events.open('go test finished');
  events.checkMode(mode, 'warren-go.cjs');
  if (mode === 'discover') await discover();
  else await run();
}

main().catch((err) => fatal('unexpected failure: ' + (err && err.message), err && err.stack));
