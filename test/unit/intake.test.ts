import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Intake } from '../../services/worker-supervisor/intake.js';
import type { Delivery } from '../../shared/broker.js';
import { createLogger } from '../../shared/log.js';
import { SCHEMA_VERSION, type RunState, type RunsState } from '../../shared/messages.js';
import { specQueue } from '../../shared/topology.js';

/** The one broker call the intake makes, over queues held here: `jobs[shard]` jobs each. */
function fakeBroker(jobs: Record<number, number>) {
  return {
    async get(queue: string): Promise<Delivery | null> {
      const shard = Number(queue.slice(specQueue(0).length - 1));
      if (!jobs[shard]) return null;
      jobs[shard]! -= 1;
      const nothing = () => undefined;
      return { body: Buffer.from('{}'), routingKey: `job.${shard}`, redelivered: false, deliveryCount: 0, headers: {}, remaining: jobs[shard], ack: nothing, requeue: nothing, deadLetter: async () => undefined };
    },
  };
}

const run = (runId: string, shard: number): RunState => ({
  runId, shard, labels: [], adapter: 'command', cwd: '/', acceptedAt: 0, deadline: 0, round: 1, total: 0, done: 0, failed: 0, flaky: 0, etaSec: null, setupFailures: 0,
});
const state = (...runs: RunState[]): RunsState => ({ type: 'runs.state', v: SCHEMA_VERSION, at: Date.now(), runs, finished: [], shards: runs.map((r) => r.shard) });

async function takes(intake: Intake, n: number): Promise<number[]> {
  const got: number[] = [];
  for (let i = 0; i < n; i++) got.push((await intake.take())!.shard);
  return got;
}

test('a small run started during a big one gets most takes until it is done; the big one at least one in three', async () => {
  const jobs: Record<number, number> = { 3: 100 };
  const intake = new Intake(fakeBroker(jobs), {}, createLogger('test', 'silent'));
  intake.setState(state(run('big', 3)));
  assert.deepEqual(await takes(intake, 3), [3, 3, 3]);
  jobs[5] = 6;
  intake.wake('small', 5, []);
  // the woken shard first; then fewest waiting first, the big run once passed over twice
  assert.deepEqual(await takes(intake, 10), [5, 5, 3, 5, 5, 3, 5, 5, 3, 3]);
  assert.equal(jobs[5], 0);
  intake.stop();
});

test('however many small runs keep coming, a big run keeps its turn: served at least once in every 3 takes per run with jobs', async () => {
  const jobs: Record<number, number> = { 0: 1000 };
  const intake = new Intake(fakeBroker(jobs), {}, createLogger('test', 'silent'));
  const runs = [run('big', 0)];
  intake.setState(state(...runs));
  let since = 0;
  let widest = 1;
  let bigTakes = 0;
  const seen: number[] = [];
  for (let n = 1; n <= 30; n++) {
    // a new 4-job run on a shard of its own every 6 takes
    const shard = (n % 15) + 1;
    jobs[shard] = (jobs[shard] ?? 0) + 4;
    if (!runs.some((r) => r.shard === shard)) runs.push(run(`small-${n}`, shard));
    intake.setState(state(...runs));
    intake.wake(`small-${n}`, shard, []);
    for (let i = 0; i < 6; i++) {
      widest = Math.max(widest, Object.values(jobs).filter((j) => j > 0).length);
      const took = (await intake.take())!.shard;
      seen.push(took);
      if (took === 0) {
        bigTakes += 1;
        since = 0;
        widest = 1;
      } else {
        since += 1;
        assert.ok(since < 3 * widest, `the big run passed over ${since} times with ${widest} runs waiting: ${seen.join(',')}`);
      }
    }
  }
  assert.ok(bigTakes >= seen.length / 3, `the big run had ${bigTakes} of ${seen.length} takes: ${seen.join(',')}`);
  intake.stop();
});

test('a shard found empty is looked at after those with jobs; a wake puts it first again', async () => {
  const jobs: Record<number, number> = { 1: 0, 2: 50 };
  const intake = new Intake(fakeBroker(jobs), {}, createLogger('test', 'silent'));
  intake.setState(state(run('a', 1), run('b', 2)));
  assert.deepEqual(await takes(intake, 2), [2, 2]);
  assert.deepEqual(intake.shards(), [2, 1], 'the empty one last');
  jobs[1] = 1;
  intake.wake('a', 1, []);
  assert.deepEqual(intake.shards(), [1, 2]);
  intake.stop();
});

test('runs whose labels the slot lacks are not taken from', async () => {
  const jobs: Record<number, number> = { 1: 5, 2: 5 };
  const intake = new Intake(fakeBroker(jobs), { ruby: '' }, createLogger('test', 'silent'));
  intake.setState(state({ ...run('gpu', 1), labels: ['gpu'] }, { ...run('ruby', 2), labels: ['ruby'] }));
  assert.deepEqual(await takes(intake, 5), [2, 2, 2, 2, 2]);
  assert.equal(jobs[1], 5);
  intake.stop();
});

/**
 * A broker holding `jobs[shard]` jobs, with get() and tap() as RabbitMQ does them: a tap is
 * a prefetch-1 consumer (the next job comes when the last is acked, unless the consumer was
 * cancelled before that ack). `log` records each call; `inHand` the jobs taken and not acked.
 */
function tappingBroker(jobs: Record<number, number>) {
  const log: string[] = [];
  let inHand = 0;
  let widest = 0;
  const take = (shard: number, onAck: () => void): Delivery => {
    jobs[shard]! -= 1;
    widest = Math.max(widest, ++inHand);
    const nothing = () => undefined;
    return {
      body: Buffer.from('{}'), routingKey: `job.${shard}`, redelivered: false, deliveryCount: 0, headers: {},
      ack: () => {
        log.push(`ack ${shard}`);
        inHand -= 1;
        onAck();
      },
      requeue: nothing, deadLetter: async () => undefined,
    };
  };
  const shardOf = (queue: string) => Number(queue.slice(specQueue(0).length - 1));
  return {
    log, widest: () => widest,
    async get(queue: string): Promise<Delivery | null> {
      const shard = shardOf(queue);
      log.push(`get ${shard}`);
      return jobs[shard] ? { ...take(shard, () => undefined), remaining: jobs[shard]! - 1 } : null;
    },
    async tap(queue: string) {
      const shard = shardOf(queue);
      log.push(`consume ${shard}`);
      const mailbox: Delivery[] = [];
      let waiter: ((d: Delivery | null) => void) | undefined;
      let cancelled = false;
      const push = () => {
        if (cancelled || !jobs[shard]) return;
        const d = take(shard, () => queueMicrotask(push));
        if (waiter) waiter(d);
        else mailbox.push(d);
      };
      queueMicrotask(push);
      return {
        get live() {
          return !cancelled;
        },
        next(until: Promise<unknown>) {
          if (mailbox.length) return Promise.resolve(mailbox.shift()!);
          return new Promise<Delivery | null>((resolve) => {
            const mine = (d: Delivery | null) => {
              if (waiter === mine) waiter = undefined;
              resolve(d);
            };
            waiter = mine;
            void until.then(() => waiter === mine && mine(null));
          });
        },
        async cancel() {
          log.push(`cancel ${shard}`);
          cancelled = true;
          waiter?.(null);
          return mailbox.shift() ?? null;
        },
      };
    },
  };
}

test('one run in progress: its shard is consumed (no get per job); a second run makes the ack of the job in hand come after the cancel, and gets resume', async () => {
  const jobs: Record<number, number> = { 3: 20 };
  const broker = tappingBroker(jobs);
  const intake = new Intake(broker, {}, createLogger('test', 'silent'));
  intake.setState(state(run('big', 3)));
  for (let i = 0; i < 5; i++) {
    const t = (await intake.take())!;
    assert.equal(t.shard, 3);
    t.delivery.ack();
  }
  assert.deepEqual(broker.log.filter((l) => !l.startsWith('ack')), ['consume 3'], 'one consumer, no get');
  const inHand = (await intake.take())!;
  jobs[5] = 4;
  intake.setState(state(run('big', 3), run('small', 5)));
  inHand.delivery.ack();
  assert.deepEqual(broker.log.slice(-2), ['cancel 3', 'ack 3'], 'the tap is cancelled before the ack: the ack brings nothing more');
  const next = await Promise.all([1, 2, 3].map(async () => undefined)).then(() => intake.take());
  assert.equal(next!.shard, 5, 'the new run first');
  next!.delivery.ack();
  assert.ok(broker.log.includes('get 5'), 'two runs: takes by get again');
  assert.equal(broker.widest(), 1, 'never two jobs in hand');
  intake.stop();
});

test('a job the tap brought while the slot stops is handed over, not left unacked behind a cancel', async () => {
  const jobs: Record<number, number> = { 2: 3 };
  const broker = tappingBroker(jobs);
  const intake = new Intake(broker, {}, createLogger('test', 'silent'));
  intake.setState(state(run('a', 2)));
  const first = (await intake.take())!;
  first.delivery.ack(); // the tap stays: the next job comes to its mailbox at once
  await new Promise((r) => setImmediate(r));
  intake.stop();
  const held = await intake.take();
  assert.equal(held?.shard, 2, 'the job already delivered is handed over to be run');
  assert.ok(broker.log.includes('cancel 2'));
  assert.equal(jobs[2], 1, 'nothing more was taken');
});
