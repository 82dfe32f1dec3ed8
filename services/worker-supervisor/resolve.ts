/**
 * Pure: turns what one framework process did (its events, how it ended) into results for
 * the tests of a spec, and the tests to run again in a fresh process. Every test of the
 * spec ends up in exactly one of the two lists.
 *
 * The rules, in order:
 * 1. A test with a `test_end` event has that result.
 * 2. If the process was killed by our per-test timeout, the test that was running is failed
 *    "timed out after N s"; if it crashed (no `done`), the running test is failed with the
 *    crash. That test is the culprit; the others of the batch are not sunk with it.
 * 3. A test whose file had an `error` event (it failed to load, a hook outside examples)
 *    is failed with that error.
 * 4. The rest ran into nothing of their own: if this attempt settled at least one test they
 *    go back to run again; if it settled none, they fail with what we know (a lone test;
 *    an error with no file; a crash before any test started), so no loop is possible.
 */
import type { TestRef, TestResult } from '../../shared/messages.js';
import type { ProcessExit } from './drivers/driver.js';
import type { FrameworkEvent } from './runner/protocol.js';

export { parseEvents, type FrameworkEvent } from './runner/protocol.js';

export interface AttemptOutcome {
  events: FrameworkEvent[];
  exit: ProcessExit;
  /** Set when we killed the process because one test ran past the timeout. */
  timedOutAfterSec?: number;
  /** The process's stderr tail, for crash details. */
  stderr: string;
  /** Total wall time of the process. */
  elapsedMs: number;
}

export interface Resolution {
  results: TestResult[];
  rerun: TestRef[];
}

const normFile = (f: string | undefined) => (f ?? '').replace(/^\.\//, '');

export function describeExit(exit: ProcessExit): string {
  if (exit.oom) return `killed: out of memory (${exit.oom})`;
  if (exit.signal) return `killed by ${exit.signal}`;
  return `exited with code ${exit.code}`;
}

/**
 * The name a test's run gave it, where its discovery could not know it: RSpec describes a
 * one-liner (`it { is_expected.to eq 1 }`, `its(:x) { should == 1 }`) only once it has run,
 * and its dry run gives the group's name and a trailing space. Elsewhere the discovered name.
 */
export function runName(t: TestRef, ran: string | undefined): string {
  return ran && ran.trim() && ran !== t.name && t.name !== t.name.trimEnd() ? ran : t.name;
}

export function resolveAttempt(tests: TestRef[], outcome: AttemptOutcome): Resolution {
  const byId = new Map(tests.map((t) => [t.id, t]));
  const settled = new Map<string, TestResult>();
  const result = (t: TestRef, r: Omit<TestResult, 'testId' | 'file' | 'name'>): TestResult => ({
    testId: t.id,
    file: normFile(t.file),
    name: t.name,
    ...r,
  });

  // 1. results reported by the framework
  let running: { id: string; at: number } | undefined;
  const errors: Array<{ message: string; details?: string; file?: string; load?: boolean }> = [];
  let done = false;
  outcome.events.forEach((e, i) => {
    switch (e.event) {
      case 'test_start':
        running = { id: e.id, at: i };
        break;
      case 'test_end': {
        const t = byId.get(e.id);
        if (t && !settled.has(t.id)) {
          settled.set(t.id, { ...result(t, { status: e.status, durationMs: e.durationMs ?? 0, message: e.message, details: e.details, ...retriedOf(e) }), name: runName(t, e.name) });
        }
        if (running?.id === e.id) running = undefined;
        break;
      }
      case 'error':
        errors.push(e);
        break;
      case 'done':
        done = true;
        break;
    }
  });

  // 2. the culprit of a timeout or a crash
  const culprit = running && byId.get(running.id) && !settled.has(running.id) ? byId.get(running.id)! : undefined;
  const crashed = !done;
  const stderrTail = outcome.stderr.trim().split('\n').slice(-20).join('\n');
  const whatHappened = outcome.timedOutAfterSec !== undefined
    ? `timed out after ${outcome.timedOutAfterSec} s`
    : outcome.exit.oom
      ? describeExit(outcome.exit)
      : `crashed: the test process ${describeExit(outcome.exit)}`;
  if (crashed && culprit) {
    settled.set(culprit.id, result(culprit, { status: 'failed', durationMs: outcome.elapsedMs, message: whatHappened, details: stderrTail || undefined }));
  }

  // 3. errors outside tests, pinned on the tests of their file
  for (const t of tests) {
    if (settled.has(t.id)) continue;
    const err = errors.find((e) => e.file !== undefined && normFile(e.file) === normFile(t.file) && normFile(t.file) !== '');
    if (err) settled.set(t.id, result(t, { status: 'failed', durationMs: 0, message: err.message, details: err.details, ...(err.load ? { once: true } : {}) }));
  }

  // 4. the rest: again, unless this attempt made no progress at all
  const rest = tests.filter((t) => !settled.has(t.id));
  if (rest.length === 0) return { results: tests.map((t) => settled.get(t.id)!), rerun: [] };
  if (settled.size > 0 && rest.length < tests.length) {
    return { results: tests.filter((t) => settled.has(t.id)).map((t) => settled.get(t.id)!), rerun: rest };
  }
  // No progress. A batch that crashed or hung before any test began: split it, so the next
  // attempts find the culprit one test at a time. A lone test, or a clean finish that never
  // reported these tests, fails here with everything we know.
  if (rest.length > 1 && crashed) return { results: [], rerun: rest };
  const fileless = errors.find((e) => !e.file) ?? errors[0];
  const message = crashed
    ? whatHappened
    : fileless
      ? fileless.message
      : `not run: the framework finished without reporting this test (${describeExit(outcome.exit)})`;
  const details = crashed ? stderrTail || undefined : fileless?.details ?? (stderrTail || undefined);
  for (const t of rest) settled.set(t.id, result(t, { status: 'failed', durationMs: crashed ? outcome.elapsedMs : 0, message, details }));
  return { results: tests.map((t) => settled.get(t.id)!), rerun: [] };
}

/**
 * Only what the framework finished and reported (`test_end`), for the tests asked for: what
 * can be kept of a process whose worker died under it.
 */
export function finishedResults(tests: TestRef[], events: FrameworkEvent[]): TestResult[] {
  const byId = new Map(tests.map((t) => [t.id, t]));
  const out = new Map<string, TestResult>();
  for (const e of events) {
    if (e.event !== 'test_end') continue;
    const t = byId.get(e.id);
    if (!t || out.has(t.id)) continue;
    out.set(t.id, { testId: t.id, file: normFile(t.file), name: runName(t, e.name), status: e.status, durationMs: e.durationMs ?? 0, message: e.message, details: e.details, ...retriedOf(e) });
  }
  return [...out.values()];
}

/** A passed test's failed attempts in the framework's own retries, when it says so (well formed). */
function retriedOf(e: Extract<FrameworkEvent, { event: 'test_end' }>): Pick<TestResult, 'retried'> {
  const r = e.retried;
  if (e.status !== 'passed' || !r || !Number.isInteger(r.failures) || r.failures < 1) return {};
  return { retried: { failures: r.failures, ...(typeof r.message === 'string' ? { message: r.message } : {}), ...(typeof r.details === 'string' ? { details: r.details } : {}) } };
}

/** Results of a process that speaks no events (the `command` adapter): the exit code. */
export function resolveByExitCode(tests: TestRef[], outcome: AttemptOutcome, stdout: string): Resolution {
  const passed = outcome.exit.code === 0 && outcome.timedOutAfterSec === undefined;
  const message = outcome.timedOutAfterSec !== undefined ? `timed out after ${outcome.timedOutAfterSec} s` : describeExit(outcome.exit);
  const tail = `${stdout.trim().split('\n').slice(-20).join('\n')}\n${outcome.stderr.trim().split('\n').slice(-20).join('\n')}`.trim();
  return {
    results: tests.map((t) => ({
      testId: t.id,
      file: normFile(t.file),
      name: t.name,
      status: passed ? 'passed' : 'failed',
      durationMs: outcome.elapsedMs / tests.length,
      ...(passed ? {} : { message, details: tail || undefined }),
    })),
    rerun: [],
  };
}
