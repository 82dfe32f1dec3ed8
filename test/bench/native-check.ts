/**
 * Shows that the generated benchmark suites (suites.ts) have the intended shape: for each
 * framework, generates the suite, runs it with the framework alone in one process and in its
 * own 2-worker mode (twice: the first run, then again with whatever the framework keeps
 * between runs: jest's cache, pytest's cache), and prints wall times and test counts.
 *
 *   node dist/test/bench/native-check.js [rspec|mocha|jest|pytest ...] [--keep] [--seed N] [--grouped]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { FRAMEWORKS, generateSuite, nativeParallel, nativeSerial, parseCounts, type Command, type Counts, type Framework } from './suites.js';

interface Timed {
  seconds: number;
  code: number | null;
  counts: Counts | null;
  log: string;
}

/** Runs `c` in `dir`, timing the wall clock from spawn to exit; output goes to a log file. */
function run(c: Command, dir: string, env: Record<string, string>, log: string): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(c.cmd, c.args, { cwd: dir, env: { ...process.env, ...env, ...c.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => chunks.push(b));
    child.stderr.on('data', (b: Buffer) => chunks.push(b));
    // a hung framework must not hang the check
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const seconds = (performance.now() - t0) / 1000;
      const out = Buffer.concat(chunks).toString();
      fs.writeFileSync(log, `$ ${c.cmd} ${c.args.join(' ')}\n${out}`);
      resolve({ seconds, code, counts: null, log: out });
    });
  });
}

async function check(framework: Framework, seed: number, keep: boolean, layout: 'mixed' | 'grouped') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `warren-bench-${framework}-`));
  const suite = generateSuite(framework, dir, { seed, layout });
  const ms = suite.tests.map((t) => t.ms);
  const shape = `${suite.files.length} files, ${suite.tests.length} tests, planned ${(suite.serialMs / 1000).toFixed(1)} s serial ` +
    `(<=20 ms: ${ms.filter((x) => x <= 20).length}, 20-300 ms: ${ms.filter((x) => x > 20 && x < 300).length}, ` +
    `>=300 ms: ${ms.filter((x) => x >= 300).length}; longest test ${Math.max(...ms)} ms, longest file ${(suite.longestFileMs / 1000).toFixed(2)} s), ` +
    `helper ${suite.helperMs} ms, layout ${layout}`;
  console.log(`\n${framework}: ${shape}\n  in ${dir}${Object.keys(suite.env).length ? `, env ${JSON.stringify(suite.env)}` : ''}`);
  const steps: [string, Command][] = [
    ['serial (1 process)', nativeSerial(framework, dir)],
    ['native 2 workers, 1st', nativeParallel(framework, dir, 2)],
    ['native 2 workers, 2nd', nativeParallel(framework, dir, 2)],
  ];
  const results: Timed[] = [];
  for (const [i, [what, cmd]] of steps.entries()) {
    const r = await run(cmd, dir, suite.env, path.join(dir, `native-check.${i}.log`));
    r.counts = parseCounts(framework, r.log);
    results.push(r);
    const c = r.counts ? `${r.counts.passed} passed, ${r.counts.failed} failed, ${r.counts.total} total` : 'NO SUMMARY FOUND';
    const ok = r.code === 0 && r.counts?.passed === suite.tests.length;
    // the 1-minute load average: other work on the machine skews the figures
    const load = `load ${os.loadavg()[0]!.toFixed(1)}`;
    console.log(`  ${what.padEnd(22)} ${r.seconds.toFixed(2).padStart(6)} s   ${load}   ${c}${ok ? '' : `   <-- exit ${r.code}, see ${path.join(dir, `native-check.${i}.log`)}`}`);
    console.log(`  ${''.padEnd(22)} $ ${path.basename(cmd.cmd)} ${cmd.args.map((a) => (a.includes('/') ? path.relative(dir, a) : a)).join(' ')}`);
  }
  const ideal = suite.serialMs / 2000 + suite.helperMs / 1000;
  console.log(`  ideal 2-worker (planned/2 + helper) ${ideal.toFixed(2)} s; serial / 2-worker(2nd) ${(results[0]!.seconds / results[2]!.seconds).toFixed(2)}`);
  if (!keep) fs.rmSync(dir, { recursive: true, force: true });
  return results.every((r) => r.code === 0 && r.counts?.passed === suite.tests.length);
}

async function main() {
  const args = process.argv.slice(2);
  const keep = args.includes('--keep');
  const si = args.indexOf('--seed');
  const seed = si >= 0 ? Number(args[si + 1]) : 1;
  const layout = args.includes('--grouped') ? 'grouped' : 'mixed';
  const chosen = args.filter((a): a is Framework => (FRAMEWORKS as readonly string[]).includes(a));
  console.log(`machine: ${os.cpus().length} cores, node ${process.version}; seed ${seed}`);
  let ok = true;
  for (const f of chosen.length ? chosen : FRAMEWORKS) ok = (await check(f, seed, keep, layout)) && ok;
  process.exit(ok ? 0 : 1);
}

void main();
