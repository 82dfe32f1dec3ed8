/**
 * The one protocol between a slot and its framework plug-ins (adapters/PROTOCOL.md says it
 * for the plug-ins' authors): the events a plug-in writes (JSON lines in an events file)
 * and the commands a warm runner reads on its stdin. The slot and the supervisor read
 * events only through this file's types and parser.
 */

/** What a plug-in writes, one JSON object a line. */
export type FrameworkEvent =
  | { event: 'start'; count?: number }
  | { event: 'test'; id: string; file: string; name: string }
  | { event: 'test_start'; id: string; file: string; name: string }
  | {
      event: 'test_end';
      id: string;
      file: string;
      name: string;
      status: 'passed' | 'failed' | 'pending';
      durationMs?: number;
      message?: string;
      details?: string;
      /** Passed after failed attempts of the framework's own retries (Playwright's): how many,
       * and the first failure. Warren reports the test flaky. */
      retried?: Retried;
    }
  /** `load`: the file failed to load (or its package to build): it fails the same way every
   * time, and is not re-run in a later round. */
  | { event: 'error'; message: string; details?: string; file?: string; load?: boolean }
  | { event: 'done' }
  /** serve mode: the batch is over and the runner waits for the next command. `code` is
   * what `run` mode would have exited with; null with `signal` when a fork died. */
  | { event: 'end'; batch?: number; code: number | null; signal?: string | null; rss?: number };

export interface Retried {
  failures: number;
  message?: string;
  details?: string;
}

export type EndEvent = Extract<FrameworkEvent, { event: 'end' }>;

/** A command to a warm runner (`<plug-in> serve`), one JSON line on its stdin. */
export interface RunCommand {
  cmd: 'run';
  /** Numbers the batch in this runner's life; echoed by `end`. */
  batch: number;
  /** The file this batch's events go to (the plug-in appends). */
  events: string;
  ids: string[];
}

export function encodeCommand(c: RunCommand): string {
  return JSON.stringify(c) + '\n';
}

/** Parses an events file's text; a torn last line (the process died mid-write) is skipped. */
export function parseEvents(text: string): FrameworkEvent[] {
  const out: FrameworkEvent[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const e = JSON.parse(line) as FrameworkEvent;
      if (e && typeof e === 'object' && typeof e.event === 'string') out.push(e);
    } catch {
      // a partial line written as the process died
    }
  }
  return out;
}
