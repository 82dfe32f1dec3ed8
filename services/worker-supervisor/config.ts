/**
 * The supervisor's configuration, parsed once into a validated form: flags, then
 * environment (WARREN_*), then a JSON file (--config), then defaults. A bad value stops the
 * supervisor at start with the field named.
 */
import fs from 'node:fs';
import { z } from 'zod';
import { UsageError } from '../../shared/errors.js';

const size = z
  .union([z.number().int().min(0), z.string().regex(/^\d+(\.\d+)?\s*[kmgKMG]?[bB]?$/, 'expected a size like 512m or 2g')])
  .transform((v) => {
    if (typeof v === 'number') return v;
    const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)/i.exec(v)!;
    const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g'];
    return Math.round(Number(m[1]) * unit);
  });

/**
 * What test processes of the local driver see of the supervisor's own environment besides
 * the run's `env` and Warren's variables: names, or prefixes ending in `*` (`*`: all).
 * WARREN_* (the broker URL with its password, registry credentials) never.
 */
export const DEFAULT_PASS_ENV = ['PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'LANGUAGE', 'LC_*', 'TZ', 'TERM'];
const envName = z.string().regex(/^(\*|[A-Za-z_][A-Za-z0-9_]*\*?)$/, 'an environment variable name, or a prefix ending in *');

/** A worker container's limits unless the operator says otherwise. */
export const DEFAULT_MEMORY = 4 * 1024 ** 3;
export const DEFAULT_PIDS_LIMIT = 2048;
export const DEFAULT_TMP_SIZE = 1024 ** 3;
/** Who tests run as in a container when the supervisor (as root) is not told: not root. */
export const DEFAULT_CONTAINER_USER = '10001:10001';

export const SupervisorConfig = z.object({
  workers: z.coerce.number().int().min(1).max(256).default(2),
  id: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'letters, digits, "_", "." or "-"').optional(),
  /** Parent of the slots' directories; with docker, a host path the engine can mount. */
  dir: z.string().optional(),
  graceSec: z.coerce.number().positive().max(7 * 24 * 3600, 'at most a week').default(30),
  /** Caches that outlive runs (the frameworks' own, discovery); default ~/.cache/warren. */
  cacheDir: z.string().min(1).optional(),
  /** A warm runner whose resident memory is above this after a batch is retired. */
  runnerMaxMemory: size.default(2 * 1024 ** 3),
  /** What this host offers (`ruby`, `gpu`, `os=linux`): a run that requires labels is served
   * only by supervisors that have them all; shown by `warren hosts`. */
  labels: z.record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:/-]*$/, 'a label name: letters, digits, "_", ".", ":", "/", "-"'), z.string()).default({}),
  passEnv: z.array(envName).default(DEFAULT_PASS_ENV),
  /** Directories a run's `cwd` must be under, where it is this host's (the local driver,
   * --mount-suite); none: anywhere (a warning at start). */
  allowCwd: z.array(z.string().regex(/^\//, 'an absolute path')).default([]),
  /** Images a run may name (`*` a wildcard); none: any. The supervisor's own --image always. */
  allowImage: z.array(z.string().min(1)).default([]),
  driver: z.enum(['local', 'docker', 'noop']).default('local'),
  docker: z
    .object({
      /** Image when a run names none. */
      image: z.string().min(1).optional(),
      isolation: z.enum(['slot', 'spec']).default('slot'),
      /** Limits per container, on by default (0: none). */
      memory: size.default(DEFAULT_MEMORY),
      /** CPUs per container; default: this host's cores shared by the slots. */
      cpus: z.coerce.number().min(0).optional(),
      pidsLimit: z.coerce.number().int().min(0).default(DEFAULT_PIDS_LIMIT),
      network: z.enum(['none', 'host']).default('none'),
      /** uid[:gid] (or a name of the image's) the tests run as; default: not root. */
      user: z.string().min(1).optional(),
      /** Capabilities given back (every one is dropped: `CapDrop: ALL`). */
      capAdd: z.array(z.string().regex(/^[A-Z_]+$/, 'a capability name like NET_BIND_SERVICE')).default([]),
      /** The image's filesystem read-only (the slot's directory, TMPDIR, HOME and /tmp stay writable). */
      readOnly: z.coerce.boolean().default(false),
      /** The tests' TMPDIR: a tmpfs of this size, emptied between specs (0: a directory on the host's disk). */
      tmpSize: size.default(DEFAULT_TMP_SIZE),
      mountSuite: z.coerce.boolean().default(false),
      /** The mounted suite directory writable (read-only unless the operator says so). */
      mountSuiteWritable: z.coerce.boolean().default(false),
      registryAuth: z.object({ username: z.string(), password: z.string(), serveraddress: z.string().optional() }).optional(),
    })
    .default({ isolation: 'slot', memory: DEFAULT_MEMORY, pidsLimit: DEFAULT_PIDS_LIMIT, network: 'none', mountSuite: false, mountSuiteWritable: false, capAdd: [], readOnly: false, tmpSize: DEFAULT_TMP_SIZE }),
});
export type SupervisorConfig = z.infer<typeof SupervisorConfig>;
export type SupervisorConfigInput = z.input<typeof SupervisorConfig>;

const env = (name: string) => (process.env[name] === undefined || process.env[name] === '' ? undefined : process.env[name]);

/** Layers the sources and validates; throws a UsageError naming the field. */
export function loadSupervisorConfig(flags: SupervisorConfigInput & { config?: string }): SupervisorConfig {
  let file: Record<string, unknown> = {};
  if (flags.config) {
    try {
      file = JSON.parse(fs.readFileSync(flags.config, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new UsageError(`--config: cannot read ${flags.config}: ${(err as Error).message}`);
    }
  }
  const fileDocker = (file.docker ?? {}) as Record<string, unknown>;
  const auth = env('WARREN_REGISTRY_AUTH');
  const pick = <T>(...values: T[]) => values.find((v) => v !== undefined);
  const merged = {
    workers: pick(flags.workers, env('WARREN_WORKERS'), file.workers),
    id: pick(flags.id, env('WARREN_SUPERVISOR_ID'), file.id),
    dir: pick(flags.dir, env('WARREN_SUPERVISOR_DIR'), file.dir),
    graceSec: pick(flags.graceSec, file.graceSec),
    cacheDir: pick(flags.cacheDir, env('WARREN_SUPERVISOR_CACHE_DIR'), file.cacheDir),
    runnerMaxMemory: pick(flags.runnerMaxMemory, env('WARREN_RUNNER_MAX_MEMORY'), file.runnerMaxMemory),
    labels: pick(flags.labels, env('WARREN_LABELS') === undefined ? undefined : parseLabels(env('WARREN_LABELS')!, 'WARREN_LABELS'), file.labels),
    passEnv: pick(flags.passEnv, env('WARREN_PASS_ENV') === undefined ? undefined : list(env('WARREN_PASS_ENV')!), file.passEnv),
    allowCwd: pick(flags.allowCwd, env('WARREN_ALLOW_CWD') === undefined ? undefined : list(env('WARREN_ALLOW_CWD')!), file.allowCwd),
    allowImage: pick(flags.allowImage, env('WARREN_ALLOW_IMAGE') === undefined ? undefined : list(env('WARREN_ALLOW_IMAGE')!), file.allowImage),
    driver: pick(flags.driver, env('WARREN_DRIVER'), file.driver),
    docker: {
      image: pick(flags.docker?.image, env('WARREN_IMAGE'), fileDocker.image),
      isolation: pick(flags.docker?.isolation, env('WARREN_ISOLATION'), fileDocker.isolation),
      memory: pick(flags.docker?.memory, env('WARREN_MEMORY'), fileDocker.memory),
      cpus: pick(flags.docker?.cpus, env('WARREN_CPUS'), fileDocker.cpus),
      pidsLimit: pick(flags.docker?.pidsLimit, env('WARREN_PIDS_LIMIT'), fileDocker.pidsLimit),
      network: pick(flags.docker?.network, env('WARREN_NETWORK'), fileDocker.network),
      user: pick(flags.docker?.user, env('WARREN_USER'), fileDocker.user),
      capAdd: pick(flags.docker?.capAdd, env('WARREN_CAP_ADD') === undefined ? undefined : list(env('WARREN_CAP_ADD')!), fileDocker.capAdd),
      tmpSize: pick(flags.docker?.tmpSize, env('WARREN_TMP_SIZE'), fileDocker.tmpSize),
      readOnly: pick(flags.docker?.readOnly, env('WARREN_READ_ONLY') === undefined ? undefined : env('WARREN_READ_ONLY') === 'true', fileDocker.readOnly),
      mountSuite: pick(flags.docker?.mountSuite, env('WARREN_MOUNT_SUITE') === undefined ? undefined : ['true', 'rw'].includes(env('WARREN_MOUNT_SUITE')!), fileDocker.mountSuite),
      mountSuiteWritable: pick(flags.docker?.mountSuiteWritable, env('WARREN_MOUNT_SUITE') === undefined ? undefined : env('WARREN_MOUNT_SUITE') === 'rw', fileDocker.mountSuiteWritable),
      registryAuth: pick(flags.docker?.registryAuth, auth === undefined ? undefined : parseAuth(auth), fileDocker.registryAuth),
    },
  };
  const parsed = SupervisorConfig.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UsageError(`supervisor config: ${issue.path.join('.')}: ${issue.message}`);
  }
  return parsed.data;
}

/** `a,b, c` → ['a', 'b', 'c']. */
export function list(text: string): string[] {
  return text.split(',').map((p) => p.trim()).filter(Boolean);
}

/** `ruby,gpu,os=linux`: a bare name has the value '' (a run requiring `ruby` matches it). */
export function parseLabels(text: string, where = '--labels'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = pair.indexOf('=');
    if (eq === 0) throw new UsageError(`${where}: expected name or name=value[,...], got ${JSON.stringify(pair)}`);
    if (eq < 0) out[pair] = '';
    else out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

function parseAuth(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    throw new UsageError('WARREN_REGISTRY_AUTH: expected JSON {"username": ..., "password": ..., "serveraddress": ...}');
  }
}
