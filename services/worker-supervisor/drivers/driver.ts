/**
 * The worker driver: where a slot's test processes run. The slot logic (what to run, how to
 * read results, when to time out) is the same for every driver; a driver only starts a
 * process in the slot's environment and kills it. `local` runs child processes; a `docker`
 * driver runs them with `docker exec` in the slot's own container.
 */

export interface Invocation {
  argv: string[];
  /** Added to the slot's own environment. */
  env: Record<string, string>;
  cwd: string;
  /** The run's suite image (docker driver). */
  image?: string;
  /** Give the process a stdin the slot writes to (a warm runner's commands); else none. */
  stdin?: boolean;
}

export interface ProcessExit {
  code: number | null;
  signal: string | null;
  /** The kernel killed it for memory (the container's limit). A result, pinned on the test. */
  oom?: string;
  /** The worker's environment itself failed (its container died, the engine is gone): not
   * the test's doing. The slot gives the spec back to the queue and is restarted. */
  infra?: string;
}

/** Where adapters find what they run, as seen by the test process. */
export interface AdapterContext {
  /** The node binary. */
  node: string;
  /** The directory holding our framework plug-ins. */
  assets: string;
}

export interface RunningProcess {
  /** Kills the process and everything it started (its process group, its exec). */
  kill(signal?: NodeJS.Signals): void;
  readonly exited: Promise<ProcessExit>;
  /** The last bytes of stdout / stderr, for failure details. */
  stdoutTail(): string;
  stderrTail(): string;
  /** Forgets the tails (a warm runner's next batch: its crash details are its own). */
  resetTails(): void;
  /** Writes to the process's stdin (started with `stdin: true`); false once it is closed. */
  write(data: string): boolean;
  /** Closes its stdin: a warm runner finishes and exits. */
  closeStdin(): void;
  /** Process group id on this host, when there is one (the supervisor reaps it). */
  readonly pgid?: number;
}

export interface WorkerDriver {
  readonly name: string;
  readonly context: AdapterContext;
  /** Every spec gets a fresh environment (docker `--isolation spec`): nothing may outlive
   * a spec, a warm runner included. */
  readonly isolatesSpecs?: boolean;
  /** What identifies the suite's files when they are not on this host's disk (docker: the
   * image's id, the code being baked into it); undefined: walk the suite directory on this
   * host; null: it cannot be known (no caching). */
  fingerprint?(image: string | undefined): Promise<string | null | undefined>;
  /** Makes a file or directory the slot made usable by the test processes (docker: theirs,
   * when they run as another user than the slot). */
  own?(p: string): void;
  /**
   * After a spec: stops whatever its processes left behind, so the next spec starts clean
   * (docker's long-lived slot container). `keepRunner`: a warm runner lives on in there;
   * only what no process of ours is the parent of goes.
   */
  cleanup?(keepRunner: boolean): Promise<void>;
  /** Prepares the slot (a directory, a container). Called once per slot process. */
  prepare(): Promise<void>;
  start(inv: Invocation): Promise<RunningProcess>;
  /** Releases what prepare() made. */
  dispose(): Promise<void>;
}

/** Keeps the last `max` bytes written to it. */
export class Tail {
  private chunks: Buffer[] = [];
  private size = 0;
  constructor(private readonly max = 16_384) {}
  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    while (this.size - (this.chunks[0]?.length ?? 0) >= this.max && this.chunks.length > 1) {
      this.size -= this.chunks.shift()!.length;
    }
  }
  clear(): void {
    this.chunks = [];
    this.size = 0;
  }
  toString(): string {
    const all = Buffer.concat(this.chunks);
    return all.subarray(Math.max(0, all.length - this.max)).toString('utf8');
  }
}
