/**
 * schemas/pipeline.schema.json and docs/operators/*.md are generated from the operator specs and
 * checked in. When a spec changes they must be regenerated with `npx runner docs`.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { renderOperatorDocs, renderPipelineSchema } from '../../../core/generate.ts';
import { registry } from '../../../operators/index.ts';

const ROOT = new URL('../../..', import.meta.url).pathname;
const STALE = 'stale generated file: run `npx runner docs` and commit the result';

describe('generated files are fresh', () => {
  it('schemas/pipeline.schema.json equals renderPipelineSchema(registry)', () => {
    expect(readFileSync(join(ROOT, 'schemas/pipeline.schema.json'), 'utf8'), STALE).toBe(renderPipelineSchema(registry));
  });

  it('docs/operators/ holds exactly the rendered docs, each equal to renderOperatorDocs(registry)', () => {
    const rendered = renderOperatorDocs(registry);
    const dir = join(ROOT, 'docs/operators');
    const onDisk = readdirSync(dir).filter((f) => f.endsWith('.md')).sort();
    expect(onDisk, STALE).toEqual([...rendered.keys()].sort());
    for (const [file, text] of rendered) expect(readFileSync(join(dir, file), 'utf8'), `docs/operators/${file}: ${STALE}`).toBe(text);
  });
});

describe('schemas/pipeline.schema.json', () => {
  const schema = JSON.parse(readFileSync(join(ROOT, 'schemas/pipeline.schema.json'), 'utf8'));
  // As an editor uses it: no defaults filled in, unknown annotation keywords ignored.
  const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);

  // *.test.yaml are pipeline tests, with a schema of their own (tests/unit/schemas/pipeline-test-schema-fresh.test.ts).
  const pipelineFiles = readdirSync(join(ROOT, 'pipelines')).filter((f) => /\.ya?ml$/.test(f) && !/\.test\.ya?ml$/.test(f));

  it('there are pipelines to check', () => expect(pipelineFiles.length).toBeGreaterThan(0));

  it.each(pipelineFiles)('pipelines/%s validates against it', (file) => {
    const data = parse(readFileSync(join(ROOT, 'pipelines', file), 'utf8'));
    expect(validate(data) ? [] : validate.errors).toEqual([]);
  });

  it('accepts a pipeline that leaves out fields with defaults', () => {
    const data = parse('name: minimal\ninput:\n  generate:\n    count: 3\npipeline:\n  - map:\n      expression: a\noutput:\n  stdout: {}\ndead_letter:\n  drop: {}\n');
    expect(validate(data) ? [] : validate.errors).toEqual([]);
  });

  it('accepts ${VAR} references where numbers, booleans, durations, enums and patterned strings go', () => {
    const data = parse(
      'name: ${PIPELINE_NAME:-env}\ninput:\n  generate:\n    count: ${COUNT:-3}\n    interval: ${INTERVAL}\npipeline:\n  - log:\n      level: ${LEVEL:-info}\n      fields: ${FIELDS:-false}\noutput:\n  stdout:\n    format: ${FORMAT:-value}\nshutdown_timeout: ${TIMEOUT:-5s}\n',
    );
    expect(validate(data) ? [] : validate.errors).toEqual([]);
  });

  it('still rejects a wrong literal where a number goes', () => {
    expect(validate(parse('name: x\ninput:\n  generate:\n    count: many\noutput:\n  drop: {}\n'))).toBe(false);
  });

  it('rejects an unknown field, as the loader does', () => {
    expect(validate(parse('name: x\ninput:\n  generate:\n    cont: 3\noutput:\n  drop: {}\n'))).toBe(false);
  });
});
