/**
 * A run's per-worker setup and teardown (`--setup-command`, `--teardown-command`): the setup
 * runs once per slot before its first spec of the run (with the slot's TEST_ENV_NUMBER and
 * WARREN_WORKER_INDEX, in its container for docker: e.g. create and load that worker's
 * database), the teardown once when the slot leaves the run (the run ended, or the slot
 * stops). A setup that fails takes the slot out of that run (the caller reports it).
 */
import type { Logger } from '../../shared/log.js';
import type { SuiteConfig } from '../../shared/messages.js';
import type { Invocation, WorkerDriver } from './drivers/driver.js';

/** A teardown at a slot's stop waits at most this long. */
const TEARDOWN_AT_STOP_MS = 30_000;

export class RunSetups {
  /** Runs set up here (the suite, for the teardown), by run attempt key. */
  private readonly done = new Map<string, SuiteConfig>();

  constructor(
    private readonly driver: WorkerDriver,
    private readonly invocation: (suite: SuiteConfig, argv: string[]) => Invocation,
    private readonly log: Logger,
  ) {}

  /** Sets the run up on this slot if it has a setup and it has not been; the error, if it failed. */
  async ensure(key: string, suite: SuiteConfig): Promise<string | undefined> {
    if (this.done.has(key) || (!suite.setupCommand && !suite.teardownCommand)) return undefined;
    if (suite.setupCommand) {
      const error = await this.exec(suite, suite.setupCommand, suite.testTimeoutSec * 1000, 'setup');
      if (error) return error;
    }
    this.done.set(key, suite);
    return undefined;
  }

  /** The slot leaves this run: its teardown, if it was set up here. */
  async leave(key: string): Promise<void> {
    const suite = this.done.get(key);
    if (!suite) return;
    this.done.delete(key);
    if (suite.teardownCommand) await this.exec(suite, suite.teardownCommand, suite.testTimeoutSec * 1000, 'teardown');
  }

  /** The slot stops: every run it set up is left. */
  async leaveAll(): Promise<void> {
    await Promise.all([...this.done.keys()].map((k) => this.leaveWithin(k, TEARDOWN_AT_STOP_MS)));
  }

  private async leaveWithin(key: string, ms: number): Promise<void> {
    await Promise.race([this.leave(key), new Promise((r) => setTimeout(r, ms).unref())]);
  }

  /** Runs a shell command in the slot's environment; a one-line error if it failed. */
  private async exec(suite: SuiteConfig, command: string, timeoutMs: number, what: 'setup' | 'teardown'): Promise<string | undefined> {
    const started = Date.now();
    let proc;
    try {
      proc = await this.driver.start(this.invocation(suite, ['sh', '-c', command]));
    } catch (err) {
      return `${what} command could not start: ${(err as Error).message.split('\n')[0]}`;
    }
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    const exit = await proc.exited;
    clearTimeout(timer);
    const took = Date.now() - started;
    if (exit.code === 0) {
      this.log.info({ what, command, ms: took }, `${what} command done`);
      return undefined;
    }
    const why = exit.infra ?? (took >= timeoutMs ? `timed out after ${Math.round(timeoutMs / 1000)} s` : exit.signal ? `killed by ${exit.signal}` : `exited with code ${exit.code}`);
    const last = (proc.stderrTail() || proc.stdoutTail()).trim().split('\n').filter(Boolean).slice(-1)[0] ?? '';
    const error = `${what} command \`${command}\` ${why}${last ? `: ${last}` : ''}`;
    this.log.warn({ what, command, error }, `${what} command failed`);
    return error;
  }
}
