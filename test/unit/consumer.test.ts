/**
 * Consumers.consume when the connection goes down under the subscription: the consumer is
 * kept for the next connection to subscribe, and the caller is not failed (seen in the chaos
 * suite: `warren run` exited 2 with "Channel ended, no reply will be forthcoming" after the
 * broker closed every connection while it subscribed to its run's reports). An error of the
 * subscription itself still fails the caller.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChannelModel } from 'amqplib';
import { Consumers } from '../../shared/broker/consumer.js';
import type { Connection } from '../../shared/broker/connection.js';
import type { Publisher } from '../../shared/broker/publisher.js';
import { createLogger } from '../../shared/log.js';

/** A live connection whose consumer channels fail basic.consume with `message`. */
function failingConnection(message: string) {
  const subscribed: string[] = [];
  const channel = {
    on: () => undefined,
    prefetch: async () => undefined,
    consume: async (queue: string) => {
      subscribed.push(queue);
      throw new Error(message);
    },
  };
  const connection = {
    state: 'connected',
    log: createLogger('test', 'silent'),
    current: async () => ({ conn: {} as ChannelModel, generation: 1 }),
    channel: async () => channel,
  } as unknown as Connection;
  return { connection, subscribed };
}

test('a connection lost while subscribing: the consumer waits for the next connection, the caller goes on', async () => {
  for (const message of ['Channel ended, no reply will be forthcoming', 'Connection closed: 320 (CONNECTION-FORCED) with message "CONNECTION_FORCED"']) {
    const { connection, subscribed } = failingConnection(message);
    const consumers = new Consumers(connection, {} as Publisher);
    const sub = await consumers.consume('reports', async () => undefined, { prefetch: 10 });
    assert.equal(typeof sub.cancel, 'function');
    assert.deepEqual(subscribed, ['reports']);
    // the next connection's setup subscribes it again
    await assert.rejects(consumers.setup({} as ChannelModel, 2), new RegExp(message.slice(0, 12)));
    assert.deepEqual(subscribed, ['reports', 'reports']);
  }
});

test('an error of the subscription itself fails the caller', async () => {
  const { connection } = failingConnection('Operation failed: BasicConsume; 404 (NOT-FOUND) with message "NOT_FOUND - no queue \'reports\'"');
  const consumers = new Consumers(connection, {} as Publisher);
  await assert.rejects(consumers.consume('reports', async () => undefined, { prefetch: 10 }), /404/);
});
