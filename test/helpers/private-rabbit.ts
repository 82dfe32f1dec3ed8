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
  start(): Promise<void>;
  stop(): void;
  destroy(): void;
}

export function privateRabbit(port: number): PrivateRabbit {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-rabbit-'));
  const node = `warren-test-${port}@localhost`;
  fs.mkdirSync(path.join(dir, 'mnesia'));
  fs.mkdirSync(path.join(dir, 'log'));
  fs.writeFileSync(path.join(dir, 'rabbitmq.conf'), `listeners.tcp.default = ${port}\nloopback_users = none\n`);
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
    async start() {
      const r = spawnSync('rabbitmq-server', ['-detached'], { env, encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`rabbitmq-server -detached: ${r.stderr}`);
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
    destroy() {
      this.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
