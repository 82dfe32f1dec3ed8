/**
 * rabbitmq/definitions.json as the broker loads it at every boot: the topology is there, no
 * user is (so no default password exists), and a password an operator sets or changes
 * survives a restart (the file, applied again, has none to put back). A RabbitMQ node of the
 * test's own, restarted.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import amqp from 'amqplib';
import { ROOT } from '../helpers/cli.js';
import { privateRabbit, type PrivateRabbit } from '../helpers/private-rabbit.js';
import { QUEUES, SPEC_SHARDS, specQueue } from '../../shared/topology.js';

let rabbit: PrivateRabbit | undefined;
after(() => rabbit?.destroy());

async function login(url: string): Promise<string> {
  try {
    const conn = await amqp.connect(url);
    conn.on('error', () => undefined);
    const ch = await conn.createChannel();
    for (const q of [QUEUES.dispatcher, QUEUES.aggregator, specQueue(SPEC_SHARDS - 1)]) await ch.checkQueue(q);
    await conn.close();
    return 'ok';
  } catch (err) {
    return (err as Error).message;
  }
}

test('the broker boots with the topology and no user; a password an operator changes survives a restart', async () => {
  const port = 7400 + Math.floor(Math.random() * 90);
  rabbit = privateRabbit(port, [], {
    files: { 'definitions.json': fs.readFileSync(`${ROOT}/rabbitmq/definitions.json`, 'utf8') },
    config: (dir) => `load_definitions = ${dir}/definitions.json\n`,
  });
  await rabbit.start({ noLogin: true });
  assert.equal(rabbit.ctl('list_users', '--formatter', 'json').includes('"user"'), false, 'no user at all, guest neither');
  rabbit.ctl('add_user', 'submitter', 'first-password');
  rabbit.ctl('set_permissions', '-p', '/', 'submitter', '^$', '^$', '^$');
  rabbit.ctl('change_password', 'submitter', 'changed-password');
  const url = (pw: string) => `amqp://submitter:${pw}@127.0.0.1:${port}`;
  assert.equal(await login(url('changed-password')), 'ok', 'the topology is there');
  rabbit.stop();
  await rabbit.start({ noLogin: true });
  assert.equal(await login(url('changed-password')), 'ok', 'the changed password still works after the restart');
  assert.match(await login(url('first-password')), /ACCESS.REFUSED/);
});
