/**
 * `warren run --github-pr OWNER/REPO#N` against a recording fake of the GitHub API: a
 * pending status when the run starts, one comment (made, then updated in place on the next
 * run) and a final status on the pull request's head; annotations inside GitHub Actions; a
 * wrong pull request or a missing token refused in one line before anything runs. The token
 * goes only in the Authorization header.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createVhost, type TestVhost } from '../helpers/rabbit.js';
import { runCli, tmpDir } from '../helpers/cli.js';
import { fakeGitHub, type FakeGitHub } from '../helpers/fake-github.js';
import { COMMENT_MARKER } from '../../services/github/reporter.js';

const TOKEN = 'ghs_not_a_real_token_5e1f';
const SHA = 'a1b2c3d4e5f60718293a4b5c6d7e8f9012345678';
let vhost: TestVhost;
let gh: FakeGitHub;
before(async () => {
  vhost = await createVhost('warren-e2e-github');
  gh = await fakeGitHub({ 'acme/app#7': SHA });
});
after(async () => {
  await gh.close();
  await vhost.delete();
});

const run = (runCommand: string, pr = 'acme/app#7', env: Record<string, string> = {}) => runCli([
  'run', '--local', '--workers', '1', '--broker', vhost.url, '--adapter', 'command', '--cwd', tmpDir(), '--report-dir', tmpDir(), '--no-timings',
  '--max-rounds', '1', '--discover-command', 'seq 1 3', '--run-command', runCommand, '--github-pr', pr, '--report-url', 'https://ci.example/build/42/report.html',
], { env: { GITHUB_TOKEN: TOKEN, GITHUB_API_URL: gh.url, GITHUB_ACTIONS: 'true', ...env } });

test('a failing run: pending, one comment with the failure, a failure status, annotations; the next run updates the same comment', async () => {
  const res = await run('[ {id} != 2 ] || { echo "expected 1, got 2" >&2; exit 1; }');
  assert.equal(res.code, 1, `${res.stdout}\n${res.stderr}`);
  assert.deepEqual(gh.requests.map((r) => `${r.method} ${r.path}`), [
    'GET /repos/acme/app/pulls/7',
    `POST /repos/acme/app/statuses/${SHA}`,
    'GET /repos/acme/app/issues/7/comments',
    'POST /repos/acme/app/issues/7/comments',
    `POST /repos/acme/app/statuses/${SHA}`,
  ]);
  assert.ok(gh.requests.every((r) => r.authorization === `token ${TOKEN}`), 'the token in the Authorization header');
  assert.deepEqual(gh.statuses.map((s) => [s.state, s.context]), [['pending', 'warren'], ['failure', 'warren']]);
  assert.equal(gh.comments.length, 1);
  const body = gh.comments[0]!.body;
  assert.ok(body.startsWith(COMMENT_MARKER));
  assert.match(body, /❌ Warren: failed — 3 tests, 2 passed, 1 failed, 0 flaky/);
  assert.match(body, /\| `2` \| exited with code 1: expected 1, got 2 \|/);
  assert.match(body, /\[full report\]\(https:\/\/ci\.example\/build\/42\/report\.html\)/);
  assert.match(res.stdout, /^::error title=2::exited with code 1: expected 1, got 2$/m);
  assert.match(res.stdout, /warren: the result is on acme\/app#7: https:\/\/github\.example\/acme\/app\/pull\/7#issuecomment-1000/);
  assert.ok(!(res.stdout + res.stderr).includes(TOKEN), 'the token is not printed');

  const again = await run('true');
  assert.equal(again.code, 0, `${again.stdout}\n${again.stderr}`);
  assert.equal(gh.comments.length, 1, 'still one comment');
  assert.ok(gh.requests.some((r) => r.method === 'PATCH' && r.path === '/repos/acme/app/issues/comments/1000'));
  assert.match(gh.comments[0]!.body, /✅ Warren: passed — 3 tests, 3 passed, 0 failed/);
  assert.equal(gh.statuses.at(-1)!.state, 'success');
});

test('a pull request that does not exist, or no token: one line, exit 2, nothing run', async () => {
  const before = gh.requests.length;
  const missing = await run('true', 'acme/app#999');
  assert.equal(missing.code, 2);
  assert.equal(missing.stderr, 'warren: GitHub: could not read the pull request of acme/app#999: 404 Not Found\n');
  assert.deepEqual(gh.requests.slice(before).map((r) => r.method), ['GET'], 'no status, no comment');
  assert.doesNotMatch(missing.stdout + missing.stderr, /published/);
  const noToken = await run('true', 'acme/app#7', { GITHUB_TOKEN: '' });
  assert.equal(noToken.code, 2);
  assert.equal(noToken.stderr, 'warren: --github-pr: set GITHUB_TOKEN (a token that may write pull request comments and commit statuses)\n');
});
