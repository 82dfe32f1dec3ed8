/**
 * The dispatcher against the real RabbitMQ: killed in the middle of publishing a round it
 * loses no test, and once the aggregator has the results none is counted twice.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createLogger } from '../../shared/log.js';
import { Broker } from '../../shared/broker.js';
import { AcceptedRun, Job, SCHEMA_VERSION, type Discovered, type RunAccepted, type RunReport, type SpecResult, type TestRef } from '../../shared/messages.js';
import { EXCHANGES, QUEUES, ROUTING, reportKey, specQueue } from '../../shared/topology.js';
import { Aggregator } from '../../services/aggregator/aggregator.js';
import { tcpProxy } from '../helpers/proxy.js';
import { createVhost, drainQueue, queueDepth, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { startService, stopService, tmpDir } from '../helpers/cli.js';

let vhost: TestVhost;
const children: ChildProcess[] = [];
before(async () => {
  vhost = await createVhost('warren-it-dispatcher');
});
after(async () => {
  for (const c of children) await stopService(c, 'SIGKILL');
  await vhost.delete();
});

test('a dispatcher SIGKILLed mid-publish loses no test and double-counts none once it is back', async () => {
  const log = createLogger('test', 'warn');
  const url = vhost.url;
  const broker = new Broker({ url, name: 'test', log });
  await broker.start();
  const aggregator = new Aggregator({ brokerUrl: url, reportDir: tmpDir(), log });
  await aggregator.start();
  try {
    const total = 5000;
    const tests: TestRef[] = Array.from({ length: total }, (_, i) => ({ id: `t${i}`, file: '', name: `test ${i}` }));
    const run = AcceptedRun.parse({
      type: 'run.request', runId: 'kill-dispatcher', id: 'kill-dispatcher', adapter: 'command', cwd: '/tmp',
      command: { discover: 'true', run: 'true {id}' }, acceptedAt: Date.now(), deadline: Date.now() + 600_000,
    });
    const reports: RunReport[] = [];
    await broker.watch(EXCHANGES.reports, reportKey(run.runId, 'report'), 'test.reports', async (d) => {
      reports.push(JSON.parse(d.body.toString()));
      d.ack();
    });
    const accepted: RunAccepted = { type: 'run.accepted', v: SCHEMA_VERSION, id: 'a', runId: run.runId, run };
    await broker.publish(EXCHANGES.events, ROUTING.runAccepted, accepted);

    // the first dispatcher talks to the broker through a proxy that lets its publishes
    // through up to a point mid-round, then holds them: it is killed mid-publish, always
    const proxy = await tcpProxy({ host: '127.0.0.1', port: 5672 });
    await proxy.listen();
    const first = startService(['dispatcher', '--broker', url.replace(/@[^/]+\//, `@127.0.0.1:${proxy.port}/`)]);
    children.push(first);
    await waitFor('the first dispatcher to consume', async () => (await broker.checkQueue(QUEUES.dispatcher)).consumerCount === 1, 30_000);
    proxy.stallAfter(1_000_000);
    const discovered: Discovered = { type: 'run.discovered', v: SCHEMA_VERSION, id: 'd', runId: run.runId, run, tests, worker: 'test' };
    await broker.publish(EXCHANGES.events, ROUTING.discovered, discovered);

    await waitFor('the first dispatcher to start publishing specs', async () => (await queueDepth(url, specQueue(run.shard))) >= 1, 30_000);
    first.kill('SIGKILL');
    await new Promise((r) => first.once('exit', r));
    await proxy.cut();
    await waitFor('the broker to see it gone', async () => (await broker.checkQueue(QUEUES.dispatcher)).consumerCount === 0, 30_000);
    const atKill = await queueDepth(url, specQueue(run.shard));
    assert.ok(atKill > 0 && atKill < total, `killed mid-publish (${atKill} of ${total} specs out)`);

    const second = startService(['dispatcher', '--broker', url]);
    children.push(second);
    // The unacked discovery comes back to the new dispatcher, which publishes the round again.
    await waitFor('the round to be published again', async () => (await queueDepth(url, specQueue(run.shard))) >= atKill + total, 60_000);
    await waitFor('the dispatcher to settle', async () => (await queueDepth(url, QUEUES.dispatcher)) === 0, 30_000);
    await stopService(second);

    // A fake worker: every spec on the queue, duplicates included, gets a result.
    const specs = await drainQueue(url, specQueue(run.shard));
    const seen = new Map<string, number>();
    for (const m of specs) {
      const job = Job.parse(JSON.parse(m.content.toString()));
      assert.equal(job.type, 'spec');
      if (job.type !== 'spec') continue;
      for (const t of job.tests) seen.set(t.id, (seen.get(t.id) ?? 0) + 1);
      const result: SpecResult = {
        type: 'spec.result', v: SCHEMA_VERSION, id: `${job.id}/result`, runId: job.runId, specId: job.id, round: 1, worker: 'fake',
        results: job.tests.map((t) => ({ testId: t.id, file: t.file, name: t.name, status: 'passed', durationMs: 1 })),
      };
      await broker.publish(EXCHANGES.events, ROUTING.specResult, result);
    }
    assert.equal(seen.size, total, 'no test lost');
    assert.ok([...seen.values()].some((n) => n > 1), 'some tests were published twice (and must be counted once)');

    const report = await waitFor('the report', () => reports[0], 60_000);
    assert.equal(report.totals.total, total);
    assert.equal(report.totals.passed, total, 'each test counted once');
    assert.equal(new Set(report.tests.map((t) => t.id)).size, total);
  } finally {
    await aggregator.stop();
    await broker.close();
  }
});
