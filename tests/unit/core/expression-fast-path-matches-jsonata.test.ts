/**
 * compileExpression reads plain field paths directly instead of running JSONata. That shortcut
 * must give exactly what JSONata gives, or a filter or key would silently change meaning.
 */
import jsonata from 'jsonata';
import { describe, expect, it } from 'vitest';
import { compileExpression } from '../../../core/expression.ts';
import type { Msg } from '../../../core/message.ts';

type Input = Pick<Msg, 'value' | 'meta' | 'headers' | 'key'>;

const inputs: Input[] = [
  { value: { a: 1, b: { c: 'x' }, n: null, arr: [1, 2], true: 'a field named true', null: 'a field named null' }, meta: { t: 'topic', z: null }, headers: { h: 'v' }, key: 'k' },
  { value: { a: 1 }, meta: {}, headers: {}, key: null },
  { value: 'a string', meta: {}, headers: {}, key: null },
  { value: [{ a: 1 }, { a: 2 }], meta: {}, headers: {}, key: null },
];

const expressions = ['true', 'false', 'null', 'a', 'b.c', 'b.c.d', 'n', 'missing', 'arr', 'b', '$key', '$meta.t', '$meta.z', '$meta.missing', '$headers.h', 'and', 'in'];

async function reference(src: string, m: Input): Promise<unknown> {
  const r = await jsonata(src).evaluate(m.value, { meta: m.meta, headers: m.headers, key: m.key });
  return r === undefined ? undefined : JSON.parse(JSON.stringify(r));
}

describe('compileExpression gives what JSONata gives', () => {
  it.each(expressions)('%s', async (src) => {
    const expr = compileExpression(src);
    for (const m of inputs) {
      expect(await expr.evaluate(m), `${src} on ${JSON.stringify(m)}`).toEqual(await reference(src, m));
    }
  });

  it('treats true, false and null as literals (a filter on `true` keeps everything)', async () => {
    const m = inputs[1]!;
    expect(await compileExpression('true').evaluate(m)).toBe(true);
    expect(await compileExpression('false').evaluate(m)).toBe(false);
    expect(await compileExpression('null').evaluate(m)).toBeNull();
  });
});
