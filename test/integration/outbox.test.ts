/**
 * Decided effects are retried on their own: a re-run round whose publish fails (here: no
 * queue bound for it, until an operator binds it again) goes out once it can, while the
 * aggregator stays up, and the run ends with its report instead of stalling.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import amqp from 'amqplib';
import { pino } from 'pino';
import { createLogger } from '../../shared/log.js';
import { Broker } from '../../shared/broker.js';
import { RunRequest, type RunReport } from '../../shared/messages.js';
import { EXCHANGES, QUEUES, ROUTING, reportKey } from '../../shared/topology.js';
import { Aggregator } from '../../services/aggregator/aggregator.js';
import { Dispatcher } from '../../services/dispatcher/dispatcher.js';
import { Supervisor } from '../../services/worker-supervisor/supervisor.js';
import { createVhost, queueDepth, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { tmpDir } from '../helpers/cli.js';

let vhost: TestVhost;
before(async () => {
  vhost = await createVhost('warren-it-outbox');
});
after(async () => {
  await vhost.delete();
});

test('a re-run round that could not be published is retried on its own; the run completes', async () => {
  const log = createLogger('test', 'silent');
  const url = vhost.url;
  const warnings: string[] = [];
  const aggregatorLog = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(JSON.parse(line).msg) });
  const dispatcher = new Dispatcher({ brokerUrl: url, log });
  const aggregator = new Aggregator({ brokerUrl: url, reportDir: tmpDir(), log: aggregatorLog });
  const supervisor = new Supervisor({ brokerUrl: url, workers: 1, log, graceMs: 1000 });
  const broker = new Broker({ url, name: 'test', log });
  await Promise.all([dispatcher.start(), aggregator.start(), supervisor.start(), broker.start()]);
  const conn = await amqp.connect(url);
  const ch = await conn.createChannel();
  try {
    // every client has declared the topology (which binds it back): the slot is connected
    await waitFor('the slot connected', () => supervisor.slotStates.every((s) => s === 'idle'), 30_000);
    // nobody receives round requests for now
    await ch.unbindQueue(QUEUES.dispatcher, EXCHANGES.runs, ROUTING.roundRequest);
    const reports: RunReport[] = [];
    await broker.watch(EXCHANGES.reports, reportKey('outbox', 'report'), 'test.outbox', async (d) => {
      reports.push(JSON.parse(d.body.toString()));
      d.ack();
    });
    const marks = tmpDir();
    // fails the first time, passes the second: a re-run round is decided
    await broker.publish(EXCHANGES.runs, ROUTING.runRequest, RunRequest.parse({
      type: 'run.request', runId: 'outbox', adapter: 'command', cwd: tmpDir(), rerunThreshold: 1,
      command: { discover: 'echo flaky', run: `[ -e ${marks}/once ] || { touch ${marks}/once; exit 1; }` },
    }));
    await waitFor('the round publish to fail', () => warnings.includes('a decided effect was not confirmed; retrying it'), 60_000);
    assert.equal(reports.length, 0);
    await ch.bindQueue(QUEUES.dispatcher, EXCHANGES.runs, ROUTING.roundRequest);
    const report = await waitFor('the report', () => reports[0], 60_000);
    assert.equal(report.status, 'passed');
    assert.deepEqual(report.tests.map((t) => [t.id, t.status, t.attempts]), [['flaky', 'flaky', ['failed', 'passed']]]);
    assert.ok(fs.existsSync(path.join(marks, 'once')));
  } finally {
    await conn.close();
    await supervisor.stop();
    await Promise.all([dispatcher.stop(), aggregator.stop(), broker.close()]);
  }
});

test('an aggregator whose journal stream is deleted stops loudly and leaves the messages in the queue', async () => {
  const log = createLogger('test', 'silent');
  const url = vhost.url;
  let fatal: Error | undefined;
  const aggregator = new Aggregator({ brokerUrl: url, reportDir: tmpDir(), log, onFatal: (err) => (fatal = err) });
  const broker = new Broker({ url, name: 'test', log, declareTopology: false });
  await Promise.all([aggregator.start(), broker.start()]);
  try {
    await aggregator.whenActive();
    // an operator deletes the stream: every replica's state is gone with it
    const conn = await amqp.connect(url);
    await (await conn.createChannel()).deleteQueue(QUEUES.journal);
    await conn.close();
    const err = await waitFor('the aggregator to stop', () => fatal, 30_000);
    assert.match(err.message, /journal stream warren\.journal was deleted/);
    assert.equal(aggregator.state, 'failed');
    const run = RunRequest.parse({ type: 'run.request', runId: 'no-journal', adapter: 'command', cwd: '/tmp', command: { discover: 'true', run: 'true' } });
    await broker.publish(EXCHANGES.events, ROUTING.runAccepted, {
      type: 'run.accepted', v: 1, id: 'no-journal/accepted', runId: 'no-journal',
      run: { ...run, runId: 'no-journal', id: 'no-journal', acceptedAt: Date.now(), deadline: Date.now() + 60_000 },
    });
    await waitFor('the message in its queue, unconsumed', async () => {
      const q = await broker.checkQueue(QUEUES.aggregator);
      return q.consumerCount === 0 && q.messageCount === 1;
    }, 30_000);
  } finally {
    await Promise.all([aggregator.stop(), broker.close()]);
  }
});

test('many results at once: the report still goes out (no effect left behind in the outbox)', async () => {
  const { aggregator, broker, reports } = await aggregatorWithReports('burst', 'test.burst');
  try {
    const req = RunRequest.parse({ type: 'run.request', runId: 'burst', adapter: 'command', cwd: '/tmp', command: { discover: 'true', run: 'true' } });
    const run = { ...req, runId: 'burst', id: 'burst', acceptedAt: Date.now(), deadline: Date.now() + 600_000 };
    const tests = Array.from({ length: 300 }, (_, i) => ({ id: `t${i}`, file: '', name: `t${i}` }));
    await broker.publish(EXCHANGES.events, ROUTING.runAccepted, { type: 'run.accepted', v: 1, id: 'burst/a', runId: 'burst', run });
    await broker.publish(EXCHANGES.events, ROUTING.roundPlanned, { type: 'round.planned', v: 1, id: 'burst/p', runId: 'burst', round: 1, tests, specs: 300 });
    await Promise.all(tests.map((t, i) => broker.publish(EXCHANGES.events, ROUTING.specResult, {
      type: 'spec.result', v: 1, id: `burst/s${i}/result`, runId: 'burst', specId: `burst/s${i}`, round: 1, worker: `w${i % 80}`,
      results: [{ testId: t.id, file: '', name: t.name, status: 'passed', durationMs: 1 }],
    })));
    const report = await waitFor('the report', () => reports[0], 30_000);
    assert.equal(report.totals.passed, 300);
  } finally {
    await Promise.all([aggregator.stop(), broker.close()]);
  }
});

test("a plan that comes while its run's acceptance is still being journaled is not taken for an unknown run", async () => {
  // Found by the chaos suite: a cached discovery is fast enough for round.planned to reach
  // the aggregator while it still journals run.accepted; the plan was dead-lettered and the
  // run waited for its deadline.
  const { url, aggregator, broker, reports } = await aggregatorWithReports('#', 'test.quick');
  try {
    await aggregator.whenActive();
    for (let n = 0; n < 5; n++) {
      const runId = `quick-${n}`;
      const req = RunRequest.parse({ type: 'run.request', runId, adapter: 'command', cwd: '/tmp', command: { discover: 'true', run: 'true' } });
      const run = { ...req, runId, id: runId, acceptedAt: Date.now(), deadline: Date.now() + 600_000 };
      const tests = [{ id: 't', file: '', name: 't' }];
      // both in flight at once, as the dispatcher's publishes of two handlers are
      await Promise.all([
        broker.publish(EXCHANGES.events, ROUTING.runAccepted, { type: 'run.accepted', v: 1, id: `${runId}/a`, runId, run }),
        broker.publish(EXCHANGES.events, ROUTING.roundPlanned, { type: 'round.planned', v: 1, id: `${runId}/p`, runId, round: 1, tests, specs: 1 }),
        broker.publish(EXCHANGES.events, ROUTING.specResult, {
          type: 'spec.result', v: 1, id: `${runId}/s/result`, runId, specId: `${runId}/s`, round: 1, worker: 'w',
          results: [{ testId: 't', file: '', name: 't', status: 'passed', durationMs: 1 }],
        }),
      ]);
    }
    await waitFor('five reports', () => reports.length === 5 || undefined, 30_000);
    assert.deepEqual(reports.map((r) => r.totals.passed), [1, 1, 1, 1, 1]);
    assert.equal(await queueDepth(url, QUEUES.deadLetters), 0, 'nothing dead-lettered');
  } finally {
    await Promise.all([aggregator.stop(), broker.close()]);
  }
});

/** An aggregator on the test's vhost, and a client collecting the reports of `runId` ('#': all). */
async function aggregatorWithReports(runId: string, queue: string) {
  const log = createLogger('test', 'silent');
  const url = vhost.url;
  const aggregator = new Aggregator({ brokerUrl: url, reportDir: tmpDir(), log });
  const broker = new Broker({ url, name: 'test', log });
  await Promise.all([aggregator.start(), broker.start()]);
  const reports: RunReport[] = [];
  await broker.watch(EXCHANGES.reports, reportKey(runId, 'report'), queue, async (d) => {
    reports.push(JSON.parse(d.body.toString()));
    d.ack();
  });
  return { url, aggregator, broker, reports };
}
