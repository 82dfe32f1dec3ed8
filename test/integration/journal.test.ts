/**
 * The journal stream (services/aggregator/journal.ts) on the real broker: group commit,
 * replicas that fold the same entries in the same order, exactly once across a reconnect,
 * and a writer that loses its right to write fails what it had in flight.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import amqp from 'amqplib';
import { createLogger } from '../../shared/log.js';
import { Broker } from '../../shared/broker.js';
import { QUEUES } from '../../shared/topology.js';
import { Journal, NotJournaled } from '../../services/aggregator/journal.js';
import { createVhost, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { tcpProxy } from '../helpers/proxy.js';

const log = createLogger('test', process.env.TEST_LOG ?? 'silent');
let vhost: TestVhost;
before(async () => {
  vhost = await createVhost('warren-it-journal');
});
after(async () => {
  await vhost.delete();
});

const via = (port: number) => vhost.url.replace(/@[^/]+\//, `@127.0.0.1:${port}/`);

interface Entry {
  n: number;
}

async function replica(url: string) {
  const broker = new Broker({ url, name: 'test replica', log });
  const seen: number[] = [];
  const journal = new Journal<Entry>(broker, log, (e) => seen.push(e.n), (err) => assert.fail(err));
  await broker.start();
  await journal.open();
  return { broker, journal, seen };
}

async function streamLength(url: string): Promise<number> {
  const conn = await amqp.connect(url);
  try {
    return (await (await conn.createChannel()).checkQueue(QUEUES.journal)).messageCount;
  } finally {
    await conn.close();
  }
}

test('appends of one turn are one stream message; every replica folds every entry once, in order', async () => {
  const proxy = await tcpProxy({ host: '127.0.0.1', port: 5672 });
  await proxy.listen();
  const writer = await replica(vhost.url);
  const before = await streamLength(vhost.url);
  const far = await replica(via(proxy.port));
  try {
    await Promise.all(Array.from({ length: 200 }, (_, n) => writer.journal.append({ n })));
    assert.deepEqual(writer.seen, Array.from({ length: 200 }, (_, n) => n), 'append resolved only once the writer had folded it');
    assert.ok((await streamLength(vhost.url)) - before <= 2, 'group-committed: 200 appends in at most 2 stream messages');
    await waitFor('the far replica to catch up', () => far.seen.length >= 200);
    // the far replica loses its connection and comes back: it resumes where it was
    await proxy.cut();
    for (let n = 200; n < 260; n++) await writer.journal.append({ n });
    await proxy.listen();
    await waitFor('the far replica to fold what it missed', () => far.seen.length >= 260, 30_000);
    await writer.journal.barrier();
    assert.deepEqual(far.seen, writer.seen, 'the same entries, in the same order, none twice');
    // a replica started now reads the whole stream
    const late = await replica(vhost.url);
    await late.journal.barrier();
    assert.deepEqual(late.seen, writer.seen);
    await late.broker.close();
  } finally {
    await Promise.all([writer.broker.close(), far.broker.close()]);
    await proxy.cut();
  }
});

test('a writer that loses its right to write fails the appends it has in flight', async () => {
  const proxy = await tcpProxy({ host: '127.0.0.1', port: 5672 });
  await proxy.listen();
  const w = await replica(via(proxy.port));
  try {
    const back = new Promise((r) => w.broker.once('connected', r));
    await proxy.cut();
    const pending = w.journal.append({ n: -1 });
    w.journal.abort('lost the lease');
    await assert.rejects(pending, NotJournaled);
    await proxy.listen();
    await back;
    // written while down, with `once`: never sent again on the new connection behind anyone's back
    await w.journal.barrier();
    assert.deepEqual(w.seen.filter((n) => n === -1), []);
  } finally {
    await w.broker.close();
    await proxy.cut();
  }
});
