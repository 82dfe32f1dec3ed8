/**
 * `warren broker-users`: the operator's step that gives a broker Warren's topology and one
 * user per role (shared/roles.ts), through the management API with an administrator's
 * credentials. Passwords are generated here, at deploy time (none is in
 * rabbitmq/definitions.json, so one an operator changes later survives a broker restart),
 * and written one URL per file, readable by the owner only; a user whose file exists keeps
 * its password when the step runs again.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { definitions, rabbitPasswordHash } from '../shared/definitions.js';
import { UsageError } from '../shared/errors.js';
import { ROLES, permissionsFor, roleOf, type Role } from '../shared/roles.js';

export interface BrokerUsersOptions {
  /** http(s)://admin:password@host:15672 */
  adminUrl: string;
  /** What the URLs written point at (default amqp://<the admin URL's host>:5672). */
  amqpUrl?: string;
  vhost: string;
  outDir: string;
  /** Appended to every role user's name (`supervisor.<suffix>`): several clusters on one broker. */
  suffix?: string;
  /** More submitters (one per team or CI system), each reading only its own runs. */
  submitters: string[];
}

interface Made {
  user: string;
  role: Role;
  file: string;
  created: boolean;
}

/** Declares the topology and the users; returns what it made. */
export async function brokerUsers(o: BrokerUsersOptions): Promise<Made[]> {
  let admin: URL;
  try {
    admin = new URL(o.adminUrl);
  } catch {
    throw new UsageError(`--admin-url: expected http://user:password@host:15672, got ${JSON.stringify(o.adminUrl)}`);
  }
  if (!/^https?:$/.test(admin.protocol) || !admin.username) throw new UsageError('--admin-url: expected http://user:password@host:15672 (an administrator of the management API)');
  const auth = `Basic ${Buffer.from(`${decodeURIComponent(admin.username)}:${decodeURIComponent(admin.password)}`).toString('base64')}`;
  const base = `${admin.protocol}//${admin.host}${admin.pathname.replace(/\/$/, '')}`;
  const amqpBase = new URL(o.amqpUrl ?? `amqp://${admin.hostname}:5672`);

  const users: Array<{ user: string; role: Role }> = ROLES.filter((r) => r !== 'submitter' || o.submitters.length === 0).map((role) => ({ user: o.suffix ? `${role}.${o.suffix}` : role, role }));
  for (const name of o.submitters) {
    if (roleOf(name) !== 'submitter') throw new UsageError(`--submitter ${name}: a submitter's name is submitter or submitter.<something> (its role is read from it)`);
    users.push({ user: name, role: 'submitter' });
  }
  fs.mkdirSync(o.outDir, { recursive: true, mode: 0o700 });
  const made: Made[] = [];
  const defs = definitions(o.vhost);
  const body = {
    ...defs,
    users: [] as unknown[],
    permissions: [] as unknown[],
    topic_permissions: [] as unknown[],
  };
  for (const { user, role } of users) {
    const file = path.join(o.outDir, `${user}.url`);
    let password: string;
    let created = false;
    if (fs.existsSync(file)) {
      password = decodeURIComponent(new URL(fs.readFileSync(file, 'utf8').trim()).password);
    } else {
      password = randomBytes(18).toString('base64url');
      created = true;
    }
    const p = permissionsFor(role, user);
    body.users.push({ name: user, password_hash: rabbitPasswordHash(password, randomBytes(4)), hashing_algorithm: 'rabbit_password_hashing_sha256', tags: p.tags, limits: {} });
    body.permissions.push({ user, vhost: o.vhost, configure: p.configure, write: p.write, read: p.read });
    for (const t of p.topic) body.topic_permissions.push({ user, vhost: o.vhost, exchange: t.exchange, write: t.write, read: t.read });
    const url = new URL(amqpBase.toString());
    url.username = encodeURIComponent(user);
    url.password = encodeURIComponent(password);
    url.pathname = `/${encodeURIComponent(o.vhost)}`;
    if (created) fs.writeFileSync(file, `${url.toString()}\n`, { mode: 0o600 });
    made.push({ user, role, file, created });
  }
  const res = await fetch(`${base}/api/definitions`, {
    method: 'POST',
    headers: { authorization: auth, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  }).catch((err: Error) => {
    throw new UsageError(`--admin-url: cannot reach the management API at ${base}: ${err.message}`);
  });
  if (!res.ok) throw new UsageError(`the management API at ${base} refused the definitions: ${res.status} ${(await res.text()).slice(0, 300)}`);
  return made;
}
