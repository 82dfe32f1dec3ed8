import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../helpers/cli.js';

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

const importsOf = (file: string) => [...fs.readFileSync(file, 'utf8').matchAll(/from '(\.[^']+)'/g)].map((m) => path.resolve(path.dirname(file), m[1]!));

test('services never import each other, only shared/', () => {
  const services = fs.readdirSync(path.join(ROOT, 'services'));
  for (const service of services) {
    for (const file of sources(path.join(ROOT, 'services', service))) {
      for (const target of importsOf(file)) {
        const rel = path.relative(path.join(ROOT, 'services'), target);
        if (rel.startsWith('..')) {
          assert.ok(path.relative(ROOT, target).startsWith('shared'), `${path.relative(ROOT, file)} imports ${path.relative(ROOT, target)}`);
        } else {
          assert.equal(rel.split(path.sep)[0], service, `${path.relative(ROOT, file)} imports another service: ${rel}`);
        }
      }
    }
  }
});

test('shared/ imports nothing from services or the CLI', () => {
  for (const file of sources(path.join(ROOT, 'shared'))) {
    for (const target of importsOf(file)) assert.ok(path.relative(ROOT, target).startsWith('shared'), `${path.relative(ROOT, file)} imports ${target}`);
  }
});
