/**
 * A connection to RabbitMQ that comes back: connects with backoff (forever, for services; a
 * bounded number of attempts for the CLI), and on every new connection runs its setups in
 * order (topology, the publish channel, the consumers). Anything that closes under us, the
 * connection or any channel, is handled the same way: drop it all and connect again, so no
 * half-working state survives.
 *
 * Several broker URLs (a cluster's nodes) may be given, comma-separated: each attempt takes
 * the next one, starting at a random one (clients spread over the nodes).
 */
import { EventEmitter } from 'node:events';
import amqp, { type Channel, type ChannelModel } from 'amqplib';
import pRetry from 'p-retry';
import type { Logger } from '../log.js';
import { redact, tlsSocketOptions } from '../config.js';
import { InfrastructureError, errorMessage } from '../errors.js';

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

export interface ConnectionOptions {
  /** One URL, or several comma-separated (the nodes of a cluster). */
  url: string;
  /** Shown as the connection name in the management UI. */
  name: string;
  log: Logger;
  /** Attempts for the first connection before start() fails (default: never give up). */
  connectAttempts?: number;
}

/** Runs on each new connection, in the order added; a throw drops the connection. */
export type Setup = (conn: ChannelModel, generation: number) => Promise<void>;

export class Connection extends EventEmitter {
  state: ConnectionState = 'idle';
  /** Increases with each connection: what belongs to an older one is stale. */
  generation = 0;
  private conn?: ChannelModel;
  private readonly setups: Setup[] = [];
  private readonly urls: string[];
  private next = 0;
  /** A channel of the connection being set up closed: that attempt must fail. */
  private brokenSetup?: { generation: number; why: string };
  private connected!: { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void };
  private tls?: ReturnType<typeof tlsSocketOptions>;
  private currentUser = 'guest';

  constructor(private readonly opts: ConnectionOptions) {
    super();
    this.urls = splitUrls(opts.url);
    // bad TLS files are refused at once, naming the variable (not retried as a broker away)
    if (this.urls.some((u) => u.startsWith('amqps:'))) this.tls = tlsSocketOptions();
    // Services given a cluster's nodes spread over them instead of all using the first:
    // one node's death then takes a part of the clients, not all of them.
    this.next = Math.floor(Math.random() * this.urls.length);
    this.resetConnected();
  }

  get log(): Logger {
    return this.opts.log;
  }

  /** The user this connection logs in as (what RabbitMQ checks a publish's user_id against). */
  get user(): string {
    return this.currentUser;
  }

  /** Connects, retrying with backoff; rejects (one line) only when the attempts run out. */
  async start(): Promise<void> {
    this.state = 'connecting';
    const attempts = this.opts.connectAttempts ?? Number.POSITIVE_INFINITY;
    try {
      await pRetry(() => this.connectOnce(), {
        retries: Math.max(0, attempts - 1),
        minTimeout: 250,
        maxTimeout: 5000,
        onFailedAttempt: ({ error, attemptNumber }) => {
          // a service says so at each attempt; the CLI (bounded attempts) only at its end
          if (attemptNumber < attempts) this.log[Number.isFinite(attempts) ? 'debug' : 'warn']({ err: error, attempt: attemptNumber }, 'cannot reach the broker yet, retrying');
        },
      });
    } catch (err) {
      this.state = 'closed';
      throw new InfrastructureError(`cannot reach RabbitMQ at ${this.urls.map(redact).join(', ')}: ${tlsHint(err) ?? loginHint(err, this.currentUser) ?? errorMessage(err).split('\n')[0]}`, { cause: err });
    }
  }

  /** Adds a setup; on a live connection it runs at once (a failure there reconnects). */
  async addSetup(setup: Setup): Promise<void> {
    this.setups.push(setup);
    if (this.state === 'connected' && this.conn) {
      const conn = this.conn;
      const generation = this.generation;
      try {
        await setup(conn, generation);
      } catch (err) {
        this.lost(conn, generation, `setup failed: ${errorMessage(err)}`);
      }
    }
  }

  /** Resolves once a connection is up (immediately if it is). */
  whenConnected(): Promise<void> {
    return this.connected.promise;
  }

  /** The live connection, once up. */
  async current(): Promise<{ conn: ChannelModel; generation: number }> {
    await this.whenConnected();
    return { conn: this.conn!, generation: this.generation };
  }

  /** A channel of `generation`'s connection whose closing drops and reconnects everything. */
  async channel(conn: ChannelModel, generation: number, what: string, confirm = false): Promise<Channel> {
    const ch = confirm ? await conn.createConfirmChannel() : await conn.createChannel();
    ch.on('error', (err) => this.log.warn({ err, channel: what }, 'channel error'));
    ch.on('close', () => this.lost(conn, generation, `${what} channel closed`));
    return ch;
  }

  /** A short-lived channel for one operation (its closing reconnects nothing). */
  async oneOff<T>(fn: (ch: Channel) => Promise<T>): Promise<T> {
    const { conn } = await this.current();
    const ch = await conn.createChannel();
    ch.on('error', () => undefined);
    try {
      return await fn(ch);
    } finally {
      await ch.close().catch(() => undefined);
    }
  }

  /** Closes the connection (channels first: see close() in broker.ts). */
  async close(channels: Array<Channel | undefined>): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.connected.reject(new InfrastructureError('broker connection is closed'));
    for (const ch of channels) {
      try {
        await ch?.close();
      } catch {
        // already closed
      }
    }
    try {
      await this.conn?.close();
    } catch {
      // already gone: nothing to release
    }
  }

  /** Something of `generation`'s connection closed: drop it and connect again. */
  lost(conn: ChannelModel, generation: number, why: string): void {
    if (generation !== this.generation) return;
    if (this.state !== 'connected') {
      // still setting this connection up: that attempt fails and the next one starts over
      this.brokenSetup = { generation, why };
      return;
    }
    this.state = 'reconnecting';
    this.resetConnected();
    this.emit('disconnected');
    this.log.warn({ why }, 'lost the broker, reconnecting');
    conn.close().catch(() => undefined);
    void pRetry(
      async () => {
        if (this.state === 'closed') return;
        await this.connectOnce();
      },
      {
        retries: Number.POSITIVE_INFINITY,
        minTimeout: 500,
        maxTimeout: 5000,
        onFailedAttempt: ({ error, attemptNumber }) => {
          this.log.warn({ err: error, attempt: attemptNumber }, 'reconnect failed');
        },
      },
    ).then(() => {
      if (this.state === 'connected') this.log.info('reconnected to the broker');
    });
  }

  private resetConnected() {
    let resolve!: () => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => undefined);
    this.connected = { promise, resolve, reject };
  }

  private async connectOnce(): Promise<void> {
    const raw = this.urls[this.next++ % this.urls.length]!;
    const url = withHeartbeat(raw);
    this.currentUser = userOf(raw);
    // amqps://: the CA, client certificate and key of WARREN_TLS_* (read once, at start)
    const tls = url.startsWith('amqps:') ? (this.tls ??= tlsSocketOptions()) : undefined;
    // noDelay: amqplib leaves Nagle's algorithm on, and a small frame written while the
    // previous one is unacknowledged waits for the peer's delayed ACK (up to 40 ms on Linux):
    // a publish, then its ack, then the next delivery each paid it
    const conn = await amqp.connect(url, { clientProperties: { connection_name: this.opts.name }, noDelay: true, ...tls });
    const generation = ++this.generation;
    conn.on('error', (err) => this.log.warn({ err }, 'broker connection error'));
    conn.on('blocked', (reason) => this.log.warn({ reason }, 'broker blocked publishing (resource alarm)'));
    conn.on('unblocked', () => this.log.info('broker unblocked publishing'));
    this.conn = conn;
    try {
      for (const setup of this.setups) await setup(conn, generation);
      if (this.brokenSetup?.generation === generation) throw new InfrastructureError(this.brokenSetup.why);
    } catch (err) {
      // a channel that closed while we set up (the node is stopping, say): this attempt
      // failed, the next one starts from scratch
      this.generation++;
      await conn.close().catch(() => undefined);
      throw err;
    }
    conn.on('close', () => this.lost(conn, generation, 'connection closed'));
    if (this.state === 'closed') {
      await conn.close().catch(() => undefined);
      return;
    }
    this.state = 'connected';
    this.connected.resolve();
    this.emit('connected', generation);
  }
}

/**
 * Heartbeats every 10 s unless the URL says otherwise (the broker proposes 60 s): a peer
 * that vanished without closing its socket (a host lost, a network partition) is noticed in
 * about 20 s instead of two minutes, so its exclusive queues (the aggregator's lease) and
 * unacked messages are released that much sooner.
 */
/** The user of an AMQP URL (amqplib's default: guest). */
export function userOf(url: string): string {
  try {
    return decodeURIComponent(new URL(url).username) || 'guest';
  } catch {
    return 'guest';
  }
}

function withHeartbeat(url: string): string {
  if (/[?&]heartbeat=/.test(url)) return url;
  return `${url}${url.includes('?') ? '&' : '?'}heartbeat=${HEARTBEAT_SEC}`;
}
const HEARTBEAT_SEC = 10;

export function splitUrls(url: string): string[] {
  const urls = url.split(',').map((u) => u.trim()).filter(Boolean);
  if (urls.length === 0) throw new InfrastructureError('no broker URL given');
  return urls;
}


/** A login the broker refused, said plainly (not "cannot reach"). */
function loginHint(err: unknown, user: string): string | undefined {
  const text = errorMessage(err);
  if (/ACCESS.REFUSED/.test(text) && /Login was refused/.test(text)) return `the broker refused the login of user ${user}: a wrong user name or password (ACCESS_REFUSED)`;
  if (/not_allowed|NOT_ALLOWED|access to vhost/i.test(text)) return `user ${user} may not use this virtual host (${text.split('\n')[0]})`;
  return undefined;
}

/** What a TLS failure means for the one who configures it, or undefined for another error. */
function tlsHint(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code ?? '';
  if (/CERTIFICATE_REQUIRED/.test(code)) return 'the broker asks for a client certificate: give one (WARREN_TLS_CERT and WARREN_TLS_KEY, or --tls-cert and --tls-key)';
  if (/ALERT_(BAD|UNKNOWN)_CERTIFICATE|CERTIFICATE_UNKNOWN|UNKNOWN_CA/.test(code)) return `the broker refused our client certificate (${code})`;
  if (/SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|CERT_UNTRUSTED/.test(code)) {
    return `the broker's certificate is not signed by a CA we trust: give its CA (WARREN_TLS_CA or --tls-ca) (${code})`;
  }
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `the broker's certificate is not for this host name (${errorMessage(err).split('\n')[0]})`;
  if (/CERT_HAS_EXPIRED/.test(code)) return "the broker's certificate has expired";
  return undefined;
}
