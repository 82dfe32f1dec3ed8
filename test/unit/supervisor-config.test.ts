import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { loadSupervisorConfig, parseLabels } from '../../services/worker-supervisor/config.js';
import { ImagePuller, type ImageStore } from '../../services/worker-supervisor/drivers/images.js';
import { tmpDir } from '../helpers/cli.js';

test('flags win over the environment, which wins over the config file; sizes are parsed', () => {
  const file = path.join(tmpDir(), 'supervisor.json');
  fs.writeFileSync(file, JSON.stringify({ workers: 3, driver: 'docker', docker: { memory: '1g', network: 'host', image: 'from-file' } }));
  process.env.WARREN_IMAGE = 'from-env';
  try {
    const c = loadSupervisorConfig({ config: file, docker: { memory: '512m' } });
    assert.equal(c.workers, 3);
    assert.equal(c.driver, 'docker');
    assert.equal(c.docker.memory, 512 * 1024 * 1024);
    assert.equal(c.docker.network, 'host');
    assert.equal(c.docker.image, 'from-env');
    assert.equal(c.docker.isolation, 'slot');
  } finally {
    delete process.env.WARREN_IMAGE;
  }
});

test('bad config is refused at start with the field named', () => {
  assert.throws(() => loadSupervisorConfig({ workers: 0 }), /^UsageError: supervisor config: workers: /);
  assert.throws(() => loadSupervisorConfig({ docker: { memory: 'lots' } }), /supervisor config: docker\.memory: expected a size like 512m/);
  assert.throws(() => loadSupervisorConfig({ docker: { network: 'bridge' as 'host' } }), /supervisor config: docker\.network: /);
  assert.throws(() => loadSupervisorConfig({ driver: 'kubernetes' as 'local' }), /supervisor config: driver: /);
  assert.throws(() => loadSupervisorConfig({ config: '/nonexistent.json' }), /--config: cannot read \/nonexistent\.json/);
  assert.throws(() => parseLabels('=a', 'WARREN_LABELS'), /^UsageError: WARREN_LABELS: expected name or name=value/);
  assert.throws(() => loadSupervisorConfig({ labels: { 'bad label': '' } }), /supervisor config: labels\.bad label: /);
  assert.deepEqual(parseLabels('rack=a, gpu=no'), { rack: 'a', gpu: 'no' });
  assert.deepEqual(parseLabels('ruby,os=linux'), { ruby: '', os: 'linux' }, 'a bare name is a label too');
});

test('an image is pulled once however many slots ask at the same time; failures say which image', async () => {
  const pulls: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const store: ImageStore = {
    has: async (image) => image === 'present',
    pull: async (image) => {
      pulls.push(image);
      await gate;
      if (image === 'missing') throw new Error('manifest unknown');
    },
  };
  const puller = new ImagePuller(store);
  const asks = [puller.ensure('suite:1'), puller.ensure('suite:1'), puller.ensure('suite:1'), puller.ensure('present')];
  release();
  await Promise.all(asks);
  assert.deepEqual(pulls, ['suite:1'], 'one pull for three slots; none for an image that is there');
  await assert.rejects(puller.ensure('missing'), /^Error: cannot pull image missing: manifest unknown$/);
  await assert.rejects(puller.ensure('missing'), /cannot pull image missing/, 'a failed pull is not cached');
  assert.deepEqual(pulls, ['suite:1', 'missing', 'missing']);
});
