/**
 * operators/index.ts lists every operator explicitly. The rule for "an operator file": a module
 * under operators/ that exports an object with a `spec` and a `create` function. Helpers (clients,
 * offset tracking, topic management) export no such object and are not operators.
 */
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { AnyOperator } from '../../../core/operator.ts';
import { operators, registry } from '../../../operators/index.ts';

const OPERATORS_DIR = new URL('../../../operators', import.meta.url).pathname;

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? tsFiles(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

const isOperator = (v: unknown): v is AnyOperator =>
  !!v && typeof v === 'object' && 'spec' in v && 'create' in v && typeof (v as { create: unknown }).create === 'function';

describe('operator registry', () => {
  it('lists every operator exported by a file under operators/', async () => {
    const found: { file: string; name: string; op: AnyOperator }[] = [];
    for (const file of tsFiles(OPERATORS_DIR).filter((f) => f !== join(OPERATORS_DIR, 'index.ts'))) {
      const mod = (await import(file)) as Record<string, unknown>;
      for (const [exportName, v] of Object.entries(mod)) if (isOperator(v)) found.push({ file: relative(OPERATORS_DIR, file), name: exportName, op: v });
    }
    expect(found.length).toBeGreaterThan(0);
    const missing = found.filter((f) => !operators.includes(f.op)).map((f) => `${f.file}: ${f.name} (${f.op.spec.kind} ${f.op.spec.name})`);
    expect(missing, 'exported but not listed in operators/index.ts').toEqual([]);
    const unknownOrigin = operators.filter((op) => !found.some((f) => f.op === op)).map((op) => op.spec.name);
    expect(unknownOrigin, 'listed in operators/index.ts but not exported by a file under operators/').toEqual([]);
  });

  it('has unique names per kind, and every listed operator is reachable by kind and name', () => {
    for (const kind of ['input', 'processor', 'output'] as const) {
      const names = operators.filter((op) => op.spec.kind === kind).map((op) => op.spec.name);
      expect(new Set(names).size, `duplicate ${kind} names: ${names.join(', ')}`).toBe(names.length);
    }
    for (const op of operators) expect(registry.get(op.spec.kind, op.spec.name)).toBe(op);
  });

  it('uses snake_case operator names', () => {
    for (const op of operators) expect(op.spec.name).toMatch(/^[a-z][a-z0-9_]*$/);
  });
});
