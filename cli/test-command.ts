/**
 * The project's own test command, read as Warren runs it: which framework it starts, the
 * options and paths it gives that framework, the environment it sets before it. From the
 * words after `warren run --` or from package.json's `scripts.test` (followed through
 * `npm run x` and `&&` chains).
 *
 * What reaches the framework is the suite's own options and paths, unchanged (its own option
 * parser reads them in the plug-in, with its config files, as a plain run would). Left out,
 * and said so: what Warren does itself (reporters, parallelism, watch mode, coverage, bail).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parse as shellParse } from 'shell-quote';
import { UsageError } from '../shared/errors.js';
import type { AdapterName } from '../shared/messages.js';

export interface TestCommand {
  adapter: AdapterName;
  /** For the framework's own option parser: options and paths, as given. */
  args: string[];
  /** Assignments before the command (`FOO=1 jest`, `cross-env FOO=1 jest`), and node's own
   * flags of `node --flag node_modules/.bin/jest` as NODE_OPTIONS. */
  env: Record<string, string>;
  /** Options Warren does itself, left out, each with why. */
  dropped: string[];
  /** Where the command came from: "the command after --", "package.json scripts.test". */
  source: string;
}

/** Options Warren does itself: the name (and its short form) → whether it takes a value, why. */
type DropTable = Record<string, { value: boolean; why: string }>;

const REPORTS = 'Warren reports';
const PARALLEL = 'Warren parallelises';
const WATCH = 'no watch mode in a distributed run';
const COVERAGE = 'coverage of many workers is not merged';
const BAIL = 'use --fail-fast / --max-failures';

const DROP: Partial<Record<AdapterName, DropTable>> = {
  mocha: {
    '--reporter': { value: true, why: REPORTS }, '-R': { value: true, why: REPORTS },
    '--reporter-option': { value: true, why: REPORTS }, '--reporter-options': { value: true, why: REPORTS }, '-O': { value: true, why: REPORTS },
    '--parallel': { value: false, why: PARALLEL }, '-p': { value: false, why: PARALLEL },
    '--jobs': { value: true, why: PARALLEL }, '-j': { value: true, why: PARALLEL },
    '--watch': { value: false, why: WATCH }, '-w': { value: false, why: WATCH },
    '--watch-files': { value: true, why: WATCH }, '--watch-ignore': { value: true, why: WATCH },
    '--bail': { value: false, why: BAIL }, '-b': { value: false, why: BAIL },
    '--dry-run': { value: false, why: 'Warren lists the tests itself' },
  },
  jest: {
    '--reporters': { value: true, why: REPORTS }, '--json': { value: false, why: REPORTS }, '--outputFile': { value: true, why: REPORTS },
    '--maxWorkers': { value: true, why: PARALLEL }, '-w': { value: true, why: PARALLEL },
    '--runInBand': { value: false, why: PARALLEL }, '-i': { value: false, why: PARALLEL }, '--shard': { value: true, why: PARALLEL },
    '--watch': { value: false, why: WATCH }, '--watchAll': { value: false, why: WATCH },
    '--coverage': { value: false, why: COVERAGE }, '--collectCoverage': { value: false, why: COVERAGE },
    '--bail': { value: false, why: BAIL }, '-b': { value: false, why: BAIL },
    '--listTests': { value: false, why: 'Warren lists the tests itself' },
    '--onlyChanged': { value: false, why: 'Warren runs what it discovered (use --pattern)' }, '-o': { value: false, why: 'Warren runs what it discovered (use --pattern)' },
  },
  vitest: {
    '--reporter': { value: true, why: REPORTS }, '--outputFile': { value: true, why: REPORTS },
    '--maxWorkers': { value: true, why: PARALLEL }, '--minWorkers': { value: true, why: PARALLEL }, '--shard': { value: true, why: PARALLEL },
    '--watch': { value: false, why: WATCH }, '-w': { value: false, why: WATCH }, '--run': { value: false, why: 'Warren runs once' },
    '--coverage': { value: false, why: COVERAGE }, '--ui': { value: false, why: REPORTS },
    '--bail': { value: true, why: BAIL },
  },
  pytest: {
    '-n': { value: true, why: PARALLEL }, '--numprocesses': { value: true, why: PARALLEL }, '--dist': { value: true, why: PARALLEL },
    '--maxprocesses': { value: true, why: PARALLEL },
    '-x': { value: false, why: BAIL }, '--exitfirst': { value: false, why: BAIL }, '--maxfail': { value: true, why: BAIL },
    '--junitxml': { value: true, why: REPORTS }, '--junit-xml': { value: true, why: REPORTS },
    '--cov': { value: false, why: COVERAGE }, '--cov-report': { value: true, why: COVERAGE }, '--cov-config': { value: true, why: COVERAGE },
    '--lf': { value: false, why: 'use --only-failures-from' }, '--last-failed': { value: false, why: 'use --only-failures-from' },
    '--sw': { value: false, why: BAIL }, '--stepwise': { value: false, why: BAIL },
  },
  rspec: {
    '--format': { value: true, why: REPORTS }, '-f': { value: true, why: REPORTS }, '--out': { value: true, why: REPORTS }, '-o': { value: true, why: REPORTS },
    '--fail-fast': { value: false, why: BAIL }, '--only-failures': { value: false, why: 'use --only-failures-from' },
    '--next-failure': { value: false, why: 'use --only-failures-from' }, '--bisect': { value: false, why: 'not in a distributed run' },
    '--dry-run': { value: false, why: 'Warren lists the tests itself' },
  },
  go: {
    '-p': { value: true, why: PARALLEL }, '-json': { value: false, why: REPORTS }, '-failfast': { value: false, why: BAIL },
    '-cover': { value: false, why: COVERAGE }, '-coverprofile': { value: true, why: COVERAGE },
  },
  playwright: {
    '--reporter': { value: true, why: REPORTS }, '--workers': { value: true, why: PARALLEL }, '-j': { value: true, why: PARALLEL },
    '--shard': { value: true, why: PARALLEL }, '--fully-parallel': { value: false, why: PARALLEL },
    '--max-failures': { value: true, why: BAIL }, '-x': { value: false, why: BAIL },
    '--last-failed': { value: false, why: 'use --only-failures-from' }, '--only-changed': { value: false, why: 'Warren runs what it discovered (use --pattern)' },
    '--list': { value: false, why: 'Warren lists the tests itself' }, '--ui': { value: false, why: WATCH }, '--debug': { value: false, why: 'not in a distributed run' },
  },
  'node-test': {
    '--test-reporter': { value: true, why: REPORTS }, '--test-reporter-destination': { value: true, why: REPORTS },
    '--test-concurrency': { value: true, why: PARALLEL }, '--watch': { value: false, why: WATCH },
    '--experimental-test-coverage': { value: false, why: COVERAGE }, '--test-shard': { value: true, why: PARALLEL },
  },
};

/** The framework an executable word names (its last path part: node_modules/.bin/jest). */
const EXECUTABLES: Record<string, AdapterName> = {
  mocha: 'mocha', _mocha: 'mocha', 'mocha.js': 'mocha',
  jest: 'jest', 'jest.js': 'jest',
  vitest: 'vitest', 'vitest.mjs': 'vitest',
  pytest: 'pytest', 'py.test': 'pytest',
  rspec: 'rspec',
};

/** node's flags that take the next word as their value. */
const NODE_VALUE_FLAGS = new Set(['--import', '--require', '-r', '--loader', '--experimental-loader', '--conditions', '-C', '--env-file', '--test-name-pattern', '--test-reporter', '--test-reporter-destination', '--test-concurrency', '--input-type']);

/** The command, from the words after `--` (as the shell gave them to warren). */
export function parseTestCommand(words: string[], source = 'the command after --'): TestCommand {
  const found = frameworkCommand(words);
  if (!found) {
    throw new UsageError(`warren run -- ${words.join(' ')}: no test framework in this command (expected mocha, jest, vitest, pytest, rspec, go test, node --test or playwright test)`);
  }
  return { ...found, source };
}

/**
 * The command of package.json's `scripts.test` in `cwd`, when it runs a framework, or
 * undefined (no package.json, no such script, or nothing Warren can run in it). Several
 * framework commands in one script (`mocha test/unit && mocha test/e2e`): the first, said so
 * in `dropped`.
 */
export function scriptTestCommand(cwd: string): TestCommand | undefined {
  let scripts: Record<string, string> | undefined;
  try {
    scripts = JSON.parse(fs.readFileSync(path.join(cwd, 'package.json'), 'utf8')).scripts;
  } catch {
    return undefined;
  }
  if (!scripts || typeof scripts.test !== 'string') return undefined;
  const commands: Array<{ found: Omit<TestCommand, 'source'>; script: string }> = [];
  const visit = (name: string, depth: number) => {
    const text = scripts![name];
    if (typeof text !== 'string' || depth > 4) return;
    for (const words of segments(text)) {
      const ref = scriptReference(words);
      if (ref !== undefined) {
        visit(ref, depth + 1);
        continue;
      }
      const found = frameworkCommand(words);
      if (found) commands.push({ found, script: name });
    }
  };
  visit('test', 0);
  const first = commands[0];
  if (!first) return undefined;
  const source = first.script === 'test' ? 'package.json scripts.test' : `package.json scripts["${first.script}"] (run by scripts.test)`;
  const others = commands.slice(1).map((c) => `${c.found.adapter} ${c.found.args.join(' ')} (Warren runs one command; pass the other after --)`);
  return { ...first.found, dropped: [...first.found.dropped, ...others], source };
}

/** The first line `warren run` prints about it. */
export function describeCommand(c: TestCommand): string {
  const args = c.args.length ? c.args.map(quote).join(' ') : '(no options)';
  const env = Object.keys(c.env).length ? `; env ${Object.entries(c.env).map(([k, v]) => `${k}=${quote(v)}`).join(' ')}` : '';
  const dropped = c.dropped.length ? `; left out: ${c.dropped.join(', ')}` : '';
  return `${c.adapter} ${args} (from ${c.source})${env}${dropped}`;
}

const quote = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/** A script's commands, each as its words (split at &&, ||, ;, |, &). */
function segments(text: string): string[][] {
  const out: string[][] = [[]];
  for (const t of shellParse(text, (key) => `$${key}`)) {
    if (typeof t === 'string') out[out.length - 1]!.push(t);
    else if ('op' in t && t.op === 'glob') out[out.length - 1]!.push((t as { pattern: string }).pattern);
    else if ('op' in t) out.push([]);
    else if ('comment' in t) break;
  }
  return out.filter((w) => w.length > 0);
}

/** `npm run x`, `npm test`, `yarn x`, `pnpm x` → the script it runs. */
function scriptReference(words: string[]): string | undefined {
  const w = words.filter((x) => !x.startsWith('-'));
  if (w[0] === 'npm' && (w[1] === 'run' || w[1] === 'run-script') && w[2]) return w[2];
  if ((w[0] === 'npm' || w[0] === 'yarn' || w[0] === 'pnpm') && w[1] === 'test') return 'test';
  if ((w[0] === 'yarn' || w[0] === 'pnpm') && w[1] === 'run' && w[2]) return w[2];
  if ((w[0] === 'yarn' || w[0] === 'pnpm') && w[1] && !['exec', 'dlx', 'node', 'add', 'install'].includes(w[1]) && !Object.hasOwn(EXECUTABLES, w[1])) return w[1];
  return undefined;
}

/**
 * The framework a command's words start, with its arguments: leading assignments become env;
 * wrappers (npx, cross-env, env, nyc, c8, bundle exec, yarn/pnpm exec...) are stepped over
 * to the first word that is a framework's executable.
 */
function frameworkCommand(words: string[]): Omit<TestCommand, 'source'> | undefined {
  const env: Record<string, string> = {};
  let i = 0;
  for (; i < words.length; i++) {
    const w = words[i]!;
    const assign = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(w);
    if (assign) {
      env[assign[1]!] = assign[2]!;
      continue;
    }
    const base = path.basename(w);
    if (Object.hasOwn(EXECUTABLES, base)) return withArgs(EXECUTABLES[base]!, words.slice(i + 1), env);
    if (base === 'go' && words[i + 1] === 'test') return withArgs('go', words.slice(i + 2), env);
    if (base === 'playwright' && words[i + 1] === 'test') return withArgs('playwright', words.slice(i + 2), env);
    if (/^python[\d.]*$/.test(base) && words[i + 1] === '-m' && words[i + 2] === 'pytest') return withArgs('pytest', words.slice(i + 3), env);
    if (base === 'node' || base === 'nodejs') {
      // node [flags] --test [args], or node [flags] <a framework's bin file> [args]
      let j = i + 1;
      const flags: string[] = [];
      while (j < words.length && words[j]!.startsWith('-') && words[j] !== '--test') {
        const flag = words[j++]!;
        flags.push(flag);
        if (NODE_VALUE_FLAGS.has(flag) && j < words.length) flags.push(words[j++]!);
      }
      if (words[j] === '--test') return withArgs('node-test', [...flags, ...words.slice(j + 1)], env);
      const script = words[j];
      const fw = script !== undefined ? frameworkOfScript(script) : undefined;
      if (!fw) return undefined;
      if (flags.length) env.NODE_OPTIONS = [env.NODE_OPTIONS, ...flags].filter(Boolean).join(' ');
      return withArgs(fw, words.slice(j + 1), env);
    }
    // anything else: a wrapper (npx, cross-env, nyc, bundle exec, ...) or not a test command
    if (!['npx', 'bunx', 'cross-env', 'env', 'nyc', 'c8', 'bundle', 'exec', 'yarn', 'pnpm', 'npm', 'dotenv', 'time', 'nice'].includes(base) && !w.startsWith('-')) {
      if (i === 0 || !isWrapperArg(words, i)) return undefined;
    }
  }
  return undefined;
}

/** After a wrapper, its own options and their values (`npx --yes`, `c8 -r lcov`). */
function isWrapperArg(words: string[], i: number): boolean {
  const prev = words[i - 1] ?? '';
  return prev.startsWith('-') || prev === 'exec' || prev === '--';
}

/** `node_modules/jest/bin/jest.js`, `node_modules/.bin/mocha` → the framework. */
function frameworkOfScript(file: string): AdapterName | undefined {
  const base = path.basename(file);
  if (Object.hasOwn(EXECUTABLES, base)) return EXECUTABLES[base];
  const m = /node_modules\/(mocha|jest|vitest)\//.exec(file);
  return m ? (m[1] as AdapterName) : undefined;
}

function withArgs(adapter: AdapterName, rest: string[], env: Record<string, string>): Omit<TestCommand, 'source'> {
  const table = DROP[adapter] ?? {};
  const args: string[] = [];
  const dropped: string[] = [];
  let words = rest;
  if (adapter === 'vitest' && (words[0] === 'run' || words[0] === 'related')) {
    dropped.push(`${words[0]} (Warren runs once)`);
    words = words.slice(1);
  }
  for (let k = 0; k < words.length; k++) {
    const w = words[k]!;
    const eq = w.indexOf('=');
    const name = w.startsWith('-') && eq > 0 ? w.slice(0, eq) : w;
    // --no-watch, --watch=false and such are harmless: only the name decides
    const ruleOf = (key: string) => (Object.hasOwn(table, key) ? table[key] : undefined);
    const rule = ruleOf(name) ?? (name.startsWith('--cov') && adapter === 'pytest' ? ruleOf('--cov') : undefined);
    const short = /^-[a-zA-Z]./.test(w) ? ruleOf(w.slice(0, 2)) : undefined;
    if (!rule && short?.value) {
      dropped.push(`${w} (${short.why})`); // -n2, -j2: a short option with its value attached
      continue;
    }
    if (!rule) {
      args.push(w);
      continue;
    }
    const withValue = rule.value && eq < 0 && k + 1 < words.length;
    dropped.push(`${withValue ? `${w} ${words[k + 1]}` : w} (${rule.why})`);
    if (withValue) k++;
  }
  if (adapter === 'go') return goFlags(args, env, dropped);
  return { adapter, args, env, dropped };
}

/**
 * `go test`'s flags go to the go command as GOFLAGS (`-tags=integration -race`), as go
 * documents it, so every go command of the plug-in (list, test, test -c) gets them; the
 * package patterns stay the arguments.
 */
function goFlags(words: string[], env: Record<string, string>, dropped: string[]): Omit<TestCommand, 'source'> {
  const flags: string[] = [];
  const patterns: string[] = [];
  for (let k = 0; k < words.length; k++) {
    const w = words[k]!;
    if (!w.startsWith('-')) {
      patterns.push(w);
      continue;
    }
    const name = w.replace(/^--?/, '-').split('=')[0]!;
    const value = w.includes('=') ? w.slice(w.indexOf('=') + 1) : GO_VALUE_FLAGS.has(name) ? words[++k] : undefined;
    if (value !== undefined && /\s/.test(value)) throw new UsageError(`warren run -- go test: ${name} ${JSON.stringify(value)}: a value with spaces cannot go into GOFLAGS; set it in the go env file (go env -w)`);
    flags.push(value === undefined ? name : `${name}=${value}`);
  }
  if (flags.length) env.GOFLAGS = [env.GOFLAGS, ...flags].filter(Boolean).join(' ');
  return { adapter: 'go', args: patterns, env, dropped };
}

/** go test's flags that take the next word as their value. */
const GO_VALUE_FLAGS = new Set(['-tags', '-run', '-skip', '-timeout', '-count', '-cpu', '-parallel', '-ldflags', '-gcflags', '-asmflags', '-mod', '-modfile', '-exec', '-coverpkg', '-covermode', '-bench', '-benchtime', '-shuffle', '-vet', '-o', '-pkgdir', '-toolexec', '-overlay', '-pgo', '-C']);
