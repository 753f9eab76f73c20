/**
 * schemas/pipeline-test.schema.json is what core/pipeline-test-schema.ts renders (`runner docs`
 * writes it), and every test file of the project validates against it as an editor would use it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { renderPipelineTestSchema } from '../../../core/pipeline-test-schema.ts';

const ROOT = new URL('../../..', import.meta.url).pathname;

describe('schemas/pipeline-test.schema.json', () => {
  const text = readFileSync(join(ROOT, 'schemas/pipeline-test.schema.json'), 'utf8');

  it('equals renderPipelineTestSchema() (run `runner docs` after changing the format)', () => {
    expect(text).toBe(renderPipelineTestSchema());
  });

  const validate = new Ajv({ allErrors: true, strict: false }).compile(JSON.parse(text));
  const files = readdirSync(join(ROOT, 'pipelines')).filter((f) => f.endsWith('.test.yaml'));

  it.each(files)('pipelines/%s validates against it', (file) => {
    const data = parse(readFileSync(join(ROOT, 'pipelines', file), 'utf8'));
    expect(validate(data) ? [] : validate.errors).toEqual([]);
  });

  it('rejects an unknown field, as runner test does', () => {
    expect(validate(parse('tests:\n  - name: x\n    input: [{ value: 1 }]\n    outptu: []\n'))).toBe(false);
  });
});
