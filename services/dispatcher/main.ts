/** Process entry of the dispatcher: `node dist/services/dispatcher/main.js` (or `warren dispatcher`). */
import path from 'node:path';
import { createLogger } from '../../shared/log.js';
import { brokerUrl } from '../../shared/config.js';
import { runService } from '../../shared/service.js';
import { rolesRequired } from '../../shared/roles.js';
import { loadSigningKey } from '../../shared/signing.js';
import { Dispatcher } from './dispatcher.js';

export function startDispatcher(opts: { broker?: string; history?: string | false; signingKeyFile?: string; requireRoles?: boolean }) {
  const log = createLogger('dispatcher');
  // per-test durations for balanced plans; --no-history to keep none
  const historyFile = opts.history === false ? undefined : opts.history ?? process.env.WARREN_HISTORY ?? path.resolve('.warren/dispatcher/history.sqlite');
  return runService(log, new Dispatcher({ brokerUrl: brokerUrl(opts.broker), log, historyFile, signingKey: loadSigningKey(opts.signingKeyFile), requireRoles: rolesRequired(opts.requireRoles) }));
}

if (import.meta.url === `file://${process.argv[1]}`) void startDispatcher({});
