/**
 * Local driver: test processes are children of the slot process, each in its own process
 * group so that a timeout kills the framework and whatever it started.
 */
import { spawn } from 'node:child_process';
import type { AdapterContext, Invocation, ProcessExit, RunningProcess, WorkerDriver } from './driver.js';
import { Tail } from './driver.js';
import { assetsDir } from '../adapters/adapter.js';
import { passedEnv } from '../confine.js';

export interface LocalDriverOptions {
  /** What tests see of this process's environment (confine.ts; default: nothing). */
  passEnv?: readonly string[];
  /** Warren's variables of the slot (worker index, TEST_ENV_NUMBER). */
  env?: Record<string, string>;
}

export class LocalDriver implements WorkerDriver {
  readonly name = 'local';
  readonly context: AdapterContext = { node: process.execPath, assets: assetsDir() };
  /** Computed once: the slot's environment does not change. */
  private readonly base: Record<string, string>;

  constructor(opts: LocalDriverOptions = { passEnv: ['*'] }) {
    // never the supervisor's secrets (WARREN_*: the broker URL, registry credentials) nor,
    // when Warren itself runs under `node --test`, NODE_TEST_CONTEXT (a suite's own
    // `node --test` would take itself for a child of that runner and report nothing)
    this.base = { ...passedEnv(process.env, opts.passEnv ?? []), ...opts.env };
  }

  async prepare(): Promise<void> {}

  async start(inv: Invocation): Promise<RunningProcess> {
    const [cmd, ...args] = inv.argv;
    const env: NodeJS.ProcessEnv = { ...this.base, ...inv.env };
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(cmd!, args, {
        cwd: inv.cwd,
        env,
        stdio: [inv.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
        detached: true,
      });
    } catch (e) {
      // thrown at once (E2BIG: an environment too big; ENOTDIR: cwd is a file): a process
      // that could not start, the same as one whose start failed later (ENOENT)
      return notStarted(`cannot start ${cmd} in ${inv.cwd}: ${(e as Error).message}`);
    }
    const out = new Tail();
    const err = new Tail();
    let stdinOpen = !!child.stdin;
    // A runner that died before reading its command: EPIPE is its exit's business, not ours.
    child.stdin?.on('error', () => (stdinOpen = false));
    child.stdout!.on('data', (c: Buffer) => out.push(c));
    child.stderr!.on('data', (c: Buffer) => err.push(c));
    const exited = new Promise<ProcessExit>((resolve) => {
      child.on('error', (e) => {
        err.push(Buffer.from(`cannot start ${cmd}: ${e.message}\n`));
        resolve({ code: 127, signal: null });
      });
      child.on('close', (code, signal) => resolve({ code, signal }));
    });
    const pgid = child.pid;
    return {
      pgid,
      exited,
      stdoutTail: () => out.toString(),
      stderrTail: () => err.toString(),
      resetTails: () => {
        out.clear();
        err.clear();
      },
      write: (data) => {
        if (!stdinOpen || !child.stdin) return false;
        child.stdin.write(data);
        return true;
      },
      closeStdin: () => {
        stdinOpen = false;
        child.stdin?.end();
      },
      kill(signal = 'SIGKILL') {
        if (pgid === undefined) return;
        try {
          process.kill(-pgid, signal);
        } catch {
          // already gone
        }
      },
    };
  }

  async dispose(): Promise<void> {}
}

/** A process that never started: exited 127, the reason on its stderr. */
function notStarted(reason: string): RunningProcess {
  return {
    exited: Promise.resolve({ code: 127, signal: null }),
    stdoutTail: () => '',
    stderrTail: () => reason + '\n',
    resetTails: () => undefined,
    write: () => false,
    closeStdin: () => undefined,
    kill: () => undefined,
  };
}
