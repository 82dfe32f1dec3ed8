import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Journal } from '../../services/aggregator/journal.js';

const dir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'warren-journal-'));

test('appends are on disk, in order, when they resolve (many at once: one write)', async () => {
  const d = dir();
  const j = new Journal<{ n: number }>(d);
  await Promise.all(Array.from({ length: 100 }, (_, n) => j.append('run-a', { n })));
  const lines = fs.readFileSync(path.join(d, 'run-a.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).n);
  assert.deepEqual(lines, Array.from({ length: 100 }, (_, n) => n));
  assert.deepEqual(j.readAll().map((r) => [r.runId, r.entries.length]), [['run-a', 100]]);
  await j.close();
});

test('an append after a run\'s journal is removed does not recreate it', async () => {
  const d = dir();
  const j = new Journal<{ k: string }>(d);
  await j.append('run-b', { k: 'accepted' });
  await j.remove('run-b');
  await j.append('run-b', { k: 'round-sent' });
  assert.deepEqual(fs.readdirSync(d), [], 'a late decision left no journal for recovery to replay');
  await j.close();
});

test('a torn last line is skipped on reading', async () => {
  const d = dir();
  fs.writeFileSync(path.join(d, 'run-c.jsonl'), '{"k":"accepted"}\n{"k":"resu');
  assert.deepEqual(new Journal(d).readAll(), [{ runId: 'run-c', entries: [{ k: 'accepted' }] }]);
});
