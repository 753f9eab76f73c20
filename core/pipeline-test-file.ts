/**
 * Loading a pipeline test file (`<name>.test.yaml`): parsed with positions, validated against
 * core/pipeline-test-schema.ts, then checked against the pipeline it tests, which is loaded as
 * `runner start` would load it (with the file's and each case's `environment` over the process
 * environment). Every problem is reported as file:line:col, all at once: mocks that name no step
 * (with a "did you mean"), mock steps with an invalid config, `check` expressions and regular
 * expressions that do not compile, `output` names and `fields` paths the pipeline does not have.
 *
 * The test file itself is taken literally: no `${VAR}` replacement (expected values stay as
 * written, whatever the environment).
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { isMap, isScalar, LineCounter, parseDocument } from 'yaml';
import { Locator, loadPipeline, validateParsed, type ComponentConfig, type ParsedYaml, type Path, type PipelineConfig, type Problem } from './config.ts';
import { compileExpression, compileTemplate, ExpressionSyntaxError, type Expression } from './expression.ts';
import type { AnyOperator } from './operator.ts';
import { eachExpression, leaves, mockProcessor, type FedMessage } from './pipeline-test-operators.ts';
import { TestFileSchema, type ExpectedDeadLetterData, type TestCaseData, type TestFileData } from './pipeline-test-schema.ts';
import { didYouMean, OperatorRegistry } from './registry.ts';
import type { Annotated } from './schema.ts';

export interface Where {
  file: string;
  line: number;
  col: number;
}

export const formatWhere = (w: Where) => `${w.file}:${w.line}:${w.col}`;

/** A step replacement: the processor that runs instead of the step `key` names. */
export interface MockDef {
  key: string;
  /** The step's position in `pipeline:`. */
  index: number;
  name: string;
  config: Record<string, any>;
  operator: AnyOperator;
}

/** The conditions on one message that must come out (output or dead letter). */
export interface Expectation {
  where: Where;
  has: { value: boolean; valueContains: boolean; key: boolean };
  value?: unknown;
  valueContains?: unknown;
  valueMatches?: RegExp;
  key?: string | null;
  headers?: Record<string, string>;
  headersMatch?: [string, RegExp][];
  metadata?: Record<string, unknown>;
  output?: string;
  fields?: Record<string, unknown>;
  check?: Expression;
  reason?: string;
  reasonMatches?: RegExp;
  code?: string;
  component?: string;
}

export interface TestCase {
  name: string;
  where: Where;
  pipeline: PipelineConfig;
  /** By the position of the step they replace; a case's own mocks win over the file's. */
  mocks: Map<number, MockDef>;
  input: FedMessage[];
  output: Expectation[];
  deadLetter: Expectation[];
  dropped: number;
}

export interface TestFile {
  file: string;
  pipelineFile: string;
  cases: TestCase[];
}

export type TestFileResult = { ok: true; testFile: TestFile; problems: [] } | { ok: false; problems: Problem[] };

export interface TestFileOptions {
  registry: OperatorRegistry;
  rootDir: string;
  env?: Record<string, string | undefined>;
  text?: string;
}

/** `mqtt-bridge.test.yaml` -> `mqtt-bridge.yaml` beside it. */
export function defaultPipelineFile(testFile: string): string {
  return join(dirname(testFile), basename(testFile).replace(/\.test\.ya?ml$/, '.yaml'));
}

function parse(file: string, text: string | undefined): ParsedYaml | { problems: Problem[]; doc?: undefined } {
  let source: string;
  try {
    source = text ?? readFileSync(file, 'utf8');
  } catch (err) {
    return { problems: [{ file, line: 1, col: 1, message: `cannot read the file: ${(err as Error).message}` }] };
  }
  const lc = new LineCounter();
  const doc = parseDocument(source, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const loc = new Locator(file, doc, lc);
  const problems = [...doc.errors, ...doc.warnings].map((e) => loc.at(e.pos[0], e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')));
  if (problems.length) return { problems };
  if (!isMap(doc.contents)) {
    return { problems: [loc.at(0, 'expected a YAML mapping at the top of the file, with `tests:`')] };
  }
  return { text: source, doc, loc, data: doc.toJS({ maxAliasCount: 100 }), fromEnv: new Set(), unresolved: new Set(), problems: [] };
}

const rec = (v: unknown): Record<string, any> | undefined => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, any>) : undefined);
const list = (v: unknown): any[] => (Array.isArray(v) ? v : []);
const text = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const stringEnv = (e: unknown): Record<string, string> => Object.fromEntries(Object.entries(rec(e) ?? {}).map(([k, v]) => [k, String(v)]));

export function loadTestFile(file: string, opts: TestFileOptions): TestFileResult {
  const parsed = parse(file, opts.text);
  if (!parsed.doc) return { ok: false, problems: parsed.problems };
  // Schema problems first; then the checks against the pipeline, on the parts that have the right
  // shape, so that every problem is reported at once.
  const problems = validateParsed(parsed, TestFileSchema);
  const data = parsed.data as TestFileData;
  const { loc } = parsed;
  if (!Array.isArray(data.tests) || (data.pipeline !== undefined && typeof data.pipeline !== 'string')) return { ok: false, problems: sorted(problems) };

  const pipelineFile = data.pipeline ? resolve(dirname(file), data.pipeline) : defaultPipelineFile(file);
  const baseEnv = { ...(opts.env ?? process.env), ...stringEnv(data.environment) };
  // One load per distinct environment; the file's own environment first, for the checks below.
  const loaded = new Map<string, PipelineConfig>();
  const load = (extra: Record<string, string>, at: Path): PipelineConfig | undefined => {
    const id = JSON.stringify(extra);
    if (loaded.has(id)) return loaded.get(id);
    const res = loadPipeline(pipelineFile, { registry: opts.registry, rootDir: opts.rootDir, env: { ...baseEnv, ...extra } });
    if (!res.ok) {
      if (res.problems.some((p) => /cannot read the file/.test(p.message))) {
        problems.push(loc.problem(at, `the pipeline ${relative(process.cwd(), pipelineFile)} cannot be read${data.pipeline ? '' : `; name the pipeline with \`pipeline:\``}`));
      } else problems.push(...res.problems);
      return undefined;
    }
    loaded.set(id, res.pipeline);
    return res.pipeline;
  };
  const pipeline = load({}, data.pipeline ? ['pipeline'] : []);
  if (!pipeline) return { ok: false, problems: sorted(problems) };

  const mockRegistry = new OperatorRegistry([...opts.registry.operators.filter((o) => o.spec.kind === 'processor'), mockProcessor]);
  const fileMocks = resolveMocks(parsed, data.mocks, ['mocks'], pipeline, mockRegistry, opts.rootDir, problems);

  const outputLeaves = leaves(pipeline.output);
  const deadLetterLeaves = pipeline.deadLetter ? leaves(pipeline.deadLetter) : [];

  const cases: TestCase[] = [];
  data.tests.forEach((item: TestCaseData, i) => {
    const c = rec(item);
    if (!c) return;
    const base: Path = ['tests', i];
    const env = stringEnv(c.environment);
    const casePipeline = Object.keys(env).length ? load(env, [...base, 'environment']) : pipeline;
    const caseMocks = resolveMocks(parsed, c.mocks, [...base, 'mocks'], pipeline, mockRegistry, opts.rootDir, problems);
    const expectations = (items: unknown, kind: 'output' | 'dead_letter') =>
      list(items).flatMap((e, j) => (rec(e) ? [expectation(parsed, e, [...base, kind, j], kind === 'output' ? outputLeaves : deadLetterLeaves, kind, problems)] : []));
    if (list(c.dead_letter).length && !pipeline.deadLetter) problems.push(loc.problem([...base, 'dead_letter'], 'the pipeline has no dead_letter output; nothing can reach one'));
    const output = expectations(c.output, 'output');
    const deadLetter = expectations(c.dead_letter, 'dead_letter');
    if (!casePipeline) return;
    cases.push({
      name: String(c.name),
      where: whereOf(loc, base),
      pipeline: casePipeline,
      mocks: new Map([...fileMocks, ...caseMocks]),
      input: list(c.input).map((m) => ({ value: rec(m)?.value ?? null, key: rec(m)?.key ?? null, headers: rec(rec(m)?.headers) ?? {}, metadata: rec(rec(m)?.metadata) ?? {} })),
      output,
      deadLetter,
      dropped: typeof c.dropped === 'number' ? c.dropped : 0,
    });
  });
  const names = new Map<string, number>();
  data.tests.forEach((c, i) => {
    const name = rec(c)?.name;
    if (typeof name !== 'string') return;
    if (names.has(name)) problems.push(loc.problem(['tests', i, 'name'], `test "${name}" is also the name of tests.${names.get(name)}; names must be unique in a file`));
    names.set(name, i);
  });
  if (problems.length) return { ok: false, problems: sorted(problems) };
  return { ok: true, problems: [], testFile: { file, pipelineFile, cases } };
}

function whereOf(loc: Locator, path: Path): Where {
  const p = loc.problem(path, '');
  return { file: p.file, line: p.line, col: p.col };
}

/** The names a mock key can give a step: label, path (`pipeline.1.postgres`) and position (`pipeline.1`). */
export function stepNames(p: PipelineConfig): string[][] {
  return p.processors.map((c, i) => [...new Set([c.component, `pipeline.${i}.${c.name}`, `pipeline.${i}`])]);
}

function resolveMocks(
  parsed: ParsedYaml,
  mocks: Record<string, unknown> | undefined,
  base: Path,
  pipeline: PipelineConfig,
  registry: OperatorRegistry,
  rootDir: string,
  problems: Problem[],
): Map<number, MockDef> {
  const out = new Map<number, MockDef>();
  const { loc } = parsed;
  const steps = stepNames(pipeline);
  for (const [key, slot] of Object.entries(rec(mocks) ?? {})) {
    const path = [...base, key];
    if (!rec(slot)) continue; // reported by the schema
    const index = steps.findIndex((names) => names.includes(key));
    if (index < 0) {
      const all = steps.flat();
      const hint = didYouMean(key, all);
      problems.push(loc.problem(path, `no step "${key}" in the pipeline${hint ? `; did you mean "${hint}"?` : all.length ? `; its steps: ${steps.map((n) => n[0]).join(', ')}` : ' (it has no processors)'}`, { key: true }));
      continue;
    }
    const { label: _label, ...rest } = slot as Record<string, unknown>;
    const names = Object.keys(rest);
    if (names.length !== 1) {
      problems.push(loc.problem(path, `expected one processor to run instead of the step (one of: ${registry.names('processor').join(', ')}), found ${names.length ? names.join(', ') : 'none'}`));
      continue;
    }
    const name = names[0]!;
    const op = registry.get('processor', name);
    if (!op) {
      const hint = didYouMean(name, registry.names('processor'));
      problems.push(loc.problem([...path, name], `unknown processor "${name}"${hint ? `; did you mean "${hint}"?` : `; known: ${registry.names('processor').join(', ')}`}`, { key: true }));
      continue;
    }
    let config = rest[name];
    if (config === null || config === undefined) config = {};
    (slot as Record<string, unknown>)[name] = config;
    const before = problems.length;
    problems.push(...validateParsed(parsed, op.spec.config, config, [...path, name]));
    eachExpression(op.spec.config as Annotated, config, [], (kind, source, p) => {
      try {
        if (kind === 'jsonata') compileExpression(source);
        else compileTemplate(source);
      } catch (err) {
        if (!(err instanceof ExpressionSyntaxError)) throw err;
        problems.push(expressionProblem(parsed, [...path, name, ...p], err));
      }
    });
    if (problems.length === before && op.spec.lint) {
      for (const issue of op.spec.lint(config as never, { schemasDir: join(rootDir, 'schemas') })) problems.push(loc.problem([...path, name, ...issue.path], issue.message));
    }
    if (out.has(index)) problems.push(loc.problem(path, `${key} is the step ${out.get(index)!.key} mocked above`, { key: true }));
    out.set(index, { key, index, name, config: config as Record<string, any>, operator: op });
  }
  return out;
}

function expressionProblem(parsed: ParsedYaml, path: Path, err: ExpressionSyntaxError): Problem {
  const { node } = parsed.loc.node(path);
  const quoted = isScalar(node) && (node.type === 'QUOTE_DOUBLE' || node.type === 'QUOTE_SINGLE');
  return parsed.loc.problem(path, err.message, { offset: err.offset + (quoted ? 1 : 0) });
}

/** The schema of a field of an operator's config, by its path (undefined: no such field). */
export function fieldSchema(schema: Annotated, path: string[]): Annotated | undefined {
  let s: any = schema;
  for (const step of path) {
    if (!s) return undefined;
    if (Array.isArray(s.anyOf)) s = s.anyOf.find((b: any) => b.properties?.[step] || b.patternProperties || b.items) ?? s;
    if (s.properties?.[step]) s = s.properties[step];
    else if (s.patternProperties) s = Object.entries<any>(s.patternProperties).find(([re]) => new RegExp(re).test(step))?.[1];
    else if (s.items && /^\d+$/.test(step)) s = s.items;
    else return undefined;
  }
  return s;
}

/** Every dotted path of a config (for "did you mean"). */
function fieldPaths(config: unknown, prefix = ''): string[] {
  const r = rec(config);
  if (!r) return [];
  return Object.entries(r).flatMap(([k, v]) => [`${prefix}${k}`, ...fieldPaths(v, `${prefix}${k}.`)]);
}

/** The value configured at a dotted path of a component's config. */
export function configAt(config: unknown, path: string[]): unknown {
  let cur: any = config;
  for (const step of path) cur = cur === null || typeof cur !== 'object' ? undefined : cur[step];
  return cur;
}

function regex(parsed: ParsedYaml, source: string, path: Path, problems: Problem[]): RegExp | undefined {
  try {
    return new RegExp(source);
  } catch (err) {
    problems.push(parsed.loc.problem(path, `invalid regular expression: ${(err as Error).message.replace(/^Invalid regular expression: /, '')}`));
    return undefined;
  }
}

function expectation(parsed: ParsedYaml, e: ExpectedDeadLetterData, path: Path, outputs: ComponentConfig[], kind: 'output' | 'dead_letter', problems: Problem[]): Expectation {
  const { loc } = parsed;
  const x: Expectation = {
    where: whereOf(loc, path),
    has: { value: 'value' in e, valueContains: 'value_contains' in e, key: 'key' in e },
    value: e.value,
    valueContains: e.value_contains,
    key: e.key,
    headers: e.headers,
    metadata: e.metadata as Record<string, unknown> | undefined,
    output: e.output,
    fields: e.fields as Record<string, unknown> | undefined,
    reason: e.reason,
    code: e.code,
    component: e.component,
  };
  if (text(e.value_matches) !== undefined) x.valueMatches = regex(parsed, e.value_matches!, [...path, 'value_matches'], problems);
  if (text(e.reason_matches) !== undefined) x.reasonMatches = regex(parsed, e.reason_matches!, [...path, 'reason_matches'], problems);
  if (rec(e.headers_match)) {
    x.headersMatch = Object.entries(e.headers_match!).flatMap(([h, re]) => {
      const r = typeof re === 'string' ? regex(parsed, re, [...path, 'headers_match', h], problems) : undefined;
      return r ? [[h, r] as [string, RegExp]] : [];
    });
  }
  if (text(e.check) !== undefined) {
    try {
      x.check = compileExpression(e.check!);
    } catch (err) {
      if (!(err instanceof ExpressionSyntaxError)) throw err;
      problems.push(expressionProblem(parsed, [...path, 'check'], err));
    }
  }
  const names = outputs.map((o) => o.component);
  let candidates = outputs;
  if (typeof e.output === 'string') {
    const found = outputs.find((o) => o.component === e.output);
    if (!found) {
      const hint = didYouMean(e.output, names);
      problems.push(loc.problem([...path, 'output'], `the pipeline has no ${kind === 'output' ? 'output' : 'dead_letter output'} "${e.output}"${hint ? `; did you mean "${hint}"?` : names.length ? `; its outputs: ${names.join(', ')}` : ''}`));
    } else candidates = [found];
  }
  for (const field of Object.keys(rec(e.fields) ?? {})) {
    const p = field.split('.');
    if (!candidates.some((o) => configAt(o.config, p) !== undefined)) {
      const hint = didYouMean(field, candidates.flatMap((o) => fieldPaths(o.config)));
      const where = candidates.map((o) => o.component).join(' or ');
      problems.push(loc.problem([...path, 'fields', field], `no field ${field} in the config of ${where}${hint ? `; did you mean "${hint}"?` : ''}`, { key: true }));
    }
  }
  return x;
}

function sorted(ps: Problem[]): Problem[] {
  const seen = new Set<string>();
  return ps
    .filter((p) => {
      const k = `${p.file}:${p.line}:${p.col}: ${p.message}`;
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    })
    .sort((a, b) => (a.file === b.file ? a.line - b.line || a.col - b.col : a.file < b.file ? -1 : 1));
}
