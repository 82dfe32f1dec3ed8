/**
 * A run's `pattern` and `exclude` applied off the dispatcher's event loop, within a time
 * budget. They are the submitter's regular expressions, run in the shared dispatcher: one
 * that backtracks catastrophically (`^(a+)+$` against a long id) would otherwise block every
 * run for as long as it takes. Here it runs in a worker thread, which is terminated when the
 * budget is spent, and only its own run fails, saying why.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { TestRef } from '../../shared/messages.js';
import { filterTests } from './plan.js';

/** Matching a run's tests against its patterns may take this long. */
export const FILTER_BUDGET_MS = 5_000;

export class PatternTooSlow extends Error {}

interface FilterJob {
  warrenFilter: true;
  tests: TestRef[];
  pattern?: string;
  exclude?: string;
  only?: string[];
}

/** filterTests, in a worker thread when there is a pattern; rejects with PatternTooSlow past the budget. */
export async function filterTestsBounded(tests: TestRef[], pattern?: string, exclude?: string, only?: string[], budgetMs = FILTER_BUDGET_MS): Promise<TestRef[]> {
  if (!pattern && !exclude) return filterTests(tests, undefined, undefined, only);
  const job: FilterJob = { warrenFilter: true, tests, pattern, exclude, only };
  const worker = new Worker(new URL(import.meta.url), { workerData: job });
  try {
    const kept = await new Promise<number[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new PatternTooSlow(`matching ${tests.length} tests against --pattern/--exclude took more than ${budgetMs / 1000} s (a pattern that backtracks, like (a+)+?): stopped`));
      }, budgetMs);
      worker.once('message', (indices: number[]) => {
        clearTimeout(timer);
        resolve(indices);
      });
      worker.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    return kept.map((i) => tests[i]!);
  } finally {
    // stops a thread stuck in a regular expression too
    await worker.terminate();
  }
}

if (!isMainThread && (workerData as FilterJob | null)?.warrenFilter) {
  const job = workerData as FilterJob;
  const kept = new Set(filterTests(job.tests, job.pattern, job.exclude, job.only));
  parentPort!.postMessage(job.tests.flatMap((t, i) => (kept.has(t) ? [i] : [])));
}
