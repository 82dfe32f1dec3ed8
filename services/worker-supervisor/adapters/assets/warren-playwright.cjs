/**
 * warren-playwright.cjs: Warren's Playwright Test adapter (../PROTOCOL.md), run in the suite
 * directory as `node warren-playwright.cjs discover|run`. The same file is also the
 * reporter it gives the suite's own `playwright test` (`--reporter=<this file>`): required
 * by Playwright, it exports the reporter class instead of running.
 *
 * - The suite's Playwright (`playwright/cli`, from the suite directory: @playwright/test
 *   depends on it) runs with the suite's config and its own options and paths
 *   (WARREN_FRAMEWORK_ARGS), `--workers=1` (the slot is the unit of parallelism) and our
 *   reporter as the only one. Browsers are the config's (`launchOptions.executablePath`
 *   or `channel`: nothing is downloaded).
 * - A test's id is `<file> :: <its line of a Playwright test list>`: `tests/todo.spec.ts ::
 *   [chromium] › todo.spec.ts › adding › adds an item`, the file relative to the suite
 *   directory, the line as `--test-list` reads it (project, file relative to the config's
 *   rootDir, titles); its name is the test as Playwright's own reporters show it, less the
 *   line:column (`[chromium] › tests/todo.spec.ts › adding › adds an item`).
 * - Discovery: `playwright test --list`. A file that fails to load makes Playwright list
 *   nothing at all: it is listed as a test of its own (its id the file, `load: true`), and
 *   the others are listed again with that file filtered out.
 * - Run: the batch's ids as a `--test-list` file (Playwright loads only their files); ids of
 *   a whole file (it failed to load at discovery) by a path filter, in a second `playwright
 *   test` of their own, so that a file still broken costs only itself.
 * - Artifacts (screenshots, traces) of a batch go to `<outputDir>/warren-<pid>` (test-results,
 *   or the suite's --output): Playwright empties its output directory as a run starts.
 * - Results: the final attempt of each test (Playwright's own `retries` stay the suite's):
 *   expected → passed, skipped → pending, unexpected → failed, flaky (failed, then passed
 *   on a retry) → passed with `retried` (how many attempts failed, the first failure's
 *   message), which Warren reports as flaky.
 */
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const common = require(path.join(__dirname, 'warren-plugin-common.cjs'));

const TAG = 'warren-playwright';
const SELF = __filename;
const SEP = ' \u203a ';

function formatError(err) {
  const text = common.stripAnsi(err && (err.stack || err.message) ? String(err.stack || err.message) : String(err));
  return { message: common.messageOfText(text), details: text.trim() || undefined };
}

// --------------------------------------------------------------------------- the reporter

/** A Playwright Reporter: writes what the launcher asked for (WARREN_PLAYWRIGHT_MODE). */
class WarrenReporter {
  constructor() {
    this.mode = process.env.WARREN_PLAYWRIGHT_MODE;
    this.cwd = process.env.WARREN_PLAYWRIGHT_CWD || process.cwd();
    this.out = process.env.WARREN_PLAYWRIGHT_OUT; // discover: the listing, as JSON
    this.events = null;
    if (this.mode === 'run') {
      this.events = common.createEvents(TAG, formatError);
      this.events.open('the end of its batch');
    }
    this.recs = new Map(); // test -> rec
    this.failures = new Map(); // test -> [{message, details}] of its failed attempts
    this.errors = [];
  }

  printsToStdio() {
    return false;
  }

  onBegin(config, suite) {
    this.rootDir = config.rootDir; // what --test-list paths are relative to (the testDir)
    this.configDir = config.configFile ? path.dirname(config.configFile) : this.cwd; // what Playwright shows them relative to
    this.tests = suite.allTests();
    if (this.mode === 'discover') return;
    for (const t of this.tests) this.recs.set(t, common.newRec(this.idOf(t), this.fileOf(t), this.nameOf(t)));
  }

  fileOf(t) {
    return common.relPath(this.cwd, t.location.file);
  }

  /** The test's line of a Playwright test list: `[project] › file › titles`. */
  listLine(t) {
    const [, project, , ...titles] = t.titlePath();
    const file = common.toPosix(path.relative(this.rootDir, t.location.file));
    return [...(project ? ['[' + project + ']'] : []), file, ...titles].join(SEP);
  }

  idOf(t) {
    return this.fileOf(t) + ' :: ' + this.listLine(t);
  }

  /** As Playwright's own reporters show it, less the line:column. */
  nameOf(t) {
    const [, project, , ...titles] = t.titlePath();
    const file = common.toPosix(path.relative(this.configDir, t.location.file));
    return [...(project ? ['[' + project + ']'] : []), file, ...titles].join(SEP);
  }

  onTestBegin(t) {
    if (this.events) this.events.startTest(this.recs.get(t));
  }

  onTestEnd(t, result) {
    if (!this.events) return;
    const rec = this.recs.get(t);
    if (!rec) return;
    const failedAttempt = result.status !== 'skipped' && result.status !== t.expectedStatus;
    if (failedAttempt) {
      const f = this.failureOf(t, result);
      this.failures.set(t, [...(this.failures.get(t) || []), f]);
    }
    // more attempts to come: Playwright retries an unexpected result while it has retries left
    if (failedAttempt && result.retry < t.retries) return;
    const outcome = t.outcome();
    const failures = this.failures.get(t) || [];
    if (outcome === 'skipped') return this.events.endTest(rec, 'pending', result.duration);
    if (outcome === 'unexpected') {
      const f = failures[failures.length - 1] || { message: 'failed (' + result.status + ')' };
      return this.events.endTest(rec, 'failed', result.duration, f.message, f.details);
    }
    if (outcome === 'flaky' && failures.length) {
      const first = failures[0];
      return this.events.endTest(rec, 'passed', result.duration, undefined, undefined, {
        retried: { failures: failures.length, message: first.message, ...(first.details ? { details: first.details } : {}) },
      });
    }
    return this.events.endTest(rec, 'passed', result.duration);
  }

  failureOf(t, result) {
    if (result.status === 'timedOut') return { message: 'timed out after ' + Math.round(t.timeout / 1000) + ' s (the test\'s own Playwright timeout)' };
    if (result.status === 'interrupted') return { message: 'interrupted' };
    const err = result.error || (result.errors && result.errors[0]);
    if (!err) return { message: result.status === 'passed' ? 'passed, but was expected to fail (test.fail())' : 'failed (' + result.status + ')' };
    const text = common.stripAnsi(err.stack || err.message || err.value || '');
    return { message: common.messageOfText(common.stripAnsi(err.message || text)), details: text.trim() || undefined };
  }

  onError(error) {
    const file = error.location && error.location.file ? common.relPath(this.cwd, error.location.file) : undefined;
    const text = common.stripAnsi(error.stack || error.message || String(error.value || 'error'));
    const message = common.messageOfText(common.stripAnsi(error.message || text));
    const ev = file
      ? { event: 'error', message: 'failed to load ' + file + ': ' + message, file, load: true, details: text.trim() }
      : { event: 'error', message: 'playwright: ' + message, details: text.trim() };
    this.errors.push(ev);
    if (this.events) this.events.emit(ev);
  }

  onEnd() {
    if (this.mode === 'discover' && this.out) {
      const tests = this.tests.map((t) => ({ event: 'test', id: this.idOf(t), file: this.fileOf(t), name: this.nameOf(t) }));
      fs.writeFileSync(this.out, JSON.stringify({ tests, errors: this.errors }));
    }
    if (this.events) this.events.finish(); // the launcher writes `done`
  }
}

// --------------------------------------------------------------------------- the launcher

/** `node <playwright cli> test <args>`, stdout to our stderr (the events go to files). */
function playwright(cli, args, env) {
  const r = spawnSync(process.execPath, [cli, 'test', ...args], {
    cwd: process.cwd(), env: Object.assign({}, process.env, env), stdio: ['ignore', 2, 2], maxBuffer: 64 * 1024 * 1024,
  });
  if (r.error) throw r.error;
  return r;
}

/** A path filter matching exactly these files (Playwright's filters are regexes on the absolute path). */
const exactly = (abs) => '^' + abs.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + '$';

/** Positional arguments among the suite's (Playwright's file filters): the suite's choice. */
function hasFilters(args) {
  const valueOpts = new Set(['-c', '--config', '-g', '--grep', '-G', '--grep-invert', '--project', '--reporter', '--retries', '--timeout', '-j', '--workers',
    '--repeat-each', '--max-failures', '--output', '--shard', '--global-timeout', '--test-list', '--test-list-invert', '--tsconfig', '--trace', '--update-snapshots', '-u']);
  for (let i = 0; i < args.length; i++) {
    if (!args[i].startsWith('-')) return true;
    if (valueOpts.has(args[i])) i++;
  }
  return false;
}

function main() {
  const events = common.createEvents(TAG, formatError);
  const mode = process.argv[2];
  if (mode !== 'discover' && mode !== 'run') events.fail('usage: node ' + path.basename(SELF) + ' discover|run (got ' + JSON.stringify(mode) + ')');
  events.open(mode === 'discover' ? 'the end of discovery' : 'the end of its batch');
  const cwd = process.cwd();
  // the `playwright` bin of the suite's Playwright (its package.json exports no ./cli)
  let cli;
  try {
    const pkg = require.resolve('playwright/package.json', { paths: [cwd] });
    cli = path.join(path.dirname(pkg), JSON.parse(fs.readFileSync(pkg, 'utf8')).bin.playwright);
  } catch (err) {
    events.fatal('cannot find Playwright in ' + cwd + ' (install @playwright/test in the suite)', err);
  }
  const suiteArgs = common.frameworkArgs();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-playwright-'));
  process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
  // Playwright empties its output directory at the start of a run: concurrent batches of a
  // host would delete each other's screenshots and traces, so each batch has its own, in
  // the suite's (test-results, or --output)
  const outIdx = suiteArgs.findIndex((a) => a === '--output' || a.startsWith('--output='));
  const outBase = outIdx < 0 ? 'test-results' : suiteArgs[outIdx].includes('=') ? suiteArgs[outIdx].slice(9) : suiteArgs[outIdx + 1];
  const ownArgs = outIdx < 0 ? suiteArgs : suiteArgs.filter((_, i) => i !== outIdx && !(i === outIdx + 1 && !suiteArgs[outIdx].includes('=')));
  const output = path.resolve(cwd, outBase || 'test-results', 'warren-' + process.pid);
  const base = ['--reporter=' + SELF, '--workers=1', ...ownArgs, ...(mode === 'run' ? ['--output=' + output] : [])];
  const env = { WARREN_PLAYWRIGHT_CWD: cwd };

  if (mode === 'discover') {
    const list = (extra, n) => {
      const out = path.join(tmp, 'list-' + n + '.json');
      const r = playwright(cli, ['--list', ...base, ...extra], Object.assign({ WARREN_PLAYWRIGHT_MODE: 'discover', WARREN_PLAYWRIGHT_OUT: out }, env));
      if (!fs.existsSync(out)) events.fatal('playwright test --list ended (exit code ' + r.status + (r.signal ? ', ' + r.signal : '') + ') without listing the tests; see its output above');
      return JSON.parse(fs.readFileSync(out, 'utf8'));
    };
    let listing = list([], 1);
    const broken = [...new Map(listing.errors.filter((e) => e.file).map((e) => [e.file, e])).values()];
    if (broken.length && !listing.tests.length && !hasFilters(suiteArgs)) {
      // a file that fails to load stops Playwright from listing any: again, without them
      const skip = broken.map((e) => path.resolve(cwd, e.file).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|');
      const again = list(['^(?!(' + skip + ')$)'], 2);
      listing = { tests: again.tests, errors: [...listing.errors, ...again.errors.filter((e) => !broken.some((b) => b.file === e.file))] };
    }
    const entries = [...listing.tests];
    for (const e of broken) entries.push({ event: 'test', id: e.file, file: e.file, name: e.file + ' (failed to load)' });
    const others = listing.errors.filter((e) => !e.file);
    if (others.length && !entries.length) events.fail(others[0].message, others[0].details);
    events.emit({ event: 'start', count: entries.length });
    for (const t of entries) events.emit(t);
    for (const e of listing.errors) events.emit(e);
    events.done();
    process.exit(0);
  }

  // run: the ids of this batch
  const ids = common.splitIds(events.idsFileText());
  events.emit({ event: 'start', count: ids.length });
  const lines = [];
  const wholeFiles = [];
  for (const id of ids) {
    const i = id.indexOf(' :: ');
    if (i < 0) wholeFiles.push(id);
    else lines.push(id.slice(i + 4));
  }
  const runEnv = Object.assign({ WARREN_PLAYWRIGHT_MODE: 'run' }, env);
  let code = 0;
  if (lines.length) {
    const list = path.join(tmp, 'test-list.txt');
    fs.writeFileSync(list, lines.join('\n') + '\n');
    const r = playwright(cli, [...base, '--test-list', list, '--pass-with-no-tests'], runEnv);
    code = Math.max(code, r.status === null ? 1 : r.status);
  }
  if (wholeFiles.length) {
    const r = playwright(cli, [...base, ...wholeFiles.map((f) => exactly(path.resolve(cwd, f))), '--pass-with-no-tests'], runEnv);
    code = Math.max(code, r.status === null ? 1 : r.status);
  }
  // what the reporters wrote, for what is missing
  const written = fs.readFileSync(process.env.WARREN_EVENTS, 'utf8').split('\n').filter(Boolean).map((l) => {
    try {
      return JSON.parse(l);
    } catch (_) {
      return {};
    }
  });
  const ended = new Set(written.filter((e) => e.event === 'test_end').map((e) => e.id));
  const loadErrors = new Map(written.filter((e) => e.event === 'error' && e.file).map((e) => [e.file, e]));
  const byFile = new Map();
  for (const e of written) if (e.event === 'test_end') byFile.set(e.file, [...(byFile.get(e.file) || []), e]);
  for (const id of ids) {
    if (ended.has(id)) continue;
    const rec = common.recOfId(id);
    if (!id.includes(' :: ')) {
      // a whole file: broken still (its error is written), or it loads now
      if (!loadErrors.has(id)) events.fileLoadsNow(id, id, byFile.get(id) || []);
      continue;
    }
    const err = loadErrors.get(rec.file);
    if (err) events.endTest(rec, 'failed', 0, err.message, err.details);
    else {
      const why = code === 0 ? 'test not found (renamed or removed since discovery)' : 'not run: playwright test ended (exit code ' + code + ') before it ran';
      events.endTest(rec, 'failed', 0, 'WarrenTestNotFound: ' + why);
    }
  }
  events.done();
  process.exit(events.anyFailure || written.some((e) => e.event === 'test_end' && e.status === 'failed') ? 1 : 0);
}

if (require.main === module) main();
else module.exports = WarrenReporter;
