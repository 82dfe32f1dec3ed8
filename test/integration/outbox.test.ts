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
import { createVhost, waitFor, type TestVhost } from '../helpers/rabbit.js';
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
  const aggregator = new Aggregator({ brokerUrl: url, reportDir: tmpDir(), stateDir: tmpDir(), log: aggregatorLog });
  const supervisor = new Supervisor({ brokerUrl: url, workers: 1, log, graceMs: 1000 });
  const broker = new Broker({ url, name: 'test', log });
  await Promise.all([dispatcher.start(), aggregator.start(), supervisor.start(), broker.start()]);
  const conn = await amqp.connect(url);
  const ch = await conn.createChannel();
  try {
    // every client has declared the topology (which binds it back): the slot is connected
    await waitFor('the slot consuming', async () => (await broker.checkQueue(QUEUES.specs)).consumerCount >= 1, 30_000);
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
