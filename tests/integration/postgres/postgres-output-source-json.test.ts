/**
 * A column mapped to `$` of a message whose value is still the one its input decoded from JSON
 * (msg.source, as the kafka input sets it) is written from the record's own JSON text. It must
 * land exactly as JSON.stringify of the value would for jsonb, keep escapes and whitespace safe in
 * COPY text, and a changed value must be written as changed.
 */
import type pg from 'pg';
import { lastValueFrom, from, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMsg, type Msg } from '../../../core/message.ts';
import { postgres } from '../../../operators/postgres/output.ts';
import { testContext } from '../../helpers/context.ts';
import { connect, outputConfig, uniqueTable } from './harness.ts';

let db: pg.Client;
beforeAll(async () => {
  db = await connect();
});
afterAll(async () => {
  await db.end();
});

/** A message as the kafka input makes it: value parsed from bytes, the bytes kept as its source. */
function fromBytes(text: string): Msg {
  const bytes = Buffer.from(text, 'utf8');
  const value = JSON.parse(text) as unknown;
  return { ...createMsg(value), source: { value, bytes } };
}

describe('postgres output, `$` of an unchanged decoded value', () => {
  it.each(['copy', 'upsert'] as const)('mode %s writes the record JSON text: escapes, tabs and newlines in it survive COPY', async (mode) => {
    const table = uniqueTable(`pg_srcjson_${mode}`);
    await db.query(`CREATE TABLE ${table} (id int PRIMARY KEY, doc jsonb, txt json)`);
    const texts = [
      '{"id":0,"note":"tab\\there","nl":"a\\nb","bs":"back\\\\slash \\\\N","q":"say \\"hi\\""}',
      '{\n\t"id": 1,\r\n\t"spaced": [1, 2, {"x": null}]\n}',
      '{"id":2,"unicode":"héat ❄️ \\u00e9 𝄞","sql":"\'); DROP TABLE x; --"}',
      '{"id":3,"big":12345678901234567890,"neg":-0.5e-3}',
    ];
    const msgs = texts.map(fromBytes);
    const ctx = testContext();
    const cfg = outputConfig({ table, mode, columns: { id: 'id', doc: '$', txt: '$' }, ...(mode === 'upsert' ? { conflict: { keys: ['id'], action: 'nothing', update_columns: [], where: '' } } : {}) });
    try {
      const out = await lastValueFrom(from(msgs).pipe(postgres.create(cfg, ctx), toArray()));
      expect(out).toHaveLength(texts.length);
    } finally {
      await ctx.close();
    }
    expect(ctx.rejected).toEqual([]);
    const { rows } = await db.query(`SELECT id, doc, txt::text AS txt, doc = $1::jsonb AS big_exact FROM ${table} ORDER BY id`, [texts[3]]);
    // jsonb: the same document as the parsed value (big: jsonb keeps every digit of the text).
    expect(rows.slice(0, 3).map((r) => r.doc)).toEqual(msgs.slice(0, 3).map((m) => m.value));
    expect(rows[3].big_exact).toBe(true);
    // json keeps the text as it was, whitespace included.
    expect(rows.map((r) => r.txt)).toEqual(texts);
  });

  it('writes the new value when a processor replaced it, not the source text', async () => {
    const table = uniqueTable('pg_srcjson_changed');
    await db.query(`CREATE TABLE ${table} (id int PRIMARY KEY, doc jsonb)`);
    const original = fromBytes('{"id":1,"v":"old"}');
    const changed: Msg = { ...original, value: { id: 1, v: 'new' } };
    const ctx = testContext();
    try {
      await lastValueFrom(from([changed]).pipe(postgres.create(outputConfig({ table, mode: 'copy', columns: { id: 'id', doc: '$' } }), ctx), toArray()));
    } finally {
      await ctx.close();
    }
    const { rows } = await db.query(`SELECT doc FROM ${table}`);
    expect(rows[0].doc).toEqual({ id: 1, v: 'new' });
  });
});
