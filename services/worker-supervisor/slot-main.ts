/**
 * Entry point of a slot process, forked by the supervisor. Configuration comes in
 * WARREN_SLOT (JSON), or, for a spare forked before its supervisor existed
 * (slot-process.ts), in the `adopt` message with the environment to take; state goes back
 * over the IPC channel. When the supervisor goes away
 * (the IPC channel disconnects, even after a SIGKILL of the supervisor) the slot kills its
 * test process and exits at once: its unacked job is redelivered to a live worker.
 */
import os from 'node:os';
import { createLogger } from '../../shared/log.js';
import { DEFAULT_CONTAINER_USER } from './config.js';
import { survivesClosedChannels } from '../../shared/service.js';
import { LocalDriver } from './drivers/local.js';
import { NoopDriver } from './drivers/noop.js';
import type { WorkerDriver } from './drivers/driver.js';
import { Slot, type SlotActivity } from './slot.js';
import type { SlotConfig, SlotRequest, SupervisorReply } from './supervisor.js';
import type { RunsState } from '../../shared/messages.js';
import { SPARE_ENV, type Adopt } from './slot-process.js';

/**
 * State to the supervisor. 'idle' waits a moment: a slot that takes its next job at once
 * (a queue full of specs) tells only 'busy', one IPC message per spec instead of two. The
 * supervisor's view stays safe meanwhile: a 'busy' names the same warm runner to reap.
 */
let idleTimer: NodeJS.Timeout | undefined;
const IDLE_REPORT_DELAY_MS = 50;
const send = (activity: SlotActivity) => {
  clearTimeout(idleTimer);
  if (activity.state !== 'idle') return process.send?.(activity);
  idleTimer = setTimeout(() => process.send?.(activity), IDLE_REPORT_DELAY_MS);
};
/** Asks the supervisor to make an image present (one pull per image on the host). */
let requests = 0;
const waiting = new Map<number, (reply: Extract<SupervisorReply, { type: 'image-ready' }>) => void>();
/** Set once the slot exists (a message may come while the driver loads). */
let slotRef: Slot | undefined;
/** The runs in progress as told before the slot existed. */
let earlyState: RunsState | undefined;
let adopted!: (m: Adopt | null) => void;
const adoption = new Promise<Adopt | null>((resolve) => (adopted = resolve));
// (one listener from the start: a message right behind the adoption must not be missed)
process.on('message', (m: SupervisorReply | Adopt) => {
  if (m.type === 'adopt') adopted(m);
  else if (m.type === 'prewarm') slotRef?.prewarm(m.runId, m.suite);
  else if (m.type === 'run-finished') slotRef?.runFinished(m.runId, m.deadline);
  else if (m.type === 'runs-state') {
    earlyState = m.state;
    slotRef?.runsState(m.state);
  }
  else if (m.type === 'wake') slotRef?.wake(m.wake);
  else waiting.get(m.id)?.(m);
});

/** This slot's configuration: from its environment, or, a spare, from its adoption. */
async function configuration(): Promise<SlotConfig | null> {
  if (process.env[SPARE_ENV] !== '1') return JSON.parse(process.env.WARREN_SLOT ?? 'null') as SlotConfig | null;
  // a spare nobody adopts goes with the command that forked it
  process.once('disconnect', () => adopted(null));
  const adopt = await adoption;
  if (!adopt) process.exit(0);
  for (const k of Object.keys(process.env)) if (!(k in adopt.env)) delete process.env[k];
  for (const [k, v] of Object.entries(adopt.env)) if (v !== undefined) process.env[k] = v;
  return JSON.parse(adopt.config) as SlotConfig;
}
const config = await configuration();
if (!config) {
  process.stderr.write('warren slot: WARREN_SLOT is not set; slots are started by `warren supervisor`\n');
  process.exit(2);
}
// read once: nothing this slot starts may see it (the broker URL, registry credentials)
delete process.env.WARREN_SLOT;
const log = createLogger('worker-slot').child({ worker: config.workerId });
survivesClosedChannels(log);
function ensureImage(image: string): Promise<void> {
  const id = ++requests;
  return new Promise((resolve, reject) => {
    waiting.set(id, (reply) => {
      waiting.delete(id);
      if (reply.error) reject(new Error(reply.error));
      else resolve();
    });
    process.send?.({ type: 'ensure-image', id, image } satisfies SlotRequest);
  });
}

/** The slot's driver; dockerode is loaded only for docker (a local slot starts faster). */
async function makeDriver(c: SlotConfig): Promise<WorkerDriver> {
  if (c.driver === 'noop') return new NoopDriver();
  if (c.driver === 'local') return new LocalDriver({ passEnv: c.passEnv, env: c.env });
  const [{ default: Docker }, { DockerDriver }] = await Promise.all([import('dockerode'), import('./drivers/docker.js')]);
  return new DockerDriver({
    docker: new Docker(),
    supervisorId: c.supervisorId,
    slotIndex: c.index,
    slotDir: c.dir,
    cacheDir: c.cacheDir,
    assetsDir: c.assetsDir,
    defaultImage: c.docker.image,
    isolation: c.docker.isolation,
    memory: c.docker.memory,
    // default: this host's cores shared by its slots
    nanoCpus: Math.round((c.docker.cpus ?? Math.max(0.5, os.availableParallelism() / c.workers)) * 1e9),
    pidsLimit: c.docker.pidsLimit,
    network: c.docker.network,
    // default: the supervisor's own user, or (root) one that is not root and owns the slot
    user: c.docker.user ?? (process.getuid?.() === 0 ? DEFAULT_CONTAINER_USER : `${process.getuid?.()}:${process.getgid?.()}`),
    capAdd: c.docker.capAdd,
    readOnly: c.docker.readOnly,
    tmpSize: c.docker.tmpSize,
    mountSuite: c.docker.mountSuite,
    mountSuiteWritable: c.docker.mountSuiteWritable,
    env: c.env,
    ensureImage,
    log,
  });
}

const slot = new Slot({
  ...config,
  signingKey: config.signingKey === undefined ? undefined : Buffer.from(config.signingKey, 'utf8'),
  labels: config.labels,
  namespace: config.namespace,
  driver: await makeDriver(config),
  log,
  onState: send,
  onDiscovering: (runId, suite) => process.send?.({ type: 'discovering', runId, suite } satisfies SlotRequest),
  onEventsRead: (offset) => process.send?.({ type: 'events-read', offset } satisfies SlotRequest),
  onBroken: (reason, jobId) => {
    // The job is back in the queue; the supervisor counts the break and restarts us with a
    // backoff and a fresh environment. Closing the connection first sends the job's ack.
    process.send?.({ type: 'broken', reason, jobId } satisfies SlotRequest);
    void slot.stop().finally(() => process.exit(3));
  },
});
slotRef = slot;
if (earlyState) slot.runsState(earlyState);


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
