/**
 * The broker client under connection loss, through a TCP proxy of our own between it and
 * the real RabbitMQ (the broker stays up; only this client's link is cut), each test
 * synchronised on events (a handler entered, a connection made), never on sleeps.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../shared/log.js';
import { Broker } from '../../shared/broker.js';
import { Connection } from '../../shared/broker/connection.js';
import { Publisher } from '../../shared/broker/publisher.js';
import { Consumers, type Delivery } from '../../shared/broker/consumer.js';
import { createVhost, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { tcpProxy } from '../helpers/proxy.js';
import { runCli, startService, stopService } from '../helpers/cli.js';

const log = createLogger('test', 'silent');
let vhost: TestVhost;
before(async () => {
  vhost = await createVhost('warren-it-broker');
});
after(async () => {
  await vhost.delete();
});

/** The vhost's URL through a proxy on `port`. */
const via = (port: number) => vhost.url.replace(/@[^/]+\//, `@127.0.0.1:${port}/`);
const upstream = { host: '127.0.0.1', port: 5672 };

/** Resolves at the next 'connected' of a broker client. */
const nextConnected = (b: Broker) => new Promise<void>((r) => b.once('connected', () => r()));

test('a consumer with prefetch 1 never holds two messages, across a reconnect', async () => {
  const proxy = await tcpProxy(upstream);
  await proxy.listen();
  const broker = new Broker({ url: via(proxy.port), name: 'test prefetch', log });
  const side = new Broker({ url: vhost.url, name: 'test side', log });
  await Promise.all([broker.start(), side.start()]);
  const q = 'warren.specs.0';
  let running = 0;
  let most = 0;
  const seen: string[] = [];
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let entered!: () => void;
  const first = new Promise<void>((r) => (entered = r));
  try {
    await broker.consume(q, async (d: Delivery) => {
      running++;
      most = Math.max(most, running);
      seen.push(d.body.toString());
      entered();
      if (seen.length === 1) await released; // the first one is a long test
      running--;
      d.ack();
    }, { prefetch: 1 });
    await side.publishRaw('warren.work', 'job.0', Buffer.from('one'));
    await first;
    // the link drops while the handler runs; the broker requeues 'one'
    const back = nextConnected(broker);
    await proxy.cut();
    await proxy.listen();
    await back;
    await side.publishRaw('warren.work', 'job.0', Buffer.from('two'));
    // both wait in the queue, nobody consumes: the handler still holds the old 'one'
    await waitFor('both messages ready, no consumer', async () => {
      if (most > 1) return true;
      const { messageCount, consumerCount } = await side.checkQueue(q);
      return messageCount === 2 && consumerCount === 0;
    }, 30_000);
    assert.equal(most, 1, 'a second message was handed over while the first was still running');
    release();
    await waitFor('both handled again', () => seen.length >= 3, 30_000);
    assert.equal(most, 1);
    assert.deepEqual(seen.slice(1).sort(), ['one', 'two']);
  } finally {
    release();
    await Promise.all([broker.close(), side.close()]);
    await proxy.cut();
  }
});

test('an ack made while the connection is still being set up is not lost', async () => {
  const proxy = await tcpProxy(upstream);
  await proxy.listen();
  const side = new Broker({ url: vhost.url, name: 'test side', log });
  await side.start();
  await side.publishRaw('warren.work', 'job.0', Buffer.from('waiting'));
  const connection = new Connection({ url: via(proxy.port), name: 'test ack', log });
  const publisher = new Publisher(connection);
  const consumers = new Consumers(connection, publisher);
  const deliveries: string[] = [];
  let acked!: () => void;
  const ackedOnce = new Promise<void>((r) => (acked = r));
  await consumers.consume('warren.specs.0', async (d) => {
    deliveries.push(`${d.body}${d.redelivered ? ' (again)' : ''}`);
    d.ack();
    acked();
  }, { prefetch: 1 });
  await connection.addSetup(publisher.setup);
  await connection.addSetup(consumers.setup);
  // a last set-up step that waits for the handler: its ack happens before 'connected'
  await connection.addSetup(() => ackedOnce);
  try {
    await connection.start();
    // a confirmed publish on the same socket: the ack's frame went through before it
    await publisher.publish('warren.status', '', { ping: 1 }, { mandatory: false });
    // drop the link: an ack that was never sent would bring the message back
    const back = new Promise<void>((r) => connection.once('connected', () => r()));
    await proxy.cut();
    await proxy.listen();
    await back;
    await side.publishRaw('warren.work', 'job.0', Buffer.from('sentinel'));
    await waitFor('the sentinel', () => deliveries.some((d) => d.startsWith('sentinel')), 30_000);
    assert.deepEqual(deliveries, ['waiting', 'sentinel']);
  } finally {
    await connection.close([...consumers.channels(), publisher.channel]);
    await side.close();
    await proxy.cut();
  }
});

test('a service started while the broker is unreachable keeps trying, and runs once it is back', async () => {
  const proxy = await tcpProxy(upstream);
  const svc = startService(['dispatcher', '--broker', via(proxy.port), '--no-history'], { WARREN_LOG_LEVEL: 'info' }, { capture: true });
  let out = '';
  svc.stdout!.on('data', (b: Buffer) => (out += b));
  svc.stderr!.on('data', (b: Buffer) => (out += b));
  try {
    await waitFor('a second attempt', () => (out.match(/cannot reach the broker yet, retrying/g) ?? []).length >= 2, 30_000);
    assert.equal(svc.exitCode, null, 'the service is still there');
    await proxy.listen();
    await waitFor('the dispatcher running', () => out.includes('dispatcher running'), 30_000);
    assert.equal(svc.exitCode, null);
  } finally {
    await stopService(svc);
    await proxy.cut();
  }
  // the CLI, in front of a person, still says it at once
  const res = await runCli(['hosts', '--broker', 'amqp://127.0.0.1:1']);
  assert.equal(res.code, 2);
  assert.match(res.stderr, /cannot reach RabbitMQ at amqp:\/\/127\.0\.0\.1:1/);
});

test('a tap on the real broker: an ack after cancel() brings nothing more, an ack before it does (cancel hands that one over), and waits that share a stop signal each end', async () => {
  const b = new Broker({ url: vhost.url, name: 'tap test', log });
  await b.start();
  const queue = 'warren.specs.0';
  try {
    for (let i = 0; i < 4; i++) await b.publish('', queue, { n: i });
    const tap = await b.tap(queue);
    const never = new Promise<void>(() => undefined);
    const first = (await tap.next(never))!;
    assert.equal(JSON.parse(first.body.toString()).n, 0);
    // ack first: the broker sends the next job, racing the cancel that follows; one that
    // reached us before the cancel-ok is handed over by cancel(); one still on its way goes
    // back to the queue (a quorum queue returns it once the consumer is gone: the ready
    // count is 2 again a moment later, never lost)
    first.ack();
    const second = (await tap.next(never))!;
    second.ack();
    const third = await tap.cancel();
    if (third) {
      assert.equal(JSON.parse(third.body.toString()).n, 2, 'the job the ack brought is handed over by cancel()');
      third.ack();
    }
    await waitFor('the jobs not taken back in the queue', async () => (await b.checkQueue(queue)).messageCount === (third ? 1 : 2), 10_000);

    const tap2 = await b.tap(queue);
    const last = (await tap2.next(never))!;
    assert.equal(JSON.parse(last.body.toString()).n, third ? 3 : 2, 'the next job in order');
    const held = tap2.cancel(); // basic.cancel goes out before the ack below
    last.ack();
    assert.equal(await held, null, 'the ack after cancel() brought nothing');
    assert.equal((await b.checkQueue(queue)).messageCount, third ? 0 : 1);
    if (!third) {
      const rest = await b.tap(queue);
      const n3 = (await rest.next(never))!;
      assert.equal(JSON.parse(n3.body.toString()).n, 3);
      const none = rest.cancel();
      n3.ack();
      assert.equal(await none, null);
    }

    // waits raced against one stop signal, as a slot's are: one that a job ended first
    // must not, when the signal comes, end a later one's wait for it
    const tap3 = await b.tap(queue);
    let stop!: () => void;
    const stopped = new Promise<void>((r) => (stop = r));
    const waiting = tap3.next(Promise.race([never, stopped])); // (the job comes while it waits)
    await b.publish('', queue, { n: 4 });
    const job = (await waiting)!;
    assert.equal(JSON.parse(job.body.toString()).n, 4);
    job.ack();
    const later = tap3.next(Promise.race([never, stopped]));
    stop();
    assert.equal(await Promise.race([later, new Promise((r) => setTimeout(() => r('still waiting'), 5000))]), null, 'the later wait ended with the stop');
    assert.equal(await tap3.cancel(), null);
  } finally {
    await b.close();
  }
});
