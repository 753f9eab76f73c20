/**
 * The pipelines of docs/examples/ are what docs/writing-pipelines.md teaches, so they must keep
 * working as the runner changes:
 * - every pipeline file in docs/examples/ loads through the real loader (the same `loadPipeline`
 *   and operator registry `runner lint` uses) without a problem, with an empty environment (every
 *   variable has a default), and matches schemas/pipeline.schema.json (what editors check);
 * - the pipeline tests next to them (`*.test.yaml`) pass under `runner test docs/examples/`;
 * - a YAML block in the guide that starts with `# docs/examples/<file>` is a copy of that file from
 *   its `name:` line to the end (with `# docs/examples/<file> (excerpt)`: a piece of it, verbatim),
 *   and every other YAML block of the guide that is a whole pipeline (`name`, `input`, `output`)
 *   lints too;
 * - docs/examples/first-pipeline.yaml, which needs no server, runs with `runner start` as the guide
 *   says: four readings out of the output, the broken one out of the dead-letter output.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../core/config.ts';
import { registry } from '../../operators/index.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const EXAMPLES = 'docs/examples';
const GUIDE = 'docs/writing-pipelines.md';

const exampleFiles = readdirSync(join(ROOT, EXAMPLES))
  .filter((f) => /\.ya?ml$/.test(f) && !/\.test\.ya?ml$/.test(f))
  .sort();
const editorSchema = new Ajv({ allErrors: true, strict: false }).compile(JSON.parse(readFileSync(join(ROOT, 'schemas/pipeline.schema.json'), 'utf8')));

const lint = (file: string, text?: string) => {
  const res = loadPipeline(file, { registry, rootDir: ROOT, env: {}, text });
  return res.ok ? [] : res.problems.map(formatProblem);
};

/** The ```yaml blocks of a Markdown file, with the line each starts on. */
function yamlBlocks(markdown: string): { line: number; text: string }[] {
  const blocks: { line: number; text: string }[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() !== '```yaml') continue;
    const indent = lines[i]!.indexOf('```');
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && lines[j]!.trim() !== '```'; j++) body.push(lines[j]!.slice(indent));
    blocks.push({ line: i + 2, text: `${body.join('\n')}\n` });
    i = j;
  }
  return blocks;
}

describe('docs/examples', () => {
  it('holds the examples of the guide', () => {
    expect(exampleFiles).toContain('first-pipeline.yaml');
    expect(exampleFiles).toContain('heatpump-cop-alerts.yaml');
  });

  it.each(exampleFiles)('%s lints without problems, with no environment variable set', (file) => {
    expect(lint(join(ROOT, EXAMPLES, file))).toEqual([]);
  });

  it.each(exampleFiles)('%s matches schemas/pipeline.schema.json', (file) => {
    const ok = editorSchema(parse(readFileSync(join(ROOT, EXAMPLES, file), 'utf8')));
    expect(ok ? [] : editorSchema.errors).toEqual([]);
  });
});

describe(GUIDE, () => {
  const blocks = yamlBlocks(readFileSync(join(ROOT, GUIDE), 'utf8'));

  it('copies each example it names exactly (from name: to the end of the file), and excerpts verbatim', () => {
    const marked = blocks.filter((b) => b.text.startsWith(`# ${EXAMPLES}/`));
    const copies = marked.filter((b) => !b.text.split('\n')[0]!.endsWith(' (excerpt)'));
    expect(copies.map((b) => b.text.split('\n')[0]).sort()).toEqual(exampleFiles.map((f) => `# ${EXAMPLES}/${f}`).sort());
    for (const b of marked) {
      const excerpt = !copies.includes(b);
      const file = b.text.split('\n')[0]!.slice(2).replace(/ \(excerpt\)$/, '');
      const text = readFileSync(join(ROOT, file), 'utf8');
      const body = b.text.slice(b.text.indexOf('\n') + 1);
      if (excerpt) expect(text.includes(body), `${GUIDE}:${b.line}: the excerpt of ${file} is not in the file`).toBe(true);
      else expect(body, `${GUIDE}:${b.line}: the copy of ${file} differs from the file`).toBe(text.slice(text.search(/^name:/m)));
    }
  });

  it('has only whole pipelines that lint', () => {
    const whole = blocks.filter((b) => /^name:/m.test(b.text) && /^input:/m.test(b.text) && /^output:/m.test(b.text));
    expect(whole.length).toBeGreaterThanOrEqual(2);
    for (const b of whole) expect(lint(`${GUIDE}:${b.line}`, b.text), `${GUIDE}:${b.line}`).toEqual([]);
  });
});

const runner = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [join(ROOT, 'bin/runner.mjs'), ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, RUNNER_HTTP_PORT: '0', RUNNER_HTTP_HOST: '127.0.0.1', LOG_LEVEL: 'warn', ...env },
    timeout: 60_000,
  });

describe('runner test docs/examples/', () => {
  it('passes every case of the examples\' pipeline tests', () => {
    expect(readdirSync(join(ROOT, EXAMPLES))).toContain('heatpump-cop-alerts.test.yaml');
    const res = runner(['test', `${EXAMPLES}/`]);
    expect(res.status, `${res.stdout}\n${res.stderr}`).toBe(0);
    expect(res.stdout).toMatch(/\b[1-9]\d* passed, 0 failed/);
  }, 60_000);
});

describe('docs/examples/first-pipeline.yaml under runner start', () => {
  it('prints four readings from the output and the broken one from the dead-letter output, and exits 0', () => {
    const res = runner(['start', `${EXAMPLES}/first-pipeline.yaml`], { FIRST_PIPELINE_COUNT: '' });
    expect(res.status, res.stderr).toBe(0);
    const lines = res.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, any>);
    const readings = lines.filter((l) => 'device' in l);
    const deadLetters = lines.filter((l) => l.headers?.dlq_error);
    expect(readings).toHaveLength(4);
    expect(readings.map((r) => r.supply_temp)).toEqual([35.5, 35.5, 35.5, 35.5]);
    expect(deadLetters).toHaveLength(1);
    expect(deadLetters[0]!.value).toMatchObject({ device_id: 'device-002', d5: 'n/a' });
    expect(deadLetters[0]!.headers).toMatchObject({
      dlq_error: 'does not match schema heatpump-telemetry: /d5 must be number,null',
      dlq_error_code: 'MESSAGE_INVALID',
      dlq_operator: 'pipeline.0.validate',
      dlq_pipeline: 'first-pipeline',
    });
  }, 60_000);
});
