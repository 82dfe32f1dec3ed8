/**
 * Configuration shared by every entry point: the broker URL and the parsing of numeric
 * options, refusing bad values with the option named.
 */
import { redact } from './broker/connection.js';
import { UsageError } from './errors.js';

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
