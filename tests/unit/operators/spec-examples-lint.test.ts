/**
 * Examples are tests: every example in a spec, wrapped into a minimal pipeline (generate input,
 * drop output, a dead_letter), loads without a problem and matches schemas/pipeline.schema.json.
 */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../../core/config.ts';
import type { AnyOperator, OperatorExample } from '../../../core/operator.ts';
import { operators, registry } from '../../../operators/index.ts';

const ROOT = new URL('../../..', import.meta.url).pathname;
const editorSchema = new Ajv({ allErrors: true, strict: false }).compile(JSON.parse(readFileSync(`${ROOT}schemas/pipeline.schema.json`, 'utf8')));

const indent = (text: string, n: number) =>
  text
    .split('\n')
    .map((l) => (l.trim() === '' ? l : ' '.repeat(n) + l))
    .join('\n');

/** A minimal pipeline around one example. */
function wrapExample(op: AnyOperator, ex: OperatorExample): string {
  const { kind, name } = op.spec;
  const input = kind === 'input' ? `  ${name}:\n${indent(ex.config, 4)}` : '  generate:\n    count: 1';
  const pipeline = kind === 'processor' ? `pipeline:\n  - ${name}:\n${indent(ex.config, 6)}\n` : '';
  const output = kind === 'output' ? `  ${name}:\n${indent(ex.config, 4)}` : '  drop: {}';
  return `name: example\ninput:\n${input}\n${pipeline}output:\n${output}\ndead_letter:\n  drop: {}\n`;
}

const cases = operators.flatMap((op) => op.spec.examples.map((ex) => [`${op.spec.kind} ${op.spec.name}: ${ex.title}`, op, ex] as const));

describe('spec examples', () => {
  it('exist', () => expect(cases.length).toBeGreaterThan(0));

  it.each(cases)('%s loads without problems', (_title, op, ex) => {
    const text = wrapExample(op, ex);
    const res = loadPipeline(`${op.spec.name}-example.yaml`, { registry, rootDir: ROOT, text, env: {} });
    expect(res.ok ? [] : res.problems.map(formatProblem), text).toEqual([]);
  });

  it.each(cases)('%s matches schemas/pipeline.schema.json (what editors check)', (_title, op, ex) => {
    const text = wrapExample(op, ex);
    const ok = editorSchema(parse(text));
    expect(ok ? [] : editorSchema.errors, text).toEqual([]);
  });
});
