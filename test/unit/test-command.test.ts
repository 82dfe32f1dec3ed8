/**
 * Reading a project's test command: the framework, its options and paths as given, the
 * environment set before it, and what Warren does itself left out (and said so).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describeCommand, parseTestCommand, scriptTestCommand } from '../../cli/test-command.js';

const withScripts = (scripts: Record<string, string>) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-test-command-'));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ scripts }));
  return dir;
};

test('the words after --: the framework, its options and paths unchanged, the reporter left out', () => {
  const c = parseTestCommand(['mocha', '--require', 'test/support/env', '--reporter', 'spec', '--check-leaks', 'test/', 'test/acceptance/']);
  assert.equal(c.adapter, 'mocha');
  assert.deepEqual(c.args, ['--require', 'test/support/env', '--check-leaks', 'test/', 'test/acceptance/']);
  assert.deepEqual(c.dropped, ['--reporter spec (Warren reports)']);
  assert.equal(describeCommand(c), 'mocha --require test/support/env --check-leaks test/ test/acceptance/ (from the command after --); left out: --reporter spec (Warren reports)');
});

test('wrappers are stepped over and assignments become env; node flags before a bin file become NODE_OPTIONS', () => {
  assert.deepEqual(parseTestCommand(['npx', 'jest', '--color=true', '-w', '2']), { adapter: 'jest', args: ['--color=true'], env: {}, dropped: ['-w 2 (Warren parallelises)'], source: 'the command after --' });
  const esm = parseTestCommand(['cross-env', 'TZ=UTC', 'node', '--experimental-vm-modules', 'node_modules/jest/bin/jest.js', '--ci']);
  assert.equal(esm.adapter, 'jest');
  assert.deepEqual(esm.env, { TZ: 'UTC', NODE_OPTIONS: '--experimental-vm-modules' });
  assert.deepEqual(esm.args, ['--ci']);
  assert.equal(parseTestCommand(['python3', '-m', 'pytest', '-p', 'no:cacheprovider', '-n2', 'tests/']).args.join(' '), '-p no:cacheprovider tests/');
  assert.equal(parseTestCommand(['c8', '-r', 'lcov', 'mocha', 'test/']).adapter, 'mocha');
  assert.equal(parseTestCommand(['bundle', 'exec', 'rspec', 'spec/models']).adapter, 'rspec');
  assert.deepEqual(parseTestCommand(['go', 'test', '-race', '-p', '4', '-tags', 'integration', './...']), {
    adapter: 'go', args: ['./...'], env: { GOFLAGS: '-race -tags=integration' }, dropped: ['-p 4 (Warren parallelises)'], source: 'the command after --',
  });
  assert.deepEqual(parseTestCommand(['node', '--import', 'tsx', '--test', 'test/']).args, ['--import', 'tsx', 'test/']);
  assert.equal(parseTestCommand(['vitest', 'run', '--reporter=verbose', 'src/']).args.join(' '), 'src/');
  assert.deepEqual(parseTestCommand(['npx', 'playwright', 'test', '--project=chromium', '-j', '4', 'e2e/']), {
    adapter: 'playwright', args: ['--project=chromium', 'e2e/'], env: {}, dropped: ['-j 4 (Warren parallelises)'], source: 'the command after --',
  });
});

test('a command that starts no framework is refused in one line naming it', () => {
  assert.throws(() => parseTestCommand(['eslint', '.']), /^UsageError: warren run -- eslint \.: no test framework in this command/);
  assert.throws(() => parseTestCommand(['npm', 'run', 'lint']), /no test framework/);
  assert.throws(() => parseTestCommand(['constructor', 'x']), /no test framework/, 'a word that is only an Object property is no framework');
  assert.deepEqual(parseTestCommand(['mocha', 'toString']).args, ['toString'], 'nor an option to leave out');
});

test('scripts.test is followed through npm run and && chains to the framework command', () => {
  const dir = withScripts({ test: 'npm run lint && npm run test:unit', lint: 'eslint .', 'test:unit': 'NODE_ENV=test mocha --reporter dot "test/**/*.spec.js"' });
  const c = scriptTestCommand(dir)!;
  assert.equal(c.adapter, 'mocha');
  assert.deepEqual(c.args, ['test/**/*.spec.js']);
  assert.deepEqual(c.env, { NODE_ENV: 'test' });
  assert.equal(c.source, 'package.json scripts["test:unit"] (run by scripts.test)');
  fs.rmSync(dir, { recursive: true });
});

test('two framework commands in one script: the first runs, the second is named as left out', () => {
  const dir = withScripts({ test: 'jest --ci && mocha test/e2e' });
  const c = scriptTestCommand(dir)!;
  assert.equal(c.adapter, 'jest');
  assert.deepEqual(c.dropped, ['mocha test/e2e (Warren runs one command; pass the other after --)']);
  fs.rmSync(dir, { recursive: true });
});

test('no package.json, no test script, or a script without a framework: nothing', () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-test-command-'));
  assert.equal(scriptTestCommand(empty), undefined);
  const lint = withScripts({ test: 'echo "Error: no test specified" && exit 1' });
  assert.equal(scriptTestCommand(lint), undefined);
  fs.rmSync(empty, { recursive: true });
  fs.rmSync(lint, { recursive: true });
});
