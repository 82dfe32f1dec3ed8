import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { detectAdapter } from '../../cli/detect.js';
import { FIXTURES, ROOT, tmpDir } from '../helpers/cli.js';

const suite = (files: Record<string, string>) => {
  const dir = tmpDir();
  for (const [f, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), text);
  }
  return dir;
};

test('each fixture suite is recognised, with the reason', () => {
  const expect: Record<string, string> = {
    'rspec-suite': 'rspec', 'jest-suite': 'jest', 'vitest-suite': 'vitest', 'pytest-suite': 'pytest', 'go-suite': 'go', 'node-test-suite': 'node-test', 'playwright-suite': 'playwright',
  };
  for (const [dir, adapter] of Object.entries(expect)) {
    const found = detectAdapter(path.join(FIXTURES, dir));
    assert.equal(found.adapter, adapter, dir);
    assert.ok(found.why.length > 0);
  }
  assert.deepEqual(detectAdapter(path.join(ROOT, 'examples/js-suite')), { adapter: 'mocha', why: 'package.json scripts.test runs mocha' });
  assert.equal(detectAdapter(path.join(ROOT, 'examples/rspec-suite')).adapter, 'rspec');
});

test('config files count: pyproject, .mocharc, go.mod', () => {
  assert.equal(detectAdapter(suite({ 'pyproject.toml': '[tool.pytest.ini_options]\n' })).adapter, 'pytest');
  assert.equal(detectAdapter(suite({ '.mocharc.yml': 'spec: test\n' })).adapter, 'mocha');
  assert.equal(detectAdapter(suite({ 'go.mod': 'module x\n' })).adapter, 'go');
  assert.equal(detectAdapter(suite({ 'playwright.config.ts': 'export default {}\n' })).adapter, 'playwright');
});

test('ambiguity and nothing are clear errors asking for --adapter', () => {
  const both = suite({ 'package.json': JSON.stringify({ devDependencies: { jest: '30', vitest: '3' } }) });
  assert.throws(() => detectAdapter(both), /looks like jest \(package\.json dependency jest\) and vitest \(package\.json dependency vitest\); pass --adapter/);
  assert.throws(() => detectAdapter(suite({ 'README.md': 'hi' })), /cannot tell which test framework .*; pass --adapter/);
});
