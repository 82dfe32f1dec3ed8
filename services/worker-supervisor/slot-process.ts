/**
 * How a slot process comes to be: forked with its configuration (WARREN_SLOT), or forked
 * early as a spare that loads its modules and waits, then is handed its configuration and
 * environment over IPC (`adopt`). `warren run --local` forks its spares first thing, before
 * the command loads its own modules: a slot spends a few hundred ms loading, the run's first
 * batch waits for it, and the two loads then overlap instead of following each other.
 *
 * Only node built-ins here: bin/warren.js imports this module before anything else.
 */
import { fork, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SLOT_MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'slot-main.js');

/** In a spare's environment until it is adopted. */
export const SPARE_ENV = 'WARREN_SLOT_SPARE';

/** What a spare is told to become: the environment a fork would have given it, and its config (JSON). */
export interface Adopt {
  type: 'adopt';
  env: Record<string, string | undefined>;
  config: string;
}

const STDIO: ['ignore', 'inherit', 'inherit', 'ipc'] = ['ignore', 'inherit', 'inherit', 'ipc'];

/** A slot process with its configuration: a spare adopted when one is there, else a fork. */
export function startSlotProcess(env: NodeJS.ProcessEnv, config: string, spare?: ChildProcess): ChildProcess {
  if (spare && spare.connected && spare.exitCode === null && spare.signalCode === null) {
    spare.send({ type: 'adopt', env: { ...env }, config } satisfies Adopt);
    spare.ref();
    spare.channel?.ref();
    return spare;
  }
  return fork(SLOT_MAIN, [], { env: { ...env, WARREN_SLOT: config }, stdio: STDIO });
}

let spares: ChildProcess[] = [];

/**
 * `warren run --local [--workers n]` (argv as node gives it): forks its slot processes now,
 * as spares for the supervisor the command starts (takeSpares). Anything else: nothing.
 */
export function forkSpares(argv: readonly string[]): void {
  const args = argv.slice(2);
  if (args[0] !== 'run' || !args.includes('--local')) return;
  const at = args.findIndex((a) => a === '--workers' || a.startsWith('--workers='));
  const value = at < 0 ? undefined : args[at]!.includes('=') ? args[at]!.split('=')[1] : args[at + 1];
  const n = value === undefined ? os.availableParallelism() : Number(value);
  // a bad --workers is the command's to refuse, with its own message; a very large one is
  // forked by the supervisor as before (spares are a head start, not a pool)
  if (!Number.isInteger(n) || n < 1 || n > 64) return;
  spares = Array.from({ length: n }, () => {
    const child = fork(SLOT_MAIN, [], { env: { ...process.env, [SPARE_ENV]: '1' }, stdio: STDIO });
    // a spare nobody adopts leaves with this process (its IPC channel closes); until then it
    // must not keep this one alive
    child.unref();
    child.channel?.unref();
    child.on('error', () => undefined);
    return child;
  });
}

/** The spares forked so far, each handed out once. */
export function takeSpares(): ChildProcess[] {
  const taken = spares;
  spares = [];
  return taken;
}
