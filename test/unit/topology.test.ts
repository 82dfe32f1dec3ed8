import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { definitions } from '../../shared/definitions.js';
import { EXCHANGES, QUEUES, SPEC_SHARDS, TOPOLOGY, jobKey, specQueue } from '../../shared/topology.js';
import { ROOT } from '../helpers/cli.js';

test('rabbitmq/definitions.json agrees with shared/topology.ts (regenerate: npm run definitions)', () => {
  const file = JSON.parse(fs.readFileSync(path.join(ROOT, 'rabbitmq/definitions.json'), 'utf8'));
  assert.deepEqual(file, JSON.parse(JSON.stringify(definitions())));
});

test('every binding joins a declared exchange to a declared queue', () => {
  const exchanges = new Set(TOPOLOGY.exchanges.map((e) => e.name));
  const queues = new Set(TOPOLOGY.queues.map((q) => q.name));
  for (const b of TOPOLOGY.bindings) {
    assert.ok(exchanges.has(b.exchange), b.exchange);
    assert.ok(queues.has(b.queue), b.queue);
  }
  for (const q of TOPOLOGY.queues) {
    const dlx = q.arguments['x-dead-letter-exchange'];
    if (dlx) assert.ok(exchanges.has(String(dlx)), `${q.name} dead-letters to a declared exchange`);
  }
});

test('every work queue takes a spec out of circulation after its delivery limit, at least once', () => {
  for (let n = 0; n < SPEC_SHARDS; n++) {
  const specs = TOPOLOGY.queues.find((q) => q.name === specQueue(n))!;
  assert.ok(TOPOLOGY.bindings.some((b) => b.queue === specs.name && b.exchange === EXCHANGES.work && b.routingKey === jobKey(n)), `${specs.name} is bound`);
  assert.equal(specs.arguments['x-queue-type'], 'quorum');
  assert.equal(specs.arguments['x-delivery-limit'], 3);
  assert.equal(specs.arguments['x-dead-letter-exchange'], EXCHANGES.dlx);
  // at-least-once dead-lettering silently falls back to at-most-once without reject-publish
  assert.equal(specs.arguments['x-dead-letter-strategy'], 'at-least-once');
  assert.equal(specs.arguments['x-overflow'], 'reject-publish');
  const crashedRoute = TOPOLOGY.bindings.find((b) => b.queue === QUEUES.crashed)!;
  assert.equal(crashedRoute.routingKey, specs.arguments['x-dead-letter-routing-key']);
  }
});

test('the broker config loads the definitions and enables the management UI', () => {
  const conf = fs.readFileSync(path.join(ROOT, 'rabbitmq/rabbitmq.conf'), 'utf8');
  assert.match(conf, /^load_definitions = .*definitions\.json$/m);
  assert.match(conf, /^consumer_timeout = \d+$/m);
  assert.match(fs.readFileSync(path.join(ROOT, 'rabbitmq/enabled_plugins'), 'utf8'), /rabbitmq_management/);
});

test("a cluster node's config is the single node's plus the cluster formation", () => {
  const single = fs.readFileSync(path.join(ROOT, 'rabbitmq/rabbitmq.conf'), 'utf8');
  const cluster = fs.readFileSync(path.join(ROOT, 'rabbitmq/cluster.conf'), 'utf8');
  assert.ok(cluster.startsWith(single), 'rabbitmq/cluster.conf begins with rabbitmq/rabbitmq.conf');
  const nodes = cluster.match(/^cluster_formation\.classic_config\.nodes\.\d+ = \S+$/gm) ?? [];
  assert.equal(nodes.length, 3);
});

test("the TLS broker config is the single node's with plain AMQP off and a TLS listener asking for client certificates", () => {
  const single = fs.readFileSync(path.join(ROOT, 'rabbitmq/rabbitmq.conf'), 'utf8');
  const tls = fs.readFileSync(path.join(ROOT, 'rabbitmq/tls.conf'), 'utf8');
  assert.ok(tls.startsWith(single), 'rabbitmq/tls.conf begins with rabbitmq/rabbitmq.conf');
  for (const line of ['listeners.tcp = none', 'listeners.ssl.default = 5671', 'ssl_options.verify = verify_peer', 'ssl_options.fail_if_no_peer_cert = true']) {
    assert.ok(tls.split('\n').includes(line), line);
  }
  const compose = fs.readFileSync(path.join(ROOT, 'deploy/tls.compose.yml'), 'utf8');
  assert.match(compose, /\.\.\/rabbitmq\/tls\.conf:\/etc\/rabbitmq\/rabbitmq\.conf:ro/);
  assert.equal(compose.match(/WARREN_TLS_CERT: /g)?.length, 2, 'the dispatcher and the aggregator show a client certificate');
});
