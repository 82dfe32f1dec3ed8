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

/**
 * A broker operation left unawaited when its channel or connection went (amqplib rejects
 * every pending call then) is not a reason to die: the connection is made again anyway. A
 * service that crashed on one was seen in the chaos suite ("Channel ended, no reply will be
 * forthcoming", an aggregator exiting 1 during a broker restart). Anything else still ends
 * the process loudly.
 */
export function survivesClosedChannels(log: Logger): void {
  process.on('unhandledRejection', (err) => {
    const message = err instanceof Error ? err.message : String(err);
    if (/^(Channel ended, no reply will be forthcoming|Channel closed|Connection closed)/.test(message)) {
      log.warn({ err }, 'a broker call failed as its channel closed (the connection is made again)');
      return;
    }
    log.fatal({ err }, 'unhandled rejection; stopping');
    process.exit(1);
  });
}

export async function runService<S extends Service>(log: Logger, service: S): Promise<S> {
  survivesClosedChannels(log);
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
