/**
 * Bad input against the real broker and the real services: every malformed or unknown
 * message is dead-lettered with its reason, no service crashes, and a good run still works.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../shared/log.js';
import { Broker } from '../../shared/broker.js';
import { UnroutableError } from '../../shared/errors.js';
import { RunRequest, type RunReport } from '../../shared/messages.js';
import { EXCHANGES, QUEUES, ROUTING, SPEC_SHARDS, jobKey, reportKey, specQueue } from '../../shared/topology.js';
const SHARD_NUMBERS = Array.from({ length: SPEC_SHARDS }, (_, n) => n);
import { Aggregator } from '../../services/aggregator/aggregator.js';
import { Dispatcher } from '../../services/dispatcher/dispatcher.js';
import { Supervisor } from '../../services/worker-supervisor/supervisor.js';
import { createVhost, drainQueue, publishRaw, queueDepth, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { tmpDir } from '../helpers/cli.js';

let vhost: TestVhost;
before(async () => {
  vhost = await createVhost('warren-it-malformed');
});
after(async () => {
  await vhost.delete();
});

/** The three services in this process, one worker, and a client of the test's own. */
async function cluster(url: string, log: ReturnType<typeof createLogger>) {
  const dispatcher = new Dispatcher({ brokerUrl: url, log });
  const aggregator = new Aggregator({ brokerUrl: url, reportDir: tmpDir(), log });
  const supervisor = new Supervisor({ brokerUrl: url, workers: 1, log, graceMs: 1000 });
  const broker = new Broker({ url, name: 'test', log });
  await Promise.all([dispatcher.start(), aggregator.start(), supervisor.start(), broker.start()]);
  return { dispatcher, aggregator, supervisor, broker };
}

test('malformed and unknown messages are dead-lettered with a reason; the services keep going', async () => {
  const url = vhost.url;
  const { dispatcher, aggregator, supervisor, broker } = await cluster(url, createLogger('test', 'error'));
  try {
    await publishRaw(url, EXCHANGES.runs, ROUTING.runRequest, 'this is not json');
    await publishRaw(url, EXCHANGES.runs, ROUTING.runRequest, JSON.stringify({ type: 'run.request', adapter: 'rspec' }));
    await publishRaw(url, EXCHANGES.runs, ROUTING.runRequest, JSON.stringify({ type: 'run.request', adapter: 'rspec', cwd: '/x', pattern: '([' }));
    // a report directory outside the aggregator's
    await publishRaw(url, EXCHANGES.runs, ROUTING.runRequest, JSON.stringify({ type: 'run.request', adapter: 'rspec', cwd: '/x', reportDir: '../../etc/cron.d' }));
    await publishRaw(url, EXCHANGES.work, jobKey(0), JSON.stringify({ type: 'spec', v: 1 }));
    await publishRaw(url, EXCHANGES.events, ROUTING.specResult, JSON.stringify({
      type: 'spec.result', v: 1, id: 'x', runId: 'nobody-knows', specId: 's', round: 1, worker: 'w', results: [],
    }));
    // a hand-written run.discovered whose pattern is no regex: the dispatcher's handler throws;
    // it comes back a bounded number of times, then is dead-lettered with the error
    const run = { type: 'run.request', runId: 'bad-pattern', id: 'bad-pattern', adapter: 'command', cwd: '/tmp', command: { discover: 'true', run: 'true' }, pattern: '(', acceptedAt: 1, deadline: Date.now() + 60_000 };
    await publishRaw(url, EXCHANGES.events, ROUTING.discovered, JSON.stringify({ type: 'run.discovered', v: 1, id: 'd', runId: 'bad-pattern', run, tests: [{ id: 'a', file: '', name: 'a' }], worker: 'hand' }));
    await waitFor('seven dead letters', async () => (await queueDepth(url, QUEUES.deadLetters)) >= 7, 30_000);
    const dead = await drainQueue(url, QUEUES.deadLetters);
    const reasons = dead.map((m) => `${m.properties.headers?.['x-warren-queue']}: ${m.properties.headers?.['x-warren-reason']}`).sort();
    assert.equal(reasons.length, 7);
    assert.match(reasons[0]!, /^warren.aggregator: unknown run nobody-knows/);
    assert.match(reasons[1]!, /^warren.dispatcher: invalid message \(type "run.request"\): cwd: /);
    assert.match(reasons[2]!, /^warren.dispatcher: invalid run request: pattern: not a valid regular expression/);
    assert.match(reasons[3]!, /^warren.dispatcher: invalid run request: reportDir: must be a relative path under the aggregator's report directory, without "..", got "..\/..\/etc\/cron.d"/);
    assert.match(reasons[4]!, /^warren.dispatcher: its handler failed 5 times; last: Invalid regular expression/);
    assert.match(reasons[5]!, /^warren.dispatcher: not JSON/);
    assert.match(reasons[6]!, /^warren.specs.0: invalid message \(type "spec"\)/);
    assert.equal(dead.find((m) => m.properties.headers?.['x-warren-queue'] === QUEUES.dispatcher && m.content.toString() === 'this is not json')?.content.toString(), 'this is not json', 'the body is kept as it came');
    for (const q of [QUEUES.dispatcher, specQueue(0), QUEUES.aggregator]) assert.equal(await queueDepth(url, q), 0, `${q} holds nothing in a loop`);
    assert.deepEqual([dispatcher.state, aggregator.state, supervisor.state], ['running', 'running', 'running']);

    // and a good run still goes through
    const reports: RunReport[] = [];
    await broker.watch(EXCHANGES.reports, reportKey('after-garbage', 'report'), 'test.after', async (d) => {
      reports.push(JSON.parse(d.body.toString()));
      d.ack();
    });
    await broker.publish(EXCHANGES.runs, ROUTING.runRequest, RunRequest.parse({
      type: 'run.request', runId: 'after-garbage', adapter: 'command', cwd: tmpDir(), command: { discover: 'echo one; echo two', run: 'true' },
    }));
    const report = await waitFor('the report', () => reports[0], 60_000);
    assert.equal(report.status, 'passed');
    assert.equal(report.totals.passed, 2);
  } finally {
    await supervisor.stop();
    await Promise.all([dispatcher.stop(), aggregator.stop(), broker.close()]);
  }
});

test('a publish nobody can receive is an error, not a silent confirm', async () => {
  const broker = new Broker({ url: vhost.url, name: 'test', log: createLogger('test', 'error') });
  await broker.start();
  try {
    await assert.rejects(broker.publish(EXCHANGES.runs, 'no.such.route', { hello: 1 }), UnroutableError);
    // the channel is still good afterwards
    await broker.publish(EXCHANGES.runs, ROUTING.runRequest, { type: 'garbage' });
  } finally {
    await broker.close();
  }
});

test('a test process that cannot start fails the run at once with the OS error (E2BIG, a cwd that is a file)', async () => {
  const url = vhost.url;
  const { dispatcher, aggregator, supervisor, broker } = await cluster(url, createLogger('test', 'silent'));
  try {
    const reports = new Map<string, RunReport>();
    await broker.watch(EXCHANGES.reports, 'run.#.report', 'test.start-failures', async (d) => {
      const r = JSON.parse(d.body.toString()) as RunReport;
      reports.set(r.runId, r);
      d.ack();
    });
    const file = `${tmpDir()}/a-file`;
    (await import('node:fs')).writeFileSync(file, '');
    for (const [runId, over] of [
      ['env-too-big', { cwd: tmpDir(), env: { BIG: 'x'.repeat(3_000_000) } }],
      ['cwd-is-a-file', { cwd: file }],
    ] as const) {
      await broker.publish(EXCHANGES.runs, ROUTING.runRequest, RunRequest.parse({
        type: 'run.request', runId, adapter: 'command', command: { discover: 'echo one', run: 'true' }, ...over,
      }));
    }
    const big = await waitFor('the E2BIG report', () => reports.get('env-too-big'), 60_000);
    assert.equal(big.status, 'error');
    assert.match(big.error ?? '', /discovery failed: .*E2BIG/);
    const notDir = await waitFor('the ENOTDIR report', () => reports.get('cwd-is-a-file'), 60_000);
    assert.equal(notDir.status, 'error');
    assert.match(notDir.error ?? '', /is not a directory/);
    for (const n of SHARD_NUMBERS) assert.equal(await queueDepth(url, specQueue(n)), 0);
  } finally {
    await supervisor.stop();
    await Promise.all([dispatcher.stop(), aggregator.stop(), broker.close()]);
  }
});
