/**
 * Loading and linting pipeline files.
 *
 * The YAML is parsed with positions; `${VAR}` / `${VAR:-default}` are replaced in scalar values
 * (`$${VAR}` stays literal); the envelope and every operator's config are validated with ajv
 * against schemas generated from the operator specs; expressions are compiled; cross-field rules
 * run. Every problem is collected with file:line:col: nothing stops at the first one.
 */
import { readFileSync } from 'node:fs';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Type, type TSchema } from '@sinclair/typebox';
import { isMap, isScalar, isSeq, LineCounter, parse as parseYamlValue, parseDocument, visit, type Document, type Node as YNode, type Pair, type Scalar } from 'yaml';
import { DURATION_PATTERN, parseDuration } from './duration.ts';
import { compileExpression, compileTemplate, ExpressionSyntaxError } from './expression.ts';
import type { AnyOperator, OperatorKind } from './operator.ts';
import { didYouMean, type OperatorRegistry } from './registry.ts';
import { Duration, Obj, type Annotated } from './schema.ts';

export interface Problem {
  file: string;
  line: number;
  col: number;
  message: string;
}

export const formatProblem = (p: Problem) => `${p.file}:${p.line}:${p.col}: ${p.message}`;

export interface ComponentConfig {
  kind: OperatorKind;
  /** Operator name, e.g. `kafka`. */
  name: string;
  /** The label, or the path such as `pipeline.1.map`. */
  component: string;
  label?: string;
  config: Record<string, any>;
  operator: AnyOperator;
  /** Nested components (fields marked x-component), by their dotted path inside `config`. */
  children: Map<string, ComponentConfig>;
}

export interface PipelineConfig {
  file: string;
  name: string;
  description?: string;
  input: ComponentConfig;
  processors: ComponentConfig[];
  output: ComponentConfig;
  deadLetter?: ComponentConfig;
  shutdownTimeoutMs: number;
  /** The whole config as the runner understands it, defaults filled. */
  raw: Record<string, any>;
  /** Dotted paths of fields marked secret, for redaction when printing. */
  secretPaths: Set<string>;
}

export type LoadResult = { ok: true; pipeline: PipelineConfig; problems: [] } | { ok: false; problems: Problem[] };

const LABEL = Type.Optional(Type.String({ pattern: '^[a-z0-9][a-z0-9_-]*$', description: 'A name for this component in logs and metrics.' }));

/** The envelope of a pipeline file. Component slots are checked per operator, for precise errors. */
export function envelopeSchema(slot: (kind: OperatorKind) => TSchema = () => Type.Object({}, { additionalProperties: true })) {
  return Obj(
    {
      $schema: Type.Optional(Type.String({ description: 'Path or URL of the JSON Schema, for editors.' })),
      name: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]*$', description: 'Name of the pipeline: lowercase letters, digits, - and _. Labels its logs, metrics and health.' }),
      description: Type.Optional(Type.String({ description: 'What the pipeline is for.' })),
      input: slot('input'),
      pipeline: Type.Optional(Type.Array(slot('processor'), { description: 'Processors applied in order to every message.', default: [] })),
      output: slot('output'),
      dead_letter: Type.Optional(slot('output')),
      shutdown_timeout: Type.Optional(Duration('How long a stopping pipeline may take to drain in-flight messages before it gives up (and the process exits non-zero).', '20s')),
    },
    { description: 'A pipeline: one input, processors, one output, and an optional dead-letter output.' },
  );
}

export function createAjv(): Ajv {
  const ajv = new Ajv({ allErrors: true, verbose: true, useDefaults: true, strict: true, strictTypes: false, allowUnionTypes: true });
  for (const keyword of ['x-secret', 'x-expression', 'x-duration', 'x-component', 'markdownDescription']) ajv.addKeyword({ keyword });
  return ajv;
}

const ENV_REF = /\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^}\\]|\\.)*))?\}/g;

export interface InterpolationResult {
  value: string;
  missing: { name: string; offset: number }[];
}

/** Replace `${VAR}` and `${VAR:-default}`; `$${VAR}` becomes the literal `${VAR}`. */
export function interpolate(text: string, env: Record<string, string | undefined>): InterpolationResult {
  const missing: { name: string; offset: number }[] = [];
  const value = text.replace(ENV_REF, (whole, escaped: string, name: string, def: string | undefined, offset: number) => {
    if (escaped) return whole.slice(1);
    const v = env[name];
    if (v !== undefined && v !== '') return v;
    if (def !== undefined) return def.replace(/\\(.)/g, '$1');
    if (v === '') return v;
    missing.push({ name, offset });
    return '';
  });
  return { value, missing };
}

export type Path = (string | number)[];

export class Locator {
  constructor(
    readonly file: string,
    readonly doc: Document,
    readonly lc: LineCounter,
  ) {}

  at(offset: number, message: string): Problem {
    const { line, col } = this.lc.linePos(offset);
    return { file: this.file, line, col, message };
  }

  /** The node at a path, or the deepest existing ancestor. With `key`, the key of the last step. */
  node(path: Path, key = false): { node: YNode | null; exact: boolean } {
    let cur: unknown = this.doc.contents;
    let lastKey: YNode | null = null;
    for (let i = 0; i < path.length; i++) {
      const step = path[i];
      if (isMap(cur)) {
        const pair = (cur.items as Pair<YNode, YNode>[]).find((p) => (isScalar(p.key) ? String(p.key.value) : p.key) === String(step));
        if (!pair) return { node: cur as YNode, exact: false };
        lastKey = pair.key;
        if (i === path.length - 1 && key) return { node: pair.key, exact: true };
        cur = pair.value ?? pair.key;
      } else if (isSeq(cur)) {
        const item = cur.items[Number(step)];
        if (item == null) return { node: cur as YNode, exact: false };
        cur = item;
      } else {
        return { node: (cur as YNode) ?? lastKey, exact: false };
      }
    }
    return { node: (cur as YNode) ?? null, exact: true };
  }

  problem(path: Path, message: string, opts: { key?: boolean; offset?: number } = {}): Problem {
    const { node } = this.node(path, opts.key);
    const start = node?.range?.[0] ?? 0;
    return this.at(start + (opts.offset ?? 0), message);
  }
}

function describeValue(v: unknown): string {
  if (v === '[REDACTED]') return 'a secret (value not shown)';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${JSON.stringify(v)}`;
}

function getAt(data: unknown, path: Path): unknown {
  let cur: any = data;
  for (const p of path) cur = cur?.[p];
  return cur;
}
function setAt(data: any, path: Path, value: unknown) {
  let cur = data;
  for (const p of path.slice(0, -1)) cur = cur[p];
  cur[path[path.length - 1]!] = value;
}

const pointerToPath = (ptr: string): Path =>
  ptr === ''
    ? []
    : ptr
        .slice(1)
        .split('/')
        .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
        .map((s) => (/^\d+$/.test(s) ? Number(s) : s));

/**
 * Validate `data` (at `base` inside the file) with a compiled schema; values that came from
 * environment variables are coerced to the expected scalar type first.
 */
function validateAt(loc: Locator, validate: ValidateFunction, data: unknown, base: Path, fromEnv: Set<string>, unresolved: Set<string> = new Set()): Problem[] {
  for (let round = 0; round < 3; round++) {
    if (validate(data)) return [];
    let coerced = false;
    for (const e of validate.errors ?? []) {
      if (e.keyword !== 'type') continue;
      const rel = pointerToPath(e.instancePath);
      if (!fromEnv.has([...base, ...rel].join('.'))) continue;
      const v = getAt(data, rel);
      if (typeof v !== 'string') continue;
      const parsed = parseYamlValue(v);
      const want = String((e.params as { type: string }).type);
      const fits = (want.includes('integer') && Number.isInteger(parsed)) || (want.includes('number') && typeof parsed === 'number') || (want.includes('boolean') && typeof parsed === 'boolean');
      if (fits && rel.length > 0) {
        setAt(data, rel, parsed);
        coerced = true;
      }
    }
    if (!coerced) break;
  }
  return humanise(validate.errors ?? [], data)
    .filter((e) => !unresolved.has([...base, ...e.path].join('.'))) // the missing variable is the problem there
    .map((e) => loc.problem([...base, ...e.path], e.message, { key: e.key }));
}

function humanise(errors: ErrorObject[], data: unknown): { path: Path; message: string; key?: boolean }[] {
  const out: { path: Path; message: string; key?: boolean }[] = [];
  // A union (anyOf/oneOf) failing yields one error per branch: report the union once.
  const unions = new Set(errors.filter((e) => e.keyword === 'anyOf' || e.keyword === 'oneOf').map((e) => e.instancePath));
  for (const e of errors) {
    const path = pointerToPath(e.instancePath);
    const raw = getAt(data, path);
    // Never echo a secret's value in an error.
    const value = (e.parentSchema as Annotated | undefined)?.['x-secret'] && raw !== undefined ? '[REDACTED]' : raw;
    if (unions.has(e.instancePath) && e.keyword !== 'anyOf' && e.keyword !== 'oneOf') continue;
    switch (e.keyword) {
      case 'required': {
        const missing = (e.params as { missingProperty: string }).missingProperty;
        out.push({ path, message: `missing required field "${missing}"` });
        break;
      }
      case 'additionalProperties': {
        const extra = (e.params as { additionalProperty: string }).additionalProperty;
        const allowed = Object.keys((e.parentSchema as { properties?: object })?.properties ?? {});
        const hint = didYouMean(extra, allowed);
        out.push({
          path: [...path, extra],
          key: true,
          message: `unknown field "${extra}"${hint ? `; did you mean "${hint}"?` : allowed.length ? `; allowed: ${allowed.join(', ')}` : ''}`,
        });
        break;
      }
      case 'type':
        out.push({ path, message: `must be ${(e.params as { type: string }).type}, got ${describeValue(value)}` });
        break;
      case 'enum':
        out.push({ path, message: `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}, got ${describeValue(value)}` });
        break;
      case 'anyOf':
      case 'oneOf': {
        // One branch fitted the shape and failed deeper: those deeper errors say it better.
        if (errors.some((o) => o.instancePath.startsWith(`${e.instancePath}/`))) break;
        const s = e.parentSchema as Annotated & { description?: string };
        const branches = ((s as { anyOf?: { const?: unknown }[] })?.anyOf ?? []) as { const?: unknown }[];
        const what = s?.['x-duration']
          ? 'a duration such as 500ms, 5s, 2m or a number of milliseconds'
          : branches.length && branches.every((b) => b.const !== undefined)
            ? `one of ${branches.map((b) => JSON.stringify(b.const)).join(', ')}`
            : 'one of the allowed forms';
        out.push({ path, message: `must be ${what}, got ${describeValue(value)}` });
        break;
      }
      case 'pattern': {
        const pattern = (e.params as { pattern: string }).pattern;
        const what = pattern === DURATION_PATTERN ? 'a duration such as 500ms, 5s, 2m' : `text matching ${pattern}`;
        out.push({ path, message: `must be ${what}, got ${describeValue(value)}` });
        break;
      }
      default:
        out.push({ path, message: `${e.message ?? e.keyword}${value !== undefined && typeof value !== 'object' ? `, got ${describeValue(value)}` : ''}` });
    }
  }
  return out;
}

/** Walk a config with its schema and call back for annotated fields (expressions, secrets). */
function walkAnnotated(schema: Annotated, value: unknown, path: Path, cb: (s: Annotated, v: unknown, p: Path) => void) {
  if (schema == null || value === undefined) return;
  cb(schema, value, path);
  const s = schema as any;
  if (s.type === 'object' && (s.properties || s.patternProperties) && value && typeof value === 'object' && !Array.isArray(value)) {
    for (const [k, sub] of Object.entries(s.properties ?? {})) walkAnnotated(sub as Annotated, (value as any)[k], [...path, k], cb);
    // Records (maps of name -> expression): every entry not named in properties.
    const patterns = Object.entries<Annotated>(s.patternProperties ?? {});
    for (const [k, v] of Object.entries(value)) {
      if (s.properties && k in s.properties) continue;
      const match = patterns.find(([re]) => new RegExp(re).test(k));
      if (match) walkAnnotated(match[1], v, [...path, k], cb);
    }
  } else if (s.type === 'array' && s.items && Array.isArray(value)) {
    value.forEach((v, i) => walkAnnotated(s.items, v, [...path, i], cb));
  } else if (Array.isArray(s.anyOf)) {
    // Take the first branch that fits the value's shape.
    for (const b of s.anyOf) {
      const t = b.type;
      const shape = Array.isArray(value) ? 'array' : value === null ? 'null' : typeof value;
      if (t === shape || (t === 'integer' && shape === 'number') || (t === 'object' && shape === 'object')) {
        walkAnnotated(b, value, path, cb);
        break;
      }
    }
  }
}

export interface LoadOptions {
  registry: OperatorRegistry;
  env?: Record<string, string | undefined>;
  rootDir: string;
  /** The text, when it does not come from the file. */
  text?: string;
}

const ajvCache = new WeakMap<object, ValidateFunction>();

export interface ParsedYaml {
  text: string;
  doc: Document;
  loc: Locator;
  /** The document as plain data, variables replaced. */
  data: any;
  /** Dotted paths of values that came from environment variables. */
  fromEnv: Set<string>;
  /** Dotted paths of values with a missing variable (reported once, not again by the schema). */
  unresolved: Set<string>;
  problems: Problem[];
}

/** Read and parse a YAML file with positions, replacing ${VAR} in scalar values. */
export function parseYamlWithEnv(file: string, opts: { env?: Record<string, string | undefined>; text?: string } = {}): ParsedYaml | { problems: Problem[]; doc?: undefined } {
  const env = opts.env ?? process.env;
  let text: string;
  try {
    text = opts.text ?? readFileSync(file, 'utf8');
  } catch (err) {
    return { problems: [{ file, line: 1, col: 1, message: `cannot read the file: ${(err as Error).message}` }] };
  }
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const loc = new Locator(file, doc, lc);
  const problems: Problem[] = [];
  for (const e of [...doc.errors, ...doc.warnings]) problems.push(loc.at(e.pos[0], e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')));
  if (problems.length) return { problems };
  if (!isMap(doc.contents)) return { problems: [loc.at(0, 'expected a YAML mapping at the top of the file')] };

  // Environment interpolation on scalar values, keeping positions for errors.
  const fromEnv = new Set<string>();
  const unresolved = new Set<string>();
  visit(doc, {
    Scalar(key, node: Scalar, ancestors) {
      if (key === 'key' || typeof node.value !== 'string' || !node.value.includes('${')) return;
      const res = interpolate(node.value, env);
      for (const m of res.missing) {
        problems.push(loc.at(scalarOffset(text, node, m.offset), `environment variable ${m.name} is not set and has no default; set it, or write \${${m.name}:-default}`));
      }
      if (res.missing.length) unresolved.add(pathOf(doc, ancestors, node).join('.'));
      if (res.value !== node.value) {
        node.value = res.value;
        fromEnv.add(pathOf(doc, ancestors, node).join('.'));
      }
    },
  });
  const data = doc.toJS({ maxAliasCount: 100 });
  return { text, doc, loc, data, fromEnv, unresolved, problems };
}

/** Validate parsed YAML (or a part of it at `base`) against a schema; problems with positions. */
export function validateParsed(parsed: ParsedYaml, schema: object, data: unknown = parsed.data, base: Path = []): Problem[] {
  return validateAt(parsed.loc, cachedValidator(schema), data, base, parsed.fromEnv, parsed.unresolved);
}

export function loadPipeline(file: string, opts: LoadOptions): LoadResult {
  const parsed = parseYamlWithEnv(file, { env: opts.env, text: opts.text });
  if (!parsed.doc) return { ok: false, problems: parsed.problems };
  const { text, loc, fromEnv, unresolved } = parsed;
  const problems = parsed.problems;
  const data = parsed.data as Record<string, any>;
  const envelope = cachedValidator(envelopeSchema());
  problems.push(...validateAt(loc, envelope, data, [], fromEnv, unresolved));

  const components: Partial<Record<'input' | 'output' | 'dead_letter', ComponentConfig>> = {};
  const processors: ComponentConfig[] = [];
  const secretPaths = new Set<string>();
  /** Where each component is in the file, for problems found after resolving. */
  const slotPath = new Map<ComponentConfig, Path>();
  /** Every component resolved, nested ones included. */
  const all: ComponentConfig[] = [];
  const an = (k: OperatorKind) => (k === 'input' ? 'an input' : k === 'output' ? 'an output' : `a ${k}`);
  const resolveSlot = (kind: OperatorKind, slot: unknown, path: Path): ComponentConfig | undefined => {
    if (!slot || typeof slot !== 'object' || Array.isArray(slot)) return undefined; // reported by the envelope
    const { label, ...rest } = slot as Record<string, unknown>;
    const names = Object.keys(rest);
    if (names.length !== 1) {
      problems.push(loc.problem(path, names.length === 0 ? `expected one ${kind} (one of: ${opts.registry.names(kind).join(', ')})` : `expected exactly one ${kind}, found ${names.join(', ')}`));
      return undefined;
    }
    const name = names[0]!;
    const op = opts.registry.get(kind, name);
    if (!op) {
      const other = opts.registry.kindsOf(name);
      const hint = didYouMean(name, opts.registry.names(kind));
      problems.push(
        loc.problem([...path, name], other.length ? `${name} is ${other.map(an).join(' and ')}, not ${an(kind)}` : `unknown ${kind} "${name}"${hint ? `; did you mean "${hint}"?` : `; known: ${opts.registry.names(kind).join(', ')}`}`, { key: true }),
      );
      return undefined;
    }
    if (label !== undefined && (typeof label !== 'string' || !/^[a-z0-9][a-z0-9_-]*$/.test(label))) {
      problems.push(loc.problem([...path, 'label'], 'label must be lowercase letters, digits, - and _'));
    }
    let config = rest[name];
    if (config === null || config === undefined) config = {};
    (slot as Record<string, unknown>)[name] = config;
    const validate = cachedValidator(op.spec.config);
    const before = problems.length;
    problems.push(...validateAt(loc, validate, config, [...path, name], fromEnv, unresolved));
    // Expressions, templates and durations compile at load; their errors point into the string.
    const children = new Map<string, ComponentConfig>();
    walkAnnotated(op.spec.config as Annotated, config, [], (s, v, p) => {
      if (s['x-component']) {
        const child = resolveSlot(s['x-component'], v, [...path, name, ...p]);
        if (child) children.set(p.join('.'), child);
        return;
      }
      if (s['x-secret']) secretPaths.add([...path, name, ...p].join('.'));
      if (typeof v !== 'string') return;
      try {
        if (s['x-expression'] === 'jsonata') compileExpression(v);
        else if (s['x-expression'] === 'template') compileTemplate(v);
      } catch (err) {
        if (err instanceof ExpressionSyntaxError) {
          const { node } = loc.node([...path, name, ...p]);
          problems.push(loc.at(scalarOffset(text, node, err.offset), err.message));
        } else throw err;
      }
    });
    if (problems.length === before && op.spec.lint) {
      for (const issue of op.spec.lint(config as any, { schemasDir: `${opts.rootDir}/schemas` })) {
        problems.push(loc.problem([...path, name, ...issue.path], issue.message));
      }
    }
    const component = typeof label === 'string' ? label : [...path, name].join('.');
    const resolved: ComponentConfig = { kind, name, label: typeof label === 'string' ? label : undefined, component, config: config as Record<string, any>, operator: op, children };
    slotPath.set(resolved, path);
    all.push(resolved);
    return resolved;
  };

  components.input = resolveSlot('input', data.input, ['input']);
  (Array.isArray(data.pipeline) ? data.pipeline : []).forEach((slot: unknown, i: number) => {
    const c = resolveSlot('processor', slot, ['pipeline', i]);
    if (c) processors.push(c);
  });
  components.output = resolveSlot('output', data.output, ['output']);
  if (data.dead_letter !== undefined) components.dead_letter = resolveSlot('output', data.dead_letter, ['dead_letter']);

  // Nothing is ever dropped silently: a step that can reject messages needs somewhere to put them.
  if (data.dead_letter === undefined) {
    for (const c of all.filter((x) => x !== components.input && x !== components.dead_letter && !isInside(x, components.dead_letter))) {
      if (c.operator.spec.rejects && c.config.on_invalid !== 'drop') {
        problems.push(loc.problem([...slotPath.get(c)!, c.name], `${c.name} can reject messages but the pipeline has no dead_letter output; add one, or set on_invalid: drop to drop them (logged and counted)`, { key: true }));
      }
    }
  }

  const labels = new Map<string, ComponentConfig[]>();
  for (const c of all) labels.set(c.component, [...(labels.get(c.component) ?? []), c]);
  for (const [l, cs] of labels) {
    // Reported at the second use, where the user has to pick another name.
    if (cs.length > 1) problems.push(loc.problem([...slotPath.get(cs[1]!)!, 'label'], `label "${l}" is used ${cs.length} times; labels must be unique in a pipeline`));
  }

  let shutdownTimeoutMs = 20_000;
  try {
    shutdownTimeoutMs = parseDuration(data.shutdown_timeout ?? '20s');
  } catch {
    /* reported by the schema */
  }
  if (problems.length || !components.input || !components.output) {
    return { ok: false, problems: problems.length ? sortProblems(problems) : [loc.at(0, 'the pipeline is incomplete')] };
  }
  data.pipeline = data.pipeline ?? [];
  data.shutdown_timeout = data.shutdown_timeout ?? '20s';
  return {
    ok: true,
    problems: [],
    pipeline: {
      file,
      name: data.name,
      description: data.description,
      input: components.input,
      processors,
      output: components.output,
      deadLetter: components.dead_letter,
      shutdownTimeoutMs,
      raw: data,
      secretPaths,
    },
  };
}

/** Whether `c` is nested (at any depth) inside `parent`. */
function isInside(c: ComponentConfig, parent: ComponentConfig | undefined): boolean {
  if (!parent) return false;
  for (const child of parent.children.values()) if (child === c || isInside(c, child)) return true;
  return false;
}

function cachedValidator(schema: object): ValidateFunction {
  let v = ajvCache.get(schema);
  if (!v) {
    // A schema read from a file again is a new object with the same $id: compile it once.
    const id = (schema as { $id?: unknown }).$id;
    v = (typeof id === 'string' ? sharedAjv().getSchema(id) : undefined) ?? sharedAjv().compile(schema);
    ajvCache.set(schema, v);
  }
  return v;
}

let ajvInstance: Ajv | undefined;
const sharedAjv = () => (ajvInstance ??= createAjv());

function pathOf(doc: Document, ancestors: readonly unknown[], node: unknown): Path {
  const path: Path = [];
  const chain = [...ancestors, node];
  for (let i = 1; i < chain.length; i++) {
    const parent = chain[i - 1];
    const child = chain[i];
    if (isMap(parent)) continue;
    if (isSeq(parent)) path.push(parent.items.indexOf(child as never));
    else if (parent && typeof parent === 'object' && 'key' in parent && 'value' in parent) {
      const k = (parent as Pair).key;
      path.push(isScalar(k) ? String(k.value) : String(k));
    }
  }
  void doc;
  return path;
}

/**
 * The offset in the file of character `i` of a scalar's value: skips the opening quote, or the
 * header line and indentation of a block scalar (`|`, `>`), and the indentation of continuation
 * lines. Escapes in double-quoted strings are not accounted for.
 */
function scalarOffset(text: string, node: YNode | null, i: number): number {
  let at = node?.range?.[0] ?? 0;
  if (!isScalar(node)) return at + i;
  const block = node.type === 'BLOCK_LITERAL' || node.type === 'BLOCK_FOLDED';
  let indent = Infinity; // flow scalars: continuation lines lose all their leading spaces
  if (block) {
    at = text.indexOf('\n', at) + 1;
    indent = /^( *)\S/m.exec(text.slice(at))?.[1]?.length ?? 0;
  } else if (node.type === 'QUOTE_DOUBLE' || node.type === 'QUOTE_SINGLE') at += 1;
  const skipIndent = () => {
    for (let k = 0; k < indent && (text[at] === ' ' || (!block && text[at] === '\t')); k++) at++;
  };
  if (block) skipIndent();
  for (let n = i; n > 0 && at < text.length; n--) {
    if (text[at] === '\n') {
      at++;
      skipIndent();
    } else at++;
  }
  return at;
}

function sortProblems(ps: Problem[]): Problem[] {
  const seen = new Set<string>();
  return ps
    .filter((p) => {
      const k = formatProblem(p);
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    })
    .sort((a, b) => a.line - b.line || a.col - b.col);
}
