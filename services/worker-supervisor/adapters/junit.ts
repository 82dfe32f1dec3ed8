/**
 * The generic `junit` adapter: any command that writes JUnit XML. Discovery is the user's
 * command printing one id per line; a run is the user's template with `{ids}` (or `{id}`)
 * and `{junit}` (also $WARREN_JUNIT_FILE), the file the command writes. Its testcases are
 * turned into test_end events and matched to the ids asked for, so the usual rules apply
 * (resolve.ts): a missing report is a crash, a test the report does not mention runs again.
 *
 * A testcase matches an id equal to its `name`, `classname.name`, `classname::name`,
 * `classname name` or `file::name`.
 */
import { XMLParser } from 'fast-xml-parser';
import type { TestRef } from '../../../shared/messages.js';
import type { FrameworkEvent } from '../runner/protocol.js';

interface Case {
  '@_name'?: string;
  '@_classname'?: string;
  '@_file'?: string;
  '@_time'?: string;
  failure?: Outcome | Outcome[];
  error?: Outcome | Outcome[];
  skipped?: Outcome | Outcome[] | '';
}
type Outcome = { '@_message'?: string; '@_type'?: string; '#text'?: string } | string;

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  isArray: (name) => name === 'testcase' || name === 'testsuite',
  parseAttributeValue: false,
  parseTagValue: false,
  trimValues: false,
});

function collectCases(node: unknown, out: Case[]): void {
  if (!node || typeof node !== 'object') return;
  for (const [key, value] of Object.entries(node as Record<string, unknown>)) {
    if (key === 'testcase') out.push(...(value as Case[]));
    else if (typeof value === 'object') {
      if (Array.isArray(value)) for (const v of value) collectCases(v, out);
      else collectCases(value, out);
    }
  }
}

const first = <T>(v: T | T[] | undefined): T | undefined => (Array.isArray(v) ? v[0] : v);

function describe(o: Outcome | undefined): { message?: string; details?: string } {
  if (o === undefined) return {};
  if (typeof o === 'string') return { message: o.trim().split('\n')[0], details: o.trim() || undefined };
  const text = (o['#text'] ?? '').trim();
  const message = o['@_message']?.trim() || text.split('\n')[0] || o['@_type'];
  return { message: message && o['@_type'] && !message.startsWith(o['@_type']) ? `${o['@_type']}: ${message}` : message, details: text || undefined };
}

/** Events for the tests asked for, from a JUnit XML report. Throws on XML that does not parse. */
export function junitEvents(xml: string, tests: TestRef[]): FrameworkEvent[] {
  const cases: Case[] = [];
  collectCases(parser.parse(xml), cases);
  const wanted = new Map<string, TestRef[]>();
  for (const t of tests) wanted.set(t.id, [...(wanted.get(t.id) ?? []), t]);
  const events: FrameworkEvent[] = [];
  for (const c of cases) {
    const name = c['@_name'] ?? '';
    const cls = c['@_classname'] ?? '';
    const keys = [name, `${cls}.${name}`, `${cls}::${name}`, `${cls} ${name}`, `${c['@_file'] ?? ''}::${name}`];
    const key = keys.find((k) => wanted.get(k)?.length);
    if (!key) continue;
    const t = wanted.get(key)!.shift()!;
    const failure = first(c.failure) ?? first(c.error);
    const skipped = c.skipped !== undefined;
    const status = failure !== undefined ? 'failed' : skipped ? 'pending' : 'passed';
    const info = failure !== undefined ? describe(failure) : skipped ? describe(first(c.skipped as Outcome | Outcome[])) : {};
    events.push({
      event: 'test_end', id: t.id, file: t.file, name: t.name, status,
      durationMs: Math.round(Number(c['@_time'] ?? 0) * 1000),
      ...(info.message ? { message: info.message } : {}),
      ...(status === 'failed' && info.details ? { details: info.details } : {}),
    });
  }
  events.push({ event: 'done' });
  return events;
}
