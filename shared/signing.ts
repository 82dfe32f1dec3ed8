/**
 * Signed run requests and sealed secrets. A run request makes every worker host execute
 * what it says, so with a key configured (WARREN_SIGNING_KEY, or WARREN_SIGNING_KEY_FILE /
 * --signing-key-file; the same key for the submitters, the dispatchers and the supervisors)
 * `warren run` signs each request with HMAC-SHA256 over its canonical JSON (keys sorted),
 * and:
 *
 * - the dispatcher refuses a request that is unsigned, altered (signed with another key),
 *   signed outside a 5-minute window, or seen before (its nonce; and a run id names one run);
 * - every slot refuses a job whose suite (what executes on its host: adapter, directory,
 *   commands, env, image) is not the one the submitter signed for that run id.
 *
 * Secret env values (`--secret-env NAME`) travel sealed with AES-256-GCM under a key derived
 * from the same key (HKDF), bound to their variable's name, and are opened only by the slot
 * that starts the tests.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import { UsageError } from './errors.js';
import { suiteOf, type RunAuth, type RunRequest, type SuiteConfig } from './messages.js';

/** A signed request is accepted this long before or after its signing time. */
export const SIGNATURE_WINDOW_MS = 5 * 60_000;

/** The key from `file`, else WARREN_SIGNING_KEY_FILE, else WARREN_SIGNING_KEY; undefined when none is set. */
export function loadSigningKey(file?: string): Buffer | undefined {
  const path = file ?? (process.env.WARREN_SIGNING_KEY_FILE || undefined);
  let text: string | undefined;
  if (path) {
    try {
      text = fs.readFileSync(path, 'utf8').trim();
    } catch (err) {
      throw new UsageError(`signing key: cannot read ${path}: ${(err as Error).message}`);
    }
  } else {
    text = process.env.WARREN_SIGNING_KEY || undefined;
  }
  if (text === undefined) return undefined;
  if (text.length < 32) throw new UsageError(`signing key${path ? ` (${path})` : ''}: at least 32 characters (e.g. openssl rand -hex 32), got ${text.length}`);
  return Buffer.from(text, 'utf8');
}

/** JSON with object keys sorted at every level and undefined members left out. */
export function canonical(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonical(v))).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
}

const mac = (key: Buffer, what: string, value: unknown) => createHmac('sha256', key).update(`warren ${what} v1\n`).update(canonical(value)).digest('hex');
// empty `args` signs as absent: a request of a CLI from before `args` still verifies
const unsigned = <T extends { auth?: unknown; args?: string[] }>(x: T) => ({ ...x, auth: undefined, args: x.args?.length ? x.args : undefined });
const suiteMac = (key: Buffer, runId: string, suite: SuiteConfig, auth: Pick<RunAuth, 'at' | 'nonce'>) =>
  mac(key, 'suite', { runId, at: auth.at, nonce: auth.nonce, suite: unsigned(suiteOf(suite)) });
const same = (a: string, b: string) => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

/** The request, signed (it must have its run id: the signature binds the suite to it). */
export function signRequest(req: RunRequest, key: Buffer, now = Date.now()): RunRequest {
  if (!req.runId) throw new Error('a signed run request needs its runId');
  const base = { at: now, nonce: randomBytes(16).toString('hex') };
  const auth: RunAuth = {
    alg: 'hmac-sha256', ...base,
    request: mac(key, 'request', { ...unsigned(req), ...base }),
    suite: suiteMac(key, req.runId, req, base),
  };
  return { ...req, auth };
}

/** Nonces of the requests accepted within the window (a replay inside it is refused). */
export class NonceCache {
  private readonly seen = new Map<string, number>();
  /** True the first time. */
  add(nonce: string, at: number, now = Date.now()): boolean {
    for (const [n, t] of this.seen) if (t < now - 2 * SIGNATURE_WINDOW_MS) this.seen.delete(n);
    if (this.seen.has(nonce)) return false;
    this.seen.set(nonce, at);
    return true;
  }
}

/** Why the dispatcher refuses this request, or null when it is signed, intact and fresh. */
export function requestProblem(req: RunRequest, key: Buffer, nonces: NonceCache, now = Date.now()): string | null {
  const auth = req.auth;
  if (!auth) return 'not signed (this cluster requires signed run requests: set WARREN_SIGNING_KEY or --signing-key-file for warren run)';
  if (!req.runId) return 'signed without a runId';
  if (!same(auth.request, mac(key, 'request', { ...unsigned(req), at: auth.at, nonce: auth.nonce }))) return 'its signature does not match (altered after signing, or signed with another key)';
  if (!same(auth.suite, suiteMac(key, req.runId, req, auth))) return 'its suite signature does not match (altered after signing, or signed with another key)';
  if (Math.abs(now - auth.at) > SIGNATURE_WINDOW_MS) return `signed ${Math.round((now - auth.at) / 1000)} s ago, outside the ${SIGNATURE_WINDOW_MS / 1000} s window (a replay, or clocks apart)`;
  if (!nonces.add(auth.nonce, auth.at, now)) return 'seen before (its nonce): a replay';
  return null;
}

/** Why a slot refuses to run `suite` for `runId`, or null when the submitter signed exactly it. */
export function suiteProblem(runId: string, suite: SuiteConfig, key: Buffer): string | null {
  if (!suite.auth) return 'its suite is not signed (this supervisor runs signed runs only)';
  if (!same(suite.auth.suite, suiteMac(key, runId, suite, suite.auth))) return `its suite is not the one signed for run ${runId} (altered, or signed with another key)`;
  return null;
}

const sealKey = (key: Buffer) => Buffer.from(hkdfSync('sha256', key, 'warren', 'secret env v1', 32));

/** Each value sealed: `v1.<iv>.<tag>.<ciphertext>` (base64url), bound to its name. */
export function sealSecrets(env: Record<string, string>, key: Buffer): Record<string, string> {
  const k = sealKey(key);
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', k, iv);
    cipher.setAAD(Buffer.from(name));
    const ct = Buffer.concat([cipher.update(value, 'utf8'), cipher.final()]);
    out[name] = ['v1', iv, cipher.getAuthTag(), ct].map((p) => (typeof p === 'string' ? p : p.toString('base64url'))).join('.');
  }
  return out;
}

/** The values in clear; throws, naming the variable, on one sealed with another key or altered. */
export function openSecrets(sealed: Record<string, string>, key: Buffer | undefined): Record<string, string> {
  const names = Object.keys(sealed);
  if (names.length === 0) return {};
  if (!key) throw new Error(`secret env ${names.join(', ')}: this supervisor has no key to open it (WARREN_SIGNING_KEY)`);
  const k = sealKey(key);
  const out: Record<string, string> = {};
  for (const [name, text] of Object.entries(sealed)) {
    const [v, iv, tag, ct] = text.split('.');
    try {
      if (v !== 'v1' || !iv || !tag || ct === undefined) throw new Error('not a sealed value');
      const decipher = createDecipheriv('aes-256-gcm', k, Buffer.from(iv, 'base64url'));
      decipher.setAAD(Buffer.from(name));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      out[name] = Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString('utf8');
    } catch {
      throw new Error(`secret env ${name}: cannot be opened with this supervisor's key (sealed with another, or altered)`);
    }
  }
  return out;
}
