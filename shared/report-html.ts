/**
 * `report.html`: the report a person opens, one self-contained file (inline CSS and SVG, no
 * script, nothing fetched): the summary, failures with their message and worker, flaky tests
 * with their attempts, the slowest tests and files, and a per-worker timeline (each batch
 * where and when it ran; failures, timeouts and crashes marked) in which idle workers and
 * stragglers show at a glance.
 */
import type { ReportTest, RunReport } from './messages.js';

const esc = (s: unknown) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const sec = (ms: number) => (ms >= 60_000 ? `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`);

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1f2328;background:#f6f8fa}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.meta{color:#59636e}.card{background:#fff;border:1px solid #d1d9e0;border-radius:8px;padding:12px 16px;margin:8px 0}
.badge{display:inline-block;padding:2px 10px;border-radius:12px;color:#fff;font-weight:600;margin-right:8px}
.passed{background:#1a7f37}.failed{background:#cf222e}.error{background:#9a6700}.cancelled{background:#59636e}
.totals span{margin-right:16px}.totals b{font-size:18px}
table{border-collapse:collapse;width:100%;background:#fff}td,th{border-bottom:1px solid #d1d9e0;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}pre{font:12px ui-monospace,monospace;white-space:pre-wrap;margin:6px 0;max-height:320px;overflow:auto;background:#f6f8fa;padding:8px;border-radius:6px}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;vertical-align:-1px}
svg text{font:11px system-ui,sans-serif;fill:#1f2328}
`;

function testsTable(tests: ReportTest[], withDetails: boolean): string {
  if (tests.length === 0) return '<p class="meta">none</p>';
  const rows = tests.map((t) => `<tr><td><code>${esc(t.name || t.id)}</code>${t.file ? `<div class="meta">${esc(t.file)}</div>` : ''}</td>
<td>${esc((t.message ?? '').split('\n')[0])}${withDetails && (t.details || (t.message ?? '').includes('\n')) ? `<details><summary>details</summary><pre>${esc([t.message, t.details].filter(Boolean).join('\n\n'))}</pre></details>` : ''}</td>
<td>${esc(t.attempts.join(' → '))}</td><td>${esc(t.worker ?? '')}</td></tr>`);
  return `<table><tr><th>test</th><th>message</th><th>attempts</th><th>worker</th></tr>${rows.join('')}</table>`;
}

function slowest(r: RunReport): string {
  const tests = [...r.tests].sort((a, b) => b.durationMs - a.durationMs).slice(0, 15);
  const files = new Map<string, { ms: number; n: number }>();
  for (const t of r.tests) {
    const f = files.get(t.file || '(no file)') ?? { ms: 0, n: 0 };
    f.ms += t.durationMs;
    f.n += 1;
    files.set(t.file || '(no file)', f);
  }
  const topFiles = [...files].sort((a, b) => b[1].ms - a[1].ms).slice(0, 10);
  return `<div style="display:grid;grid-template-columns:3fr 2fr;gap:16px;align-items:start">
<table id="slowest-tests"><tr><th>slowest tests</th><th>time</th></tr>${tests.map((t) => `<tr><td><code>${esc(t.name || t.id)}</code></td><td class="num">${sec(t.durationMs)}</td></tr>`).join('')}</table>
<table id="slowest-files"><tr><th>slowest files</th><th>tests</th><th>time</th></tr>${topFiles.map(([f, v]) => `<tr><td><code>${esc(f)}</code></td><td class="num">${v.n}</td><td class="num">${sec(v.ms)}</td></tr>`).join('')}</table></div>`;
}

const COLORS = { ok: '#2da44e', failed: '#cf222e', timedOut: '#bf8700', crashed: '#24292f' };

/** One lane per worker, a bar per batch, time across. */
function timeline(r: RunReport): string {
  const batches = r.batches ?? [];
  if (batches.length === 0) return '<p class="meta">no batches recorded</p>';
  const workers = [...new Set(batches.map((b) => b.worker))].sort();
  const t0 = Math.min(r.startedAt, ...batches.map((b) => b.startedAt));
  const t1 = Math.max(r.finishedAt, ...batches.map((b) => b.finishedAt));
  const span = Math.max(1, t1 - t0);
  const left = 150;
  const width = 1000;
  const lane = 22;
  const x = (t: number) => left + ((t - t0) / span) * (width - left - 10);
  const ticks = Array.from({ length: 6 }, (_, i) => t0 + (span * i) / 5);
  const lanes = workers.map((w, i) => {
    const y = 24 + i * lane;
    const bars = batches.filter((b) => b.worker === w).map((b) => {
      const color = b.crashed ? COLORS.crashed : b.timedOut ? COLORS.timedOut : b.failed > 0 ? COLORS.failed : COLORS.ok;
      const what = `${w}: round ${b.round}, ${b.tests} test${b.tests === 1 ? '' : 's'}${b.failed ? `, ${b.failed} failed` : ''}${b.timedOut ? ', timed out' : ''}${b.crashed ? ', crashed its worker' : ''}; ${sec(b.startedAt - t0)} to ${sec(b.finishedAt - t0)}`;
      return `<rect x="${x(b.startedAt).toFixed(1)}" y="${y + 3}" width="${Math.max(1.5, x(b.finishedAt) - x(b.startedAt)).toFixed(1)}" height="${lane - 6}" rx="2" fill="${color}"><title>${esc(what)}</title></rect>`;
    });
    return `<g data-lane="${esc(w)}"><rect x="${left}" y="${y}" width="${width - left - 10}" height="${lane}" fill="${i % 2 ? '#fff' : '#f6f8fa'}"/><text x="4" y="${y + 15}">${esc(w)}</text>${bars.join('')}</g>`;
  });
  const height = 24 + workers.length * lane + 8;
  const axis = ticks.map((t) => `<text x="${x(t).toFixed(1)}" y="14" text-anchor="middle">${sec(t - t0)}</text>`).join('');
  const legend = `<div class="legend"><span><i style="background:${COLORS.ok}"></i>passed</span><span><i style="background:${COLORS.failed}"></i>a test failed</span><span><i style="background:${COLORS.timedOut}"></i>timed out</span><span><i style="background:${COLORS.crashed}"></i>crashed its worker</span></div>`;
  return `${legend}<svg id="timeline" viewBox="0 0 ${width} ${height}" width="100%" role="img" aria-label="batches per worker over time">${axis}${lanes.join('')}</svg>`;
}

export function htmlReport(r: RunReport): string {
  const t = r.totals;
  const failed = r.tests.filter((x) => x.status === 'failed');
  const flaky = r.tests.filter((x) => x.status === 'flaky');
  const notes = [
    r.error ? `<div class="card"><b>Error:</b> ${esc(r.error)}</div>` : '',
    r.stopped ? `<div class="card"><b>Stopped:</b> ${esc(r.stopped)}</div>` : '',
    ...(r.setupFailures ?? []).map((f) => `<div class="card"><b>${esc(f.worker)}</b> left the run: ${esc(f.message)}</div>`),
  ].join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Warren: ${esc(r.status)} ${esc(r.runId)}</title><style>${CSS}</style></head>
<body><main>
<h1><span class="badge ${esc(r.status)}">${esc(r.status)}</span>${esc(r.runId)}</h1>
<div class="meta">${esc(r.adapter)} in <code>${esc(r.cwd)}</code> · started ${esc(new Date(r.startedAt).toISOString())} · ${sec(r.finishedAt - r.startedAt)} · ${r.rounds} round${r.rounds === 1 ? '' : 's'}${r.batchOverheadMs !== undefined ? ` · ${r.batchOverheadMs} ms per batch beyond its tests` : ''}</div>
<div class="card totals" id="totals"><span><b>${t.total}</b> tests</span><span><b>${t.passed}</b> passed</span><span><b>${t.failed}</b> failed</span><span><b>${t.flaky}</b> flaky</span><span><b>${t.pending}</b> pending</span>${t.notRun ? `<span><b>${t.notRun}</b> not run</span>` : ''}</div>
${notes}
<h2 id="failures">Failures (${failed.length})</h2>${testsTable(failed, true)}
<h2 id="flaky">Flaky (${flaky.length})</h2>${testsTable(flaky, true)}
<h2 id="workers">Workers</h2>${timeline(r)}
<h2 id="slowest">Slowest</h2>${slowest(r)}
</main></body></html>
`;
}
