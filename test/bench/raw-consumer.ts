/**
 * One raw amqplib consumer in a process of its own, for bench (a)'s baseline with Warren's
 * shape of one process per slot: consume `jobs` with prefetch 1, publish a result to
 * `results` with a confirm, then ack. Says 'ready' on its IPC channel once consuming.
 *
 *   node raw-consumer.js <url> <jobs queue> <results queue>
 */
import amqp from 'amqplib';

const [url, jobs, results] = process.argv.slice(2) as [string, string, string];
const conn = await amqp.connect(url, { noDelay: true });
const ch = await conn.createChannel();
const out = await conn.createConfirmChannel();
await ch.prefetch(1);
await ch.consume(jobs, (m) => {
  if (m) out.sendToQueue(results, m.content, { persistent: true }, (err) => (err ? undefined : ch.ack(m)));
});
process.send?.('ready');
process.on('disconnect', () => void conn.close().finally(() => process.exit(0)));
