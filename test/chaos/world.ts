/**
 * The chaos suite's world: RabbitMQ nodes of its own (one, or a cluster of three), and
 * Warren's services as real `warren` processes (two dispatchers, two aggregators, a local
 * and a docker supervisor), each reaching every node through a TCP proxy of its own (so
 * that its traffic alone can be dropped or stalled). A service that exits is started again
 * after a moment, as `restart: always` does in the compose files.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { privateCluster, privateRabbit, type PrivateRabbit } from '../helpers/private-rabbit.js';
import { tcpProxy, type Proxy } from '../helpers/proxy.js';
import { BIN } from '../helpers/cli.js';

const run = promisify(execFile);

export type ServiceKind = 'dispatcher' | 'aggregator' | 'supervisor';

export class Service {
  child?: ChildProcess;
  /** The aggregator holds the lease (its latest start said so). */
  active = false;
  starts = 0;
  /** Exits the world did not cause (a service that gave up by itself). */
  readonly ownExits: string[] = [];
  private killedByUs = false;
  private stopping = false;
  private readonly listeners = new Set<(msg: string, line: Record<string, unknown>) => void>();

  constructor(
    readonly name: string,
    readonly kind: ServiceKind,
    private readonly args: string[],
    readonly proxies: Proxy[],
    private readonly logFile: string,
    readonly driver?: 'local' | 'docker',
  ) {}

  get url(): string {
    return this.proxies.map((p) => `amqp://guest:guest@127.0.0.1:${p.port}`).join(',');
  }

  get pid(): number | undefined {
    return this.child?.exitCode === null && this.child.signalCode === null ? this.child.pid : undefined;
  }

  start(): void {
    this.starts++;
    this.active = false;
    this.killedByUs = false;
    const child = spawn(process.execPath, [BIN, this.kind, '--broker', this.url, ...this.args], {
      env: { ...process.env, WARREN_LOG_LEVEL: 'info' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    const out = fs.createWriteStream(this.logFile, { flags: 'a' });
    let rest = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      out.write(chunk);
      const parts = (rest + chunk).split('\n');
      rest = parts.pop()!;
      for (const line of parts) {
        let parsed: Record<string, unknown>;
        try {
          parsed = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        const msg = String(parsed.msg);
        if (msg === 'aggregator active (holds the lease)') this.active = true;
        if (msg === 'aggregator no longer active; standing by') this.active = false;
        for (const l of this.listeners) l(msg, parsed);
      }
    });
    child.on('exit', (code, signal) => {
      out.end();
      if (this.child !== child) return;
      this.active = false;
      if (this.stopping) return;
      if (!this.killedByUs) this.ownExits.push(`${this.name} exited by itself (${signal ?? `code ${code}`})`);
      setTimeout(() => {
        if (!this.stopping && this.child === child) this.start();
      }, 500);
    });
  }

  /** SIGKILL; the restart policy brings it back. */
  kill(): boolean {
    const pid = this.pid;
    if (!pid) return false;
    this.killedByUs = true;
    process.kill(pid, 'SIGKILL');
    return true;
  }

  /** Resolves at the next log line with this `msg`. */
  next(msg: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.listeners.delete(l);
        reject(new Error(`${this.name}: no "${msg}" in ${timeoutMs} ms`));
      }, timeoutMs);
      const l = (m: string) => {
        if (m !== msg) return;
        clearTimeout(timer);
        this.listeners.delete(l);
        resolve();
      };
      this.listeners.add(l);
    });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }
}

export interface WorldOptions {
  /** 1: a single node; 3: a cluster. */
  nodes: 1 | 3;
  dir: string;
  /** A docker supervisor too (its containers can be killed). */
  docker: boolean;
  workers: number;
  /** The suite directory (mounted into the docker supervisor's containers). */
  suite: string;
  /** The docker supervisor's image. */
  image: string;
}

export class World {
  readonly nodes: PrivateRabbit[];
  readonly services: Service[] = [];
  /** The nodes' own URLs, comma-separated (the CLI's: it is not under the proxies). */
  readonly url: string;
  private readonly destroyNodes: () => void;
  /** Nodes down on purpose (killed or stopped), by index. */
  readonly down = new Set<number>();

  constructor(private readonly opts: WorldOptions) {
    const base = 6100 + 3 * Math.floor(Math.random() * 200);
    if (opts.nodes === 3) {
      const cluster = privateCluster([base, base + 1, base + 2]);
      this.nodes = cluster.nodes;
      this.url = cluster.url;
      this.destroyNodes = () => cluster.destroy();
      this.startNodes = () => cluster.start();
    } else {
      const node = privateRabbit(base);
      this.nodes = [node];
      this.url = node.url;
      this.destroyNodes = () => node.destroy();
      this.startNodes = () => node.start();
    }
  }

  private readonly startNodes: () => Promise<void>;

  async start(): Promise<void> {
    await this.startNodes();
    const logs = path.join(this.opts.dir, 'logs');
    fs.mkdirSync(logs, { recursive: true });
    const add = async (name: string, kind: ServiceKind, args: string[], driver?: 'local' | 'docker') => {
      const proxies: Proxy[] = [];
      for (const n of this.nodes) {
        const p = await tcpProxy({ host: '127.0.0.1', port: Number(new URL(n.url).port) });
        await p.listen();
        proxies.push(p);
      }
      const s = new Service(name, kind, args, proxies, path.join(logs, `${name}.log`), driver);
      this.services.push(s);
    };
    for (const i of [1, 2]) await add(`dispatcher-${i}`, 'dispatcher', ['--no-history']);
    for (const i of [1, 2]) await add(`aggregator-${i}`, 'aggregator', ['--report-dir', path.join(this.opts.dir, `aggregator-${i}-reports`)]);
    await add('supervisor-local', 'supervisor', ['--workers', String(this.opts.workers), '--id', 'chaos-local', '--grace', '5'], 'local');
    if (this.opts.docker) {
      await add('supervisor-docker', 'supervisor', [
        '--workers', String(this.opts.workers), '--id', 'chaos-docker', '--driver', 'docker', '--image', this.opts.image, '--mount-suite-rw', '--grace', '5',
      ], 'docker');
    }
    for (const s of this.services) s.start();
    await Promise.all(this.services.filter((s) => s.kind === 'aggregator').map((s) => s.next('aggregator running (a standby until it holds the lease)', 60_000)));
  }

  of(kind: ServiceKind): Service[] {
    return this.services.filter((s) => s.kind === kind);
  }

  /** rabbitmqctl on one node, without blocking the proxies' event loop. */
  async ctl(node: number, ...args: string[]): Promise<string> {
    const { stdout } = await run('rabbitmqctl', ['-n', this.nodes[node]!.node, ...args], { encoding: 'utf8', timeout: 60_000 });
    return stdout;
  }

  /** kill -9 of a node's VM. */
  async killNode(node: number): Promise<void> {
    const pid = Number((await this.ctl(node, 'eval', 'list_to_integer(os:getpid()).')).trim());
    if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no pid for node ${node}`);
    this.down.add(node);
    process.kill(pid, 'SIGKILL');
  }

  async restartNode(node: number): Promise<void> {
    await this.nodes[node]!.start();
    this.down.delete(node);
  }

  /** Stops everything; `keepLogs`: the nodes' logs are copied into the world's directory first. */
  async stop(keepLogs = false): Promise<void> {
    await Promise.all(this.services.map((s) => s.stop()));
    for (const s of this.services) for (const p of s.proxies) await p.cut();
    if (keepLogs) {
      for (const n of this.nodes) fs.cpSync(path.join(n.dir, 'log'), path.join(this.opts.dir, 'logs', n.node.replace(/@.*/, '')), { recursive: true });
    }
    this.destroyNodes();
  }
}
