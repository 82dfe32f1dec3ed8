/**
 * `warren deploy`, `warren hosts`, `warren health`: the cluster from the operator's chair.
 *
 * deploy: for every host of the build matrix, over SSH (node-ssh), upload the worker compose
 * file and an .env, and bring the supervisor up (`--down`: take it down). A host that does
 * not answer is retried every few seconds (the seed's reconnect loop) until it does or the
 * deadline passes; each host's outcome is printed. Hosts are independent: one that fails
 * does not stop the others, and a host added to the matrix joins the next run with nothing
 * else touched (the broker is the service discovery).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { NodeSSH } from 'node-ssh';
import { z } from 'zod';
import { Broker } from '../shared/broker.js';
import { UsageError, errorMessage } from '../shared/errors.js';
import type { Logger } from '../shared/log.js';
import { Heartbeat, parseMessage } from '../shared/messages.js';
import { EXCHANGES, QUEUES, specQueue } from '../shared/topology.js';
import { waitingSpecs } from './status.js';

const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'letters, digits, "_", "." or "-"');

export const Matrix = z.object({
  /** The broker as the worker hosts reach it. */
  broker: z.string().regex(/^amqps?:\/\//, 'an amqp:// URL'),
  /** Warren's services image. */
  image: z.string().min(1),
  /** The supervisors take jobs only from the dispatcher's and supervisors' users
   * (shared/roles.ts): `broker` is then the supervisor role's URL (warren broker-users). */
  requireRoles: z.boolean().default(true),
  /** Default suite image for runs that name none. */
  suiteImage: z.string().min(1).optional(),
  hosts: z
    .array(
      z.object({
        name,
        address: z.string().min(1),
        port: z.number().int().min(1).max(65535).default(22),
        user: z.string().min(1),
        /** Path of the private key (~ allowed). */
        key: z.string().min(1),
        workers: z.number().int().min(1).max(256),
        labels: z.record(z.string(), z.string()).default({}),
        memory: z.string().optional(),
        cpus: z.number().positive().optional(),
        network: z.enum(['none', 'host']).optional(),
        /** Where the compose project lives on the host (default ~/warren-<name>). */
        dir: z.string().optional(),
      }),
    )
    .min(1),
});
export type Matrix = z.infer<typeof Matrix>;
type Host = Matrix['hosts'][number];

export function loadMatrix(file: string): Matrix {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new UsageError(`--matrix: cannot read ${file}: ${errorMessage(err)}`);
  }
  const parsed = Matrix.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UsageError(`--matrix ${file}: ${issue.path.join('.')}: ${issue.message}`);
  }
  const names = parsed.data.hosts.map((h) => h.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) throw new UsageError(`--matrix ${file}: hosts: the name ${dup} is used twice`);
  return parsed.data;
}

const expandHome = (p: string) => (p.startsWith('~/') ? path.join(os.homedir(), p.slice(2)) : p);
const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export interface DeployOptions {
  matrix: Matrix;
  composeFile: string;
  down: boolean;
  /** Give up on a host that has not answered by then. */
  deadlineMs: number;
  retryMs: number;
  /** Only these hosts (all when empty). */
  only: string[];
  out: (line: string) => void;
}

export interface HostOutcome {
  host: string;
  ok: boolean;
  detail: string;
}

export async function deploy(opts: DeployOptions): Promise<HostOutcome[]> {
  const hosts = opts.matrix.hosts.filter((h) => opts.only.length === 0 || opts.only.includes(h.name));
  if (hosts.length === 0) throw new UsageError(`--host: no host named ${opts.only.join(', ')} in the matrix`);
  return Promise.all(hosts.map((h) => deployHost(h, opts)));
}

async function connect(host: Host, opts: DeployOptions): Promise<NodeSSH> {
  const deadline = Date.now() + opts.deadlineMs;
  const key = expandHome(host.key);
  if (!fs.existsSync(key)) throw new Error(`key ${key} does not exist`);
  for (let attempt = 1; ; attempt++) {
    const ssh = new NodeSSH();
    try {
      await ssh.connect({ host: host.address, port: host.port, username: host.user, privateKeyPath: key, readyTimeout: 10_000 });
      // node-ssh drops its own error listener once connected: without ours, a reset kills us
      ssh.connection?.on('error', () => undefined);
      return ssh;
    } catch (err) {
      ssh.dispose();
      if (/authentication|All configured authentication methods failed/i.test(errorMessage(err))) throw err;
      if (Date.now() + opts.retryMs > deadline) throw new Error(`unreachable after ${attempt} attempts: ${errorMessage(err)}`);
      opts.out(`${host.name}: not answering (${errorMessage(err)}), retrying in ${Math.round(opts.retryMs / 1000)} s`);
      await new Promise((r) => setTimeout(r, opts.retryMs));
    }
  }
}

function envFile(matrix: Matrix, host: Host): string {
  const vars: Record<string, string | undefined> = {
    WARREN_IMAGE: matrix.image,
    WARREN_SUITE_IMAGE: matrix.suiteImage,
    WARREN_BROKER_URL: matrix.broker,
    WARREN_REQUIRE_ROLES: matrix.requireRoles ? '1' : '0',
    WARREN_WORKERS: String(host.workers),
    WARREN_SUPERVISOR_ID: host.name,
    WARREN_LABELS: Object.entries(host.labels).map(([k, v]) => (v ? `${k}=${v}` : k)).join(','),
    WARREN_MEMORY: host.memory,
    WARREN_CPUS: host.cpus === undefined ? undefined : String(host.cpus),
    WARREN_NETWORK: host.network,
  };
  return Object.entries(vars).filter(([, v]) => v !== undefined && v !== '').map(([k, v]) => `${k}=${v}`).join('\n') + '\n';
}

async function deployHost(host: Host, opts: DeployOptions): Promise<HostOutcome> {
  let ssh: NodeSSH | undefined;
  try {
    ssh = await connect(host, opts);
    const dir = host.dir ?? `warren-${host.name}`;
    const project = `warren-${host.name}`.toLowerCase();
    const run = async (command: string, what: string) => {
      // node-ssh has no timeout of its own; `code` is null on a signal or a lost connection
      const r = await ssh!.execCommand(`timeout 300 sh -c ${shq(command)}`);
      if (r.code !== 0) throw new Error(`${what} failed (${r.code === null ? 'connection lost' : `exit ${r.code}`}): ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`);
      return r.stdout;
    };
    if (opts.down) {
      await run(`cd ${shq(dir)} 2>/dev/null || exit 0; docker-compose -p ${project} down --timeout 60`, 'docker-compose down');
      return { host: host.name, ok: true, detail: 'supervisor down' };
    }
    await run(`mkdir -p ${shq(dir)}`, 'mkdir');
    const local = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-deploy-'));
    try {
      fs.writeFileSync(path.join(local, '.env'), envFile(opts.matrix, host), { mode: 0o600 });
      const home = (await run('pwd', 'pwd')).trim();
      const remote = dir.startsWith('/') ? dir : `${home}/${dir}`;
      await ssh.putFile(opts.composeFile, `${remote}/docker-compose.yml`);
      await ssh.putFile(path.join(local, '.env'), `${remote}/.env`);
      // it holds the broker's password
      await run(`chmod 600 ${shq(`${remote}/.env`)}`, 'chmod');
    } finally {
      fs.rmSync(local, { recursive: true, force: true });
    }
    await run(`cd ${shq(dir)} && docker-compose -p ${project} up -d --remove-orphans`, 'docker-compose up');
    return { host: host.name, ok: true, detail: `supervisor up, ${host.workers} workers` };
  } catch (err) {
    return { host: host.name, ok: false, detail: errorMessage(err) };
  } finally {
    ssh?.dispose();
  }
}

export interface HostsOptions {
  broker: Broker;
  /** How long to listen for heartbeats (supervisors beat every 2 s). */
  listenMs: number;
  matrix?: Matrix;
  out: (line: string) => void;
}

/** Prints each supervisor that beats, and the matrix hosts that do not. */
export async function hosts(opts: HostsOptions): Promise<Heartbeat[]> {
  const seen = new Map<string, Heartbeat>();
  await opts.broker.watch(EXCHANGES.status, '', `warren.hosts.${randomUUID().slice(0, 8)}`, async (d) => {
    d.ack();
    const hb = parseMessage(Heartbeat, d.body);
    if (hb.ok) seen.set(hb.value.supervisor, hb.value);
  }, { kind: 'transient' });
  await new Promise((r) => setTimeout(r, opts.listenMs));
  const waiting = await waitingSpecs(opts.broker);
  const rows = [...seen.values()].sort((a, b) => a.supervisor.localeCompare(b.supervisor));
  opts.out(`${'supervisor'.padEnd(20)} ${'host'.padEnd(16)} ${'driver'.padEnd(7)} ${'state'.padEnd(9)} workers  busy  runs / labels`);
  for (const hb of rows) {
    const busy = hb.slots.filter((s) => s.state === 'busy');
    const runs = [...new Set(busy.map((s) => s.runId).filter(Boolean))];
    const labels = Object.entries(hb.labels).map(([k, v]) => (v ? `${k}=${v}` : k));
    const state = hb.drained && hb.state === 'running' ? 'drained' : hb.state;
    opts.out(
      `${hb.supervisor.padEnd(20)} ${hb.host.padEnd(16)} ${hb.driver.padEnd(7)} ${state.padEnd(9)} ${String(hb.slots.length).padStart(7)} ${String(busy.length).padStart(5)}  ${[...runs, ...labels].join(' ') || '-'}`,
    );
    if (hb.drained) opts.out(`${''.padEnd(20)} drained: ${hb.drained}`);
  }
  for (const h of opts.matrix?.hosts ?? []) {
    if (!seen.has(h.name)) opts.out(`${h.name.padEnd(20)} ${h.address.padEnd(16)} no heartbeat in ${Math.round(opts.listenMs / 1000)} s (down, or not deployed)`);
  }
  const slots = rows.filter((hb) => hb.state === 'running' && !hb.drained).reduce((n, hb) => n + hb.slots.filter((x) => x.state !== 'stopped').length, 0);
  opts.out(`work queues: ${waiting.total} specs waiting${waiting.total ? ` (${waiting.byShard.map(([n, c]) => `${specQueue(n)}: ${c}`).join(', ')})` : ''}, ${slots} worker slots live`);
  return rows;
}

/** For health checks: the broker answers and the topology is there. */
export async function health(url: string, log: Logger): Promise<string> {
  const broker = new Broker({ url, name: 'warren health', log, connectAttempts: 1 });
  await broker.start();
  try {
    const waiting = await waitingSpecs(broker);
    const q = await broker.checkQueue(QUEUES.dispatcher);
    return `ok: ${waiting.total} specs waiting, ${q.consumerCount} dispatcher${q.consumerCount === 1 ? '' : 's'} consuming`;
  } finally {
    await broker.close();
  }
}
