/**
 * Runs a long-lived service: starts it, drains it on SIGTERM/SIGINT (a second signal
 * forces), and exits 2 with one line when it cannot start (bad config, no broker).
 */
import type { Logger } from './log.js';
import { errorMessage } from './errors.js';

export interface Service {
  start(): Promise<void>;
  stop(): Promise<void>;
}

export async function runService<S extends Service>(log: Logger, service: S): Promise<S> {
  try {
    await service.start();
  } catch (err) {
    process.stderr.write(`warren: ${errorMessage(err)}\n`);
    log.debug({ err }, 'start failed');
    process.exit(2);
  }
  let signals = 0;
  const onSignal = (signal: string) => {
    if (++signals > 1) process.exit(1);
    log.info({ signal }, 'draining');
    service.stop().then(
      () => process.exit(0),
      (err) => {
        log.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return service;
}
