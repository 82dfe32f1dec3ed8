/**
 * A TCP proxy of our own between a service and the broker, on loopback: tests start it on a
 * port the service was told, stop it (the broker "goes away" for that service only), and
 * start it again.
 */
import net from 'node:net';

export interface Proxy {
  port: number;
  /** Starts listening (again) on `port`. */
  listen(): Promise<void>;
  /** Stops listening and cuts every connection through it. */
  cut(): Promise<void>;
  /** Connections made through it so far. */
  connections: number;
  /** From now on, lets through at most `bytes` more bytes towards the broker, then holds
   * the rest (the client's publishes stall mid-stream; it sees no error). */
  stallAfter(bytes: number): void;
  /** Holds all traffic both ways (the connections stay open, nothing moves) until resume(). */
  pause(): void;
  resume(): void;
}

/** A free loopback port (listened on once, then released). */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as net.AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

export async function tcpProxy(target: { host: string; port: number }, port?: number): Promise<Proxy> {
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  let allowance = Number.POSITIVE_INFINITY;
  let paused = false;
  const proxy: Proxy = {
    pause() {
      paused = true;
      for (const s of sockets) s.pause();
    },
    resume() {
      paused = false;
      for (const s of sockets) s.resume();
    },
    port: port ?? (await freePort()),
    connections: 0,
    stallAfter(bytes) {
      allowance = bytes;
    },
    async listen() {
      server = net.createServer((client) => {
        proxy.connections++;
        const upstream = net.connect(target.port, target.host);
        for (const s of [client, upstream]) {
          sockets.add(s);
          s.on('close', () => sockets.delete(s));
          s.on('error', () => undefined);
        }
        client.on('data', (chunk: Buffer) => {
          if (allowance >= chunk.length) {
            allowance -= chunk.length;
            upstream.write(chunk);
          } else {
            if (allowance > 0) upstream.write(chunk.subarray(0, allowance));
            allowance = 0; // held from here on
          }
        });
        upstream.pipe(client);
        if (paused) {
          client.pause();
          upstream.pause();
        }
        client.on('close', () => upstream.destroy());
        upstream.on('close', () => client.destroy());
      });
      await new Promise<void>((r) => server!.listen(proxy.port, '127.0.0.1', r));
    },
    async cut() {
      const s = server;
      server = undefined;
      for (const sock of sockets) sock.destroy();
      if (s) await new Promise((r) => s.close(r));
    },
  };
  return proxy;
}
