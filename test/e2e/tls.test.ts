/**
 * A whole run over TLS: a RabbitMQ node of the test's own with an amqps listener and a
 * certificate the test generates (its own CA), asking every client for a certificate; the
 * services and the CLI connect with the CA, a client certificate and key. A client without
 * them is refused with one line.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { privateRabbit, type PrivateRabbit } from '../helpers/private-rabbit.js';
import { readReport, runCli, startService, stopService, tmpDir } from '../helpers/cli.js';

const offset = Math.floor(Math.random() * 100);
const TCP_PORT = 7000 + offset;
const TLS_PORT = 7200 + offset;
const certs = tmpDir('warren-certs-');
const pem = (name: string) => path.join(certs, name);
let rabbit: PrivateRabbit;
const services: ChildProcess[] = [];

/** A CA, a server certificate for localhost / 127.0.0.1 signed by it, and a client one. */
function makeCertificates(): void {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: certs, stdio: 'pipe' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=warren-test-ca');
  fs.writeFileSync(pem('san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  for (const [name, cn, ext] of [['server', 'localhost', true], ['client', 'warren-client', false]] as const) {
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    ssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', ...(ext ? ['-extfile', 'san.ext'] : []));
  }
}

before(async () => {
  makeCertificates();
  rabbit = privateRabbit(TCP_PORT, [], {
    files: { 'ca.pem': fs.readFileSync(pem('ca.pem'), 'utf8'), 'server.pem': fs.readFileSync(pem('server.pem'), 'utf8'), 'server.key': fs.readFileSync(pem('server.key'), 'utf8') },
    config: (dir) => [
      `listeners.ssl.default = ${TLS_PORT}`,
      `ssl_options.cacertfile = ${dir}/ca.pem`,
      `ssl_options.certfile = ${dir}/server.pem`,
      `ssl_options.keyfile = ${dir}/server.key`,
      'ssl_options.verify = verify_peer',
      'ssl_options.fail_if_no_peer_cert = true',
      '',
    ].join('\n'),
  });
  await rabbit.start();
});
after(() => {
  for (const s of services) s.kill('SIGKILL');
  rabbit?.destroy();
});

const url = () => `amqps://guest:guest@localhost:${TLS_PORT}`;
const tlsEnv = () => ({ WARREN_TLS_CA: pem('ca.pem'), WARREN_TLS_CERT: pem('client.pem'), WARREN_TLS_KEY: pem('client.key') });

test('a whole run over amqps with a client certificate; every connection is TLS', async () => {
  services.push(startService(['dispatcher', '--broker', url(), '--no-history'], tlsEnv()));
  services.push(startService(['aggregator', '--broker', url(), '--report-dir', tmpDir()], tlsEnv()));
  services.push(startService(['supervisor', '--broker', url(), '--workers', '2'], tlsEnv()));
  const reportDir = tmpDir();
  const res = await runCli([
    '--tls-ca', pem('ca.pem'), '--tls-cert', pem('client.pem'), '--tls-key', pem('client.key'),
    'run', '--broker', url(), '--adapter', 'command', '--cwd', tmpDir(), '--report-dir', reportDir, '--no-timings',
    '--discover-command', 'seq 1 6', '--run-command', 'true',
  ]);
  assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}`);
  assert.equal(readReport(reportDir).totals.passed, 6);
  const listed = spawnSync('rabbitmqctl', ['-n', rabbit.node, 'list_connections', 'name', 'ssl', '--formatter', 'json'], { encoding: 'utf8' });
  const conns = JSON.parse(listed.stdout) as Array<{ name: string; ssl: boolean }>;
  assert.ok(conns.length >= 3, `the services are connected: ${listed.stdout}`);
  assert.deepEqual(conns.filter((c) => !c.ssl), [], 'no connection without TLS');
  for (const s of services.splice(0)) await stopService(s);
});

test('without a client certificate, or without the CA, the broker is refused in one line, exit 2', async () => {
  const noCert = await runCli(['--tls-ca', pem('ca.pem'), 'status', '--broker', url()], { timeoutMs: 60_000 });
  assert.equal(noCert.code, 2, `${noCert.stdout}\n${noCert.stderr}`);
  assert.equal(noCert.stderr, `warren: cannot reach RabbitMQ at amqps://guest:***@localhost:${TLS_PORT}: the broker asks for a client certificate: give one (WARREN_TLS_CERT and WARREN_TLS_KEY, or --tls-cert and --tls-key)\n`);
  const noCa = await runCli(['--tls-cert', pem('client.pem'), '--tls-key', pem('client.key'), 'status', '--broker', url()], { timeoutMs: 60_000, env: { WARREN_TLS_CA: '' } });
  assert.equal(noCa.code, 2, `${noCa.stdout}\n${noCa.stderr}`);
  assert.match(noCa.stderr, /^warren: cannot reach RabbitMQ at amqps:\S+: the broker's certificate is not signed by a CA we trust: give its CA \(WARREN_TLS_CA or --tls-ca\) \(SELF_SIGNED_CERT_IN_CHAIN\)\n$/);
});
