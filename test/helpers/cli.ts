/** Runs the real `warren` command (bin/warren.js) as a child process. */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RunReport } from '../../shared/messages.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = path.join(ROOT, 'bin/warren.js');
export const FIXTURES = path.join(ROOT, 'test/fixtures');

export interface CliResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`warren ${args.join(' ')} did not finish in ${opts.timeoutMs} ms\n${stderr}`));
    }, opts.timeoutMs ?? 240_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Starts a long-running `warren <service>`; kill it with .kill(). */
export function startService(args: string[], env: Record<string, string> = {}, opts: { capture?: boolean } = {}): ChildProcess {
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, WARREN_LOG_LEVEL: process.env.WARREN_TEST_LOG_LEVEL ?? 'warn', ...env },
    stdio: ['ignore', opts.capture ? 'pipe' : 'inherit', opts.capture ? 'pipe' : 'inherit'],
  });
  return child;
}

export function stopService(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}

export function tmpDir(prefix = 'warren-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function readReport(dir: string): RunReport {
  return JSON.parse(fs.readFileSync(path.join(dir, 'report.json'), 'utf8')) as RunReport;
}

/** A service started with `capture`, its log lines kept (stdout drained so it never blocks). */
export interface Watched {
  child: ChildProcess;
  lines: string[];
  /** Resolves at the first log line (JSON) whose `msg` is `msg`. */
  logged(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
}

export function watchService(args: string[], env: Record<string, string> = {}): Watched {
  const child = startService(args, { WARREN_LOG_LEVEL: 'info', ...env }, { capture: true });
  const lines: string[] = [];
  const listeners = new Set<(line: string) => void>();
  let rest = '';
  child.stdout!.resume();
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (rest + chunk).split('\n');
    rest = parts.pop()!;
    for (const line of parts) {
      lines.push(line);
      for (const l of listeners) l(line);
    }
  });
  const parse = (line: string): Record<string, unknown> | undefined => {
    try {
      return JSON.parse(line) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  };
  return {
    child,
    lines,
    logged(msg, timeoutMs = 60_000) {
      const seen = lines.map(parse).find((l) => l?.msg === msg);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for the log line "${msg}"`)), timeoutMs);
        const l = (line: string) => {
          const o = parse(line);
          if (o?.msg !== msg) return;
          listeners.delete(l);
          clearTimeout(timer);
          resolve(o);
        };
        listeners.add(l);
      });
    },
  };
}
