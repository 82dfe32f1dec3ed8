/** Process entry of the dispatcher: `node dist/services/dispatcher/main.js` (or `warren dispatcher`). */
import { createLogger } from '../../shared/log.js';
import { brokerUrl } from '../../shared/config.js';
import { runService } from '../../shared/service.js';
import { Dispatcher } from './dispatcher.js';

export function startDispatcher(opts: { broker?: string }) {
  const log = createLogger('dispatcher');
  return runService(log, new Dispatcher({ brokerUrl: brokerUrl(opts.broker), log }));
}

if (import.meta.url === `file://${process.argv[1]}`) void startDispatcher({});
