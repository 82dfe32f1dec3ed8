/**
 * The faults the chaos suite injects, one kind per entry. Each `inject` does the damage and,
 * for the faults that heal (a broker stopped, a memory alarm, a stalled link), heals it
 * after a moment; it resolves once healed and names what it hit. The random choices come
 * from the run's seeded generator, so a seed replays the same choices.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { promisify } from 'node:util';
import type { Service, World } from './world.js';

const exec = promisify(execFile);

/** mulberry32: small, fast, good enough to replay a schedule from a seed. */
export function seeded(seed: number): Rng {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    between: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: (xs) => xs[Math.floor(next() * xs.length)]!,
  };
}

export interface Rng {
  next(): number;
  between(lo: number, hi: number): number;
  pick<T>(xs: readonly T[]): T;
}

export interface FaultContext {
  world: World;
  rng: Rng;
  /** The test processes' log: `<run> <test> <pid> <host> start|end <ms>` lines. */
  execLog: string;
  /** Tests whose process the chaos killed: failed (or flaky) is their right outcome. */
  victims: Set<string>;
}

export interface Fault {
  kind: string;
  /** Can it be injected now (a target exists)? */
  possible(ctx: FaultContext): boolean;
  /** Does the damage (and heals it); resolves to what it hit. */
  inject(ctx: FaultContext): Promise<string>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const alive = (xs: Service[]) => xs.filter((s) => s.pid);
const upNodes = (w: World) => w.nodes.map((_, i) => i).filter((i) => !w.down.has(i));

/** A service killed with SIGKILL (its restart policy brings it back). */
function killService(kind: string, choose: (w: World) => Service[]): Fault {
  return {
    kind,
    possible: ({ world }) => alive(choose(world)).length > 0,
    async inject({ world, rng }) {
      const victim = rng.pick(alive(choose(world)));
      victim.kill();
      return victim.name;
    },
  };
}

async function childPids(pid: number): Promise<number[]> {
  try {
    const { stdout } = await exec('pgrep', ['-P', String(pid)], { encoding: 'utf8' });
    return stdout.split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Test processes started on this host and not ended (by the log), still alive. */
function runningTests(execLog: string): Array<{ key: string; pid: number }> {
  let text: string;
  try {
    text = fs.readFileSync(execLog, 'utf8');
  } catch {
    return [];
  }
  const open = new Map<string, { key: string; pid: number }>();
  for (const line of text.split('\n')) {
    const [run, test, pid, host, what] = line.split(' ');
    if (!run || host !== os.hostname()) continue;
    const id = `${run} ${test} ${pid}`;
    if (what === 'start') open.set(id, { key: `${run} ${test}`, pid: Number(pid) });
    else open.delete(id);
  }
  // still that test's shell (a pid of a test that never wrote its end may have been reused)
  return [...open.values()].filter(({ key, pid }) => {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return argv.includes('./t.sh') && argv.includes(key.split(' ')[1]!);
    } catch {
      return false;
    }
  });
}

async function containers(label: string): Promise<string[]> {
  const { stdout } = await exec('docker', ['ps', '-q', '--filter', `label=${label}`], { encoding: 'utf8' });
  return stdout.split('\n').filter(Boolean);
}

export const FAULTS: Fault[] = [
  killService('sigkill supervisor', (w) => w.of('supervisor')),
  {
    kind: 'sigkill slot',
    possible: ({ world }) => alive(world.of('supervisor')).length > 0,
    async inject({ world, rng }) {
      const sup = rng.pick(alive(world.of('supervisor')));
      const slots = await childPids(sup.pid!);
      if (slots.length === 0) return `${sup.name} (no slot up)`;
      const pid = rng.pick(slots);
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        return `${sup.name} (slot gone)`;
      }
      return `${sup.name} slot ${pid}`;
    },
  },
  {
    kind: 'sigkill test process',
    possible: () => true,
    async inject({ execLog, rng, victims }) {
      const running = runningTests(execLog);
      if (running.length === 0) return '(no test running on the local supervisor)';
      const t = rng.pick(running);
      victims.add(t.key);
      try {
        process.kill(t.pid, 'SIGKILL');
      } catch {
        // finished meanwhile: still allowed to fail (it may have been mid-exit)
      }
      return t.key;
    },
  },
  killService('sigkill aggregator (active)', (w) => w.of('aggregator').filter((s) => s.active)),
  killService('sigkill aggregator (standby)', (w) => w.of('aggregator').filter((s) => !s.active)),
  killService('sigkill dispatcher', (w) => w.of('dispatcher')),
  {
    kind: 'broker stop_app/start_app',
    possible: ({ world }) => world.down.size === 0,
    async inject({ world, rng }) {
      const node = rng.pick(upNodes(world));
      world.down.add(node);
      await world.ctl(node, 'stop_app');
      await sleep(rng.between(500, 3000));
      await world.ctl(node, 'start_app');
      world.down.delete(node);
      return world.nodes[node]!.node;
    },
  },
  {
    kind: 'broker kill -9',
    possible: ({ world }) => world.down.size === 0,
    async inject({ world, rng }) {
      const node = rng.pick(upNodes(world));
      await world.killNode(node);
      await sleep(rng.between(500, 3000));
      await world.restartNode(node);
      return world.nodes[node]!.node;
    },
  },
  {
    kind: 'close_all_connections',
    possible: ({ world }) => upNodes(world).length > 0,
    async inject({ world, rng }) {
      const node = rng.pick(upNodes(world));
      await world.ctl(node, 'close_all_connections', 'chaos: close_all_connections');
      return world.nodes[node]!.node;
    },
  },
  {
    kind: 'memory alarm',
    possible: ({ world }) => world.down.size === 0,
    async inject({ world, rng }) {
      const node = rng.pick(upNodes(world));
      await world.ctl(node, 'set_vm_memory_high_watermark', '0.000001');
      await sleep(rng.between(1000, 4000));
      await world.ctl(node, 'set_vm_memory_high_watermark', '0.4');
      return world.nodes[node]!.node;
    },
  },
  {
    kind: 'docker kill',
    possible: ({ world }) => world.services.some((s) => s.driver === 'docker'),
    async inject({ rng }) {
      const ids = await containers('warren.supervisor=chaos-docker');
      if (ids.length === 0) return '(no container up)';
      const id = rng.pick(ids);
      await exec('docker', ['kill', id]).catch(() => undefined);
      return id;
    },
  },
  {
    kind: 'proxy drop',
    possible: () => true,
    async inject({ world, rng }) {
      const s = rng.pick(world.services);
      for (const p of s.proxies) await p.cut();
      await sleep(rng.between(200, 2000));
      for (const p of s.proxies) await p.listen();
      return s.name;
    },
  },
  {
    kind: 'proxy stall',
    possible: () => true,
    async inject({ world, rng }) {
      const s = rng.pick(world.services);
      for (const p of s.proxies) p.pause();
      await sleep(rng.between(1000, 8000));
      for (const p of s.proxies) p.resume();
      return s.name;
    },
  },
];
