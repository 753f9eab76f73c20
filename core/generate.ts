/**
 * Files generated from the operator specs: schemas/pipeline.schema.json (for editors and for
 * checking) and docs/operators/*.md. Both are checked in; a test fails when they are stale.
 */
import { Type, type TSchema } from '@sinclair/typebox';
import { envelopeSchema } from './config.ts';
import type { AnyOperator, OperatorKind } from './operator.ts';
import type { OperatorRegistry } from './registry.ts';

const LABEL = Type.String({ pattern: '^[a-z0-9][a-z0-9_-]*$', description: 'A name for this component in logs and metrics.' });

export function pipelineJsonSchema(registry: OperatorRegistry): object {
  const slot = (kind: OperatorKind): TSchema =>
    Type.Union(
      registry.names(kind).map((name) => {
        const op = registry.get(kind, name)!;
        return Type.Object({ label: Type.Optional(LABEL), [name]: op.spec.config }, { additionalProperties: false, required: [name], description: `${name}: ${op.spec.summary}` });
      }),
      { description: `One ${kind}: ${registry.names(kind).join(', ')}` },
    );
  // Slots are definitions so that nested components (x-component, e.g. switch cases) can refer to them.
  const ref = (kind: OperatorKind) => Type.Unsafe({ $ref: `#/definitions/${kind}` });
  const schema = envelopeSchema(ref);
  const definitions = Object.fromEntries((['input', 'processor', 'output'] as const).map((k) => [k, forEditors(JSON.parse(JSON.stringify(slot(k))))]));
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    $id: 'https://runner.local/schemas/pipeline.schema.json',
    title: 'Runner pipeline',
    ...forEditors(JSON.parse(JSON.stringify(schema))),
    definitions,
  };
}

const ENV_REF = {
  type: 'string',
  pattern: '\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}',
  description: 'An environment variable, ${VAR} or ${VAR:-default}, replaced when the pipeline is loaded.',
};

const isScalar = (s: any) => s && typeof s === 'object' && (['integer', 'number', 'boolean', 'string'].includes(s.type) || s.const !== undefined);
const isConstrained = (s: any) => s.type !== 'string' || s.pattern !== undefined || s.enum !== undefined || s.format !== undefined || s.const !== undefined;

/**
 * The config schema as editors should read it, which is what a user may write in the file:
 * - TypeBox lists fields that have a default as required; the loader fills them in, so they may
 *   be left out;
 * - `${VAR}` may stand wherever a scalar goes (the loader replaces it and coerces the value), so
 *   a number, boolean, enum or patterned string also accepts an environment variable reference.
 */
function forEditors(s: any, inUnion = false): any {
  if (!s || typeof s !== 'object' || Array.isArray(s)) return s;
  if (s['x-component']) return { $ref: `#/definitions/${s['x-component']}` };
  const out: any = { ...s };
  if (s.properties && typeof s.properties === 'object') out.properties = Object.fromEntries(Object.entries(s.properties).map(([k, v]) => [k, forEditors(v)]));
  if (s.items) out.items = forEditors(s.items);
  if (Array.isArray(s.required) && s.properties) {
    out.required = s.required.filter((name: string) => s.properties[name]?.default === undefined);
    if (out.required.length === 0) delete out.required;
  }
  if (Array.isArray(s.anyOf)) {
    out.anyOf = s.anyOf.map((b: any) => forEditors(b, true));
    if (s.anyOf.every(isScalar) && s.anyOf.some(isConstrained)) out.anyOf.push(ENV_REF);
  } else if (!inUnion && isScalar(s) && isConstrained(s)) {
    const { description, default: def, markdownDescription, ...rest } = out;
    return { description, ...(def === undefined ? {} : { default: def }), ...(markdownDescription ? { markdownDescription } : {}), anyOf: [rest, ENV_REF] };
  }
  return out;
}

export function renderPipelineSchema(registry: OperatorRegistry): string {
  return `${JSON.stringify(pipelineJsonSchema(registry), null, 2)}\n`;
}

function fieldRows(schema: any, prefix = ''): string[] {
  const rows: string[] = [];
  const props = schema?.properties ?? {};
  const required = new Set<string>(schema?.required ?? []);
  for (const [name, s] of Object.entries<any>(props)) {
    const path = prefix + name;
    const type = typeName(s);
    const def = s.default === undefined ? (required.has(name) ? '**required**' : '') : `\`${JSON.stringify(s.default)}\``;
    const desc = String(s.description ?? '').replace(/\|/g, '\\|').replace(/\n/g, ' ');
    rows.push(`| \`${path}\` | ${type} | ${def} | ${desc}${s['x-secret'] ? ' *(secret: redacted when printed)*' : ''} |`);
    if (s.type === 'object' && s.properties) rows.push(...fieldRows(s, `${path}.`));
    if (s.type === 'array' && s.items?.type === 'object') rows.push(...fieldRows(s.items, `${path}[].`));
  }
  return rows;
}

function typeName(s: any): string {
  if (s['x-expression'] === 'jsonata') return 'expression';
  if (s['x-expression'] === 'template') return 'template';
  if (s['x-duration']) return 'duration';
  if (s['x-component']) return `${s['x-component']} (one operator and its config)`;
  if (s.anyOf) {
    if (s.anyOf.every((b: any) => b.const !== undefined)) return s.anyOf.map((b: any) => `\`${b.const}\``).join(' \\| ');
    return s.anyOf.map(typeName).join(' \\| ');
  }
  if (s.const !== undefined) return `\`${s.const}\``;
  if (s.type === 'array') return `array of ${typeName(s.items ?? {})}`;
  return s.type ?? 'any';
}

export function renderOperatorDoc(op: AnyOperator): string {
  const s = op.spec;
  const lines = [
    `# ${s.name} (${s.kind})`,
    '',
    '<!-- generated by `runner docs` from the operator spec; do not edit -->',
    '',
    s.summary,
    '',
    s.description,
    '',
    '## Fields',
    '',
    '| field | type | default | description |',
    '|---|---|---|---|',
    ...fieldRows(s.config),
    '',
    '## Delivery guarantees',
    '',
    s.delivery,
    '',
  ];
  if (s.rejects) lines.push('This operator can reject messages: the pipeline needs a `dead_letter` output, or `on_invalid: drop` on this step.', '');
  if (s.examples.length) {
    lines.push('## Examples', '');
    for (const ex of s.examples) {
      const body = ex.config
        .split('\n')
        .map((l) => `    ${l}`)
        .join('\n');
      lines.push(`### ${ex.title}`, '', '```yaml', `${s.kind === 'processor' ? 'pipeline:\n  - ' : `${s.kind}:\n  `}${s.name}:`, s.kind === 'processor' ? body.replace(/^ {4}/gm, '      ') : body.replace(/^ {4}/gm, '    '), '```', '');
    }
  }
  return `${lines.join('\n').trimEnd()}\n`;
}

export function renderOperatorDocs(registry: OperatorRegistry): Map<string, string> {
  const files = new Map<string, string>();
  const index = ['# Operators', '', '<!-- generated by `runner docs`; do not edit -->', '', '| operator | kind | summary |', '|---|---|---|'];
  for (const kind of ['input', 'processor', 'output'] as const) {
    for (const name of registry.names(kind)) {
      const op = registry.get(kind, name)!;
      const file = `${kind}-${name}.md`;
      files.set(file, renderOperatorDoc(op));
      index.push(`| [${name}](${file}) | ${kind} | ${op.spec.summary} |`);
    }
  }
  files.set('README.md', `${index.join('\n')}\n`);
  return files;
}
