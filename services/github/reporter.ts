/**
 * A run's result back on its pull request: one comment per pull request (found again by a
 * marker and updated in place on later runs), with the totals, the failed tests and their
 * first failure line, the flaky ones, the duration and a link to the report; and a commit
 * status on the pull request's head (pending when the run starts, then success or failure).
 * Through the GitHub REST API (@octokit/rest), at GITHUB_API_URL (GitHub Enterprise; default
 * the public API) with GITHUB_TOKEN, the variables GitHub Actions sets. The token is never
 * logged or printed.
 */
import { Octokit } from '@octokit/rest';
import { UsageError } from '../../shared/errors.js';
import type { RunReport } from '../../shared/messages.js';

/** Marks Warren's comment on a pull request (the one updated on later runs). */
export const COMMENT_MARKER = '<!-- warren-report -->';
/** The commit status's name on the pull request. */
export const STATUS_CONTEXT = 'warren';
const MAX_LISTED = 30;

export interface PullRequest {
  owner: string;
  repo: string;
  number: number;
}

/** `OWNER/REPO#N`. */
export function parsePullRequest(text: string): PullRequest {
  const m = /^([A-Za-z0-9_.-]+)\/([A-Za-z0-9_.-]+)#(\d+)$/.exec(text);
  if (!m) throw new UsageError(`--github-pr: expected OWNER/REPO#NUMBER, got ${JSON.stringify(text)}`);
  return { owner: m[1]!, repo: m[2]!, number: Number(m[3]) };
}

export interface GitHubReporterOptions {
  token: string;
  /** Default https://api.github.com. */
  apiUrl?: string;
  /** Where the report can be read (a CI artifact, a file server): linked from the comment. */
  reportUrl?: string;
}

/** GITHUB_TOKEN and GITHUB_API_URL, refused in one line when the token is missing. */
export function reporterFromEnv(reportUrl?: string, env: NodeJS.ProcessEnv = process.env): GitHubReporterOptions {
  const token = env.GITHUB_TOKEN;
  if (!token) throw new UsageError('--github-pr: set GITHUB_TOKEN (a token that may write pull request comments and commit statuses)');
  return { token, apiUrl: env.GITHUB_API_URL || undefined, reportUrl };
}

export class GitHubReporter {
  private readonly api: Octokit;
  private sha?: string;

  constructor(private readonly pr: PullRequest, private opts: GitHubReporterOptions) {
    this.api = new Octokit({
      auth: opts.token,
      baseUrl: (opts.apiUrl ?? 'https://api.github.com').replace(/\/$/, ''),
      userAgent: 'warren',
      // the CLI says what failed, in one line; octokit's own console logging is not wanted
      log: { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined },
      request: { retries: 0 },
    });
  }

  /** The pull request's head commit (what the statuses are set on). */
  async headSha(): Promise<string> {
    if (this.sha) return this.sha;
    const { data } = await this.call('read the pull request', () => this.api.pulls.get({ owner: this.pr.owner, repo: this.pr.repo, pull_number: this.pr.number }));
    this.sha = data.head.sha;
    return this.sha;
  }

  /** Where the report will be (known once the head commit is). */
  set reportUrl(url: string | undefined) {
    this.opts = { ...this.opts, reportUrl: url };
  }

  /** Acknowledges the comment that asked for the run. */
  async react(commentId: number, content: 'rocket' | 'eyes' | '+1'): Promise<void> {
    await this.call('react to the comment', () => this.api.reactions.createForIssueComment({ owner: this.pr.owner, repo: this.pr.repo, comment_id: commentId, content }));
  }

  async started(runId: string): Promise<void> {
    await this.status('pending', `run ${runId} in progress`);
  }

  /** The comment (made or updated) and the final status. Returns the comment's URL. */
  async finished(report: RunReport): Promise<string> {
    const body = commentBody(report, this.opts.reportUrl);
    const mine = await this.findComment();
    const base = { owner: this.pr.owner, repo: this.pr.repo };
    const { data } = mine
      ? await this.call('update the comment', () => this.api.issues.updateComment({ ...base, comment_id: mine, body }))
      : await this.call('comment', () => this.api.issues.createComment({ ...base, issue_number: this.pr.number, body }));
    const t = report.totals;
    const state = report.status === 'passed' ? 'success' : report.status === 'failed' ? 'failure' : 'error';
    const description = report.error ? report.error.slice(0, 130) : `${t.passed} passed, ${t.failed} failed, ${t.flaky} flaky of ${t.total}`;
    await this.status(state, description);
    return data.html_url;
  }

  /** A run that ended without a report (refused, or ended before): an error status saying why. */
  async ended(notice: { status: string; error?: string; runId: string }): Promise<void> {
    await this.status(notice.status === 'passed' ? 'success' : notice.status === 'failed' ? 'failure' : 'error', (notice.error ?? `run ${notice.runId} ${notice.status}`).slice(0, 130));
  }

  private async findComment(): Promise<number | undefined> {
    const comments = await this.call('list the comments', () => this.api.paginate(this.api.issues.listComments, { owner: this.pr.owner, repo: this.pr.repo, issue_number: this.pr.number, per_page: 100 }));
    return comments.find((c) => c.body?.includes(COMMENT_MARKER))?.id;
  }

  private async status(state: 'pending' | 'success' | 'failure' | 'error', description: string): Promise<void> {
    const sha = await this.headSha();
    await this.call('set the commit status', () => this.api.repos.createCommitStatus({
      owner: this.pr.owner, repo: this.pr.repo, sha, state, context: STATUS_CONTEXT, description, ...(this.opts.reportUrl ? { target_url: this.opts.reportUrl } : {}),
    }));
  }

  /** One GitHub call; its failure in one line, saying what was tried on which pull request. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const e = err as { status?: number; message?: string };
      throw new Error(`GitHub: could not ${what} of ${this.pr.owner}/${this.pr.repo}#${this.pr.number}: ${e.status ?? ''} ${String(e.message ?? err).split('\n')[0]}`.replace(/\s+/g, ' ').trim());
    }
  }
}

const secs = (r: RunReport) => ((r.finishedAt - r.startedAt) / 1000).toFixed(1);
const esc = (s: string) => s.replace(/[<>]/g, (c) => (c === '<' ? '&lt;' : '&gt;')).replace(/\|/g, '\\|');
const first = (s?: string) => (s ?? '').split('\n').map((l) => l.trim()).find(Boolean) ?? '';
/** The failure's message, and when it says only how the process ended, what it printed first. */
function firstLine(t: { message?: string; details?: string }): string {
  const message = first(t.message);
  if (!message) return first(t.details);
  return /^(exited with code \d+|killed by SIG\w+)$/.test(message) && first(t.details) ? `${message}: ${first(t.details)}` : message;
}

/** The comment: what a reviewer needs at a glance, the rest behind the report link. */
export function commentBody(r: RunReport, reportUrl?: string): string {
  const t = r.totals;
  const icon = r.status === 'passed' ? '✅' : r.status === 'failed' ? '❌' : r.status === 'cancelled' ? '⏹️' : '⚠️';
  const lines = [
    COMMENT_MARKER,
    `### ${icon} Warren: ${r.status} — ${t.total} tests, ${t.passed} passed, ${t.failed} failed, ${t.flaky} flaky${t.pending ? `, ${t.pending} pending` : ''}${t.notRun ? `, ${t.notRun} not run` : ''}`,
    '',
    `Run \`${r.runId}\` (${r.adapter}), ${r.rounds} round${r.rounds === 1 ? '' : 's'}, ${secs(r)} s${reportUrl ? ` · [full report](${reportUrl})` : ''}`,
  ];
  if (r.error) lines.push('', `**${esc(r.error)}**`);
  if (r.stopped) lines.push('', `Stopped: ${esc(r.stopped)}`);
  const failed = r.tests.filter((x) => x.status === 'failed');
  if (failed.length) {
    lines.push('', `**Failed (${failed.length})**`, '', '| test | first failure line |', '| --- | --- |');
    for (const x of failed.slice(0, MAX_LISTED)) lines.push(`| \`${esc(x.name || x.id)}\` | ${esc(firstLine(x)).slice(0, 200)} |`);
    if (failed.length > MAX_LISTED) lines.push('', `…and ${failed.length - MAX_LISTED} more in the report.`);
  }
  const flaky = r.tests.filter((x) => x.status === 'flaky');
  if (flaky.length) {
    lines.push('', `**Flaky (${flaky.length})**: failed, then passed on a re-run`, '');
    for (const x of flaky.slice(0, MAX_LISTED)) lines.push(`- \`${esc(x.name || x.id)}\` (${x.attempts.join(' → ')})`);
  }
  return lines.join('\n') + '\n';
}

/** GitHub Actions annotations for the failures: `::error file=…,line=…::…` (a line when the details name one). */
export function actionsAnnotations(r: RunReport): string[] {
  const out: string[] = [];
  const escData = (s: string) => s.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
  const escProp = (s: string) => escData(s).replace(/:/g, '%3A').replace(/,/g, '%2C');
  for (const t of r.tests.filter((x) => x.status === 'failed')) {
    const file = t.file.replace(/^\.\//, '');
    const line = file ? new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:(\\d+)`).exec(`${t.details ?? ''}\n${t.message ?? ''}`)?.[1] : undefined;
    const where = [file ? `file=${escProp(file)}` : '', line ? `line=${line}` : '', `title=${escProp(t.name || t.id)}`].filter(Boolean).join(',');
    out.push(`::error ${where}::${escData(firstLine(t) || 'failed')}`);
  }
  return out;
}
