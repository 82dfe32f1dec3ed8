import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { assetsDir } from '../../services/worker-supervisor/adapters/adapter.js';
import { tmpDir } from '../helpers/cli.js';

/** A warm runner's command loop (warren-plugin-common.cjs serve), with a batch that says how
 * many ids it got. */
const RUNNER = `
const common = require(${JSON.stringify(path.join(assetsDir(), 'warren-plugin-common.cjs'))});
const events = common.createEvents('test');
common.serve(events, async (ids) => {
  events.emit({ event: 'test_end', id: 'count', file: '', name: String(ids.length), status: 'passed' });
  return 0;
}, (e) => ({ message: String(e) }));
`;

test('a warm runner reads a command longer than a pipe\'s chunk whole (a batch of hundreds of long ids)', async () => {
  const dir = tmpDir();
  const child = spawn(process.execPath, ['-e', RUNNER], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b));
  const ids = Array.from({ length: 3000 }, (_, i) => `test/some/rather/deep/directory/file_${i % 40}.test.js :: a describe block > with a long test name number ${i}`);
  const first = path.join(dir, 'ev-1.jsonl');
  const second = path.join(dir, 'ev-2.jsonl');
  const line = JSON.stringify({ cmd: 'run', batch: 1, events: first, ids }) + '\n';
  assert.ok(line.length > 4 * 65_536, `the command is ${line.length} bytes`);
  // in pieces, as a pipe delivers it
  for (let i = 0; i < line.length; i += 10_000) child.stdin.write(line.slice(i, i + 10_000));
  child.stdin.end(JSON.stringify({ cmd: 'run', batch: 2, events: second, ids: ['one'] }) + '\n');
  const code = await new Promise((resolve) => child.on('exit', resolve));
  assert.equal(code, 0, `the runner exits 0 at the end of its stdin: ${stderr}`);
  const read = (f: string) => fs.readFileSync(f, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { event: string; name?: string; code?: number });
  assert.deepEqual(read(first).map((e) => [e.event, e.name ?? e.code]), [['test_end', '3000'], ['end', 0]]);
  assert.deepEqual(read(second).map((e) => [e.event, e.name ?? e.code]), [['test_end', '1'], ['end', 0]]);
  assert.equal(stderr, '');
});
