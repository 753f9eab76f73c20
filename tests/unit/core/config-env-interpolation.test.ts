import { describe, expect, it } from 'vitest';
import { formatProblem, interpolate, loadPipeline, type LoadResult } from '../../../core/config.ts';
import { registry } from '../../../operators/index.ts';

const ROOT = new URL('../../..', import.meta.url).pathname;
const load = (text: string, env: Record<string, string | undefined>): LoadResult => loadPipeline('env.yaml', { registry, rootDir: ROOT, text, env });

function ok(text: string, env: Record<string, string | undefined>) {
  const res = load(text, env);
  if (!res.ok) throw new Error(`expected no problems, got:\n${res.problems.map(formatProblem).join('\n')}`);
  return res.pipeline;
}
const problems = (text: string, env: Record<string, string | undefined>) => {
  const res = load(text, env);
  return res.ok ? [] : res.problems.map(formatProblem);
};

const pipeline = (inputFields: string, extra = '') => `name: env-test\n${extra}input:\n  generate:\n${inputFields}output:\n  drop: {}\n`;

describe('interpolate', () => {
  it('replaces ${VAR}, also inside a longer string', () => {
    expect(interpolate('mqtt://${HOST}:1883/${HOST}', { HOST: 'broker' })).toEqual({ value: 'mqtt://broker:1883/broker', missing: [] });
  });

  it('uses the default of ${VAR:-default} when the variable is unset or empty, the value when set', () => {
    expect(interpolate('${PORT:-1883}', {}).value).toBe('1883');
    expect(interpolate('${PORT:-1883}', { PORT: '' }).value).toBe('1883');
    expect(interpolate('${PORT:-1883}', { PORT: '8883' }).value).toBe('8883');
    expect(interpolate('${URL:-mqtt://127.0.0.1:1883}', {}).value).toBe('mqtt://127.0.0.1:1883');
    expect(interpolate('${EMPTY_DEFAULT:-}', {}).value).toBe('');
  });

  it('takes a variable set to the empty string as empty, not as missing', () => {
    expect(interpolate('a${EMPTY}b', { EMPTY: '' })).toEqual({ value: 'ab', missing: [] });
  });

  it('keeps $${VAR} as the literal ${VAR}, even when VAR is set', () => {
    expect(interpolate('price in $${CURRENCY} and ${CURRENCY}', { CURRENCY: 'EUR' })).toEqual({ value: 'price in ${CURRENCY} and EUR', missing: [] });
  });

  it('reports each missing variable without default with its offset', () => {
    expect(interpolate('x ${A} ${B:-b} ${C}', {}).missing).toEqual([
      { name: 'A', offset: 2 },
      { name: 'C', offset: 15 },
    ]);
  });
});

describe('loadPipeline: environment variables', () => {
  it('substitutes values and defaults in the loaded config', () => {
    const p = ok(pipeline("    expression: '\"${GREETING}, ${WHO:-world}\"'\n", 'description: ${DESC}\n'), { GREETING: 'hello', DESC: 'from env' });
    expect(p.input.config.expression).toBe('"hello, world"');
    expect(p.description).toBe('from env');
  });

  it('keeps $${VAR} literal in the loaded config', () => {
    const p = ok(pipeline('    count: 1\n', 'description: costs $${PRICE}\n'), { PRICE: '3' });
    expect(p.description).toBe('costs ${PRICE}');
  });

  it('reports a missing variable without default as a problem naming it, at its line:col', () => {
    const text = pipeline("    count: ${COUNT}\n    expression: '\"${GREETING}\"'\n");
    // line 4: `    count: ${COUNT}` ; line 5: `    expression: '"${GREETING}"'`
    expect(problems(text, {})).toEqual([
      'env.yaml:4:12: environment variable COUNT is not set and has no default; set it, or write ${COUNT:-default}',
      'env.yaml:5:19: environment variable GREETING is not set and has no default; set it, or write ${GREETING:-default}',
    ]);
  });

  it('points at a missing variable inside a multi-line block scalar', () => {
    const text = pipeline('    expression: |\n      {\n        "who": "${WHO}"\n      }\n');
    expect(problems(text, {})).toEqual(['env.yaml:6:17: environment variable WHO is not set and has no default; set it, or write ${WHO:-default}']);
  });

  it('coerces a value to an integer where the schema wants an integer', () => {
    const p = ok(pipeline('    count: ${COUNT}\n    max_in_flight: ${MAX:-7}\n'), { COUNT: '5' });
    expect(p.input.config.count).toBe(5);
    expect(p.input.config.max_in_flight).toBe(7);
  });

  it('coerces a value to a number inside a union that allows one (duration as ms)', () => {
    const p = ok(pipeline('    interval: ${INTERVAL}\n'), { INTERVAL: '250' });
    expect(p.input.config.interval).toBe(250);
    const q = ok(pipeline('    interval: ${INTERVAL}\n'), { INTERVAL: '5s' });
    expect(q.input.config.interval).toBe('5s');
  });

  it('coerces a value to a boolean where the schema wants a boolean', () => {
    const text = 'name: env-test\ninput:\n  generate: {}\npipeline:\n  - log:\n      fields: ${LOG_FIELDS}\noutput:\n  drop: {}\n';
    expect(ok(text, { LOG_FIELDS: 'false' }).processors[0]!.config.fields).toBe(false);
    expect(ok(text, { LOG_FIELDS: 'true' }).processors[0]!.config.fields).toBe(true);
  });

  it('keeps a numeric or boolean-looking value a string in a string field', () => {
    const p = ok(pipeline('    count: 1\n', 'description: ${DESC}\n'), { DESC: '42' });
    expect(p.description).toBe('42');
    const q = ok(pipeline('    count: 1\n').replace('name: env-test', 'name: ${NAME}'), { NAME: '123' });
    expect(q.name).toBe('123');
    const r = ok(pipeline('    count: 1\n', 'description: ${DESC}\n'), { DESC: 'true' });
    expect(r.description).toBe('true');
  });

  it('never reads a value as YAML structure', () => {
    const p = ok(pipeline('    count: 1\n', 'description: ${DESC}\n'), { DESC: 'a: [1, 2]' });
    expect(p.description).toBe('a: [1, 2]');
  });

  it('reports a value that does not fit an integer field, at the reference', () => {
    expect(problems(pipeline('    count: ${COUNT}\n'), { COUNT: 'many' })).toEqual(['env.yaml:4:12: must be integer, got string "many"']);
  });
});
