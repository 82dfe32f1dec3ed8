/**
 * The dispatcher's memory of earlier runs: each test's duration (and how often it ran,
 * failed and was flaky) per suite, in an embedded SQLite file (better-sqlite3, which works
 * on Node 20 at version 12). Fed by the final reports (queue `warren.history`), read when a
 * round is planned, so batches are balanced by time on every run after the first, whatever
 * report directory the run writes to. It is a cache of facts the reports hold: losing it
 * costs the balance of one run, nothing else.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { RunReport, TestRef } from '../../shared/messages.js';

/** Weight of the newest duration in a test's running estimate. */
const NEWEST_WEIGHT = 0.5;

export class History {
  private readonly db: Database.Database;
  private readonly upsert: Database.Statement;
  private readonly byFile: Database.Statement;
  private readonly upsertSuite: Database.Statement;
  private readonly suiteRow: Database.Statement;

  constructor(file: string) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file);
    // several local runs at once may share the file: readers never block the writer
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS tests (
        suite TEXT NOT NULL, id TEXT NOT NULL, file TEXT NOT NULL,
        ms REAL NOT NULL, runs INTEGER NOT NULL, failures INTEGER NOT NULL, flaky INTEGER NOT NULL,
        updated INTEGER NOT NULL,
        PRIMARY KEY (suite, id)
      );
      CREATE INDEX IF NOT EXISTS tests_by_file ON tests (suite, file);
      CREATE TABLE IF NOT EXISTS suites (suite TEXT PRIMARY KEY, overhead_ms REAL NOT NULL, updated INTEGER NOT NULL);
    `);
    this.upsertSuite = this.db.prepare(`
      INSERT INTO suites (suite, overhead_ms, updated) VALUES (?, ?, ?)
      ON CONFLICT (suite) DO UPDATE SET overhead_ms = ${NEWEST_WEIGHT} * excluded.overhead_ms + ${1 - NEWEST_WEIGHT} * suites.overhead_ms, updated = excluded.updated
    `);
    this.suiteRow = this.db.prepare('SELECT overhead_ms AS ms FROM suites WHERE suite = ?');
    this.upsert = this.db.prepare(`
      INSERT INTO tests (suite, id, file, ms, runs, failures, flaky, updated)
      VALUES (@suite, @id, @file, @ms, 1, @failed, @flaky, @now)
      ON CONFLICT (suite, id) DO UPDATE SET
        file = excluded.file,
        ms = ${NEWEST_WEIGHT} * excluded.ms + ${1 - NEWEST_WEIGHT} * tests.ms,
        runs = tests.runs + 1,
        failures = tests.failures + excluded.failures,
        flaky = tests.flaky + excluded.flaky,
        updated = excluded.updated
    `);
    this.byFile = this.db.prepare('SELECT id, file, ms FROM tests WHERE suite = ? AND file = ?');
  }

  /** What makes two runs the same suite: the framework and the directory (not the env). */
  static suiteKey(adapter: string, cwd: string): string {
    return `${adapter}:${cwd}`;
  }

  /** Takes a finished run's durations. Tests that did not run (dropped, errors) teach nothing. */
  record(report: RunReport): number {
    const suite = History.suiteKey(report.adapter, report.cwd);
    const now = Date.now();
    const rows = report.tests.filter((t) => t.attempts.length > 0 && t.status !== 'pending' && t.durationMs >= 0);
    this.db.transaction(() => {
      if (report.batchOverheadMs !== undefined) this.upsertSuite.run(suite, report.batchOverheadMs, now);
      for (const t of rows) {
        this.upsert.run({ suite, id: t.id, file: t.file, ms: t.durationMs, failed: t.status === 'failed' ? 1 : 0, flaky: t.status === 'flaky' ? 1 : 0, now });
      }
    })();
    return rows.length;
  }

  /**
   * Durations in ms for these tests: known ones as measured; an unknown test of a known file
   * as the mean of that file's known tests (a new test is most like its neighbours).
   */
  durations(adapter: string, cwd: string, tests: TestRef[]): Record<string, number> {
    const suite = History.suiteKey(adapter, cwd);
    const out: Record<string, number> = {};
    const files = new Map<string, Map<string, number>>();
    for (const t of tests) {
      let known = files.get(t.file);
      if (!known) {
        known = new Map((this.byFile.all(suite, t.file) as Array<{ id: string; ms: number }>).map((r) => [r.id, r.ms]));
        files.set(t.file, known);
      }
      const ms = known.get(t.id);
      if (ms !== undefined) out[t.id] = ms;
      else if (known.size > 0) out[t.id] = [...known.values()].reduce((a, b) => a + b, 0) / known.size;
    }
    return out;
  }

  /** What a batch of this suite costs beyond its tests (ms), as measured by earlier runs. */
  batchOverheadMs(adapter: string, cwd: string): number | undefined {
    return (this.suiteRow.get(History.suiteKey(adapter, cwd)) as { ms: number } | undefined)?.ms;
  }

  close(): void {
    this.db.close();
  }
}
