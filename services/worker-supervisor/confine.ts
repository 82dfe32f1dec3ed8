/**
 * What a run may reach of the host it runs on: the directories its tests may run in
 * (`--allow-cwd`), the images it may name (`--allow-image`) and what its tests see of the
 * supervisor's own environment (`--pass-env`). A
 * run request comes from whoever may publish to the broker; these are the operator's bounds
 * on it.
 */
import fs from 'node:fs';
import path from 'node:path';

/** Why `cwd` is outside the allowed roots (symlinks resolved), or null when it is inside (or no roots: anywhere). */
export function cwdProblem(cwd: string, roots: readonly string[]): string | null {
  if (roots.length === 0) return null;
  const real = (p: string) => {
    try {
      return fs.realpathSync(p);
    } catch {
      return path.resolve(p);
    }
  };
  const where = real(cwd);
  const inside = roots.some((root) => {
    const r = real(root);
    return where === r || where.startsWith(r.endsWith(path.sep) ? r : r + path.sep);
  });
  return inside ? null : `suite directory ${cwd} is outside the directories this supervisor allows (--allow-cwd ${roots.join(',')})`;
}

/** The part of `env` that `pass` lets through (names, `PREFIX*`, `*`); WARREN_* never. */
export function passedEnv(env: NodeJS.ProcessEnv, pass: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  const allowed = (name: string) => pass.some((p) => (p.endsWith('*') ? name.startsWith(p.slice(0, -1)) : name === p));
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined || name.startsWith('WARREN_') || name === 'NODE_TEST_CONTEXT') continue;
    if (allowed(name)) out[name] = value;
  }
  return out;
}

/** `registry.local/*` matches `registry.local/app:1` (`*`: any run of characters, `/` too). */
export function globMatch(pattern: string, value: string): boolean {
  const re = new RegExp(`^${pattern.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
  return re.test(value);
}
