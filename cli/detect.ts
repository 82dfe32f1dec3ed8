/**
 * Which framework a suite directory uses, from what is in it: package.json dependencies,
 * scripts and config files, `.rspec`/`spec/`, pytest's config files, `go.mod`. One match:
 * that adapter and why; several: an error asking for --adapter; none: the same.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UsageError } from '../shared/errors.js';
import type { AdapterName } from '../shared/messages.js';

export interface Detection {
  adapter: AdapterName;
  why: string;
}

export function detectAdapter(cwd: string): Detection {
  const has = (f: string) => fs.existsSync(path.join(cwd, f));
  const read = (f: string) => (has(f) ? fs.readFileSync(path.join(cwd, f), 'utf8') : '');
  const found = new Map<AdapterName, string[]>();
  const add = (a: AdapterName, why: string) => found.set(a, [...(found.get(a) ?? []), why]);

  if (has('.rspec')) add('rspec', '.rspec');
  if (has('spec') && fs.readdirSync(path.join(cwd, 'spec'), { recursive: true }).some((f) => String(f).endsWith('_spec.rb'))) add('rspec', 'spec/**/*_spec.rb');
  if (/^\s*gem\s+['"]rspec/m.test(read('Gemfile'))) add('rspec', 'Gemfile (rspec)');

  if (has('pytest.ini')) add('pytest', 'pytest.ini');
  if (/^\[tool\.pytest/m.test(read('pyproject.toml'))) add('pytest', 'pyproject.toml [tool.pytest]');
  if (has('conftest.py')) add('pytest', 'conftest.py');
  if (/^\[(tool:)?pytest\]/m.test(read('setup.cfg') + read('tox.ini'))) add('pytest', 'setup.cfg/tox.ini [pytest]');

  if (has('go.mod')) add('go', 'go.mod');

  if (has('package.json')) {
    let pkg: { dependencies?: Record<string, string>; devDependencies?: Record<string, string>; scripts?: Record<string, string> } = {};
    try {
      pkg = JSON.parse(read('package.json'));
    } catch {
      // unreadable package.json: nothing to learn from it
    }
    const deps = { ...pkg.dependencies, ...pkg.devDependencies };
    const test = pkg.scripts?.test ?? '';
    if (deps['@playwright/test']) add('playwright', 'package.json dependency @playwright/test');
    else if (/(^|[\s;&|])playwright\s+test\b/.test(test)) add('playwright', 'package.json scripts.test runs playwright test');
    for (const fw of ['jest', 'vitest', 'mocha'] as const) {
      if (deps[fw]) add(fw, `package.json dependency ${fw}`);
      else if (new RegExp(`(^|[\\s;&|])${fw}(\\s|$)`).test(test)) add(fw, `package.json scripts.test runs ${fw}`);
    }
    if (/node\s+(--[\w-]+\s+)*--test\b/.test(test)) add('node-test', 'package.json scripts.test runs node --test');
  }
  {
    const files = fs.readdirSync(cwd);
    if (files.some((f) => /^jest\.config\.(js|cjs|mjs|ts|json)$/.test(f))) add('jest', 'jest.config');
    if (files.some((f) => /^vitest\.config\.(js|cjs|mjs|ts|mts)$/.test(f))) add('vitest', 'vitest.config');
    if (files.some((f) => /^\.mocharc\.(js|cjs|json|jsonc|yml|yaml)$/.test(f))) add('mocha', '.mocharc');
    if (files.some((f) => /^playwright\.config\.(js|cjs|mjs|ts|mts|cts)$/.test(f))) add('playwright', 'playwright.config');
  }

  const all = [...found.entries()];
  if (all.length === 1) return { adapter: all[0]![0], why: all[0]![1].join(', ') };
  if (all.length === 0) throw new UsageError(`--adapter: cannot tell which test framework ${cwd} uses; pass --adapter`);
  const list = all.map(([a, why]) => `${a} (${why.join(', ')})`).join(' and ');
  throw new UsageError(`--adapter: ${cwd} looks like ${list}; pass --adapter to choose`);
}
