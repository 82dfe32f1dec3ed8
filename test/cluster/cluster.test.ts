/**
 * Warren on a 3-node RabbitMQ cluster of this test's own (own node names, ports and
 * directories): every service is given the three nodes' URLs; the node that leads
 * `warren.specs` is killed with kill -9 mid-run, the services fail over to the others, and
 * the run completes with every test reported once. Synchronised on marker files.
 *
 * Not in `npm test` yet (`npm run test:cluster`): it passed, then failed once here when the
 * killed node was the one every service was connected to: after the failover the slots'
 * publishes of results to warren.events were nacked for minutes (under investigation).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { privateCluster, type PrivateCluster } from '../helpers/private-rabbit.js';
import { waitFor } from '../helpers/rabbit.js';
import { readReport, runCli, startService, stopService, tmpDir } from '../helpers/cli.js';

let cluster: PrivateCluster;
const services: ChildProcess[] = [];
before(async () => {
  const base = 5800 + 3 * Math.floor(Math.random() * 60);
  cluster = privateCluster([base, base + 1, base + 2]);
  await cluster.start();
});
after(async () => {
  for (const s of services) await stopService(s, 'SIGKILL');
  cluster.destroy();
});

const TESTS = 40;

test('kill -9 of the node leading the run\'s work queue mid-run: the run completes on the other two, each test reported once', async () => {
  const url = cluster.url;
  services.push(
    startService(['dispatcher', '--broker', url, '--no-history']),
    startService(['aggregator', '--broker', url, '--report-dir', tmpDir()]),
    startService(['aggregator', '--broker', url, '--report-dir', tmpDir()]),
    startService(['supervisor', '--broker', url, '--workers', '2']),
  );
  const marks = tmpDir();
  const reportDir = tmpDir();
  const run = runCli([
    'run', '--broker', url, '--adapter', 'command', '--cwd', tmpDir(), '--report-dir', reportDir, '--max-batch', '1',
    '--discover-command', `seq 1 ${TESTS}`,
    '--run-command', 'echo x >> "$MARKS/t{id}"; sleep 0.2',
    '--env', `MARKS=${marks}`,
  ], { timeoutMs: 240_000 });
  await waitFor('a quarter of the tests to have run', () => fs.readdirSync(marks).length >= TESTS / 4, 120_000);
  // replicated on all three nodes
  // the run's work queue: the shard holding its specs
  const members = spawnSync('rabbitmqctl', ['-n', cluster.nodes[0]!.node, 'list_queues', 'name', 'members', 'messages', '--formatter', 'json'], { encoding: 'utf8' });
  const specs = (JSON.parse(members.stdout) as Array<{ name: string; members: string[]; messages: number }>).find((q) => q.name.startsWith('warren.specs.') && q.messages > 0);
  assert.equal(specs?.members.length, 3, members.stdout);
  const leader = cluster.leaderOf(specs!.name);
  leader.kill();
  const res = await run;
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  const report = readReport(reportDir);
  assert.equal(report.totals.total, TESTS);
  assert.equal(report.totals.passed, TESTS);
  assert.deepEqual(report.tests.map((t) => t.id).sort(), Array.from({ length: TESTS }, (_, i) => String(i + 1)).sort(), 'every test once, none invented');
  for (const t of report.tests) assert.deepEqual(t.attempts, ['passed'], `${t.id} counted once`);
});
