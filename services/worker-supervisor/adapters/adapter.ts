/**
 * Framework adapters, worker side: how to list a suite's tests without running them and how
 * to run a given set of test ids. `rspec` and `mocha` speak the events protocol (PROTOCOL.md)
 * through a plug-in of ours; `command` runs any command, one test per process, and reads
 * the exit code.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WARM_ADAPTERS, type AdapterName, type SuiteConfig, type TestRef } from '../../../shared/messages.js';
import type { AdapterContext } from '../drivers/driver.js';

/** Files the slot gives the framework process. */
export interface RunFiles {
  /** Where the framework plug-in writes its events (JSON lines). */
  events: string;
  /** Where the slot writes the ids to run, one per line (for plug-ins that read them). */
  ids: string;
  /** Where a `junit` run command writes its JUnit XML. */
  junit: string;
}

export interface Adapter {
  readonly name: AdapterName;
  /** How results come back: events as they happen (PROTOCOL.md), a JUnit XML file at the
   * end, or only the exit code. */
  readonly results: 'events' | 'junit' | 'exit-code';
  /** The plug-in reads the ids to run from WARREN_IDS_FILE (else they are in the argv). */
  readonly readsIdsFile?: boolean;
  discover(suite: SuiteConfig, ctx: AdapterContext): string[];
  run(suite: SuiteConfig, tests: TestRef[], ctx: AdapterContext, files: RunFiles): string[];
  /** The warm runner (PROTOCOL.md, serve): one process fed batch after batch on stdin. */
  serve?(suite: SuiteConfig, ctx: AdapterContext): string[];
  /** For adapters without events: the tests listed on the discover command's stdout. */
  parseDiscoveryOutput?(stdout: string): TestRef[];
}

/** The directory of our framework plug-ins (not compiled: copied as they are). */
export function assetsDir(): string {
  // dist/services/worker-supervisor/adapters → the source tree's adapters/assets
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [
    path.join(here, 'assets'),
    path.resolve(here, '../../../../services/worker-supervisor/adapters/assets'),
  ];
  return candidates.find((d) => fs.existsSync(d)) ?? candidates[1]!;
}

const rspecBase = (suite: SuiteConfig, ctx: AdapterContext): string[] => {
  const bundled = fs.existsSync(path.join(suite.cwd, 'Gemfile'));
  const formatter = path.join(ctx.assets, 'warren_formatter.rb');
  return [
    ...(bundled ? ['bundle', 'exec', 'rspec'] : ['rspec']),
    '--require', formatter, '--format', 'WarrenFormatter', '--out', '/dev/null', '--no-color',
  ];
};

/** rspec's options that take the next word as their value (rspec-core's Parser). */
const RSPEC_VALUE_OPTIONS = new Set([
  '-I', '-r', '--require', '-O', '--options', '--order', '--seed', '--failure-exit-code', '--error-exit-code',
  '-f', '--format', '-o', '--out', '--deprecation-out', '-e', '--example', '-E', '--example-matches',
  '-t', '--tag', '--default-path', '-P', '--pattern', '--exclude-pattern',
]);

/** The suite's rspec options without its paths: a batch names its own examples instead. */
export function rspecOptions(args: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('-')) continue; // a path of the suite's command
    out.push(a);
    if (RSPEC_VALUE_OPTIONS.has(a) && i + 1 < args.length) out.push(args[++i]!);
  }
  return out;
}

export const rspec: Adapter = {
  name: 'rspec',
  results: 'events',
  // the suite's own options and paths choose what is discovered; a batch, its own examples
  discover: (suite, ctx) => [...rspecBase(suite, ctx), ...suite.args, '--dry-run'],
  run: (suite, tests, ctx) => [...rspecBase(suite, ctx), ...rspecOptions(suite.args), ...tests.map((t) => t.id)],
  // the suite's helpers loaded once, a fork per batch (warren_rspec.rb); its options follow `serve`
  serve: (suite, ctx) => [
    ...(fs.existsSync(path.join(suite.cwd, 'Gemfile')) ? ['bundle', 'exec', 'ruby'] : ['ruby']),
    path.join(ctx.assets, 'warren_rspec.rb'), 'serve', ...rspecOptions(suite.args),
  ],
};

/**
 * An adapter whose plug-in is a script of ours run in the suite directory as
 * `<interpreter> <script> discover|run|serve`, reading the ids to run from WARREN_IDS_FILE.
 */
function scriptAdapter(name: AdapterName, script: string, interpreter: (suite: SuiteConfig, ctx: AdapterContext) => string): Adapter {
  const warm = WARM_ADAPTERS.includes(name);
  const argv = (suite: SuiteConfig, ctx: AdapterContext, mode: 'discover' | 'run' | 'serve') => [interpreter(suite, ctx), path.join(ctx.assets, script), mode];
  return {
    name, results: 'events', readsIdsFile: true,
    discover: (suite, ctx) => argv(suite, ctx, 'discover'),
    run: (suite, _tests, ctx) => argv(suite, ctx, 'run'),
    ...(warm ? { serve: (suite: SuiteConfig, ctx: AdapterContext) => argv(suite, ctx, 'serve') } : {}),
  };
}

const node = (_suite: SuiteConfig, ctx: AdapterContext) => ctx.node;

/** The suite's Python: WARREN_PYTHON in the run's env, else its .venv, else python3. */
const python = (suite: SuiteConfig) =>
  suite.env.WARREN_PYTHON ??
  ['.venv/bin/python', 'venv/bin/python'].map((p) => path.join(suite.cwd, p)).find((p) => fs.existsSync(p)) ??
  'python3';

export const mocha = scriptAdapter('mocha', 'warren-mocha.cjs', node);
const jest = scriptAdapter('jest', 'warren-jest.cjs', node);
const vitest = scriptAdapter('vitest', 'warren-vitest.mjs', node);
const nodeTest = scriptAdapter('node-test', 'warren-node-test.mjs', node);
const pytest = scriptAdapter('pytest', 'warren_pytest.py', python);
const go = scriptAdapter('go', 'warren-go.cjs', node);
// cold: a `playwright test` per batch (a browser test's own time dwarfs its start)
const playwright = scriptAdapter('playwright', 'warren-playwright.cjs', node);

export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The user's run template with `{ids}`, `{id}` and `{junit}` filled in, in one pass and each
 * value shell-quoted: a test id is never read as shell, nor as a placeholder (an id holding
 * `{id}` stays that text).
 */
export function template(run: string, tests: TestRef[], files?: RunFiles): string {
  const values: Record<string, string> = {
    ids: tests.map((t) => shellQuote(t.id)).join(' '),
    id: shellQuote(tests[0]!.id),
    junit: files ? shellQuote(files.junit) : '',
  };
  return run.replace(/\{(ids|id|junit)\}/g, (_, name: string) => values[name]!);
}

const listedIds = (stdout: string): TestRef[] =>
  [...new Set(stdout.split('\n').map((l) => l.trim()).filter(Boolean))].map((id) => ({ id, file: '', name: id }));

export const command: Adapter = {
  name: 'command',
  results: 'exit-code',
  discover: (suite) => ['sh', '-c', suite.command!.discover],
  run: (suite, tests) => ['sh', '-c', template(suite.command!.run, tests)],
  parseDiscoveryOutput: listedIds,
};

export const junit: Adapter = {
  name: 'junit',
  results: 'junit',
  discover: (suite) => ['sh', '-c', suite.command!.discover],
  run: (suite, tests, _ctx, files) => ['sh', '-c', template(suite.command!.run, tests, files)],
  parseDiscoveryOutput: listedIds,
};

const ADAPTERS: Record<AdapterName, Adapter> = { rspec, mocha, jest, vitest, 'node-test': nodeTest, pytest, go, playwright, command, junit };

export function adapterFor(name: AdapterName): Adapter {
  return ADAPTERS[name];
}
