/**
 * A RabbitMQ node of the test's own, for tests that stop or restart the broker (never the
 * shared one). Its files live in a temp dir owned by the `rabbitmq` user, which Debian's
 * wrapper drops to.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import amqp from 'amqplib';

export interface PrivateRabbit {
  url: string;
  node: string;
  /** Its files (log/ holds the broker's log). */
  dir: string;
  /** Boots the node; resolves once `url` logs in (or, `{ noLogin }`, once the node is up:
   * a node without users). */
  start(opts?: { noLogin?: boolean }): Promise<void>;
  /** rabbitmqctl against this node. */
  ctl(...args: string[]): string;
  stop(): void;
  /** kill -9 of the node's Erlang VM (no goodbye to its peers or clients). */
  kill(): void;
  destroy(): void;
}

const nodeName = (port: number) => `warren-test-${port}@localhost`;

/**
 * A node of the test's own; with `peers` (the other nodes' ports), a node of a cluster that
 * forms at boot (classic config peer discovery).
 */
export function privateRabbit(port: number, peers: number[] = [], extra: { config?: (dir: string) => string; files?: Record<string, string> } = {}): PrivateRabbit {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-rabbit-'));
  for (const [name, text] of Object.entries(extra.files ?? {})) fs.writeFileSync(path.join(dir, name), text);
  const node = nodeName(port);
  fs.mkdirSync(path.join(dir, 'mnesia'));
  fs.mkdirSync(path.join(dir, 'log'));
  const cluster = peers.length === 0 ? '' : [
    'cluster_formation.peer_discovery_backend = classic_config',
    ...[port, ...peers].sort().map((p, i) => `cluster_formation.classic_config.nodes.${i + 1} = ${nodeName(p)}`),
    '',
  ].join('\n');
  fs.writeFileSync(path.join(dir, 'rabbitmq.conf'), `listeners.tcp.default = ${port}\nloopback_users = none\n${cluster}${extra.config?.(dir) ?? ''}`);
  fs.writeFileSync(path.join(dir, 'enabled_plugins'), '[].\n');
  fs.chmodSync(dir, 0o755);
  execFileSync('chown', ['-R', 'rabbitmq:rabbitmq', dir]);
  const env = {
    ...process.env,
    RABBITMQ_NODENAME: node,
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(port + 20000),
    RABBITMQ_MNESIA_BASE: path.join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: path.join(dir, 'log'),
    RABBITMQ_CONFIG_FILE: path.join(dir, 'rabbitmq.conf'),
    RABBITMQ_ENABLED_PLUGINS_FILE: path.join(dir, 'enabled_plugins'),
  };
  const url = `amqp://guest:guest@127.0.0.1:${port}`;
  return {
    url,
    node,
    dir,
    ctl(...args: string[]) {
      const r = spawnSync('rabbitmqctl', ['-n', node, ...args], { env, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`rabbitmqctl ${args.join(' ')}: ${r.stderr || r.stdout}`);
      return r.stdout;
    },
    async start(opts = {}) {
      const r = spawnSync('rabbitmq-server', ['-detached'], { env, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`rabbitmq-server -detached: ${r.stderr}`);
      if (opts.noLogin) {
        // (the node's distribution comes up a moment after the start: until then every
        // rabbitmqctl fails at once)
        const until = Date.now() + 90_000;
        for (;;) {
          const up = spawnSync('rabbitmqctl', ['-n', node, 'await_startup', '--timeout', '60'], { env, encoding: 'utf8' });
          if (up.status === 0) return;
          if (Date.now() > until) throw new Error(`private RabbitMQ on ${port} did not start: ${up.stderr}`);
          await new Promise((res) => setTimeout(res, 250));
        }
      }
      const until = Date.now() + 90_000;
      for (;;) {
        try {
          const conn = await amqp.connect(url);
          await conn.close();
          return;
        } catch (err) {
          if (Date.now() > until) throw new Error(`private RabbitMQ on ${port} did not start: ${(err as Error).message}`);
          await new Promise((res) => setTimeout(res, 250));
        }
      }
    },
    stop() {
      spawnSync('rabbitmqctl', ['-n', node, 'stop'], { env, encoding: 'utf8' });
    },
    kill() {
      const r = spawnSync('rabbitmqctl', ['-n', node, 'eval', 'list_to_integer(os:getpid()).'], { env, encoding: 'utf8' });
      const pid = Number(r.stdout.trim());
      if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no pid for ${node}: ${r.stdout}${r.stderr}`);
      process.kill(pid, 'SIGKILL');
    },
    destroy() {
      this.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface PrivateCluster {
  nodes: PrivateRabbit[];
  /** Every node's URL, comma-separated (what services are given). */
  url: string;
  start(): Promise<void>;
  /** The node that leads `queue` (a quorum queue or a stream). */
  leaderOf(queue: string, vhost?: string): PrivateRabbit;
  destroy(): void;
}

/** A cluster of `ports.length` nodes of the test's own, formed at boot. */
export function privateCluster(ports: number[]): PrivateCluster {
  const nodes = ports.map((p) => privateRabbit(p, ports.filter((q) => q !== p)));
  return {
    nodes,
    url: nodes.map((n) => n.url).join(','),
    async start() {
      await Promise.all(nodes.map((n) => n.start()));
      const until = Date.now() + 120_000;
      for (;;) {
        const r = spawnSync('rabbitmqctl', ['-n', nodes[0]!.node, 'cluster_status', '--formatter', 'json'], { encoding: 'utf8' });
        try {
          const running = (JSON.parse(r.stdout) as { running_nodes: string[] }).running_nodes;
          if (running.length === nodes.length) return;
        } catch {
          // not up yet
        }
        if (Date.now() > until) throw new Error(`the cluster did not form: ${r.stdout}${r.stderr}`);
        await new Promise((res) => setTimeout(res, 500));
      }
    },
    leaderOf(queue, vhost = '/') {
      for (const n of nodes) {
        const r = spawnSync('rabbitmqctl', ['-n', n.node, '-p', vhost, 'list_queues', 'name', 'leader', '--formatter', 'json'], { encoding: 'utf8' });
        if (r.status !== 0) continue;
        const row = (JSON.parse(r.stdout) as Array<{ name: string; leader: string }>).find((q) => q.name === queue);
        const leader = nodes.find((m) => m.node === row?.leader);
        if (leader) return leader;
      }
      throw new Error(`no leader found for ${queue}`);
    },
    destroy() {
      for (const n of nodes) n.destroy();
    },
  };
}
