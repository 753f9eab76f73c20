/**
 * Checking what a test case produced against what it expects, and saying how it differs: for each
 * message the conditions that do not hold, with the JSON path, the expected and the actual value;
 * messages missing or not expected; input messages dropped or never finished.
 */
import { DLQ_HEADERS } from './dead-letter.ts';
import { errorMessage } from './errors.ts';
import { compileExpression, compileTemplate } from './expression.ts';
import type { Msg } from './message.ts';
import { configAt, fieldSchema, formatWhere, type Expectation, type TestCase } from './pipeline-test-file.ts';
import { inputIndexOf, type Captured } from './pipeline-test-operators.ts';
import type { CaseRun } from './pipeline-test-run.ts';
import type { Annotated } from './schema.ts';

const MAX = 240;

/** A value as short JSON text for the report. */
export function show(v: unknown): string {
  if (v === undefined) return 'nothing';
  let s: string;
  if (Buffer.isBuffer(v)) s = `<${v.length} bytes>`;
  else {
    try {
      s = JSON.stringify(v) ?? String(v);
    } catch {
      s = String(v);
    }
  }
  return s.length > MAX ? `${s.slice(0, MAX)}…` : s;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v) && !Buffer.isBuffer(v);

/**
 * Differences between an expected and an actual value, each as "<path>: ..." (path as a JSON
 * pointer, empty for the whole value), to be put after a label: `value/d0: expected 1.5, got 2`.
 * `contains`: objects need only the expected fields.
 */
export function differences(expected: unknown, actual: unknown, contains: boolean, path = ''): string[] {
  const at = path;
  if (Array.isArray(expected) && Array.isArray(actual)) {
    const out: string[] = [];
    if (expected.length !== actual.length) out.push(`${at}: expected ${expected.length} item(s), got ${actual.length}: ${show(actual)}`);
    for (let i = 0; i < Math.min(expected.length, actual.length); i++) out.push(...differences(expected[i], actual[i], contains, `${path}/${i}`));
    return out;
  }
  if (isObject(expected) && isObject(actual)) {
    const out: string[] = [];
    for (const [k, v] of Object.entries(expected)) {
      const p = `${path}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`;
      if (!(k in actual) || actual[k] === undefined) out.push(`${p}: missing (expected ${show(v)})`);
      else out.push(...differences(v, actual[k], contains, p));
    }
    if (!contains) for (const k of Object.keys(actual)) if (!(k in expected) && actual[k] !== undefined) out.push(`${path}/${k}: not expected, got ${show(actual[k])}`);
    return out;
  }
  if (Buffer.isBuffer(actual) && typeof expected === 'string') return actual.toString('utf8') === expected ? [] : [`${at}: expected ${show(expected)}, got ${show(actual.toString('utf8'))}`];
  return Object.is(expected, actual) || (expected === 0 && actual === 0) ? [] : [`${at}: expected ${show(expected)}, got ${show(actual)}`];
}

const asText = (v: unknown): string => (typeof v === 'string' ? v : Buffer.isBuffer(v) ? v.toString('utf8') : (JSON.stringify(v) ?? ''));

/** What a field of the output's config gives for a message: expressions evaluated, the rest as configured. */
async function fieldValue(target: Captured['target'], field: string, msg: Msg): Promise<{ ok: true; value: unknown } | { ok: false; error: string }> {
  const path = field.split('.');
  const configured = configAt(target.config, path);
  if (configured === undefined) return { ok: false, error: `${target.component} has no field ${field}` };
  const schema = fieldSchema(target.operator.spec.config as Annotated, path);
  const kind = schema?.['x-expression'];
  if (typeof configured !== 'string' || !kind) return { ok: true, value: configured };
  try {
    const value = kind === 'jsonata' ? await compileExpression(configured).evaluate(msg) : await compileTemplate(configured).evaluate(msg);
    return { ok: true, value };
  } catch (err) {
    return { ok: false, error: `${field}: ${errorMessage(err)}` };
  }
}

/** The conditions of `exp` that `got` does not meet. */
export async function mismatches(exp: Expectation, got: Captured): Promise<string[]> {
  const { msg } = got;
  const out: string[] = [];
  const dlq = (h: string) => msg.headers[h];
  if (exp.reason !== undefined && !(dlq(DLQ_HEADERS.error) ?? '').includes(exp.reason)) out.push(`reason: expected to contain ${show(exp.reason)}, got ${show(dlq(DLQ_HEADERS.error))}`);
  if (exp.reasonMatches && !exp.reasonMatches.test(dlq(DLQ_HEADERS.error) ?? '')) out.push(`reason: expected to match /${exp.reasonMatches.source}/, got ${show(dlq(DLQ_HEADERS.error))}`);
  if (exp.code !== undefined && dlq(DLQ_HEADERS.code) !== exp.code) out.push(`code: expected ${exp.code}, got ${show(dlq(DLQ_HEADERS.code))}`);
  if (exp.component !== undefined && dlq(DLQ_HEADERS.operator) !== exp.component) out.push(`component: expected ${show(exp.component)}, got ${show(dlq(DLQ_HEADERS.operator))}`);
  if (exp.has.value) out.push(...differences(exp.value, msg.value, false).map((d) => `value${d}`));
  if (exp.has.valueContains) out.push(...differences(exp.valueContains, msg.value, true).map((d) => `value${d}`));
  if (exp.valueMatches && !exp.valueMatches.test(asText(msg.value))) out.push(`value: expected to match /${exp.valueMatches.source}/, got ${show(asText(msg.value))}`);
  if (exp.has.key && msg.key !== exp.key) out.push(`key: expected ${show(exp.key)}, got ${show(msg.key)}`);
  for (const [h, v] of Object.entries(exp.headers ?? {})) if (msg.headers[h] !== v) out.push(`headers.${h}: expected ${show(v)}, got ${show(msg.headers[h])}`);
  for (const [h, re] of exp.headersMatch ?? []) if (msg.headers[h] === undefined || !re.test(msg.headers[h]!)) out.push(`headers.${h}: expected to match /${re.source}/, got ${show(msg.headers[h])}`);
  for (const [k, v] of Object.entries(exp.metadata ?? {})) out.push(...differences(v, msg.meta[k], false).map((d) => `metadata.${k}${d}`));
  if (exp.output !== undefined && got.target.component !== exp.output) out.push(`output: expected ${show(exp.output)}, got ${show(got.target.component)}`);
  for (const [field, want] of Object.entries(exp.fields ?? {})) {
    const r = await fieldValue(got.target, field, msg);
    if (!r.ok) out.push(`fields.${field}: ${r.error}`);
    else out.push(...differences(want, r.value, false).map((d) => `fields.${field}${d}`));
  }
  if (exp.check) {
    try {
      const ok = await exp.check.evaluate(msg);
      if (ok !== true) out.push(`check ${show(exp.check.source)}: expected true, got ${show(ok)}`);
    } catch (err) {
      out.push(`check ${show(exp.check.source)}: ${errorMessage(err)}`);
    }
  }
  return out;
}

/** A message that came out, in one line: where it went, where it came from, and what it holds. */
export function describe(c: Captured, dead: boolean): string {
  const from = inputIndexOf(c.msg);
  const { msg } = c;
  const headers = Object.fromEntries(Object.entries(msg.headers).filter(([k]) => !(dead && k === DLQ_HEADERS.time)));
  const parts = [
    dead ? `reason ${show(msg.headers[DLQ_HEADERS.error])} (${msg.headers[DLQ_HEADERS.code]}, from ${msg.headers[DLQ_HEADERS.operator]})` : '',
    `value ${show(msg.value)}`,
    `key ${show(msg.key)}`,
    Object.keys(headers).length && !dead ? `headers ${show(headers)}` : '',
  ].filter(Boolean);
  return `${from === undefined ? '' : `from input[${from}], `}at ${c.target.component}: ${parts.join(', ')}`;
}

export interface CaseVerdict {
  passed: boolean;
  /** What went wrong, one line each (indentation for nesting). */
  details: string[];
}

async function compareList(kind: 'output' | 'dead_letter', expected: Expectation[], got: Captured[]): Promise<string[]> {
  const dead = kind === 'dead_letter';
  const out: string[] = [];
  if (expected.length !== got.length) {
    out.push(`${kind}: expected ${expected.length} message(s), got ${got.length}`);
    for (let i = expected.length; i < got.length; i++) out.push(`  + ${kind}[${i}] not expected: ${describe(got[i]!, dead)}`);
    for (let i = got.length; i < expected.length; i++) out.push(`  - ${kind}[${i}] missing (${formatWhere(expected[i]!.where)})`);
  }
  for (let i = 0; i < Math.min(expected.length, got.length); i++) {
    const m = await mismatches(expected[i]!, got[i]!);
    if (!m.length) continue;
    out.push(`${kind}[${i}] (${formatWhere(expected[i]!.where)}): ${describe(got[i]!, dead)}`);
    for (const line of m) out.push(`  ${line}`);
  }
  return out;
}

export async function verdict(tc: TestCase, run: CaseRun): Promise<CaseVerdict> {
  if (run.notReady.length) {
    return {
      passed: false,
      details: [
        ...run.notReady.map((n) => `${n.component} is not ready: ${n.reason}`),
        `a step that needs an external system cannot run in a test; replace it under \`mocks:\`, e.g. ${run.notReady[0]!.component}: { mock: { value: '...' } }`,
      ],
    };
  }
  const details: string[] = [];
  if (run.timedOut) details.push('the pipeline did not finish within the timeout (--timeout); what came out until then:');
  else if (run.errors.length) details.push(...run.errors.map((e) => `the pipeline logged an error: ${e}`));
  details.push(...(await compareList('output', tc.output, run.outputs)));
  details.push(...(await compareList('dead_letter', tc.deadLetter, run.deadLetters)));
  const traced = new Set([...run.outputs, ...run.deadLetters].map((c) => inputIndexOf(c.msg)));
  const untraced = [...run.outputs, ...run.deadLetters].filter((c) => inputIndexOf(c.msg) === undefined).length;
  const doneSilently = run.outcomes.flatMap((o, i) => (o?.ok && !traced.has(i) ? [i] : []));
  const dropped = Math.max(0, doneSilently.length - untraced);
  if (dropped !== tc.dropped) details.push(`dropped: expected ${tc.dropped} message(s), got ${dropped}${dropped ? ` (input ${doneSilently.map((i) => `[${i}]`).join(', ')} reached no output)` : ''}`);
  run.outcomes.forEach((o, i) => {
    if (o === undefined) details.push(`input[${i}] was never finished (its acknowledgement never came)`);
    else if (!o.ok) details.push(`input[${i}] failed and would be delivered again: ${errorMessage(o.error)}`);
  });
  return { passed: details.length === 0, details };
}
