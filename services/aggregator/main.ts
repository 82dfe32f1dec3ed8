/** Process entry of the aggregator: `node dist/services/aggregator/main.js` (or `warren aggregator`). */
import path from 'node:path';
import { createLogger } from '../../shared/log.js';
import { brokerUrl } from '../../shared/config.js';
import { rolesRequired } from '../../shared/roles.js';
import { runService } from '../../shared/service.js';
import { Aggregator } from './aggregator.js';

export function startAggregator(opts: { broker?: string; reportDir?: string; requireRoles?: boolean }) {
  const log = createLogger('aggregator');
  return runService(
    log,
    new Aggregator({
      brokerUrl: brokerUrl(opts.broker),
      reportDir: path.resolve(opts.reportDir ?? process.env.WARREN_REPORT_DIR ?? 'warren-reports'),
      log,
      requireRoles: rolesRequired(opts.requireRoles),
      onFatal: (err) => {
        process.stderr.write(`warren aggregator: stopping: ${err.message}\n`);
        process.exit(1);
      },
    }),
  );
}

if (import.meta.url === `file://${process.argv[1]}`) void startAggregator({});
