#!/usr/bin/env node
/*
 * warren-go.cjs: Warren's Go adapter (see ../PROTOCOL.md for the events protocol).
 *
 *   cd <go module dir> && WARREN_EVENTS=/tmp/ev.jsonl node /abs/warren-go.cjs discover
 *   cd <go module dir> && WARREN_EVENTS=/tmp/ev.jsonl WARREN_IDS_FILE=/tmp/ids node /abs/warren-go.cjs run
 *   cd <go module dir> && node /abs/warren-go.cjs serve   # batches as JSON lines on stdin (../PROTOCOL.md)
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
 * Test binaries (run and serve): a package's test binary is built once and kept under
 * $WARREN_CACHE_DIR/go (else <tmpdir>/warren-cache-<uid>/go), keyed by what can change it:
 * the go version and toolchain, the build environment (GOFLAGS, CGO_ENABLED, GOOS/GOARCH,
 * CC, the go env file...), the module directory, and the content of every file go list
 * reports for the test binary's non-standard packages (the package, its test files, the
 * module's packages it imports, embedded and cgo files) plus go.mod/go.sum/go.work. The
 * first run of a key is a plain `go test -json -count=1 [-run] -exec <this script> <pkg>`
 * (build, vet and link by go itself, so build failures are go's own, exactly as without the
 * cache): the -exec hook only copies the binary and records the argv go gave it. Every
 * run (that one included) then executes the binary as go test does: in the package
 * directory, with go's argv (-test.run replaced), go's env additions (PATH, PWD), stdout and
 * stderr on one pipe into `test2json -t -p <pkg>`, go's closing `ok`/`FAIL` line and exit
 * status, its kill timeout (-timeout + 1m). Not cached (plain go test every time): GOFLAGS
 * with -exec, -cover*, -fuzz* or -overlay; WARREN_GO_BINARY_CACHE=off.
 * GOCACHE: when neither the environment nor go's env file sets a usable one (HOME's default
 * cache cannot be created or written), $WARREN_CACHE_DIR/go-build (else <tmpdir>/...).
 *
 * serve: the warm runner of ../PROTOCOL.md; each batch is what `run` does with its ids.
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
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
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
const events = common.createEvents('warren-go', (err) => ({ message: err.message, details: err.details }));
const { emit, startTest } = events;

/** The adapter itself cannot work (no go, not a module...): see fatal(). */
class AdapterError extends Error {
  constructor(message, details) {
    super(message);
    this.details = details;
  }
}
/**
 * fatal(message, details?): throws an AdapterError, which becomes `error` event
 * `warren-go: <message>` and exit code 2 (events.fail) in discover and run, and the same
 * event and code 1 for the batch in serve (where the process must not exit).
 */
function fatal(message, details) {
  throw new AdapterError(message, details);
}

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

/**
 * The reader of a go test -json stream: stdout lines (JSON events, non-JSON lines passed on
 * to onText as such) and stderr, echoed to our stdout/stderr as they come.
 * -> {line(l), stderr(chunk), result() -> the stderr text (build output of newer go first)}
 */
function goStream(onEvent, onText) {
  let stderr = '';
  let buildOutput = ''; // go >= 1.24: compiler output as `build-output` events, not on stderr
  const line = (l) => {
    if (l.startsWith('{')) {
      let ev;
      try {
        ev = JSON.parse(l);
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
    process.stdout.write(l + '\n');
    onText(l);
  };
  return {
    line,
    stderr(chunk) {
      stderr += chunk;
      process.stderr.write(chunk);
    },
    result: () => (buildOutput ? buildOutput + '\n' + stderr : stderr),
  };
}

/**
 * Runs `go <args>` (in the suite dir), its stdout split in lines. With `stream` (goStream),
 * read as it comes; else recorded ({lines, stderrChunks}) to be replayed later (replayGo).
 * Rejects with an AdapterError when go cannot be started.
 */
function spawnGo(args, stream) {
  return new Promise((resolve, reject) => {
    let child;
    try {
      child = spawn(GO, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      reject(new AdapterError(`cannot run ${GO}: ${err.message}`));
      return;
    }
    const lines = [];
    const stderrChunks = [];
    const onLine = stream ? stream.line : (l) => lines.push(l);
    let buf = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const l = buf.slice(0, i);
        buf = buf.slice(i + 1);
        onLine(l);
      }
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => (stream ? stream.stderr(chunk) : stderrChunks.push(chunk)));
    child.on('error', (err) => {
      if (err.code === 'ENOENT') reject(new AdapterError(`cannot run "${GO}": not found on PATH (install Go, or set WARREN_GO)`));
      else reject(new AdapterError(`cannot run ${GO}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      if (buf) onLine(buf);
      resolve({ code, signal, lines, stderrChunks });
    });
  });
}

/** A go test -json stream from a child process, line by line (non-JSON lines passed on as such). */
async function runGoTest(args, onEvent, onText) {
  const stream = goStream(onEvent, onText);
  const { code, signal } = await spawnGo(args, stream);
  return { code, signal, stderr: stream.result() };
}

/** What runGoTest would have done with a recorded run (spawnGo without a stream). */
function replayGo(recorded, onEvent, onText) {
  const stream = goStream(onEvent, onText);
  for (const l of recorded.lines) stream.line(l);
  for (const c of recorded.stderrChunks) stream.stderr(c);
  return { code: recorded.code, signal: recorded.signal, stderr: stream.result() };
}

/** The requested ids, trimmed (go ids have no spaces), each once. */
function readIds() {
  return uniqueIds(events.idsFileText().split('\n'));
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

// --------------------------------------------------------------------------- GOCACHE, test binaries

const uid = () => (typeof process.getuid === 'function' ? process.getuid() : 'user');
/** The slot's cache directory (PROTOCOL.md), else one in the temp dir. */
const cacheBase = () => process.env.WARREN_CACHE_DIR || path.join(os.tmpdir(), `warren-cache-${uid()}`);
const sha256 = (data) => crypto.createHash('sha256').update(data).digest('hex');

// go env values that go into the key of a test binary (the others cannot change it); the
// costly ones (CC, CGO_*: go env runs the C compiler for them) are taken from the environment
const KEY_GO_ENV = ['GOVERSION', 'GOROOT', 'GOTOOLDIR', 'GOOS', 'GOARCH', 'GOHOSTOS', 'GOHOSTARCH', 'GOFLAGS', 'CGO_ENABLED',
  'GOEXPERIMENT', 'GOAMD64', 'GO386', 'GOARM', 'GOARM64', 'GOMIPS', 'GOMIPS64', 'GOPPC64', 'GORISCV64', 'GOWASM', 'GO111MODULE',
  'GOPATH', 'GOMODCACHE', 'GOMOD', 'GOWORK', 'GOTOOLCHAIN', 'GOENV'];
const KEY_PROCESS_ENV = /^(CGO_\w+|CC|CXX|FC|AR|PKG_CONFIG|GCCGO)$/;

let goEnvMemo = null;
/** `go env` (the values above and GOCACHE), once per process; {} when go env fails. */
function goEnv() {
  if (goEnvMemo) return goEnvMemo;
  const r = runGoSync(['env', '-json', 'GOCACHE', ...KEY_GO_ENV]);
  goEnvMemo = {};
  if (r.status === 0) {
    try {
      goEnvMemo = JSON.parse(r.stdout);
    } catch (_) { /* no cache then */ }
  }
  return goEnvMemo;
}

/**
 * mkdir -p, one level at a time: node's own recursive mkdirSync never returns where the
 * kernel answers ENOENT to a mkdir whose parent exists (under /proc: HOME=/proc/x).
 */
function mkdirp(dir) {
  const missing = [];
  let d = dir;
  while (!fs.existsSync(d)) {
    missing.unshift(d);
    const up = path.dirname(d);
    if (up === d) break;
    d = up;
  }
  for (const m of missing) fs.mkdirSync(m);
}

function dirUsable(dir) {
  if (!dir || dir === 'off' || !path.isAbsolute(dir)) return false;
  try {
    mkdirp(dir);
    fs.accessSync(dir, fs.constants.W_OK);
    return true;
  } catch (_) {
    return false;
  }
}

let gocacheChecked = false;
/**
 * GOCACHE: the environment's (the suite's env included) or go's env file's when set and
 * usable; else (no HOME, HOME's cache read-only: go test cannot build at all)
 * $WARREN_CACHE_DIR/go-build. Not always ours: the default cache is usually warm (the
 * standard library, the module's dependencies) and shared with the user's other go commands.
 */
function ensureGocache() {
  if (gocacheChecked) return;
  gocacheChecked = true;
  if (process.env.GOCACHE) return;
  const theirs = goEnv().GOCACHE;
  if (dirUsable(theirs)) return;
  const mine = path.join(cacheBase(), 'go-build');
  if (!dirUsable(mine)) return;
  process.env.GOCACHE = mine;
  process.stderr.write(`warren-go: go's build cache ${theirs ? JSON.stringify(theirs) + ' ' : ''}is not usable; GOCACHE=${mine}\n`);
}

// the files of a package that go builds into a test binary (go list field names)
const FILE_FIELDS = ['GoFiles', 'CgoFiles', 'CFiles', 'CXXFiles', 'MFiles', 'HFiles', 'FFiles', 'SFiles', 'SwigFiles', 'SwigCXXFiles',
  'SysoFiles', 'EmbedFiles', 'TestGoFiles', 'XTestGoFiles', 'TestEmbedFiles', 'XTestEmbedFiles'];
const LIST_FIELDS = ['ImportPath', 'Dir', 'Standard', 'Module', 'ForTest', 'Deps', 'Error', 'DepsErrors', ...FILE_FIELDS].join(',');
// GOFLAGS with which a test binary is not reused (go test every time): -exec (ours replaces
// it), coverage (go rewrites and merges the profile), fuzzing, overlays (files not on disk)
const UNCACHEABLE_FLAG = /^(exec|cover|covermode|coverpkg|coverprofile|fuzz|fuzztime|fuzzminimizetime|overlay)$/;

const digestMemo = new Map(); // absolute path -> {sig, digest}, valid while the file's stat is unchanged
/** A file's content digest; memoised by its stat (not for a file modified in the last 2 s: racy). */
function fileDigest(abs) {
  let st;
  try {
    st = fs.statSync(abs, { bigint: true });
  } catch (_) {
    return 'missing';
  }
  if (!st.isFile()) return 'not a file';
  const sig = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
  const m = digestMemo.get(abs);
  if (m && m.sig === sig) return m.digest;
  let data;
  try {
    data = fs.readFileSync(abs);
  } catch (_) {
    return 'unreadable';
  }
  const digest = sha256(data).slice(0, 32);
  if (Date.now() - Number(st.mtimeNs / 1000000n) > 2000) digestMemo.set(abs, { sig, digest });
  return digest;
}

function statSig(p) {
  try {
    const st = fs.statSync(p);
    return `${st.size}:${st.mtimeMs}`;
  } catch (_) {
    return 'missing';
  }
}

/** Single or double quotes (go's -exec is split by quoted.Split, no escapes): null when impossible. */
function goQuote(s) {
  if (!s.includes("'")) return `'${s}'`;
  if (!s.includes('"')) return `"${s}"`;
  return null;
}

let cacheMemo;
/**
 * The binary cache of this process: {root, base (key material of the process), test2json
 * (argv), execCmd (the -exec hook)}, or null (off: see the header).
 */
function binaryCache() {
  if (cacheMemo !== undefined) return cacheMemo;
  cacheMemo = null;
  if (/^(off|0|false|no)$/i.test(process.env.WARREN_GO_BINARY_CACHE || '')) return null;
  const e = goEnv();
  if (!e.GOVERSION || !e.GOTOOLDIR || !e.GOROOT) return null;
  for (const tok of String(e.GOFLAGS || '').split(/\s+/)) {
    if (UNCACHEABLE_FLAG.test(tok.replace(/^--?/, '').split('=')[0])) return null;
  }
  const root = path.join(cacheBase(), 'go');
  const quoted = [process.execPath, __filename].map(goQuote);
  if (quoted.includes(null) || goQuote(root) === null || !dirUsable(root)) return null;
  const exe = process.platform === 'win32' ? '.exe' : '';
  const t2j = path.join(e.GOTOOLDIR, 'test2json' + exe);
  const base = { v: 'warren-go binary 1: go test -json -count=1', go: GO, cwd, env: {}, tools: {} };
  for (const k of KEY_GO_ENV) base.env[k] = e[k] || '';
  for (const k of Object.keys(process.env).sort()) if (KEY_PROCESS_ENV.test(k)) base.env['$' + k] = process.env[k];
  base.goenvFile = e.GOENV ? fileDigest(e.GOENV) : '';
  for (const t of ['compile', 'link', 'asm', 'cgo', 'vet']) base.tools[t] = statSig(path.join(e.GOTOOLDIR, t + exe));
  cacheMemo = {
    root,
    base: JSON.stringify(base),
    modcache: e.GOMODCACHE ? path.resolve(e.GOMODCACHE) + path.sep : null,
    gowork: e.GOWORK && e.GOWORK !== 'off' ? e.GOWORK : '',
    gorootBin: path.join(e.GOROOT, 'bin'),
    test2json: fs.existsSync(t2j) ? [t2j] : [GO, 'tool', 'test2json'],
    execCmd: [...quoted, '__capture'].join(' '),
  };
  return cacheMemo;
}

/**
 * The cache entries of the test binaries of `importPaths` (one go list for them all):
 * Map importPath -> {name, prefix}; a package whose key cannot be known (go list errors, no
 * test files...) is not in it (go test runs it, every time).
 */
async function binaryKeys(cache, importPaths) {
  const out = new Map();
  if (!importPaths.length) return out;
  // with -e, a package go cannot load is an entry with an Error; the others are usable
  const stdout = await new Promise((resolve) => {
    let text = '';
    let child;
    try {
      child = spawn(GO, ['list', '-e', '-deps', '-test', '-json=' + LIST_FIELDS, ...importPaths], { cwd, stdio: ['ignore', 'pipe', 'ignore'] });
    } catch (_) {
      resolve('');
      return;
    }
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (c) => (text += c));
    child.on('error', () => resolve(''));
    child.on('close', () => resolve(text));
  });
  let list;
  try {
    list = parseJsonStream(stdout);
  } catch (_) {
    return out;
  }
  const byPath = new Map(list.map((p) => [p.ImportPath, p]));
  const work = cache.gowork ? [fileDigest(cache.gowork), fileDigest(cache.gowork + '.sum')] : [];
  for (const ip of importPaths) {
    const main = byPath.get(ip + '.test');
    if (!main || main.Error || (main.DepsErrors || []).length) continue;
    const pkgs = [];
    const mods = new Map();
    let ok = true;
    for (const dep of main.Deps || []) {
      const p = byPath.get(dep);
      if (!p || p.Error) {
        ok = false;
        break;
      }
      if (p.Standard) {
        pkgs.push(dep);
        continue;
      }
      const item = { ip: dep, dir: p.Dir || '', module: p.Module ? { ...p.Module, GoVersion: undefined } : null, files: [] };
      const inModCache = cache.modcache && item.dir.startsWith(cache.modcache); // immutable, named by version
      if (!inModCache) {
        for (const f of FILE_FIELDS) for (const name of p[f] || []) item.files.push(`${f}:${name}:${fileDigest(path.resolve(item.dir, name))}`);
        const m = p.Module;
        if (m && m.Dir && !mods.has(m.Dir)) {
          mods.set(m.Dir, [m.GoMod ? fileDigest(m.GoMod) : '', fileDigest(path.join(m.Dir, 'go.sum')), fileDigest(path.join(m.Dir, 'vendor', 'modules.txt'))]);
        }
      }
      pkgs.push(item);
    }
    if (!ok) continue;
    const key = sha256(JSON.stringify({ ip, pkgs, mods: [...mods].sort(), work }));
    const prefix = sha256(cache.base + '\0' + ip).slice(0, 16);
    out.set(ip, { name: `${prefix}-${sha256(cache.base + '\0' + key).slice(0, 32)}`, prefix });
  }
  return out;
}

/** The cached test binary `name`: {bin, meta}, or null. */
function cachedBinary(cache, name) {
  const dir = path.join(cache.root, name);
  let meta;
  try {
    meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8'));
  } catch (_) {
    return null;
  }
  const bin = path.join(dir, 'test');
  if (!fs.existsSync(bin) || !Array.isArray(meta.args)) return null;
  try {
    const now = new Date();
    fs.utimesSync(dir, now, now); // in use: not pruned
  } catch (_) { /* read-only cache: fine */ }
  return { bin, meta };
}

function rmrf(p) {
  try {
    fs.rmSync(p, { recursive: true, force: true });
  } catch (_) { /* best effort */ }
}

/** Older binaries of the same package (same prefix) unused for an hour, leftovers of builds unused for a day. */
function prune(cache, prefix, keep) {
  let names;
  try {
    names = fs.readdirSync(cache.root);
  } catch (_) {
    return;
  }
  const now = Date.now();
  for (const n of names) {
    if (n === keep) continue;
    const mine = n.startsWith(prefix + '-');
    if (!mine && !n.startsWith('tmp-')) continue;
    try {
      const age = now - fs.statSync(path.join(cache.root, n)).mtimeMs;
      if (age > (mine ? 3600e3 : 86400e3)) rmrf(path.join(cache.root, n));
    } catch (_) { /* gone already */ }
  }
}

/**
 * `__capture <dir> <binary> <args...>`: the -exec hook of a build (go test runs it in place
 * of the test binary): copies the binary to <dir>/test and records the argv and env go gave
 * it (<dir>/argv.json); prints nothing, runs nothing.
 */
function capture() {
  const [dir, bin, ...args] = process.argv.slice(3);
  try {
    try {
      fs.linkSync(bin, path.join(dir, 'test'));
    } catch (_) {
      fs.copyFileSync(bin, path.join(dir, 'test'));
      fs.chmodSync(path.join(dir, 'test'), 0o755);
    }
    fs.writeFileSync(path.join(dir, 'argv.tmp'), JSON.stringify({ args, env: process.env }));
    fs.renameSync(path.join(dir, 'argv.tmp'), path.join(dir, 'argv.json'));
  } catch (err) {
    process.stderr.write(`warren-go: cannot keep the test binary ${bin}: ${err.message}\n`);
    process.exit(1);
  }
  process.exit(0);
}

/**
 * The first run of a key: `go test <args> -exec <hook> <pkg>`. -> {hit: {bin, meta, cleanup}}
 * when go built the binary (nothing ran: the caller runs it); else {recorded} (go test's own
 * output: a build failure, no test files...; the caller reads it as a plain go test run).
 */
async function buildBinary(cache, key, importPath, dir, goArgs, runRe) {
  let tmp;
  try {
    tmp = fs.mkdtempSync(path.join(cache.root, 'tmp-'));
  } catch (_) {
    return { recorded: await spawnGo([...goArgs, importPath], null) };
  }
  const recorded = await spawnGo([...goArgs, '-exec', `${cache.execCmd} ${goQuote(tmp)}`, importPath], null);
  let argv = null;
  try {
    argv = JSON.parse(fs.readFileSync(path.join(tmp, 'argv.json'), 'utf8'));
  } catch (_) { /* not built */ }
  rmrf(path.join(tmp, 'argv.json')); // the env is not kept on disk, only go's changes to it
  if (!argv || !fs.existsSync(path.join(tmp, 'test'))) {
    rmrf(tmp);
    return { recorded };
  }
  for (const c of recorded.stderrChunks) process.stderr.write(c); // go: downloading ... and the like
  // the argv without our -test.run (the last one), the env's differences with ours
  const args = argv.args.slice();
  let exact = false;
  if (runRe !== null) {
    const i = args.lastIndexOf('-test.run=' + runRe);
    if (i >= 0) args.splice(i, 1);
    else exact = true; // not the argv we know: used as it is, this once
  }
  const meta = { importPath, args, env: {}, pathPrefix: '', pwd: false, exact };
  for (const k of new Set([...Object.keys(argv.env), ...Object.keys(process.env)])) {
    const v = k in argv.env ? argv.env[k] : null;
    if (k === 'PWD' && v === dir) meta.pwd = true; // the package directory (also when it is ours)
    else if (v === (k in process.env ? process.env[k] : null)) continue;
    else if (k === 'PATH' && v === (process.env.PATH ? cache.gorootBin + path.delimiter + process.env.PATH : cache.gorootBin)) meta.pathPrefix = cache.gorootBin;
    else meta.env[k] = v;
  }
  // kept only when the sources did not change while go built it
  const again = (await binaryKeys(cache, [importPath])).get(importPath);
  if (exact || !again || again.name !== key.name) {
    return { hit: { bin: path.join(tmp, 'test'), meta, cleanup: () => rmrf(tmp) } };
  }
  fs.writeFileSync(path.join(tmp, 'meta.json'), JSON.stringify(meta));
  const final = path.join(cache.root, key.name);
  try {
    fs.renameSync(tmp, final);
  } catch (_) {
    // another runner stored it first (or cannot store): theirs, else ours from where it is
    const theirs = cachedBinary(cache, key.name);
    if (theirs) {
      rmrf(tmp);
      return { hit: theirs };
    }
    return { hit: { bin: path.join(tmp, 'test'), meta, cleanup: () => rmrf(tmp) } };
  }
  prune(cache, key.prefix, key.name);
  return { hit: { bin: path.join(final, 'test'), meta } };
}

// go's names of the signals (ProcessState.String(): "signal: killed")
const GO_SIGNAL_NAMES = {
  SIGHUP: 'hangup', SIGINT: 'interrupt', SIGQUIT: 'quit', SIGILL: 'illegal instruction', SIGTRAP: 'trace/breakpoint trap',
  SIGABRT: 'aborted', SIGBUS: 'bus error', SIGFPE: 'floating point exception', SIGKILL: 'killed', SIGUSR1: 'user defined signal 1',
  SIGSEGV: 'segmentation fault', SIGUSR2: 'user defined signal 2', SIGPIPE: 'broken pipe', SIGALRM: 'alarm clock', SIGTERM: 'terminated',
};

const DURATION_UNITS = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1e3, m: 60e3, h: 3600e3 };
/** A go duration (`10m0s`, `1.5h`) in ms; NaN when not one. */
function parseGoDuration(s) {
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/gy;
  let ms = 0;
  let m;
  let at = 0;
  while ((m = re.exec(s))) {
    ms += Number(m[1]) * DURATION_UNITS[m[2]];
    at = re.lastIndex;
  }
  return at === s.length && at > 0 ? ms : NaN;
}

/** time.Duration.String() of ms >= 1 s (`11m0s`, `1h0m30.5s`). */
function formatGoDuration(ms) {
  const h = Math.floor(ms / 3600e3);
  const m = Math.floor((ms % 3600e3) / 60e3);
  const sec = String(Number(((ms % 60e3) / 1000).toFixed(9)));
  return (h ? `${h}h${m}m` : m ? `${m}m` : '') + sec + 's';
}

/** The argv of a cached binary for a run of `runRe` (null: the whole package). */
const binaryArgs = (meta, runRe) => (meta.exact || runRe === null ? meta.args : [...meta.args, '-test.run=' + runRe]);

/** The env go test gives a test binary: ours, go's additions (PATH, PWD) replayed. */
function binaryEnv(meta, dir) {
  const env = { ...process.env };
  for (const [k, v] of Object.entries(meta.env || {})) {
    if (v === null) delete env[k];
    else env[k] = v;
  }
  if (meta.pathPrefix) env.PATH = process.env.PATH ? meta.pathPrefix + path.delimiter + process.env.PATH : meta.pathPrefix;
  if (meta.pwd) env.PWD = dir;
  return env;
}

/**
 * Runs a test binary as go test -json does (cmd/go builderRunTest): in the package dir,
 * stdout and stderr on one pipe (the binary is exec'ed by sh with 2>&1) into test2json
 * -t -p <pkg>; then go's own lines (`ok  \t<pkg>\t<t>[ [no tests to run]]`, or the exit
 * status when the binary printed nothing and `FAIL\t<pkg>\t<t>`), its kill timeout
 * (-test.timeout + 1m: SIGQUIT, SIGKILL 5 s later), and the package's result from the exit
 * status (test2json.Exited). -> {stderr} (test2json's, normally empty).
 */
function runBinary(cache, importPath, dir, bin, args, env, onEvent, onText) {
  return new Promise((resolve, reject) => {
    let finalEv = null; // the converter's closing event: its Action is go test's, from the exit status
    let exitOk = false;
    const stream = goStream((ev) => {
      if (!ev.Test && (ev.Action === 'pass' || ev.Action === 'fail' || ev.Action === 'skip')) finalEv = ev;
      else onEvent(ev);
    }, onText);
    let failed = false;
    let child = null;
    let timers = [];
    let convGone = false;
    // test2json or the binary could not start: nothing of this run counts, nothing left running
    const fail = (what, err) => {
      if (failed) return;
      failed = true;
      for (const t of timers) clearTimeout(t);
      timers = [];
      if (child) {
        child.kill('SIGKILL');
        child.stdout.resume();
      }
      conv.kill('SIGKILL');
      reject(new AdapterError(`cannot run ${what}: ${err.message}`));
    };
    const conv = spawn(cache.test2json[0], [...cache.test2json.slice(1), '-t', '-p', importPath], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
    conv.on('error', (err) => fail(cache.test2json.join(' '), err));
    conv.stdin.on('error', () => { /* test2json gone: its close says the rest */ });
    conv.on('exit', () => {
      convGone = true;
      if (child) child.stdout.resume(); // never left paused on a pipe nobody reads
    });
    let buf = '';
    conv.stdout.setEncoding('utf8');
    conv.stdout.on('data', (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        stream.line(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    conv.stderr.setEncoding('utf8');
    conv.stderr.on('data', (c) => stream.stderr(c));
    // done when both are: test2json normally ends after the binary (its stdin is closed then)
    let convClosed = false;
    let childClosed = false;
    const finish = () => {
      if (failed || !convClosed || !childClosed) return;
      if (buf) stream.line(buf);
      buf = '';
      // test2json (stdin mode: exit 0) failed: no result for the package, as when go test dies
      if (convOk) onEvent({ ...(finalEv || { Package: importPath }), Action: exitOk ? 'pass' : 'fail' });
      resolve({ stderr: stream.result() });
    };
    let convOk = false;
    conv.on('close', (code) => {
      convClosed = true;
      convOk = code === 0;
      finish();
    });

    // what go test looks at in the output
    const NORUN = Buffer.from('\ntesting: warning: no tests to run\n');
    let outLen = 0;
    let lastByte = -1;
    let head = Buffer.alloc(0);
    let tail = Buffer.alloc(0);
    let norun = false;
    const t0 = Date.now();
    child = spawn('/bin/sh', ['-c', 'exec "$0" "$@" 2>&1', bin, ...args], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.on('error', (err) => fail(bin, err));
    const feed = (chunk) => {
      if (!chunk.length) return;
      if (!norun) {
        const w = Buffer.concat([tail, chunk]);
        if (w.includes(NORUN)) norun = true;
        tail = w.subarray(Math.max(0, w.length - NORUN.length + 1));
      }
      if (head.length < NORUN.length) head = Buffer.concat([head, chunk]).subarray(0, NORUN.length);
      outLen += chunk.length;
      lastByte = chunk[chunk.length - 1];
      if (failed || convGone) return;
      if (!conv.stdin.write(chunk)) {
        child.stdout.pause();
        conv.stdin.once('drain', () => child.stdout.resume());
      }
    };
    child.stdout.on('data', feed);
    child.stderr.on('data', feed); // sh's own, before the exec

    let killedBy = null;
    const timeoutArg = args.filter((a) => a.startsWith('-test.timeout=')).pop();
    const timeoutMs = timeoutArg ? parseGoDuration(timeoutArg.slice('-test.timeout='.length)) : NaN;
    if (timeoutMs > 0 && !args.some((a) => a.startsWith('-test.fuzz=')) && timeoutMs + 60e3 < 2 ** 31) {
      timers.push(setTimeout(() => {
        killedBy = 'quit';
        child.kill('SIGQUIT');
        timers.push(setTimeout(() => {
          killedBy = 'kill';
          child.kill('SIGKILL');
        }, 5000));
      }, timeoutMs + 60e3));
    }
    child.on('close', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      timers = [];
      if (failed) return;
      let extra = '';
      if (killedBy) {
        const line = `*** Test killed${killedBy === 'quit' ? ' with quit' : ''}: ran too long (${formatGoDuration(timeoutMs + 60e3)}).\n`;
        extra += line;
        outLen += line.length;
        lastByte = 10;
      }
      const t = ((Date.now() - t0) / 1000).toFixed(3) + 's';
      exitOk = code === 0;
      const hasPrefix = head.length >= NORUN.length - 1 && head.subarray(0, NORUN.length - 1).equals(NORUN.subarray(1));
      if (exitOk) {
        if (outLen > 0 && lastByte !== 10) extra += '\n';
        extra += `ok  \t${importPath}\t${t}${norun || hasPrefix ? ' [no tests to run]' : ''}\n`;
      } else {
        if (outLen === 0) extra += (code !== null ? `exit status ${code}` : `signal: ${GO_SIGNAL_NAMES[signal] || signal}`) + '\n';
        else if (lastByte !== 10) extra += '\n';
        extra += `FAIL\t${importPath}\t${t}\n`;
      }
      childClosed = true;
      if (!convGone) conv.stdin.end(extra);
      finish();
    });
  });
}

// --------------------------------------------------------------------------- discover

async function discover() {
  ensureGocache();
  // the project's own package patterns (its `go test` command's; its flags came as GOFLAGS)
  const patterns = common.frameworkArgs().length ? common.frameworkArgs() : ['./...'];
  const pkgs = listPackages(patterns);
  const listed = new Map(); // importPath -> {names: [], output: '', status}
  const textFailures = new Map(); // importPath -> '[build failed]' | '[setup failed]'
  const get = (p) => {
    if (!listed.has(p)) listed.set(p, { names: [], output: '', status: null });
    return listed.get(p);
  };
  const { code, signal, stderr } = await runGoTest(
    ['test', '-json', '-list', '.*', ...patterns],
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
      errors.push({ event: 'error', message, details: cap(details), file: info.file, ...(buildFailure ? { load: true } : {}) });
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

async function runPackage(importPath, info, group, cache, key) {
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

  const runRe = group.whole ? null : `^(${[...group.tests.keys()].map(escapeRe).join('|')})$`;
  const args = ['test', '-json', '-count=1'];
  if (runRe !== null) args.push('-run', runRe);
  if (group.whole) {
    startTest(group.whole); // the package as a whole is under way (building it included)
  }

  const finishTop = (t) => {
    const rec = recOf(t.name);
    if (!rec || rec.ended) return;
    const status = t.status === 'pass' ? 'passed' : t.status === 'skip' ? 'pending' : 'failed';
    endRec(rec, status, t.elapsed * 1000, testMessage(t, info.dir), status === 'failed' ? t.output : undefined);
  };

  const onEvent = (ev) => {
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
  };
  const onText = (line) => {
    const m = /^FAIL\s+(\S+)\s+\[(build failed|setup failed)\]/.exec(line);
    if (m && m[1] === importPath) textFailure = m[2];
  };

  // go test, or the package's test binary (built by go test the first time)
  let stderr;
  if (cache && key) {
    let hit = cachedBinary(cache, key.name);
    if (!hit) {
      const built = await buildBinary(cache, key, importPath, info.dir, args, runRe);
      if (built.recorded) ({ stderr } = replayGo(built.recorded, onEvent, onText));
      else hit = built.hit;
    }
    if (hit) {
      let seen = 0;
      try {
        ({ stderr } = await runBinary(cache, importPath, info.dir, hit.bin, binaryArgs(hit.meta, runRe), binaryEnv(hit.meta, info.dir), (ev) => {
          seen++;
          onEvent(ev);
        }, onText));
      } catch (err) {
        if (!(err instanceof AdapterError) || seen) throw err;
        process.stderr.write(`warren-go: ${err.message}; running go test instead\n`);
        ({ stderr } = await runGoTest([...args, importPath], onEvent, onText)); // the binary could not start: go test then
      } finally {
        if (hit.cleanup) hit.cleanup();
      }
    }
  } else {
    ({ stderr } = await runGoTest([...args, importPath], onEvent, onText));
  }

  // ---- what the stream did not settle
  if (textFailure) {
    const blocks = buildErrorBlocks(stderr);
    const details = blocks.get(importPath) || [...blocks.values()].join('\n') || stderr.trim();
    const first = firstBuildError(blocks.get(importPath) || '') || firstBuildError(details);
    emit({
      // a package that does not build (or set up) fails the same way every time
      event: 'error', file: info.file, details: cap(details || textFailure), load: true,
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

/** Runs `ids` (trimmed, each once): the events of a run, `done` included; -> 0 (all passed) or 1. */
async function runIds(ids) {
  sourceCache.clear(); // serve: the sources may have changed since the last batch
  ensureGocache();
  const groups = new Map(); // importPath -> {whole, tests}
  for (const id of ids) {
    const { pkg, name } = parseId(id);
    if (!groups.has(pkg)) groups.set(pkg, { whole: null, tests: new Map() });
    const g = groups.get(pkg);
    if (name === null) g.whole = { id, pkg, file: '', name: '' };
    else g.tests.set(name, { id, pkg, name: '', file: '' });
  }
  const cache = binaryCache();
  // the test binaries' keys (go list -deps -test) while go list says what the packages are
  const keying = cache ? binaryKeys(cache, [...groups.keys()].filter((ip) => /^[^\s-]\S*$/.test(ip))) : Promise.resolve(new Map());
  let pkgs;
  try {
    pkgs = listPackages([...groups.keys()]);
  } finally {
    await keying.catch(() => null); // never left running on its own
  }
  const keys = await keying;
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
    await runPackage(importPath, info, g, cache, keys.get(importPath));
  }
  events.done();
  return events.anyFailure ? 1 : 0;
}

/** The ids of a run (ids file) or a batch: trimmed (go ids have no spaces), each once. */
function uniqueIds(lines) {
  const ids = [];
  for (const l of lines) {
    const id = String(l).replace(/\r$/, '').trim();
    if (id && !ids.includes(id)) ids.push(id);
  }
  return ids;
}

async function run() {
  const ids = readIds();
  process.exitCode = await runIds(ids);
}

/** serve: each batch as `run` would run its ids; an adapter error is the batch's, never an exit. */
function serveBatches() {
  common.serve(events, async (ids) => {
    try {
      return await runIds(uniqueIds(ids));
    } catch (err) {
      if (!(err instanceof AdapterError)) throw err;
      const ev = { event: 'error', message: 'warren-go: ' + err.message };
      if (err.details) ev.details = err.details;
      emit(ev);
      process.stderr.write(ev.message + '\n' + (ev.details ? ev.details + '\n' : ''));
      return 2;
    }
  }, (err) => ({ message: err && err.message, details: err && err.stack }));
}

// --------------------------------------------------------------------------- main

async function main() {
  if (mode === '__capture') {
    capture();
    return;
  }
  events.open('go test finished');
  events.checkMode(mode, 'warren-go.cjs');
  if (mode === 'serve') serveBatches();
  else if (mode === 'discover') await discover();
  else await run();
}

main().catch((err) => {
  if (err instanceof AdapterError) events.fail(err.message, err.details);
  else events.fail('unexpected failure: ' + (err && err.message), err && err.stack);
});
