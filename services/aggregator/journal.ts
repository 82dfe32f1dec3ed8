/**
 * The aggregator's journals: one append-only JSON-lines file per run in progress, so that an
 * aggregator that restarts rebuilds every run from what it had acked.
 *
 * An entry is durable (written and fdatasync'ed) before `append` resolves, and the caller
 * acks only then. Appends are group-committed: every entry that arrives while a write is
 * under way goes into the next write, one `fdatasync` for all of them, so durability costs
 * one disk flush per burst of results, not one per result.
 *
 * A run's journal is removed once its report is out; an append after that is dropped (a
 * late decision must not recreate a journal that recovery would then replay).
 */
import fs from 'node:fs';
import path from 'node:path';

interface RunFile {
  handle?: Promise<fs.promises.FileHandle>;
  /** Lines waiting for the next write, with the appends to settle once it is durable. */
  queued: string[];
  waiters: Array<{ resolve: () => void; reject: (e: Error) => void }>;
  /** The write under way, if any. */
  writing?: Promise<void>;
}

export class Journal<Entry> {
  private readonly files = new Map<string, RunFile>();
  private readonly removed = new Set<string>();

  constructor(private readonly dir: string) {
    fs.mkdirSync(dir, { recursive: true });
  }

  private path(runId: string): string {
    return path.join(this.dir, `${runId}.jsonl`);
  }

  /** Resolves once the entry is on disk (written and flushed). */
  append(runId: string, entry: Entry): Promise<void> {
    if (this.removed.has(runId)) return Promise.resolve();
    let file = this.files.get(runId);
    if (!file) {
      file = { queued: [], waiters: [] };
      this.files.set(runId, file);
    }
    file.queued.push(JSON.stringify(entry) + '\n');
    const done = new Promise<void>((resolve, reject) => file.waiters.push({ resolve, reject }));
    if (!file.writing) file.writing = this.flush(runId, file);
    return done;
  }

  private async flush(runId: string, file: RunFile): Promise<void> {
    // let the appends of this turn of the event loop join the write
    await new Promise((r) => setImmediate(r));
    while (file.queued.length > 0) {
      const lines = file.queued.join('');
      const waiters = file.waiters;
      file.queued = [];
      file.waiters = [];
      try {
        file.handle ??= fs.promises.open(this.path(runId), 'a');
        const handle = await file.handle;
        await handle.write(lines);
        await handle.datasync();
        for (const w of waiters) w.resolve();
      } catch (err) {
        file.handle = undefined;
        for (const w of waiters) w.reject(err as Error);
      }
    }
    file.writing = undefined;
  }

  /** The run's journal is no longer needed: closes and deletes it. */
  async remove(runId: string): Promise<void> {
    this.removed.add(runId);
    const file = this.files.get(runId);
    this.files.delete(runId);
    if (file) {
      await file.writing;
      await (await file.handle?.catch(() => undefined))?.close().catch(() => undefined);
    }
    await fs.promises.rm(this.path(runId), { force: true });
  }

  /** Every journal left on disk, entries in order (a torn last line is skipped). */
  readAll(): Array<{ runId: string; entries: Entry[] }> {
    return fs
      .readdirSync(this.dir)
      .filter((f) => f.endsWith('.jsonl'))
      .map((f) => ({
        runId: f.slice(0, -'.jsonl'.length),
        entries: fs
          .readFileSync(path.join(this.dir, f), 'utf8')
          .split('\n')
          .filter(Boolean)
          .flatMap((l) => {
            try {
              return [JSON.parse(l) as Entry];
            } catch {
              return []; // torn last line
            }
          }),
      }));
  }

  async close(): Promise<void> {
    await Promise.all(
      [...this.files.values()].map(async (f) => {
        await f.writing;
        await (await f.handle?.catch(() => undefined))?.close().catch(() => undefined);
      }),
    );
    this.files.clear();
  }
}
