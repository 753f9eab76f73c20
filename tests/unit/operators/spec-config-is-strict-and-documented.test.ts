/**
 * Every operator's config schema is strict and documented: every object is closed, every field
 * has a description, every field a user may leave out has a default (fields without one are
 * required), and keys are snake_case. Specs also carry a summary, description and delivery text.
 */
import { describe, expect, it } from 'vitest';
import { operators } from '../../../operators/index.ts';

interface Finding {
  path: string;
  problem: string;
}

/** Walk a JSON Schema (TypeBox output) and collect rule violations. */
function check(schema: any, path: string, out: Finding[], inUnion = false) {
  if (!schema || typeof schema !== 'object') return;
  // A nested component is checked as the operator it names (it is a slot, like `output`).
  if (schema['x-component']) return;
  if (schema.type === 'object') {
    if (schema.additionalProperties !== false) out.push({ path: path || '(config)', problem: 'object is not closed (additionalProperties: false)' });
    const required = new Set<string>(schema.required ?? []);
    for (const [key, sub] of Object.entries<any>(schema.properties ?? {})) {
      const p = path ? `${path}.${key}` : key;
      if (!/^[a-z][a-z0-9_]*$/.test(key)) out.push({ path: p, problem: 'key is not snake_case' });
      if (typeof sub.description !== 'string' || sub.description.trim() === '') out.push({ path: p, problem: 'no description' });
      // Inside a union branch ajv applies no defaults (strict mode refuses them): optional is optional.
      if (!inUnion && !required.has(key) && sub.default === undefined) out.push({ path: p, problem: 'optional field without a default' });
      check(sub, p, out, inUnion);
    }
  }
  if (schema.type === 'array') check(schema.items, `${path}[]`, out, inUnion);
  for (const branch of [...(schema.anyOf ?? []), ...(schema.oneOf ?? [])]) check(branch, path, out, true);
}

describe.each(operators.map((op) => [`${op.spec.kind} ${op.spec.name}`, op] as const))('%s spec', (_label, op) => {
  it('has a closed, fully described config with defaults for optional fields', () => {
    const findings: Finding[] = [];
    check(op.spec.config, '', findings);
    expect(findings.map((f) => `${f.path}: ${f.problem}`)).toEqual([]);
  });

  it('has a summary, a description, delivery guarantees and at least one example', () => {
    expect(op.spec.summary.trim()).not.toBe('');
    expect(op.spec.description.trim()).not.toBe('');
    expect(op.spec.delivery.trim()).not.toBe('');
    expect(op.spec.examples.length).toBeGreaterThan(0);
  });
});
