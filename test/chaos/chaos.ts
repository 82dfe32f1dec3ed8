/**
 * The chaos suite: many runs of an all-passing suite through a world of Warren's services
 * (world.ts) while faults (faults.ts) are injected at random moments from a seeded
 * generator; then a checker classifies every expected test of every run (ok, lost,
 * duplicated, wrong status) and every run (finished, stalled, exit code), and prints a table
 * per fault kind with the seed, so a failure can be replayed (`npm run chaos -- --seed N`).
 *
 * The suite: test N of run R appends `R N pid host start ms` to a log, sleeps, appends `end`.
 * A test whose process the chaos killed may be failed (or flaky after its re-run); every
 * other test must pass, once, in its run's report, and no test may start after its run's
 * report is out.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { RunReport } from '../../shared/messages.js';
import { BIN } from '../helpers/cli.js';
import { FAULTS, seeded, type FaultContext } from './faults.js';
import { World } from './world.js';

export interface ChaosOptions {
  seed: number;
  /** Faults to inject in all. */
  faults: number;
  nodes: 1 | 3;
  docker: boolean;
  /** Workers per supervisor. */
  workers: number;
  /** Runs in progress at once. */
  concurrentRuns: number;
  /** Tests per run, at least and at most. */
  tests: [number, number];
  /** Pause between two faults, at least and at most (ms). */
  gapMs: [number, number];
  /** A run not finished this long after it started is stalled. */
  stallMs: number;
  /** The docker supervisor's image. */
  image: string;
  /** Fault kinds to leave out. */
  without?: string[];
  out: (line: string) => void;
}

interface FaultRecord {
  kind: string;
  target: string;
  at: number;
  healedAt: number;
  error?: string;
}

interface RunRecord {
  name: string;
  tests: number;
  startedAt: number;
  endedAt?: number;
  code?: number | null;
  stalled: boolean;
  stderr: string;
  lost: string[];
  duplicated: string[];
  wrong: string[];
  /** Tests that started after the run's report was out. */
  late: string[];
  /** Why the run as a whole is wrong (no report, exit code). */
  problem?: string;
  /** `warren run` could not reach any broker node when it started: exit 2, said so, nothing published. */
  refused?: boolean;
}

export interface ChaosResult {
  seed: number;
  faults: FaultRecord[];
  runs: RunRecord[];
  ownExits: string[];
  ok: boolean;
  lines: string[];
}

const T_SH = `#!/bin/sh
echo "$CHAOS_RUN $1 $$ $(hostname) start $(date +%s%3N)" >> "$CHAOS_LOG"
sleep 0.2
echo "$CHAOS_RUN $1 $$ $(hostname) end $(date +%s%3N)" >> "$CHAOS_LOG"
`;

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'warren-chaos-'));
  const suite = path.join(dir, 'suite');
  fs.mkdirSync(suite);
  fs.chmodSync(dir, 0o755);
  fs.chmodSync(suite, 0o777);
  fs.writeFileSync(path.join(suite, 't.sh'), T_SH, { mode: 0o755 });
  const execLog = path.join(suite, 'exec.log');
  fs.writeFileSync(execLog, '', { mode: 0o666 });
  fs.chmodSync(execLog, 0o666);
  o.out(`chaos: seed ${o.seed}, ${o.faults} faults, ${o.nodes} broker node${o.nodes > 1 ? 's' : ''}, in ${dir}`);

  const world = new World({ nodes: o.nodes, dir, docker: o.docker, workers: o.workers, suite, image: o.image });
  await world.start();
  const faultRng = seeded(o.seed);
  const runRng = seeded(o.seed ^ 0x9e3779b9);
  const ctx: FaultContext = { world, rng: faultRng, execLog, victims: new Set() };
  const runs: RunRecord[] = [];
  const faults: FaultRecord[] = [];
  const pending = new Set<Promise<void>>();
  let injecting = true;

  const startRun = () => {
    const name = `r${runs.length + 1}`;
    const rec: RunRecord = {
      name, tests: runRng.between(o.tests[0], o.tests[1]), startedAt: Date.now(), stalled: false, stderr: '',
      lost: [], duplicated: [], wrong: [], late: [],
    };
    runs.push(rec);
    const reportDir = path.join(dir, 'reports', name);
    const child = spawn(process.execPath, [
      BIN, 'run', '--broker', world.url, '--run-id', `chaos-${o.seed}-${name}`, '--adapter', 'command', '--cwd', suite,
      '--discover-command', `seq 1 ${rec.tests}`, '--run-command', 'sh ./t.sh {id}',
      '--env', `CHAOS_RUN=${name}`, '--env', `CHAOS_LOG=${execLog}`, '--report-dir', reportDir, '--no-timings',
      '--rerun-threshold', '1', '--max-rounds', '2', '--test-timeout', '60', '--run-timeout', String(Math.round(o.stallMs / 1000) * 2),
      // the faults take every supervisor (or the broker, and with it their heartbeats) away
      // for a while: a run started then waits for them, as one on a fleet that comes back would
      '--wait-for-workers',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    const cliLog = fs.createWriteStream(path.join(dir, 'logs', `cli-${name}.log`));
    child.stderr!.setEncoding('utf8').on('data', (c: string) => {
      cliLog.write(c);
      rec.stderr = (rec.stderr + c).slice(-4000);
    });
    const done = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        rec.stalled = true;
        child.kill('SIGKILL');
      }, o.stallMs);
      child.on('close', (code) => {
        clearTimeout(timer);
        rec.endedAt = Date.now();
        rec.code = code;
        resolve();
      });
    }).then(() => {
      pending.delete(done);
      if (injecting) startRun();
    });
    pending.add(done);
  };
  for (let i = 0; i < o.concurrentRuns; i++) startRun();

  const kinds = FAULTS.filter((f) => !o.without?.includes(f.kind));
  for (let i = 0; i < o.faults; i++) {
    await sleep(faultRng.between(o.gapMs[0], o.gapMs[1]));
    const possible = kinds.filter((f) => f.possible(ctx));
    const fault = faultRng.pick(possible);
    const rec: FaultRecord = { kind: fault.kind, target: '', at: Date.now(), healedAt: 0 };
    try {
      rec.target = await fault.inject(ctx);
    } catch (err) {
      rec.error = (err as Error).message.split('\n')[0];
    }
    rec.healedAt = Date.now();
    faults.push(rec);
    fs.appendFileSync(path.join(dir, 'faults.log'), `${rec.at} ${rec.healedAt} ${rec.kind}: ${rec.target}${rec.error ? ` (${rec.error})` : ''}\n`);
    if ((i + 1) % 10 === 0) o.out(`  ${i + 1} faults injected, ${runs.length} runs started`);
  }
  injecting = false;
  while (pending.size > 0) await Promise.race(pending);
  const ownExits = world.services.flatMap((s) => s.ownExits);
  const exec = readExecLog(execLog);
  for (const run of runs) check(run, path.join(dir, 'reports', run.name, 'report.json'), ctx.victims, exec);
  const bad = runs.some((r) => r.stalled || r.problem || r.lost.length || r.duplicated.length || r.wrong.length || r.late.length);
  await world.stop(bad || ownExits.length > 0);

  const lines = table(o, faults, runs, exec, ownExits, ctx.victims);
  for (const l of lines) o.out(l);
  // (a service must never give up by itself: that is a finding too)
  const ok = !bad && ownExits.length === 0 && faults.length >= o.faults;
  if (ok) fs.rmSync(dir, { recursive: true, force: true });
  else o.out(`kept for a look: ${dir} (faults.log, logs/, reports/, suite/exec.log)`);
  return { seed: o.seed, faults, runs, ownExits, ok, lines };
}

interface Exec {
  run: string;
  test: string;
  what: 'start' | 'end';
  at: number;
}

function readExecLog(file: string): Exec[] {
  return fs.readFileSync(file, 'utf8').split('\n').flatMap((l) => {
    const [run, test, , , what, at] = l.split(' ');
    return run && (what === 'start' || what === 'end') ? [{ run, test: test!, what, at: Number(at) }] : [];
  });
}

/** What went wrong with one run, from its report and the tests' log. */
function check(run: RunRecord, reportFile: string, victims: Set<string>, exec: Exec[]): void {
  if (run.stalled) return;
  let report: RunReport;
  try {
    report = JSON.parse(fs.readFileSync(reportFile, 'utf8')) as RunReport;
  } catch {
    // started while the (only) broker node was down: refused at once, nothing was published
    if (run.code === 2 && /^warren: cannot reach RabbitMQ at /m.test(run.stderr)) run.refused = true;
    else run.problem = `no report (warren run exited ${run.code}): ${lastLine(run.stderr)}`;
    return;
  }
  const seen = new Map<string, number>();
  for (const t of report.tests) seen.set(t.id, (seen.get(t.id) ?? 0) + 1);
  let victimFailed = false;
  for (let i = 1; i <= run.tests; i++) {
    const id = String(i);
    const n = seen.get(id) ?? 0;
    if (n === 0) run.lost.push(id);
    if (n > 1) run.duplicated.push(id);
  }
  for (const t of report.tests) {
    if (t.status === 'passed') continue;
    if (victims.has(`${run.name} ${t.id}`) && (t.status === 'failed' || t.status === 'flaky')) {
      if (t.status === 'failed') victimFailed = true;
      continue;
    }
    run.wrong.push(`${t.id}: ${t.status}${t.message ? ` (${t.message})` : ''}`);
  }
  if (report.tests.length > seen.size) run.problem ??= `the report lists ${report.tests.length} tests for ${seen.size} ids`;
  const expected = run.wrong.length || victimFailed ? 1 : 0;
  if (run.code !== expected && !run.problem) run.problem = `warren run exited ${run.code}, the report says ${expected}: ${lastLine(run.stderr)}`;
  // a test started after the report was out: its run's work went on (1 s for the notice to travel)
  for (const e of exec) if (e.run === run.name && e.what === 'start' && e.at > report.finishedAt + 1000) run.late.push(`${e.test} at +${e.at - report.finishedAt} ms`);
}

function table(o: ChaosOptions, faults: FaultRecord[], runs: RunRecord[], exec: Exec[], ownExits: string[], victims: Set<string>): string[] {
  const ends = exec.filter((e) => e.what === 'end').map((e) => e.at).sort((a, b) => a - b);
  /** From a fault's healing to the next test that finished anywhere. */
  const recovery = (f: FaultRecord) => {
    const next = ends.find((t) => t >= f.healedAt);
    return next === undefined ? undefined : next - f.at;
  };
  const affected = (f: FaultRecord) => runs.filter((r) => r.startedAt <= f.healedAt && (r.endedAt ?? Infinity) >= f.at);
  const out: string[] = [];
  const header = ['fault', 'count', 'runs hit', 'lost', 'duplicated', 'wrong', 'stalled', 'worst recovery'];
  const rows: string[][] = [];
  const kinds = [...new Set(faults.map((f) => f.kind))].sort();
  for (const kind of kinds) {
    const fs_ = faults.filter((f) => f.kind === kind);
    const hit = new Set(fs_.flatMap(affected));
    const sum = (k: 'lost' | 'duplicated' | 'wrong') => [...hit].reduce((n, r) => n + r[k].length, 0);
    const worst = Math.max(0, ...fs_.map((f) => recovery(f) ?? 0));
    rows.push([kind, String(fs_.length), String(hit.size), String(sum('lost')), String(sum('duplicated')), String(sum('wrong')),
      String([...hit].filter((r) => r.stalled).length), `${(worst / 1000).toFixed(1)} s`]);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  out.push('', fmt(header), fmt(widths.map((w) => '-'.repeat(w))), ...rows.map(fmt));
  const tests = runs.reduce((n, r) => n + r.tests, 0);
  const total = (k: 'lost' | 'duplicated' | 'wrong' | 'late') => runs.reduce((n, r) => n + r[k].length, 0);
  const finished = runs.filter((r) => !r.stalled).length;
  const codes = new Map<string, number>();
  for (const r of runs) codes.set(String(r.code), (codes.get(String(r.code)) ?? 0) + 1);
  out.push('');
  out.push(`faults: ${faults.length} injected (${faults.filter((f) => f.error).length} could not be), seed ${o.seed}`);
  const refused = runs.filter((r) => r.refused).length;
  out.push(`runs: ${runs.length}, ${finished - refused} finished, ${runs.length - finished} stalled${refused ? `, ${refused} refused at start (no broker node reachable: exit 2, one line)` : ''}; exit codes ${[...codes].map(([c, n]) => `${c}×${n}`).join(', ')}`);
  out.push(`tests: ${tests} expected; ${total('lost')} lost, ${total('duplicated')} duplicated, ${total('wrong')} wrong status, ${victims.size} test processes killed by the chaos; ${total('late')} started after their run's report`);
  if (ownExits.length) out.push(`services that exited by themselves: ${ownExits.join('; ')}`);
  for (const r of runs) {
    const what = [
      r.stalled ? `stalled (no end in ${o.stallMs / 1000} s): ${lastLine(r.stderr)}` : '',
      r.problem ?? '',
      r.lost.length ? `lost ${r.lost.join(',')}` : '',
      r.duplicated.length ? `duplicated ${r.duplicated.join(',')}` : '',
      r.wrong.length ? `wrong ${r.wrong.join('; ')}` : '',
      r.late.length ? `started after the report: ${r.late.join(', ')}` : '',
    ].filter(Boolean);
    if (what.length) out.push(`  ${r.name} (${r.tests} tests): ${what.join(' | ')}`);
  }
  for (const f of faults.filter((x) => x.error)) out.push(`  ${f.kind} on ${f.target || '?'} could not be injected: ${f.error}`);
  out.push(`replay: npm run chaos -- --seed ${o.seed} --faults ${o.faults} --nodes ${o.nodes} --gap ${o.gapMs.join(',')}${o.docker ? '' : ' --no-docker'}${(o.without ?? []).map((w) => ` --without '${w}'`).join('')}`);
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const lastLine = (s: string) => s.trim().split('\n').filter(Boolean).slice(-1)[0] ?? '';
