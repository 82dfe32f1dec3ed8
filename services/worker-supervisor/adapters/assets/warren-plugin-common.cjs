/*
 * warren-plugin-common.cjs: what Warren's JavaScript framework plug-ins (warren-mocha.cjs,
 * warren-jest.cjs, warren-vitest.mjs, warren-node-test.mjs, warren-go.cjs) share: writing
 * the events file (see ../PROTOCOL.md), reading the ids file, numbering ids, one-line
 * messages, finding the suite's own framework.
 *
 * The plug-ins run inside the suite's environment (possibly in a container where only this
 * directory is mounted), so this module uses node's built-in modules only, and the plug-ins
 * load it by a path relative to their own file:
 *   .cjs: require(path.join(__dirname, 'warren-plugin-common.cjs'))
 *   .mjs: createRequire(import.meta.url)('./warren-plugin-common.cjs')
 * Loading it has no side effect (the plug-ins are also loaded by the frameworks, in their
 * workers, as test runner, reporter or preload).
 */
'use strict';

const fs = require('node:fs');
const path = require('node:path');

// --------------------------------------------------------------------------- events file

/**
 * The events writer of one plug-in process. `tag` names the plug-in in messages
 * ('warren-mocha'); `formatError(err)` -> {message, details?} is the plug-in's own
 * rendering of an error, used by fatal() and guard().
 *
 * - emit(ev): one JSON line, written with writeSync on an O_APPEND fd (the line is in the
 *   kernel before we go on, so it survives a crash or SIGKILL of this process); an `error`
 *   or a failed `test_end` makes the run a failure (anyFailure).
 * - fail(message, details?): the adapter itself cannot work: an `error` event
 *   (`<tag>: message`), the same on stderr, exit code 2.
 * - fatal(message, err?): fail() with the error rendered by formatError.
 * - open(what): opens WARREN_EVENTS (exit code 2 when unset or unopenable), and makes a
 *   process that exits before finish() write an `error` event ("... before <what>") and
 *   never exit 0.
 */
function createEvents(tag, formatError) {
  let eventsFd = null;
  let finished = false; // set once `done` (or a fatal adapter error) has been written
  let anyFailure = false;

  function emit(ev) {
    if (ev.event === 'error' || (ev.event === 'test_end' && ev.status === 'failed')) anyFailure = true;
    const line = JSON.stringify(ev) + '\n';
    if (eventsFd === null) {
      process.stderr.write('[' + tag + '] (no events file) ' + line);
      return;
    }
    fs.writeSync(eventsFd, line);
  }

  function finish() {
    finished = true;
  }

  /** `done`: the framework finished normally. */
  function done() {
    emit({ event: 'done' });
    finished = true;
  }

  function fail(message, details) {
    const ev = { event: 'error', message: tag + ': ' + message };
    if (details) ev.details = details;
    emit(ev);
    finished = true;
    process.stderr.write(ev.message + '\n' + (ev.details ? ev.details + '\n' : ''));
    process.exit(2);
  }

  function fatal(message, err) {
    if (!err) {
      fail(message);
      return;
    }
    const f = formatError(err);
    fail(message + ': ' + f.message, f.details);
  }

  /** Runs fn; an exception of the adapter's own code is an `error` event, never a crash. */
  function guard(fn) {
    try {
      fn();
    } catch (err) {
      const f = formatError(err);
      emit({ event: 'error', message: tag + ' internal error: ' + f.message, details: f.details });
    }
  }

  /** Points the writer at another events file (serve mode: one file per batch); resets the
   * batch's state (finished, anyFailure). */
  function retarget(eventsPath) {
    const fd = fs.openSync(eventsPath, 'a');
    if (eventsFd !== null) {
      try {
        fs.closeSync(eventsFd);
      } catch (_) { /* already closed */ }
    }
    eventsFd = fd;
    finished = false;
    anyFailure = false;
  }

  function open(what) {
    if (mode() === 'serve') {
      // serve: the events files come with the commands (see serve()); a process that exits
      // mid-batch still says so in that batch's file.
      process.on('exit', (code) => {
        if (!finished && eventsFd !== null) {
          try {
            emit({ event: 'error', message: tag + ': the process exited (code ' + code + ') before ' + what });
          } catch (_) { /* nothing left to do */ }
          if (!code) process.exitCode = 1;
        }
      });
      return;
    }
    const eventsPath = process.env.WARREN_EVENTS;
    if (!eventsPath) {
      process.stderr.write(tag + ': WARREN_EVENTS is not set (path of the events file to append to)\n');
      process.exit(2);
    }
    try {
      eventsFd = fs.openSync(eventsPath, 'a');
    } catch (err) {
      process.stderr.write(tag + ': cannot open WARREN_EVENTS ' + eventsPath + ': ' + err.message + '\n');
      process.exit(2);
    }
    process.on('exit', (code) => {
      if (!finished) {
        try {
          emit({ event: 'error', message: tag + ': the process exited (code ' + code + ') before ' + what });
        } catch (_) { /* nothing left to do */ }
        if (!code) process.exitCode = 1; // an unfinished run is never a success
      }
    });
  }

  function checkMode(mode, script) {
    if (mode !== 'discover' && mode !== 'run' && mode !== 'serve') fail('usage: node ' + script + ' discover|run|serve (got ' + JSON.stringify(mode) + ')');
  }

  /** The text of WARREN_IDS_FILE (run mode); fatal() when it is not set or cannot be read. */
  function idsFileText() {
    const idsFile = process.env.WARREN_IDS_FILE;
    if (!idsFile) fatal('WARREN_IDS_FILE is not set (run mode needs the ids to run, one per line)');
    try {
      return fs.readFileSync(idsFile, 'utf8');
    } catch (err) {
      fatal('cannot read WARREN_IDS_FILE ' + idsFile, err);
    }
    return undefined;
  }

  function startTest(rec) {
    if (!rec || rec.started) return;
    rec.started = true;
    rec.t0 = Date.now();
    emit({ event: 'test_start', id: rec.id, file: rec.file, name: rec.name });
  }

  /**
   * test_end, once per rec (test_start first when it was not written); durationMs the
   * framework's when it is a number, else measured since test_start.
   */
  function endTest(rec, status, durationMs, message, details, extra) {
    if (!rec || rec.ended) return;
    startTest(rec);
    rec.ended = true;
    rec.status = status;
    const ev = {
      event: 'test_end', id: rec.id, file: rec.file, name: rec.name, status,
      durationMs: typeof durationMs === 'number' && isFinite(durationMs) ? Math.round(durationMs) : Date.now() - rec.t0,
    };
    if (message !== undefined) ev.message = message;
    if (details) ev.details = details;
    if (extra) Object.assign(ev, extra); // `retried`: the framework's own retries (PROTOCOL.md)
    emit(ev);
  }

  /**
   * After a run, a requested file the framework never reported (why: not one of its test
   * files, does not exist...): each requested test of it is not found (notFound(id, why)),
   * each whole-file id is an `error` naming the file, never silently dropped.
   */
  function fileNotRun(rel, want, why, notFound) {
    for (const id of want.requested) notFound(id, 'test not found: ' + why);
    for (const id of want.wholeIds) emit({ event: 'error', message: 'failed to run ' + rel + ': ' + why, file: rel });
  }

  /**
   * A whole-file id (the file failed to load at discovery) of a file that loads now: one
   * test_end for it summing up the file's tests (recs): passed, or failed with how many.
   */
  function fileLoadsNow(id, rel, recs) {
    const failed = recs.filter((r) => r.status === 'failed').length;
    const rec = newRec(id, rel, rel + ' (failed to load)');
    endTest(rec, failed ? 'failed' : 'passed', 0, failed ? rel + ' loads now; ' + failed + ' of its tests failed' : undefined);
  }

  return {
    emit, finish, done, fail, fatal, guard, open, retarget, checkMode, idsFileText, startTest, endTest, fileNotRun, fileLoadsNow,
    get anyFailure() {
      return anyFailure;
    },
  };
}

// --------------------------------------------------------------------------- serve (warm runner)

/** The plug-in's mode: argv[2] of its process (`discover`, `run` or `serve`). */
function mode() {
  return process.argv[2];
}

/**
 * The warm runner loop (PROTOCOL.md, "serve"): commands come on stdin, one JSON object a
 * line. For each `{"cmd":"run","batch":n,"events":file,"ids":[...]}` the events writer is
 * pointed at `file`, `await runBatch(ids)` runs the batch (resolving to its exit code, 0 or
 * 1, as run mode would exit), then `end` closes the batch with that code and this process's
 * resident memory (the slot retires a runner that grew past its limit). Batches run one at a
 * time, in order. End of stdin (the slot closed it, or died): exit 0.
 *
 * `runBatch` must not call process.exit; an exception it throws becomes an `error` event of
 * the batch and code 1 (the runner stays up: the framework itself is still loaded).
 * `opts.close`, when given, is awaited at the end of stdin before the process exits (a
 * framework's own teardown: vitest's pool and globalSetup).
 */
function serve(events, runBatch, formatError, opts) {
  const lines = [];
  let buffered = '';
  let eof = false;
  let wake = null;
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => {
    buffered += chunk;
    let i;
    while ((i = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, i).trim();
      buffered = buffered.slice(i + 1);
      if (line) lines.push(line);
    }
    // (a command longer than a pipe's chunk, 64 KiB: a batch of hundreds of long ids, comes
    // in several; the loop wakes for a whole line only)
    if (wake && lines.length) wake();
  });
  process.stdin.on('end', () => {
    eof = true;
    if (wake) wake();
  });
  const next = () => new Promise((resolve) => {
    if (lines.length || eof) return resolve();
    wake = () => {
      wake = null;
      resolve();
    };
  });
  (async () => {
    for (;;) {
      await next();
      if (!lines.length) {
        if (eof) break;
        continue;
      }
      const line = lines.shift();
      let cmd;
      try {
        cmd = JSON.parse(line);
      } catch (err) {
        process.stderr.write('warren runner: a command that is not JSON: ' + line.slice(0, 200) + '\n');
        continue;
      }
      if (!cmd || cmd.cmd !== 'run' || typeof cmd.events !== 'string' || !Array.isArray(cmd.ids)) {
        process.stderr.write('warren runner: unknown command: ' + line.slice(0, 200) + '\n');
        continue;
      }
      events.retarget(cmd.events);
      let code = 1;
      try {
        code = await runBatch(cmd.ids.map(String));
      } catch (err) {
        const f = formatError(err);
        events.emit({ event: 'error', message: 'warren runner: the batch failed: ' + f.message, details: f.details });
        code = 1;
      }
      events.finish();
      events.emit({ event: 'end', batch: cmd.batch, code: code ? 1 : 0, rss: process.memoryUsage().rss });
    }
    if (opts && typeof opts.close === 'function') {
      try {
        await opts.close();
      } catch (err) {
        process.stderr.write('warren runner: closing the framework failed: ' + formatError(err).message + '\n');
      }
    }
    process.exit(0);
  })();
}

// --------------------------------------------------------------------------- the suite's own options

/**
 * The framework's own options and paths from the project's test command
 * (WARREN_FRAMEWORK_ARGS: a JSON array of strings, PROTOCOL.md), for the framework's own
 * option parser; [] when there are none. Malformed: an Error (the slot set it, so a bug).
 */
function frameworkArgs() {
  const text = process.env.WARREN_FRAMEWORK_ARGS;
  if (!text) return [];
  const args = JSON.parse(text);
  if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) throw new Error('WARREN_FRAMEWORK_ARGS is not a JSON array of strings');
  return args;
}

/**
 * The colour flags among them (`--color=true`, `--no-colors`), put on this process's own
 * argv: chalk's supports-color reads them from there in a plain run (jest's `--color` works
 * that way), so snapshots of coloured output match the project's own run.
 */
function adoptColorFlags(args) {
  for (const a of args) if (/^--(no-)?colou?rs?(=.*)?$/.test(a) && !process.argv.includes(a)) process.argv.push(a);
}

// --------------------------------------------------------------------------- ids

/** The ids of an ids file's text, one a line; kept exactly (a name may end with spaces): only line terminators are stripped. */
function splitIds(text) {
  return text.split('\n').map((l) => l.replace(/\r$/, '')).filter((l) => l.trim() !== '');
}

function readIdsFile(file) {
  return splitIds(fs.readFileSync(file, 'utf8'));
}

const toPosix = (p) => p.split(path.sep).join('/');

/** `abs` relative to `cwd`, with `/`, no leading `./` (the `file` of the events). */
const relPath = (cwd, abs) => toPosix(path.relative(cwd, abs)).replace(/^\.\//, '');

/**
 * Requested ids (`<file> :: <name>`, or a whole `<file>`) grouped by file, in order of first
 * appearance: rel -> {whole, wholeIds, ids: Set, requested: []}; the file part of each id is
 * normalised (`./test/x.js :: a` -> `test/x.js :: a`), `requested` has each id once.
 */
function groupIds(cwd, ids) {
  const byFile = new Map();
  for (const id of ids) {
    const i = id.indexOf(' :: ');
    const rel = relPath(cwd, path.resolve(cwd, i < 0 ? id : id.slice(0, i)));
    if (!byFile.has(rel)) byFile.set(rel, { whole: false, wholeIds: [], ids: new Set(), requested: [] });
    const entry = byFile.get(rel);
    if (i < 0) {
      entry.whole = true;
      entry.wholeIds.push(id);
    } else {
      const norm = rel + id.slice(i);
      if (!entry.ids.has(norm)) entry.requested.push(norm);
      entry.ids.add(norm);
    }
  }
  return byFile;
}

/**
 * `<file> :: <key>`, plus ` #n` for the n-th test (n > 1) of that key in the file; `counts`
 * (key -> how many so far) is the file's, walked in the framework's order.
 */
function numberedId(rel, counts, key) {
  const n = (counts.get(key) || 0) + 1;
  counts.set(key, n);
  return rel + ' :: ' + key + (n > 1 ? ' #' + n : '');
}

/** A test's record for startTest/endTest. */
function newRec(id, file, name) {
  return { id, file, name, started: false, ended: false, t0: 0 };
}

/** The record of a requested id that the framework did not report: file and name from the id. */
function recOfId(id) {
  const i = id.indexOf(' :: ');
  const rec = newRec(id, i < 0 ? id : id.slice(0, i), i < 0 ? id : id.slice(i + 4));
  rec.t0 = Date.now();
  return rec;
}

// --------------------------------------------------------------------------- messages

// eslint-disable-next-line no-control-regex
const ANSI = /[\u001b\u009b][[\]()#;?]*(?:(?:(?:[a-zA-Z\d]*(?:;[-a-zA-Z\d/#&.:=?%@~_]*)*)?\u0007)|(?:(?:\d{1,4}(?:;\d{0,4})*)?[\dA-PR-TZcf-ntqry=><~]))/g;
const stripAnsi = (s) => String(s).replace(ANSI, '');

/**
 * One line of an error message: its first line, plus, when that line only introduces
 * what follows (ends with ':', as node's assert does: "Expected values to be strictly
 * equal:\n\n2 !== 3"), the following lines collapsed, up to ~200 characters.
 */
function oneLine(s) {
  const lines = String(s).split('\n');
  let out = lines[0].trimEnd();
  if (lines.length > 1 && out.endsWith(':')) {
    const rest = lines.slice(1).map((l) => l.trim()).filter(Boolean).join(' ').replace(/\s+/g, ' ');
    if (rest) out += ' ' + (rest.length > 200 ? rest.slice(0, 200) + '…' : rest);
  }
  return out;
}

/**
 * A failed test's {message, details} from the framework's failure texts (one per error,
 * ANSI-free): the message of the first (messageOf), all of them as details.
 */
function failureOfTexts(texts, messageOf) {
  return { message: texts.length ? messageOf(texts[0]) : 'failed', details: texts.join('\n\n') || undefined };
}

/** The message of a failure text ("Name: message\n    at frame..."): the lines before the first stack frame, one-lined. */
function messageOfText(text) {
  const lines = text.split('\n');
  const k = lines.findIndex((l, i) => i > 0 && /^\s+at \S/.test(l));
  const msg = (k < 0 ? lines : lines.slice(0, k)).join('\n').replace(/^\s*\n/, '');
  return oneLine(msg) || 'Error';
}

// --------------------------------------------------------------------------- the suite's framework

/** The directory of the package `name` that `resolved` (a file of it) belongs to, or null. */
function findPackageDir(resolved, name) {
  let dir = path.dirname(resolved);
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        if (JSON.parse(fs.readFileSync(pj, 'utf8')).name === name) return dir;
      } catch (_) { /* keep walking */ }
    }
    const up = path.dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
}

/**
 * The main file of the suite's own `name` (resolved from the cwd), else of the one
 * resolvable from the plug-in (`req`: the plug-in's own require); `fatal` when neither.
 */
function resolveFramework(req, name, cwd, self, fatal) {
  try {
    return req.resolve(name, { paths: [cwd] });
  } catch (_) {
    try {
      return req.resolve(name);
    } catch (err) {
      fatal('cannot find ' + name + ' (neither in the suite at ' + cwd + ' nor next to ' + self + ')', err);
    }
  }
  return undefined;
}

/** `version` of the package.json in dir, or `fallback`. */
function packageVersion(dir, fallback) {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
  } catch (_) {
    return fallback;
  }
}

module.exports = {
  createEvents, mode, serve,
  splitIds, readIdsFile, toPosix, relPath, groupIds, numberedId, newRec, recOfId,
  stripAnsi, oneLine, messageOfText, failureOfTexts,
  findPackageDir, resolveFramework, packageVersion,
  frameworkArgs, adoptColorFlags,
};
