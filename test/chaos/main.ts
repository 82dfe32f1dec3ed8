/**
 * `npm run chaos [-- --seed N --faults N --nodes 1|3 --no-docker --workers N --gap LO,HI]`: the chaos
 * suite (chaos.ts) at full size; exits 1 when anything was lost, duplicated, wrong or
 * stalled.
 */
import { parseArgs } from 'node:util';
import { ensureBaseImages, SUITE_IMAGE } from '../helpers/docker.js';
import { runChaos } from './chaos.js';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    faults: { type: 'string', default: '200' },
    nodes: { type: 'string', default: '3' },
    'no-docker': { type: 'boolean', default: false },
    workers: { type: 'string', default: '2' },
    runs: { type: 'string', default: '2' },
    without: { type: 'string', multiple: true, default: [] },
    /** Pause between faults, ms: lo,hi. */
    gap: { type: 'string', default: '1000,4000' },
  },
});
const nodes = Number(values.nodes);
if (nodes !== 1 && nodes !== 3) {
  process.stderr.write(`--nodes: 1 or 3, got ${values.nodes}\n`);
  process.exit(2);
}
const gap = values.gap.split(',').map(Number);
if (gap.length !== 2 || !gap.every((g) => Number.isFinite(g) && g >= 0) || gap[0]! > gap[1]!) {
  process.stderr.write(`--gap: two pauses in ms, LO,HI with LO <= HI, got ${values.gap}\n`);
  process.exit(2);
}
const docker = !values['no-docker'];
if (docker) ensureBaseImages();
const result = await runChaos({
  seed: values.seed ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31),
  faults: Number(values.faults),
  nodes,
  docker,
  workers: Number(values.workers),
  concurrentRuns: Number(values.runs),
  tests: [10, 40],
  gapMs: gap as [number, number],
  stallMs: 240_000,
  image: SUITE_IMAGE,
  without: values.without,
  out: (l) => process.stdout.write(`${l}\n`),
});
process.exit(result.ok ? 0 : 1);
