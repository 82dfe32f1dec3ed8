/**
 * `warren github` end to end: real webhook payloads (@octokit/webhooks-examples), signed as
 * GitHub signs them, posted to the real service, which runs the build command, publishes
 * the run to real services on a vhost of the shared broker and puts the result on a
 * recording fake of the GitHub API. An unsigned delivery, a wrong signature, a replayed
 * delivery, a comment from a non-collaborator and an unrelated comment start nothing; a
 * second run updates the same comment.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { sign } from '@octokit/webhooks-methods';
import { createVhost, waitFor, type TestVhost } from '../helpers/rabbit.js';
import { startService, stopService, tmpDir, watchService, type Watched } from '../helpers/cli.js';
import { freePort } from '../helpers/proxy.js';
import { fakeGitHub, type FakeGitHub } from '../helpers/fake-github.js';

const SECRET = 'webhook-secret-of-the-test';
const TOKEN = 'ghs_webhook_test_token_77';
const SHA = '0123456789abcdef0123456789abcdef01234567';
const SHA2 = 'fedcba9876543210fedcba9876543210fedcba98';
let vhost: TestVhost;
let gh: FakeGitHub;
let service: Watched;
let url: string;
const services: ChildProcess[] = [];
const builds = tmpDir();

const examples = () => createRequire(import.meta.url)('@octokit/webhooks-examples') as Array<{ name: string; examples: Array<Record<string, any>> }>;

/** A real issue_comment payload from GitHub's examples, made a pull request comment. */
function commentPayload(body: string, association = 'COLLABORATOR'): Record<string, any> {
  const p = structuredClone(examples().find((e) => e.name === 'issue_comment')!.examples.find((e) => e.action === 'created')!);
  p.issue.pull_request = { url: `https://api.github.com/repos/${p.repository.full_name}/pulls/${p.issue.number}` };
  p.comment.body = body;
  p.comment.author_association = association;
  p.comment.created_at = new Date().toISOString();
  return p;
}

let deliveries = 0;
async function deliver(payload: unknown, opts: { event?: string; signature?: string | null; delivery?: string } = {}): Promise<number> {
  const body = JSON.stringify(payload);
  const headers: Record<string, string> = { 'content-type': 'application/json', 'x-github-event': opts.event ?? 'issue_comment', 'x-github-delivery': opts.delivery ?? `d-${++deliveries}` };
  if (opts.signature !== null) headers['x-hub-signature-256'] = opts.signature ?? (await sign(SECRET, body));
  return (await fetch(url, { method: 'POST', headers, body })).status;
}

before(async () => {
  vhost = await createVhost('warren-e2e-github-webhook');
  const repo = commentPayload('x').repository;
  gh = await fakeGitHub({ [`${repo.owner.login}/${repo.name}#1`]: SHA, [`${repo.owner.login}/${repo.name}#2`]: SHA2 });
  services.push(startService(['dispatcher', '--broker', vhost.url, '--no-history']));
  services.push(startService(['aggregator', '--broker', vhost.url, '--report-dir', tmpDir()]));
  services.push(startService(['supervisor', '--broker', vhost.url, '--workers', '2']));
  const port = await freePort();
  url = `http://127.0.0.1:${port}/`;
  const suite = tmpDir();
  service = watchService([
    'github', '--broker', vhost.url, '--port', String(port), '--host', '127.0.0.1', '--on-pull-request',
    '--build-command', `echo {sha} {repo} {pr} >> ${path.join(builds, 'built')}`,
    '--adapter', 'command', '--cwd', suite, '--discover-command', 'seq 1 4', '--run-command', `[ {id} != 3 ] || [ -e ${path.join(builds, 'fixed')} ]`,
    '--report-url', 'https://ci.example/{sha}/report.html',
  ], { WARREN_GITHUB_WEBHOOK_SECRET: SECRET, GITHUB_TOKEN: TOKEN, GITHUB_API_URL: gh.url });
  await service.logged('github webhook listening');
});
after(async () => {
  await stopService(service.child, 'SIGKILL');
  for (const s of services) await stopService(s, 'SIGKILL');
  await gh.close();
  await vhost.delete();
});

test('unsigned, wrongly signed, replayed, from a non-collaborator, unrelated: nothing starts', async () => {
  const payload = commentPayload('/warren run');
  assert.equal(await deliver(payload, { signature: null }), 401);
  assert.equal(await deliver(payload, { signature: `sha256=${'0'.repeat(64)}` }), 401);
  assert.equal(await deliver(commentPayload('/warren run', 'NONE')), 202);
  assert.equal(await deliver(commentPayload('looks good to me')), 202);
  assert.equal(await deliver(commentPayload('/warren run'), { event: 'issues' }), 202);
  const once = commentPayload('great work, /warren run later');
  assert.equal(await deliver(once, { delivery: 'same-delivery' }), 202);
  assert.equal(await deliver(once, { delivery: 'same-delivery' }), 409);
  await service.logged('webhook ignored');
  assert.deepEqual(gh.requests, [], 'GitHub was not called');
  assert.ok(!fs.existsSync(path.join(builds, 'built')), 'nothing was built');
  assert.ok(service.lines.some((l) => l.includes('may not start runs')), 'the non-collaborator is logged');
});

test('a collaborator\'s "/warren run": a reaction, pending, the build, the run, one comment and a failure; the next run updates it', async () => {
  const asked = commentPayload('/warren run');
  assert.equal(await deliver(asked), 202);
  await waitFor('the final status', () => gh.statuses.some((s) => s.state !== 'pending') || undefined, 120_000);
  const calls = gh.requests.map((r) => `${r.method} ${r.path.replace(/\/repos\/[^/]+\/[^/]+/, '')}`);
  assert.deepEqual(calls.slice(0, 3), [`POST /issues/comments/${asked.comment.id}/reactions`, 'GET /pulls/1', `POST /statuses/${SHA}`]);
  assert.deepEqual(gh.statuses.map((s) => s.state), ['pending', 'failure']);
  assert.equal(gh.comments.length, 1);
  assert.match(gh.comments[0]!.body, /❌ Warren: failed — 4 tests, 3 passed, 1 failed/);
  assert.match(gh.comments[0]!.body, new RegExp(`\\[full report\\]\\(https://ci\\.example/${SHA}/report\\.html\\)`));
  assert.match(fs.readFileSync(path.join(builds, 'built'), 'utf8'), new RegExp(`^${SHA} Codertocat/Hello-World 1\\n$`));
  assert.ok(gh.requests.every((r) => r.authorization === `token ${TOKEN}`));
  assert.ok(!service.lines.join('\n').includes(TOKEN) && !service.lines.join('\n').includes(SECRET), 'neither the token nor the secret is logged');

  fs.writeFileSync(path.join(builds, 'fixed'), '');
  assert.equal(await deliver(commentPayload('/warren run')), 202);
  await waitFor('the second final status', () => gh.statuses.filter((s) => s.state !== 'pending').length >= 2 || undefined, 120_000);
  assert.equal(gh.comments.length, 1, 'the same comment, updated');
  assert.match(gh.comments[0]!.body, /✅ Warren: passed — 4 tests, 4 passed/);
  assert.equal(gh.statuses.at(-1)!.state, 'success');
});

test('with --on-pull-request, a push to a pull request (a real synchronize payload) runs it; a closed one does not', async () => {
  const pulls = examples().find((e) => e.name === 'pull_request')!.examples;
  const before = gh.statuses.length;
  assert.equal(await deliver(structuredClone(pulls.find((e) => e.action === 'closed')!), { event: 'pull_request' }), 202);
  assert.equal(await deliver(structuredClone(pulls.find((e) => e.action === 'synchronize')!), { event: 'pull_request' }), 202);
  await waitFor('the final status of pull request 2', () => gh.statuses.slice(before).some((s) => s.sha === SHA2 && s.state !== 'pending') || undefined, 120_000);
  assert.deepEqual(gh.statuses.slice(before).map((s) => [s.sha, s.state]), [[SHA2, 'pending'], [SHA2, 'success']], 'one run, for the push');
});
