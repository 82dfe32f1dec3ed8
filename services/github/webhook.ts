/**
 * `warren github`: the seed's pull-request loop. A small HTTP service that receives GitHub
 * webhooks and, for a comment on a pull request that starts with the phrase (default
 * `/warren run`, optionally followed by `--pattern X` / `--exclude Y`) from a user whose
 * author association is allowed (default OWNER, MEMBER, COLLABORATOR), or (when asked) for a
 * pull request opened or pushed to:
 *
 *   1. acknowledges the comment (a reaction) and sets a pending status on the head commit;
 *   2. runs the build command, if any (e.g. `docker build` + `docker push` of
 *      `registry/app:{sha}`);
 *   3. publishes the run request for that commit (signed when a key is configured);
 *   4. follows the run and puts its result on the pull request (reporter.ts).
 *
 * A delivery is verified first (`X-Hub-Signature-256`, HMAC-SHA256, in constant time by
 * @octokit/webhooks-methods): unsigned or wrongly signed is 401, a delivery id seen before
 * or a comment older than STALE_MS is refused as stale; everything else that is not a
 * trigger is logged and answered 202. The token and the secret never reach a log.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { verify } from '@octokit/webhooks-methods';
import { Broker } from '../../shared/broker.js';
import { userOf } from '../../shared/broker/connection.js';
import type { Lifecycle } from '../../shared/lifecycle.js';
import type { Logger } from '../../shared/log.js';
import { RunRequest, runRequestProblem, type RunRequestInput } from '../../shared/messages.js';
import { runIdPrefix } from '../../shared/roles.js';
import { signRequest } from '../../shared/signing.js';
import { EXCHANGES, ROUTING } from '../../shared/topology.js';
import { followRun } from '../../shared/follow-run.js';
import { GitHubReporter, type GitHubReporterOptions } from './reporter.js';

/** A comment this old is not acted on (a replayed delivery). */
const STALE_MS = 10 * 60_000;
const MAX_BODY_BYTES = 25 * 1024 * 1024;

export interface WebhookOptions {
  brokerUrl: string;
  log: Logger;
  /** The webhook's secret (GitHub's repository or app setting). */
  secret: string;
  github: GitHubReporterOptions;
  port: number;
  host?: string;
  /** The comment that starts a run begins with this. */
  phrase: string;
  /** author_association values whose comments may start a run. */
  allow: string[];
  /** Also run on pull_request opened / synchronize / reopened. */
  onPullRequest: boolean;
  /** Run before publishing, `{sha}`, `{repo}`, `{pr}` filled in (shell-quoted). */
  buildCommand?: string;
  /** The run: a run request's fields, `{sha}`, `{repo}`, `{pr}` filled in in the strings. */
  run: Omit<RunRequestInput, 'type'>;
  signingKey?: Buffer;
}

interface Trigger {
  owner: string;
  repo: string;
  pr: number;
  why: string;
  commentId?: number;
  pattern?: string;
  exclude?: string;
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export class WebhookService {
  state: Lifecycle = 'starting';
  private server?: http.Server;
  private broker?: Broker;
  private readonly seen = new Set<string>();
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly opts: WebhookOptions) {}

  get port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? this.opts.port;
  }

  async start(): Promise<void> {
    this.broker = new Broker({ url: this.opts.brokerUrl, name: 'warren github', log: this.opts.log });
    await this.broker.start();
    this.server = http.createServer((req, res) => void this.onRequest(req, res));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.opts.port, this.opts.host ?? '0.0.0.0', () => resolve());
    });
    this.state = 'running';
    this.opts.log.info({ port: this.port, phrase: this.opts.phrase, allow: this.opts.allow }, 'github webhook listening');
  }

  async stop(): Promise<void> {
    this.state = 'stopped';
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    await Promise.allSettled([...this.running]);
    await this.broker?.close();
  }

  private async onRequest(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const answer = (status: number, text: string) => {
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(`${text}\n`);
    };
    if (req.method !== 'POST') return answer(405, 'POST webhooks here');
    let body = '';
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY_BYTES) return answer(413, 'too big');
      body += chunk;
    }
    const signature = String(req.headers['x-hub-signature-256'] ?? '');
    const event = String(req.headers['x-github-event'] ?? '');
    const delivery = String(req.headers['x-github-delivery'] ?? '');
    if (!signature) {
      this.opts.log.warn({ event, delivery }, 'webhook refused: unsigned');
      return answer(401, 'unsigned');
    }
    if (!(await verify(this.opts.secret, body, signature).catch(() => false))) {
      this.opts.log.warn({ event, delivery }, 'webhook refused: the signature does not match');
      return answer(401, 'bad signature');
    }
    if (!delivery || this.seen.has(delivery)) {
      this.opts.log.warn({ event, delivery }, 'webhook refused: a delivery seen before (stale)');
      return answer(409, 'stale');
    }
    this.seen.add(delivery);
    if (this.seen.size > 10_000) this.seen.delete(this.seen.values().next().value!);
    let payload: Record<string, any>;
    try {
      payload = JSON.parse(body) as Record<string, any>;
    } catch {
      return answer(400, 'not JSON');
    }
    const trigger = this.trigger(event, payload);
    if (typeof trigger === 'string') {
      this.opts.log.info({ event, delivery, why: trigger }, 'webhook ignored');
      return answer(202, `ignored: ${trigger}`);
    }
    answer(202, 'run starting');
    const job = this.start1(trigger).catch((err: Error) => this.opts.log.error({ err: err.message, pr: `${trigger.owner}/${trigger.repo}#${trigger.pr}` }, 'pull request run failed'));
    this.running.add(job);
    void job.finally(() => this.running.delete(job));
  }

  /** What to run for this delivery, or why nothing. */
  private trigger(event: string, p: Record<string, any>): Trigger | string {
    const owner = p.repository?.owner?.login as string | undefined;
    const repo = p.repository?.name as string | undefined;
    if (!owner || !repo) return 'no repository in the payload';
    if (event === 'issue_comment') {
      if (p.action !== 'created') return `comment ${p.action}`;
      if (!p.issue?.pull_request) return 'a comment on an issue, not a pull request';
      const text = String(p.comment?.body ?? '').trim();
      if (!text.startsWith(this.opts.phrase)) return 'a comment without the phrase';
      const who = String(p.comment?.author_association ?? 'NONE');
      if (!this.opts.allow.includes(who)) return `${p.comment?.user?.login ?? 'someone'} (${who}) may not start runs`;
      const at = Date.parse(p.comment?.created_at ?? '');
      if (Number.isFinite(at) && Date.now() - at > STALE_MS) return 'a comment too old (stale)';
      const args = text.slice(this.opts.phrase.length).trim().split(/\s+/).filter(Boolean);
      const flag = (name: string) => {
        const i = args.indexOf(name);
        return i >= 0 ? args[i + 1] : undefined;
      };
      return { owner, repo, pr: Number(p.issue.number), why: `comment by ${p.comment?.user?.login}`, commentId: Number(p.comment.id), pattern: flag('--pattern'), exclude: flag('--exclude') };
    }
    if (event === 'pull_request') {
      if (!this.opts.onPullRequest) return 'pull_request events are not configured to start runs';
      if (!['opened', 'synchronize', 'reopened'].includes(p.action)) return `pull request ${p.action}`;
      return { owner, repo, pr: Number(p.pull_request?.number ?? p.number), why: `pull request ${p.action}` };
    }
    return `event ${event || '(none)'}`;
  }

  private async start1(t: Trigger): Promise<void> {
    const pr = `${t.owner}/${t.repo}#${t.pr}`;
    const reporter = new GitHubReporter({ owner: t.owner, repo: t.repo, number: t.pr }, this.opts.github);
    if (t.commentId) await reporter.react(t.commentId, 'rocket');
    const sha = await reporter.headSha();
    const fill = (s: string, q = false) => s.replace(/\{(sha|repo|pr)\}/g, (_, k: string) => {
      const v = k === 'sha' ? sha : k === 'repo' ? `${t.owner}/${t.repo}` : String(t.pr);
      return q ? quote(v) : v;
    });
    if (this.opts.github.reportUrl) reporter.reportUrl = fill(this.opts.github.reportUrl);
    const runId = `${runIdPrefix(userOf(this.opts.brokerUrl.split(',')[0]!))}gh-${t.repo}-${t.pr}-${sha.slice(0, 7)}-${randomBytes(3).toString('hex')}`.replace(/[^A-Za-z0-9_.-]/g, '-');
    await reporter.started(runId);
    if (this.opts.buildCommand) {
      const built = await new Promise<{ code: number; err: string }>((resolve) => {
        execFile('sh', ['-c', fill(this.opts.buildCommand!, true)], { env: { ...process.env, WARREN_SHA: sha, WARREN_PR: String(t.pr), WARREN_REPO: `${t.owner}/${t.repo}` }, maxBuffer: 16 * 1024 * 1024 }, (err, _out, stderr) => {
          resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, err: String(stderr) });
        });
      });
      if (built.code !== 0) {
        const last = built.err.trim().split('\n').slice(-1)[0] ?? '';
        await reporter.ended({ runId, status: 'error', error: `the build command exited with code ${built.code}${last ? `: ${last}` : ''}` });
        return;
      }
    }
    const fields = JSON.parse(JSON.stringify(this.opts.run), (_k, v: unknown) => (typeof v === 'string' ? fill(v) : v)) as Omit<RunRequestInput, 'type'>;
    let request = RunRequest.parse({ ...fields, type: 'run.request', runId, pattern: t.pattern ?? fields.pattern, exclude: t.exclude ?? fields.exclude, startedBy: `github ${t.why} on ${pr}` });
    const problem = runRequestProblem(request);
    if (problem) {
      await reporter.ended({ runId, status: 'error', error: problem });
      return;
    }
    if (this.opts.signingKey) request = signRequest(request, this.opts.signingKey);
    const following = await followRun(this.broker!, runId, { timeoutMs: request.runTimeoutSec * 1000 + 120_000, timeoutMessage: () => `no report for run ${runId}` });
    await this.broker!.publish(EXCHANGES.runs, ROUTING.runRequest, request);
    this.opts.log.info({ runId, pr, sha, why: t.why }, 'run published for a pull request');
    const outcome = await following.report;
    if (outcome.type === 'run.finished') await reporter.ended(outcome);
    else this.opts.log.info({ runId, pr, status: outcome.status, comment: await reporter.finished(outcome) }, 'result put on the pull request');
  }
}
