/** Process entry of the worker-supervisor: `node dist/services/worker-supervisor/main.js` (or `warren supervisor`). */
import { createLogger } from '../../shared/log.js';
import { brokerUrl, positiveInt } from '../../shared/config.js';
import { runService } from '../../shared/service.js';
import { Supervisor } from './supervisor.js';

export function startSupervisor(opts: { broker?: string; workers?: string | number; id?: string; graceSec?: number }) {
  const log = createLogger('worker-supervisor');
  return runService(
    log,
    new Supervisor({
      brokerUrl: brokerUrl(opts.broker),
      workers: positiveInt('--workers', opts.workers ?? process.env.WARREN_WORKERS ?? 2),
      id: opts.id ?? process.env.WARREN_SUPERVISOR_ID,
      graceMs: (opts.graceSec ?? 30) * 1000,
      log,
    }),
  );
}

if (import.meta.url === `file://${process.argv[1]}`) void startSupervisor({});
