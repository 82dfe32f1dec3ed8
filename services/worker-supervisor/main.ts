/** Process entry of the worker-supervisor: `node dist/services/worker-supervisor/main.js` (or `warren supervisor`). */
import { createLogger } from '../../shared/log.js';
import { brokerUrl } from '../../shared/config.js';
import { runService } from '../../shared/service.js';
import { rolesRequired } from '../../shared/roles.js';
import { loadSigningKey } from '../../shared/signing.js';
import { loadSupervisorConfig, type SupervisorConfigInput } from './config.js';
import { Supervisor } from './supervisor.js';

export function startSupervisor(opts: { broker?: string; config?: string; signingKeyFile?: string; requireRoles?: boolean } & SupervisorConfigInput) {
  const log = createLogger('worker-supervisor');
  const url = brokerUrl(opts.broker);
  const config = loadSupervisorConfig(opts);
  return runService(
    log,
    new Supervisor({
      brokerUrl: url,
      workers: config.workers,
      id: config.id,
      dir: config.dir,
      graceMs: config.graceSec * 1000,
      cacheDir: config.cacheDir,
      runnerMaxRssBytes: config.runnerMaxMemory,
      driver: config.driver,
      docker: config.docker,
      labels: config.labels,
      passEnv: config.passEnv,
      allowCwd: config.allowCwd,
      allowImage: config.allowImage,
      signingKey: loadSigningKey(opts.signingKeyFile),
      requireRoles: rolesRequired(opts.requireRoles),
      log,
    }),
  );
}

if (import.meta.url === `file://${process.argv[1]}`) void startSupervisor({});
