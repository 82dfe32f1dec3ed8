/**
 * Configuration shared by every entry point: the broker URL and the parsing of numeric
 * options, refusing bad values with the option named.
 */
import fs from 'node:fs';
import { UsageError } from './errors.js';

/** The URL(s) with every password replaced by ***, for messages and logs. */
export function redact(url: string): string {
  return url.replace(/\/\/([^:/@,]+):([^@,]+)@/g, '//$1:***@');
}

/**
 * TLS for amqps:// brokers, from files named by WARREN_TLS_CA (the CA that signed the
 * broker's certificate; default: the system's), WARREN_TLS_CERT and WARREN_TLS_KEY (a client
 * certificate, for a broker that asks for one; WARREN_TLS_KEY_PASSPHRASE if the key has
 * one). The CLI's --tls-ca, --tls-cert, --tls-key set these. An unreadable file is refused
 * with its variable named.
 */
export function tlsSocketOptions(env: NodeJS.ProcessEnv = process.env): { ca?: Buffer[]; cert?: Buffer; key?: Buffer; passphrase?: string } {
  const read = (name: string) => {
    const file = env[name];
    if (!file) return undefined;
    try {
      return fs.readFileSync(file);
    } catch (err) {
      const flag = `--${name.slice('WARREN_'.length).toLowerCase().replace('_', '-')}`;
      throw new UsageError(`${name} (${flag}): cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const ca = read('WARREN_TLS_CA');
  const cert = read('WARREN_TLS_CERT');
  const key = read('WARREN_TLS_KEY');
  if (!!cert !== !!key) throw new UsageError('WARREN_TLS_CERT and WARREN_TLS_KEY: give both (a client certificate and its key) or neither');
  return { ...(ca ? { ca: [ca] } : {}), ...(cert ? { cert, key } : {}), ...(env.WARREN_TLS_KEY_PASSPHRASE ? { passphrase: env.WARREN_TLS_KEY_PASSPHRASE } : {}) };
}

/** `--broker`, else WARREN_BROKER_URL, else the local broker. */
export function brokerUrl(flag?: string): string {
  const url = flag ?? process.env.WARREN_BROKER_URL ?? 'amqp://localhost';
  if (!/^amqps?:\/\//.test(url)) throw new UsageError(`--broker: expected an amqp:// or amqps:// URL, got ${JSON.stringify(redact(url))}`);
  return url;
}

export function positiveInt(name: string, value: string | number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name}: expected a whole number of at least 1, got ${JSON.stringify(String(value))}`);
  return n;
}

export function positiveNumber(name: string, value: string | number): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${name}: expected a positive number, got ${JSON.stringify(String(value))}`);
  return n;
}

export function fraction(name: string, value: string | number): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new UsageError(`${name}: expected a number from 0 to 1, got ${JSON.stringify(String(value))}`);
  return n;
}
