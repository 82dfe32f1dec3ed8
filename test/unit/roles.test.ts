import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../helpers/cli.js';
import { permissionsFor, roleOf, senderProblem, type Role } from '../../shared/roles.js';
import { EXCHANGES, QUEUES, SPEC_SHARDS, TOPOLOGY, specQueue } from '../../shared/topology.js';

const may = (role: Role, what: 'configure' | 'write' | 'read', name: string, user: string = role) => new RegExp(permissionsFor(role, user)[what]).test(name);
const shards = Array.from({ length: SPEC_SHARDS }, (_, n) => specQueue(n));

test('each role reads and writes exactly what its job needs of the topology', () => {
  const expected: Record<Exclude<Role, 'admin'>, { read: string[]; write: string[] }> = {
    dispatcher: { read: [QUEUES.dispatcher, QUEUES.history, EXCHANGES.reports, EXCHANGES.status], write: [EXCHANGES.work, EXCHANGES.events, EXCHANGES.reports, EXCHANGES.dlx] },
    supervisor: { read: [...shards, EXCHANGES.reports], write: [EXCHANGES.work, EXCHANGES.events, EXCHANGES.status, EXCHANGES.reports, EXCHANGES.dlx] },
    aggregator: { read: [QUEUES.aggregator, QUEUES.crashed, QUEUES.journal, QUEUES.checkpoint, EXCHANGES.status], write: [EXCHANGES.runs, EXCHANGES.reports, EXCHANGES.dlx] },
    submitter: { read: [EXCHANGES.reports, QUEUES.runsLog], write: [EXCHANGES.runs] },
    observer: { read: [EXCHANGES.reports, EXCHANGES.status, QUEUES.runsLog], write: [] },
  };
  const names = [...TOPOLOGY.exchanges.map((e) => e.name), ...TOPOLOGY.queues.map((q) => q.name)];
  for (const [role, want] of Object.entries(expected) as Array<[Exclude<Role, 'admin'>, { read: string[]; write: string[] }]>) {
    assert.deepEqual(names.filter((n) => may(role, 'read', n)).sort(), [...want.read].sort(), `${role} reads`);
    assert.deepEqual(names.filter((n) => may(role, 'write', n)).sort(), [...want.write].sort(), `${role} writes`);
    assert.deepEqual(names.filter((n) => may(role, 'configure', n)), [], `${role} may configure (so delete) nothing of the topology`);
  }
  assert.deepEqual(permissionsFor('admin', 'admin').tags, ['administrator']);
  for (const role of ['dispatcher', 'supervisor', 'aggregator', 'submitter', 'observer'] as const) assert.ok(!permissionsFor(role, role).tags.includes('administrator'));
});

test("a submitter's own queues and reports are named after it, another's are not its", () => {
  const p = permissionsFor('submitter', 'submitter.team-a');
  assert.ok(new RegExp(p.configure).test('warren.cli.submitter.team-a-20261203-x.abc'));
  assert.ok(!new RegExp(p.configure).test('warren.cli.submitter.team-b-20261203-x.abc'));
  const reports = p.topic.find((t) => t.exchange === EXCHANGES.reports)!;
  assert.ok(new RegExp(reports.read).test('run.submitter.team-a-1.*'));
  assert.ok(!new RegExp(reports.read).test('run.submitter.team-b-1.*'));
  assert.ok(!new RegExp(reports.read).test('run.#'));
});

test('senders: each message type only from its roles; a submitter only for its own runs', () => {
  assert.equal(roleOf('supervisor.ci-3'), 'supervisor');
  assert.equal(roleOf('guest'), undefined);
  assert.equal(senderProblem('spec.result', 'supervisor.x'), null);
  assert.match(senderProblem('spec.result', 'submitter.x') ?? '', /only supervisor may send it/);
  assert.match(senderProblem('spec.result', undefined) ?? '', /without a user id/);
  assert.equal(senderProblem('run.request', 'submitter.a', 'submitter.a-1'), null);
  assert.match(senderProblem('run.request', 'submitter.a', 'submitter.b-1') ?? '', /run ids begin with "submitter.a-"/);
  assert.match(senderProblem('run.request', 'submitter.a', '') ?? '', /run ids begin with/);
});

test('the boot definitions hold no user and no password (a changed password survives a restart)', () => {
  const defs = JSON.parse(fs.readFileSync(path.join(ROOT, 'rabbitmq/definitions.json'), 'utf8')) as { users: unknown[]; permissions: unknown[] };
  assert.deepEqual(defs.users, []);
  assert.deepEqual(defs.permissions, []);
});
