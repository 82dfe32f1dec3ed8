/**
 * Least privilege on the real broker: `warren broker-users` gives a vhost the topology and a
 * user per role; a whole run goes through with each service as its role (and
 * --require-roles); and each role is refused what it must not do, by RabbitMQ's rights
 * (403), its user-id check (406) or the services' sender check (dead-lettered with the
 * reason).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import amqp from 'amqplib';
import { SCHEMA_VERSION } from '../../shared/messages.js';
import { EXCHANGES, QUEUES, ROUTING, specQueue } from '../../shared/topology.js';
import { createVhost, drainQueue, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { readReport, runCli, startService, stopService, tmpDir } from '../helpers/cli.js';

const MGMT = process.env.WARREN_TEST_MGMT?.replace(/\/api$/, '') ?? 'http://guest:guest@127.0.0.1:15672';
const suffix = `t${randomBytes(3).toString('hex')}`;
let vhost: TestVhost;
const usersDir = tmpDir('warren-users-');
const urls: Record<string, string> = {};
const services: ChildProcess[] = [];

before(async () => {
  vhost = await createVhost('warren-e2e-roles');
  const admin = MGMT.includes('@') ? MGMT : MGMT.replace('//', '//guest:guest@');
  const made = await runCli(['broker-users', '--admin-url', admin, '--amqp-url', 'amqp://127.0.0.1:5672', '--vhost', vhost.name, '--out', usersDir, '--suffix', suffix]);
  assert.equal(made.code, 0, `${made.stdout}\n${made.stderr}`);
  for (const role of ['dispatcher', 'supervisor', 'aggregator', 'submitter', 'observer']) {
    urls[role] = fs.readFileSync(path.join(usersDir, `${role}.${suffix}.url`), 'utf8').trim();
    assert.equal(fs.statSync(path.join(usersDir, `${role}.${suffix}.url`)).mode & 0o777, 0o600);
  }
});
after(async () => {
  for (const s of services) await stopService(s, 'SIGKILL');
  await vhost.delete();
  const admin = new URL(MGMT.includes('@') ? MGMT : MGMT.replace('//', '//guest:guest@'));
  const auth = `Basic ${Buffer.from(`${admin.username}:${admin.password}`).toString('base64')}`;
  for (const role of ['dispatcher', 'supervisor', 'aggregator', 'submitter', 'observer', 'admin']) {
    await fetch(`${admin.protocol}//${admin.host}/api/users/${encodeURIComponent(`${role}.${suffix}`)}`, { method: 'DELETE', headers: { authorization: auth } });
  }
});

/** What the broker says to `publish` by `role` (null: confirmed). */
async function tryPublish(role: string, exchange: string, key: string, body: unknown, userId?: string): Promise<string | null> {
  const conn = await amqp.connect(urls[role]!);
  conn.on('error', () => undefined);
  try {
    const ch = await conn.createConfirmChannel();
    const closed = new Promise<string>((resolve) => ch.on('close', () => resolve('closed')).on('error', (e: Error) => resolve(e.message)));
    ch.publish(exchange, key, Buffer.from(JSON.stringify(body)), { userId: userId ?? decodeURIComponent(new URL(urls[role]!).username) });
    return await Promise.race([ch.waitForConfirms().then(() => null), closed]);
  } catch (err) {
    return (err as Error).message;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

/** What the broker says to `fn` on a channel of `role`'s (null: it went through). */
async function tryChannel(role: string, fn: (ch: amqp.Channel) => Promise<unknown>): Promise<string | null> {
  const conn = await amqp.connect(urls[role]!);
  conn.on('error', () => undefined);
  try {
    const ch = await conn.createChannel();
    ch.on('error', () => undefined);
    await fn(ch);
    return null;
  } catch (err) {
    return (err as Error).message;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

test('a whole run with each service as its role, roles required; the submitter only submits and reads its run', async () => {
  services.push(startService(['dispatcher', '--broker', urls.dispatcher!, '--no-history', '--require-roles']));
  services.push(startService(['aggregator', '--broker', urls.aggregator!, '--report-dir', tmpDir(), '--require-roles']));
  services.push(startService(['supervisor', '--broker', urls.supervisor!, '--workers', '2', '--require-roles']));
  const reportDir = tmpDir();
  const res = await runCli(['run', '--broker', urls.submitter!, '--adapter', 'command', '--cwd', tmpDir(), '--report-dir', reportDir, '--no-timings', '--discover-command', 'seq 1 5', '--run-command', 'true']);
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  assert.equal(report.totals.passed, 5);
  assert.ok(report.runId.startsWith(`submitter.${suffix}-`), `the run is named after its submitter: ${report.runId}`);
  const status = await runCli(['status', '--broker', urls.observer!]);
  assert.equal(status.code, 0, `the observer sees the cluster: ${status.stdout}\n${status.stderr}`);
});

test('each role is refused what it must not do', async () => {
  const sup = `supervisor.${suffix}`;
  // a supervisor cannot publish a run request (no right on warren.runs)...
  assert.match(await tryPublish('supervisor', EXCHANGES.runs, ROUTING.runRequest, { type: 'run.request' }) ?? 'went through', /ACCESS_REFUSED|403/);
  // ... nor a plan: it may write warren.events (its results), so the aggregator refuses it
  const plan = { type: 'round.planned', v: SCHEMA_VERSION, id: 'p', runId: 'someone-else', round: 1, tests: [], specs: 0 };
  assert.equal(await tryPublish('supervisor', EXCHANGES.events, ROUTING.roundPlanned, plan), null);
  const dead = await waitFor('the forged plan dead-lettered', async () => {
    const got = await drainQueue(vhost.url, QUEUES.deadLetters);
    return got.find((m) => String(m.properties.headers?.['x-warren-reason']).includes('round.planned'));
  }, 30_000);
  assert.equal(String(dead.properties.headers?.['x-warren-reason']), `refused: round.planned from user ${sup} (supervisor); only dispatcher may send it`);
  // a submitter cannot take specs, publish results, or pass for another user
  assert.match(await tryChannel('submitter', (ch) => ch.get(specQueue(0))) ?? 'went through', /ACCESS_REFUSED|403/);
  assert.match(await tryPublish('submitter', EXCHANGES.events, ROUTING.specResult, { type: 'spec.result' }) ?? 'went through', /ACCESS_REFUSED|403/);
  assert.match(await tryPublish('submitter', EXCHANGES.runs, ROUTING.runRequest, { type: 'run.request' }, sup) ?? 'went through', /PRECONDITION_FAILED|406/);
  // ... nor read another run's reports (topic rights on warren.reports)
  const own = `warren.cli.submitter.${suffix}-peek`;
  assert.match(await tryChannel('submitter', async (ch) => {
    await ch.assertQueue(own, { exclusive: true });
    await ch.bindQueue(own, EXCHANGES.reports, 'run.someone-else.*');
  }) ?? 'went through', /ACCESS_REFUSED|403/);
  assert.equal(await tryChannel('submitter', async (ch) => {
    await ch.assertQueue(own, { exclusive: true });
    await ch.bindQueue(own, EXCHANGES.reports, `run.submitter.${suffix}-x.*`);
  }), null, 'its own run it may follow');
  // an observer publishes nothing; nobody but the admin may delete a queue
  assert.match(await tryPublish('observer', EXCHANGES.runs, ROUTING.runRequest, { type: 'run.request' }) ?? 'went through', /ACCESS_REFUSED|403/);
  for (const role of ['dispatcher', 'supervisor', 'aggregator', 'submitter', 'observer']) {
    assert.match(await tryChannel(role, (ch) => ch.deleteQueue(specQueue(1))) ?? 'went through', /ACCESS_REFUSED|403/, `${role} cannot delete a work queue`);
  }
});
