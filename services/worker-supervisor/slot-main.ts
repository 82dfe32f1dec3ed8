/**
 * Entry point of a slot process, forked by the supervisor. Configuration comes in
 * WARREN_SLOT (JSON); state goes back over the IPC channel. When the supervisor goes away
 * (the IPC channel disconnects, even after a SIGKILL of the supervisor) the slot kills its
 * test process and exits at once: its unacked job is redelivered to a live worker.
 */
import { createLogger } from '../../shared/log.js';
import { LocalDriver } from './drivers/local.js';
import { NoopDriver } from './drivers/noop.js';
import { Slot, type SlotActivity } from './slot.js';

interface SlotConfig {
  brokerUrl: string;
  index: number;
  workerId: string;
  dir: string;
  graceMs: number;
  driver: 'local' | 'noop';
}

const config = JSON.parse(process.env.WARREN_SLOT ?? 'null') as SlotConfig | null;
if (!config) {
  process.stderr.write('warren slot: WARREN_SLOT is not set; slots are started by `warren supervisor`\n');
  process.exit(2);
}
const log = createLogger('worker-slot').child({ worker: config.workerId });
const send = (activity: SlotActivity) => process.send?.(activity);
const slot = new Slot({ ...config, driver: config.driver === 'noop' ? new NoopDriver() : new LocalDriver(), log, onState: send });

process.on('disconnect', () => {
  // Our supervisor is gone: nobody would restart or reap us. Leave now; the broker requeues.
  void slot.stop().finally(() => process.exit(1));
});
process.on('SIGTERM', () => {
  void slot.drain(config.graceMs).finally(() => process.exit(0));
});
process.on('SIGINT', () => undefined); // the supervisor decides; Ctrl-C reaches the whole group

slot.start().catch((err) => {
  log.error({ err }, 'slot failed to start');
  process.exit(1);
});
