/**
 * A recording fake of the GitHub REST API (the endpoints Warren uses, as documented: pulls,
 * issue comments, reactions, commit statuses), on 127.0.0.1, keeping every request it got.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Recorded {
  method: string;
  path: string;
  authorization?: string;
  body?: Record<string, unknown>;
}

export interface FakeGitHub {
  url: string;
  requests: Recorded[];
  comments: Array<{ id: number; body: string; html_url: string }>;
  statuses: Array<{ sha: string; state: string; context: string; description?: string }>;
  close(): Promise<void>;
}

/** `pulls`: the pull requests that exist, by `owner/repo#n`, with their head SHA. */
export async function fakeGitHub(pulls: Record<string, string>): Promise<FakeGitHub> {
  const requests: Recorded[] = [];
  const comments: FakeGitHub['comments'] = [];
  const statuses: FakeGitHub['statuses'] = [];
  let nextId = 1000;
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => (raw += c));
    req.on('end', () => {
      const body = raw ? (JSON.parse(raw) as Record<string, unknown>) : undefined;
      const url = new URL(req.url ?? '/', 'http://x');
      requests.push({ method: req.method ?? '', path: url.pathname, authorization: req.headers.authorization, body });
      const send = (status: number, data: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(data));
      };
      let m: RegExpExecArray | null;
      if (req.method === 'GET' && (m = /^\/repos\/([^/]+)\/([^/]+)\/pulls\/(\d+)$/.exec(url.pathname))) {
        const sha = pulls[`${m[1]}/${m[2]}#${m[3]}`];
        return sha ? send(200, { number: Number(m[3]), head: { sha } }) : send(404, { message: 'Not Found' });
      }
      if (req.method === 'GET' && /^\/repos\/[^/]+\/[^/]+\/issues\/\d+\/comments$/.test(url.pathname)) return send(200, comments);
      if (req.method === 'POST' && (m = /^\/repos\/([^/]+)\/([^/]+)\/issues\/(\d+)\/comments$/.exec(url.pathname))) {
        const c = { id: nextId++, body: String(body?.body), html_url: `https://github.example/${m[1]}/${m[2]}/pull/${m[3]}#issuecomment-${nextId - 1}` };
        comments.push(c);
        return send(201, c);
      }
      if (req.method === 'PATCH' && (m = /^\/repos\/[^/]+\/[^/]+\/issues\/comments\/(\d+)$/.exec(url.pathname))) {
        const c = comments.find((x) => x.id === Number(m![1]));
        if (!c) return send(404, { message: 'Not Found' });
        c.body = String(body?.body);
        return send(200, c);
      }
      if (req.method === 'POST' && /^\/repos\/[^/]+\/[^/]+\/issues\/comments\/\d+\/reactions$/.test(url.pathname)) return send(201, { id: 1, content: body?.content });
      if (req.method === 'POST' && (m = /^\/repos\/[^/]+\/[^/]+\/statuses\/([0-9a-f]+)$/.exec(url.pathname))) {
        statuses.push({ sha: m[1]!, state: String(body?.state), context: String(body?.context), description: body?.description as string | undefined });
        return send(201, { state: body?.state });
      }
      send(404, { message: 'Not Found' });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests, comments, statuses,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
