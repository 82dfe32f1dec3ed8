/**
 * Structured logs: pino with `service` and `host` on every line; message strings are
 * constant, variables go in fields (`runId`, `specId`, `worker`, `err`).
 * WARREN_LOG_LEVEL sets the level (default info); the CLI lowers services to `warn` so a
 * person sees the progress line, and makes what is logged one readable line (personLogger).
 */
import os from 'node:os';
import { pino, type Logger } from 'pino';

export type { Logger };

const options = (service: string, level: string) => ({
  name: 'warren', level, base: { service, host: os.hostname(), pid: process.pid },
  // whatever a log line carries of a run or a config: never a secret in clear (sealed
  // values are not secrets, but they are noise)
  redact: { paths: ['secretEnv', '*.secretEnv', '*.*.secretEnv', 'password', '*.password', '*.*.password', 'registryAuth', '*.registryAuth', 'signingKey', '*.signingKey'], censor: '[redacted]' },
});

export function createLogger(service: string, level = process.env.WARREN_LOG_LEVEL ?? 'info'): Logger {
  if (process.env.WARREN_PERSON_LOG === '1') return personLogger(service, level);
  return pino(options(service, level), pino.destination({ fd: 2, sync: true }));
}

/**
 * The log of a command a person runs (`warren run` sets WARREN_PERSON_LOG, and the services
 * `--local` starts in it, slots included, inherit it): lines at `level` and above as one
 * readable line each on the terminal ("warren: reconnect failed (attempt 3): connect
 * ECONNREFUSED 127.0.0.1:5672"), and every JSON line at WARREN_LOG_FILE_LEVEL (default
 * info) to WARREN_LOG_FILE (`--log-file`), if set. `--verbose` does without: JSON on the
 * terminal, as the services write it.
 */
function personLogger(service: string, level: string): Logger {
  const terminal = level as Level;
  const streams: Array<{ level: Level; stream: { write(line: string): void } }> = [
    { level: terminal, stream: { write: (line: string) => process.stderr.write(humanLine(line)) } },
  ];
  const file = process.env.WARREN_LOG_FILE;
  const fileLevel = (process.env.WARREN_LOG_FILE_LEVEL ?? 'info') as Level;
  if (file) streams.push({ level: fileLevel, stream: pino.destination({ dest: file, sync: true, append: true, mkdir: true }) });
  const lowest = file && pino.levels.values[fileLevel]! < pino.levels.values[terminal]! ? fileLevel : terminal;
  return pino(options(service, lowest), pino.multistream(streams));
}

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/** One JSON log line as a person reads it: the message, then what it is about. */
export function humanLine(json: string): string {
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : `${json}\n`;
  }
  const err = m.err as { message?: string } | undefined;
  const what = [m.attempt !== undefined ? `attempt ${String(m.attempt)}` : '', m.worker ? `worker ${String(m.worker)}` : '', m.why ? String(m.why) : '', m.reason ? String(m.reason) : '']
    .filter(Boolean).join(', ');
  const detail = err?.message ? String(err.message).split('\n')[0] : typeof m.error === 'string' ? m.error.split('\n')[0] : '';
  return `warren: ${String(m.msg ?? '')}${what ? ` (${what})` : ''}${detail ? `: ${detail}` : ''}\n`;
}
