/**
 * Discovery, paid once per version of a suite: the tests a discovery found, stored on the
 * worker host under a key made of the suite's configuration (adapter, directory, command,
 * environment, image) and a fingerprint of its files. An unchanged suite starts running
 * its tests at once; any change to a file re-discovers.
 *
 * The fingerprint is the image's id when the code is baked into a docker image (images are
 * immutable), else a walk of the suite directory: every file's path and content (read only
 * when its size or mtime changed since the last walk). An env value under the temporary
 * directory counts by its name only. Dependency and cache directories are left out of the walk (node_modules, .git,
 * __pycache__, ...): the frameworks' own caches change on every run.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { SuiteConfig, TestRef } from '../../shared/messages.js';

/** Directories no suite's test list depends on, but that change under every run. */
const SKIP = new Set([
  '.git', '.hg', '.svn', 'node_modules', '__pycache__', '.pytest_cache', '.mypy_cache', '.ruff_cache', '.tox', '.nox',
  '.venv', 'venv', '.cache', 'coverage', '.nyc_output', '.jest-cache', '.vitest', 'tmp', 'log',
  // Playwright's artifacts (screenshots, traces, its HTML report), written by every run
  'test-results', 'playwright-report', 'blob-report',
  // Warren's own output, by default in the directory `warren run` runs in (often the suite's)
  'warren-report', 'warren-reports', '.warren',
]);
/** A suite this big is not walked (the walk would cost more than it saves). */
const MAX_FILES = 200_000;

export interface CachedDiscovery {
  tests: TestRef[];
  at: number;
}

export class DiscoveryCache {
  constructor(private readonly dir: string) {}

  /** The key of a suite's current state, or undefined when it cannot be had. */
  key(suite: SuiteConfig, fingerprint: string | null | undefined): string | undefined {
    if (fingerprint === null) return undefined;
    const content = fingerprint ?? walkFingerprint(suite.cwd, path.join(this.dir, `stat-${crypto.createHash('sha256').update(suite.cwd).digest('hex').slice(0, 16)}.json`));
    if (content === undefined) return undefined;
    const config = JSON.stringify([suite.adapter, suite.cwd, suite.command ?? null, suite.args, sorted(suite.env), suite.image ?? null]);
    return crypto.createHash('sha256').update(config).update('\0').update(content).digest('hex').slice(0, 32);
  }

  get(key: string): CachedDiscovery | undefined {
    try {
      const data = JSON.parse(fs.readFileSync(this.file(key), 'utf8')) as CachedDiscovery;
      return Array.isArray(data.tests) ? data : undefined;
    } catch {
      return undefined;
    }
  }

  /** Written whole or not at all (a rename), so a reader never sees half a list. */
  put(key: string, tests: TestRef[]): void {
    try {
      fs.mkdirSync(this.dir, { recursive: true });
      const tmp = `${this.file(key)}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, JSON.stringify({ tests, at: Date.now() } satisfies CachedDiscovery));
      fs.renameSync(tmp, this.file(key));
    } catch {
      // a cache: a failed write costs the next run a discovery, nothing more
    }
  }

  private file(key: string): string {
    return path.join(this.dir, `${key}.json`);
  }
}

/**
 * The run's env as part of the key, sorted; a value naming a temporary path counts by its
 * name only: runs often get a fresh `mktemp -d` (a state directory) that no test list
 * depends on, and it would make every run a miss.
 */
function sorted(env: Record<string, string>): Array<[string, string]> {
  const tmp = [os.tmpdir(), '/tmp', '/var/tmp'].map((d) => d.replace(/\/+$/, '') + '/');
  return Object.entries(env)
    .map(([k, v]): [string, string] => [k, tmp.some((d) => v.startsWith(d)) ? '<tmp>' : v])
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** What a walk remembers of a file: its size and mtime, and the hash of its content then. */
type StatCache = Record<string, [size: number, mtimeMs: number, sha: string]>;

/**
 * The content of every file under `root` (path and content hash), hashed; undefined if the
 * root is unreadable or too big. Content, not mtimes: frameworks rewrite files unchanged
 * (jest saves every snapshot file a run touched), which must not cost a discovery. A file
 * whose size and mtime are those of the last walk keeps its remembered hash (`statFile`,
 * as git's index does), so only changed files are read.
 */
export function walkFingerprint(root: string, statFile?: string): string | undefined {
  let previous: StatCache = {};
  if (statFile) {
    try {
      previous = JSON.parse(fs.readFileSync(statFile, 'utf8')) as StatCache;
    } catch {
      // first walk of this suite
    }
  }
  const next: StatCache = {};
  const hash = crypto.createHash('sha256');
  let files = 0;
  const walk = (dir: string, rel: string): boolean => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return rel !== ''; // the root itself must be readable
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const abs = path.join(dir, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        if (SKIP.has(e.name)) continue;
        if (!walk(abs, r)) return false;
      } else if (e.isFile() || e.isSymbolicLink()) {
        if (++files > MAX_FILES) return false;
        let sha = '?'; // a dangling link, an unreadable file
        try {
          const st = fs.statSync(abs);
          const known = previous[r];
          sha = known && known[0] === st.size && known[1] === st.mtimeMs
            ? known[2]
            : crypto.createHash('sha1').update(fs.readFileSync(abs)).digest('hex');
          next[r] = [st.size, st.mtimeMs, sha];
        } catch {
          // counted as '?'
        }
        hash.update(`${r}\0${sha}\n`);
      }
    }
    return true;
  };
  if (!walk(root, '')) return undefined;
  if (statFile) {
    try {
      fs.mkdirSync(path.dirname(statFile), { recursive: true });
      fs.writeFileSync(`${statFile}.${process.pid}.tmp`, JSON.stringify(next));
      fs.renameSync(`${statFile}.${process.pid}.tmp`, statFile);
    } catch {
      // the next walk reads every file again
    }
  }
  return hash.digest('hex');
}
