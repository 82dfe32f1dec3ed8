/**
 * `rabbitmq/definitions.json` as the topology implies it: what a broker loads at boot
 * (`load_definitions`), so queues exist before any service connects and operators see them in
 * the management UI. test/unit/topology.test.ts checks the file against this; regenerate with
 * `npm run definitions`.
 */
import { createHash } from 'node:crypto';
import { TOPOLOGY } from './topology.js';

/** RabbitMQ's sha256 password hash: base64(salt ++ sha256(salt ++ password)). */
export function rabbitPasswordHash(password: string, salt = Buffer.from([0x57, 0x61, 0x72, 0x6e])): string {
  const digest = createHash('sha256').update(Buffer.concat([salt, Buffer.from(password, 'utf8')])).digest();
  return Buffer.concat([salt, digest]).toString('base64');
}

export function definitions(vhost = '/') {
  return {
    rabbit_version: '3.10.8',
    // No users: the file is applied at every boot, and would put back a password an operator
    // changed. Users are made at deploy time, one per role (`warren broker-users`).
    users: [],
    vhosts: [{ name: vhost }],
    permissions: [],
    exchanges: TOPOLOGY.exchanges.map((e) => ({ name: e.name, vhost, type: e.type, durable: e.durable, auto_delete: false, internal: false, arguments: {} })),
    queues: TOPOLOGY.queues.map((q) => ({ name: q.name, vhost, durable: q.durable, auto_delete: false, arguments: q.arguments })),
    bindings: TOPOLOGY.bindings.map((b) => ({ source: b.exchange, vhost, destination: b.queue, destination_type: 'queue', routing_key: b.routingKey, arguments: {} })),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) process.stdout.write(JSON.stringify(definitions(), null, 2) + '\n');
