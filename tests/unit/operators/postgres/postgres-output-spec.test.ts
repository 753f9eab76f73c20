/**
 * The postgres output's spec on its own (until it is in operators/index.ts the generic spec tests
 * do not see it): examples load in a pipeline, the config is closed and documented, and a bad
 * conflict setting is reported by lint with its path.
 */
import { describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../../../core/config.ts';
import { OperatorRegistry } from '../../../../core/registry.ts';
import { operators } from '../../../../operators/index.ts';
import { postgres } from '../../../../operators/postgres/output.ts';

const ROOT = new URL('../../../..', import.meta.url).pathname;
const registry = new OperatorRegistry([...operators.filter((o) => !(o.spec.kind === 'output' && o.spec.name === 'postgres')), postgres]);
const indent = (text: string) => text.split('\n').map((l) => (l.trim() === '' ? l : `    ${l}`)).join('\n');
const wrap = (config: string) => `name: example\ninput:\n  generate:\n    count: 1\noutput:\n  postgres:\n${indent(config)}\ndead_letter:\n  drop: {}\n`;

describe('postgres output spec', () => {
  it.each(postgres.spec.examples.map((e) => [e.title, e.config]))('example %s loads without problems', (_t, config) => {
    const res = loadPipeline('postgres-example.yaml', { registry, rootDir: ROOT, text: wrap(config), env: {} });
    expect(res.ok ? [] : res.problems.map(formatProblem)).toEqual([]);
  });

  const problemsOf = (config: string) => {
    const res = loadPipeline('bad.yaml', { registry, rootDir: ROOT, text: wrap(config), env: {} });
    return res.ok ? '' : res.problems.map(formatProblem).join('\n');
  };

  it('reports a bad column expression at load time, with its line', () => {
    expect(problemsOf("url: postgres://u@h/db\ntable: t\ncolumns:\n  a: 'a +'")).toMatch(/bad\.yaml:\d+:\d+: invalid expression/);
  });

  it('reports conflict keys that are not columns and update without keys', () => {
    expect(problemsOf('url: postgres://u@h/db\ntable: t\ncolumns:\n  a: a\nconflict:\n  keys: [zz]')).toMatch(/key column zz is not in columns/);
    expect(problemsOf('url: postgres://u@h/db\ntable: t\ncolumns:\n  a: a\nconflict:\n  action: update')).toMatch(/action update needs the conflict keys/);
  });
});
