/**
 * Structured logs: pino with `service` and `host` on every line; message strings are
 * constant, variables go in fields (`runId`, `specId`, `worker`, `err`).
 * WARREN_LOG_LEVEL sets the level (default info); the CLI lowers services to `warn` so a
 * person sees the progress line, not JSON.
 */
import os from 'node:os';
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(service: string, level = process.env.WARREN_LOG_LEVEL ?? 'info'): Logger {
  return pino(
    {
      name: 'warren', level, base: { service, host: os.hostname(), pid: process.pid },
      // whatever a log line carries of a run or a config: never a secret in clear (sealed
      // values are not secrets, but they are noise)
      redact: { paths: ['secretEnv', '*.secretEnv', '*.*.secretEnv', 'password', '*.password', '*.*.password', 'registryAuth', '*.registryAuth', 'signingKey', '*.signingKey'], censor: '[redacted]' },
    },
    pino.destination({ fd: 2, sync: true }),
  );
}
