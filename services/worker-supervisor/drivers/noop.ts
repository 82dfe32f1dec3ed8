/**
 * The no-op driver: starts nothing and reports a clean exit at once. With the `command`
 * adapter every test passes instantly, which measures Warren's own overhead (broker,
 * dispatch, confirms, aggregation) without any framework: `npm run bench` uses it.
 */
import type { AdapterContext, Invocation, RunningProcess, WorkerDriver } from './driver.js';

export class NoopDriver implements WorkerDriver {
  readonly name = 'noop';
  readonly context: AdapterContext = { node: 'node', assets: '/nonexistent' };
  async prepare(): Promise<void> {}
  async start(_inv: Invocation): Promise<RunningProcess> {
    return {
      exited: Promise.resolve({ code: 0, signal: null }),
      kill: () => undefined,
      stdoutTail: () => '',
      stderrTail: () => '',
      resetTails: () => undefined,
      write: () => false,
      closeStdin: () => undefined,
    };
  }
  async dispose(): Promise<void> {}
}
