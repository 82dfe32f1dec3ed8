/**
 * Docker driver: each slot runs its tests in a container of the run's suite image, made
 * through dockerode, so workers act as separate hosts (own filesystem, processes, ports,
 * limits) without virtual machines. Tests run with `docker exec`, stdout and stderr kept
 * apart, with the real exit code.
 *
 * - Isolation `slot` (default): one long-lived container per slot, replaced when the image
 *   changes or it dies; `spec`: a fresh container for every spec.
 * - A hung test: Docker cannot kill an exec, so we exec `kill -9 -1` in the container (every
 *   process but its init); if the exec still does not end, the container is killed and
 *   replaced.
 * - The container's memory kill (OOM) is the test's result; a container that dies for any
 *   other reason is the worker's failure (`infra`): the slot gives the spec back.
 * - Containers carry labels naming their supervisor and slot; `prepare()` removes what an
 *   earlier process of the same slot left behind.
 * - The slot's directory (events files, TMPDIR) and the plug-ins directory are bind-mounted
 *   at the same paths, so paths mean the same inside and out.
 * - Hardened by default: tests run as a user that is not root (the supervisor's own, or
 *   10001 owning the slot's directories when the supervisor is root), every capability
 *   dropped (`--cap-add` gives some back), no-new-privileges, memory, CPU and pids limits,
 *   optionally a read-only image filesystem (`--read-only`: the slot's directory, HOME and
 *   /tmp stay writable), never the Docker socket. What a spec leaves running is killed
 *   before the next one; its TMPDIR is a tmpfs of bounded size (a test that fills it fails
 *   with ENOSPC, the host's disk is not touched), emptied between specs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import Docker from 'dockerode';
import type { Logger } from '../../../shared/log.js';
import type { AdapterContext, Invocation, ProcessExit, RunningProcess, WorkerDriver } from './driver.js';
import { Tail } from './driver.js';

export interface DockerSlotOptions {
  docker: Docker;
  supervisorId: string;
  slotIndex: number;
  /** The slot's own directory (a host path, mounted at the same path). */
  slotDir: string;
  /** The slot's cache directory (outlives runs), mounted at the same path. */
  cacheDir?: string;
  /** Our plug-ins, copied to a host path (mounted read-only at the same path). */
  assetsDir: string;
  /** Image when the run names none. */
  defaultImage?: string;
  isolation: 'slot' | 'spec';
  /** Bytes; 0 = no limit. */
  memory: number;
  nanoCpus: number;
  pidsLimit: number;
  network: 'none' | 'host';
  user?: string;
  /** Capabilities given back; every other is dropped. */
  capAdd?: string[];
  /** The image's filesystem read-only. */
  readOnly?: boolean;
  /** Bytes of the tmpfs that is the tests' TMPDIR (the slot's tmp/), emptied between specs; 0: the host's disk. */
  tmpSize?: number;
  /** Mount the suite directory (same path) into the container: for local use. */
  mountSuite: boolean;
  /** The mounted suite writable (default read-only). */
  mountSuiteWritable?: boolean;
  /** Environment of every process in the container (worker index, TEST_ENV_NUMBER). */
  env: Record<string, string>;
  /** Makes sure an image is present (pulled once, host-wide, by the supervisor). */
  ensureImage: (image: string) => Promise<void>;
  log: Logger;
}

export const LABELS = { supervisor: 'warren.supervisor', slot: 'warren.slot' } as const;
/** The tests' TMPDIR in a container with --tmp-size: a tmpfs of its own (one nested in the
 * slot's bind-mounted directory does not take its mode). */
const CONTAINER_TMP = '/warren-tmp';

interface Live {
  container: Docker.Container;
  image: string;
  cwd: string;
  oomAt?: number;
  events?: NodeJS.ReadableStream;
}

export class DockerDriver implements WorkerDriver {
  readonly name = 'docker';
  get isolatesSpecs(): boolean {
    return this.opts.isolation === 'spec';
  }
  readonly context: AdapterContext;
  private live?: Live;

  /** The tests' uid/gid when the slot (as root) must hand them what it makes. */
  private readonly owner?: { uid: number; gid: number };

  constructor(private readonly opts: DockerSlotOptions) {
    // The node of the suite image, on its PATH; our plug-ins where we mounted them.
    this.context = { node: 'node', assets: opts.assetsDir };
    const numeric = /^(\d+)(?::(\d+))?$/.exec(opts.user ?? '');
    if (numeric && process.getuid?.() === 0 && Number(numeric[1]) !== 0) {
      this.owner = { uid: Number(numeric[1]), gid: Number(numeric[2] ?? numeric[1]) };
    }
  }

  own(p: string): void {
    if (!this.owner) return;
    try {
      fs.chownSync(p, this.owner.uid, this.owner.gid);
    } catch {
      // gone already, or not ours to give
    }
  }

  /** Whatever is left running in the slot's container after a spec goes (its init stays). */
  async cleanup(keepRunner: boolean): Promise<void> {
    const live = this.live;
    if (!live || this.opts.isolation === 'spec') return;
    // all of the tests' processes (kill -1: all the caller may signal but init and itself),
    // twice for what forked meanwhile; with a warm runner alive, only orphans (init's
    // children) go: the runner and what it still waits for are not leftovers yet
    const tmp = CONTAINER_TMP;
    const script = keepRunner
      ? 'for d in /proc/[0-9]*; do p=${d#/proc/}; [ "$p" = 1 ] || [ "$p" = $$ ] && continue; while read k v; do [ "$k" = PPid: ] && { [ "$v" = 1 ] && kill -9 "$p"; break; }; done < "$d/status"; done 2>/dev/null; true'
      : `kill -9 -1 2>/dev/null; kill -9 -1 2>/dev/null; ${this.opts.tmpSize ? `rm -rf ${tmp}/* ${tmp}/.[!.]* 2>/dev/null; ` : ''}true`;
    try {
      const exec = await live.container.exec({ Cmd: ['sh', '-c', script], AttachStdout: true, AttachStderr: true, ...(this.opts.user ? { User: this.opts.user } : {}) });
      const stream = await exec.start({ hijack: true, stdin: false });
      await new Promise<void>((resolve) => {
        stream.on('end', resolve).on('close', resolve).on('error', resolve);
        stream.resume();
      });
      // the output's end can come a moment before the exec's
      for (let i = 0; i < 50 && (await exec.inspect()).Running; i++) await new Promise((r) => setTimeout(r, 20));
    } catch {
      // the container is gone: the next spec gets a fresh one
    }
  }

  async prepare(): Promise<void> {
    await removeContainers(this.opts.docker, {
      [LABELS.supervisor]: this.opts.supervisorId,
      [LABELS.slot]: String(this.opts.slotIndex),
    }, this.opts.log);
  }

  async start(inv: Invocation): Promise<RunningProcess> {
    const image = inv.image ?? this.opts.defaultImage;
    if (!image) return failed('no image: the run names none (--image) and the supervisor has no default (--image)');
    let live: Live;
    try {
      live = await this.container(image, inv.cwd);
    } catch (err) {
      const message = (err as Error).message;
      // An image that cannot be had is the run's problem, reported on its tests; an engine
      // that does not answer is ours.
      if (/pull|No such image|not found|manifest|denied|repository/i.test(message)) return failed(`image ${image}: ${message}`, 125);
      return failed(`docker: ${message}`, null, true);
    }
    const startedAt = Date.now();
    let exec: Docker.Exec;
    let stream: NodeJS.ReadWriteStream;
    try {
      exec = await live.container.exec({
      Cmd: inv.argv,
      Env: Object.entries({ ...this.opts.env, ...inv.env, ...(this.opts.tmpSize ? { TMPDIR: CONTAINER_TMP } : {}) }).map(([k, v]) => `${k}=${v}`),
      WorkingDir: inv.cwd,
      AttachStdout: true,
      AttachStderr: true,
      ...(inv.stdin ? { AttachStdin: true } : {}),
      Tty: false,
      ...(this.opts.user ? { User: this.opts.user } : {}),
      });
      stream = await exec.start({ hijack: true, stdin: !!inv.stdin });
    } catch (err) {
      // The container died (between two tests): the worker's failure, not the test's.
      const state = await this.state(live);
      if (!state?.Running) {
        void this.removeLive(); // a dead container is not left behind
        return failed(`container ${live.container.id.slice(0, 12)} died (${state ? `exit code ${state.ExitCode}` : 'gone'})`, null, true);
      }
      // e.g. no such working directory in the image: the run's problem, on its tests
      return failed(`docker exec in ${inv.cwd}: ${(err as Error).message}`, 126);
    }
    const out = new Tail();
    const err = new Tail();
    let stdinOpen = !!inv.stdin;
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    stdout.on('data', (c: Buffer) => out.push(c));
    stderr.on('data', (c: Buffer) => err.push(c));
    // Multiplexed output: demuxStream does not end the targets; the source's end is ours.
    this.opts.docker.modem.demuxStream(stream, stdout, stderr);
    const ended = new Promise<void>((resolve) => {
      stream.on('end', resolve);
      stream.on('close', resolve);
      stream.on('error', resolve);
    });
    void ended.then(() => (stdinOpen = false));
    let killing: Promise<void> | undefined;
    const exited = ended.then(async (): Promise<ProcessExit> => {
      await killing;
      const info = await exec.inspect().catch(() => undefined);
      const code = info?.ExitCode ?? null;
      // A SIGKILL we did not send: the container being killed (its state lags the exec's
      // end by a moment) or the kernel's memory killer (its event, too, comes a bit later).
      // Look again for a second before calling it the test's own doing.
      let state = await this.state(live);
      for (let i = 0; !killing && (code === 137 || code === null) && state?.Running && live.oomAt === undefined && i < 10; i++) {
        await new Promise((r) => setTimeout(r, 100));
        state = await this.state(live);
      }
      if (!state?.Running) {
        void this.removeLive(); // a dead container is not left behind
        if (state?.OOMKilled) return { code: null, signal: 'SIGKILL', oom: this.memoryText() };
        return { code: null, signal: null, infra: `container ${live.container.id.slice(0, 12)} died (${state ? `exit code ${state.ExitCode}` : 'gone'})` };
      }
      if (live.oomAt !== undefined && live.oomAt >= startedAt && code === 137) {
        return { code, signal: 'SIGKILL', oom: this.memoryText() };
      }
      const bySignal = code !== null && code > 128 && code < 160;
      return { code: bySignal ? null : code, signal: bySignal ? signalName(code - 128) : null };
    }).finally(async () => {
      if (this.opts.isolation === 'spec') await this.dispose();
    });
    return {
      exited,
      stdoutTail: () => out.toString(),
      stderrTail: () => err.toString(),
      resetTails: () => {
        out.clear();
        err.clear();
      },
      // The hijacked connection carries stdin; ending our side closes the exec's stdin.
      write: (data) => {
        if (!stdinOpen) return false;
        stream.write(data);
        return true;
      },
      closeStdin: () => {
        if (!stdinOpen) return;
        stdinOpen = false;
        stream.end();
      },
      kill: () => {
        killing ??= this.killAll(live, ended);
      },
    };
  }

  async fingerprint(image: string | undefined): Promise<string | null | undefined> {
    if (this.opts.mountSuite) return undefined; // the suite is this host's directory
    const name = image ?? this.opts.defaultImage;
    if (!name) return null;
    try {
      await this.opts.ensureImage(name);
      return `image:${(await this.opts.docker.getImage(name).inspect()).Id}`;
    } catch {
      return null; // discovery will say what is wrong with the image
    }
  }

  async dispose(): Promise<void> {
    // a container being made now is removed too, once made
    await this.making?.catch(() => undefined);
    await this.removeLive();
  }

  private async removeLive(): Promise<void> {
    const live = this.live;
    this.live = undefined;
    if (!live) return;
    (live.events as unknown as { destroy?: () => void } | undefined)?.destroy?.();
    await live.container.remove({ force: true }).catch(() => undefined);
  }

  // ---- internals ---------------------------------------------------------------------

  private state(live: Live) {
    return live.container.inspect().then((i) => i.State).catch(() => undefined);
  }

  private memoryText(): string {
    return this.opts.memory ? `container memory limit ${Math.round(this.opts.memory / 1048576)} MiB` : 'no container memory limit';
  }

  /**
   * The slot's container for this image, made (and the image pulled) when needed. One at a
   * time: a warm runner prewarming while the slot's discovery starts asks at the same moment,
   * and two containers made at once would leave one behind.
   */
  private container(image: string, cwd: string): Promise<Live> {
    const next = (this.making ?? Promise.resolve()).catch(() => undefined).then(() => this.containerNow(image, cwd));
    this.making = next;
    return next;
  }
  private making?: Promise<Live>;

  private async containerNow(image: string, cwd: string): Promise<Live> {
    if (this.live && this.live.image === image && (!this.opts.mountSuite || this.live.cwd === cwd)) {
      const state = await this.live.container.inspect().then((i) => i.State).catch(() => undefined);
      if (state?.Running) return this.live;
    }
    await this.removeLive();
    await this.opts.ensureImage(image);
    const binds = [`${this.opts.slotDir}:${this.opts.slotDir}`, `${this.opts.assetsDir}:${this.opts.assetsDir}:ro`];
    // the tests' own writable places when they are another user than the slot
    const home = path.join(this.opts.slotDir, 'home');
    for (const dir of [this.opts.slotDir, path.join(this.opts.slotDir, 'tmp'), home, ...(this.opts.cacheDir ? [this.opts.cacheDir] : [])]) {
      fs.mkdirSync(dir, { recursive: true });
      this.own(dir);
    }
    // the slot's caches that outlive runs (WARREN_CACHE_DIR of its processes)
    if (this.opts.cacheDir) binds.push(`${this.opts.cacheDir}:${this.opts.cacheDir}`);
    if (this.opts.mountSuite) binds.push(`${cwd}:${cwd}${this.opts.mountSuiteWritable ? '' : ':ro'}`);
    const container = await this.opts.docker.createContainer({
      Image: image,
      // a do-nothing init that outlives the tests; tests come in through exec
      Entrypoint: ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done'],
      Cmd: [],
      WorkingDir: cwd,
      Env: Object.entries({ ...(this.owner ? { HOME: home } : {}), ...this.opts.env }).map(([k, v]) => `${k}=${v}`),
      ...(this.opts.user ? { User: this.opts.user } : {}),
      Labels: { [LABELS.supervisor]: this.opts.supervisorId, [LABELS.slot]: String(this.opts.slotIndex) },
      HostConfig: {
        Binds: binds,
        NetworkMode: this.opts.network,
        CapDrop: ['ALL'],
        ...(this.opts.capAdd?.length ? { CapAdd: this.opts.capAdd } : {}),
        SecurityOpt: ['no-new-privileges'],
        ...(this.opts.readOnly ? { ReadonlyRootfs: true } : {}),
        Tmpfs: {
          ...(this.opts.readOnly ? { '/tmp': 'rw,nosuid,nodev' } : {}),
          ...(this.opts.tmpSize ? { [CONTAINER_TMP]: `rw,nosuid,nodev,mode=1777,size=${this.opts.tmpSize}` } : {}),
        },
        ...(this.opts.memory ? { Memory: this.opts.memory, MemorySwap: this.opts.memory } : {}),
        ...(this.opts.nanoCpus ? { NanoCpus: this.opts.nanoCpus } : {}),
        ...(this.opts.pidsLimit ? { PidsLimit: this.opts.pidsLimit } : {}),
      },
    });
    const live: Live = { container, image, cwd };
    try {
      await container.start();
      // The kernel's memory kills inside the container, when the victim is not its init.
      live.events = await this.opts.docker.getEvents({ filters: { container: [container.id], event: ['oom'] } });
      live.events.on('data', () => (live.oomAt = Date.now()));
      live.events.on('error', () => undefined);
    } catch (err) {
      await container.remove({ force: true }).catch(() => undefined);
      throw err;
    }
    this.live = live;
    this.opts.log.info({ container: container.id.slice(0, 12), image }, 'worker container started');
    return live;
  }

  /** Kills every process of the test; the container itself if that does not end the exec. */
  private async killAll(live: Live, ended: Promise<void>): Promise<void> {
    try {
      const k = await live.container.exec({ Cmd: ['kill', '-9', '-1'], AttachStdout: false, AttachStderr: false });
      await k.start({ Detach: true });
    } catch {
      // the container may be gone already
    }
    const done = await Promise.race([ended.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
    if (!done) {
      this.opts.log.warn({ container: live.container.id.slice(0, 12) }, 'test did not die inside its container; killing the container');
      await live.container.kill().catch(() => undefined);
    }
  }
}

/** Removes (force) every container with these labels. */
export async function removeContainers(docker: Docker, labels: Record<string, string>, log: Logger): Promise<number> {
  const list = await docker.listContainers({ all: true, filters: { label: Object.entries(labels).map(([k, v]) => `${k}=${v}`) } });
  for (const c of list) {
    await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
    log.info({ container: c.Id.slice(0, 12), labels }, 'removed a leftover worker container');
  }
  return list.length;
}

function failed(message: string, code: number | null = 125, infra = false): RunningProcess {
  return {
    exited: Promise.resolve(infra ? { code: null, signal: null, infra: message } : { code, signal: null }),
    kill: () => undefined,
    resetTails: () => undefined,
    write: () => false,
    closeStdin: () => undefined,
    stdoutTail: () => '',
    stderrTail: () => message,
  };
}

const SIGNALS: Record<number, string> = { 1: 'SIGHUP', 2: 'SIGINT', 6: 'SIGABRT', 9: 'SIGKILL', 11: 'SIGSEGV', 13: 'SIGPIPE', 15: 'SIGTERM' };
function signalName(n: number): string {
  return SIGNALS[n] ?? `signal ${n}`;
}
