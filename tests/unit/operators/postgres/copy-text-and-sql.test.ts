/** COPY text-format encoding, error classification, and the SQL the postgres output builds. */
import { describe, expect, it } from 'vitest';
import { buildSql, postgres } from '../../../../operators/postgres/output.ts';
import { copyTextLine, copyTextValue, escapeCopyText, isConnectionError, isRowError, quoteTable, toRunnerError } from '../../../../operators/postgres/pool.ts';

describe('COPY text encoding', () => {
  it('escapes backslash, tab, newline and carriage return, and nothing else', () => {
    expect(escapeCopyText('plain text, with "quotes" and \'apostrophes\'; DROP TABLE x;')).toBe('plain text, with "quotes" and \'apostrophes\'; DROP TABLE x;');
    expect(escapeCopyText('a\tb\nc\rd\\e')).toBe('a\\tb\\nc\\rd\\\\e');
    expect(escapeCopyText('\\N')).toBe('\\\\N');
    expect(escapeCopyText('\\.')).toBe('\\\\.');
    expect(escapeCopyText('héat ❄️ 𝄞')).toBe('héat ❄️ 𝄞');
  });

  it('writes NULL as \\N, JSON for objects and arrays, text for scalars, hex for bytes', () => {
    expect(copyTextValue(null)).toBe('\\N');
    expect(copyTextValue(undefined)).toBe('\\N');
    expect(copyTextValue('')).toBe('');
    expect(copyTextValue(1.5)).toBe('1.5');
    expect(copyTextValue(false)).toBe('false');
    expect(copyTextValue({ a: 'x\ty', b: [1, null] })).toBe('{"a":"x\\\\ty","b":[1,null]}');
    expect(copyTextValue(Buffer.from([0xde, 0xad]))).toBe('\\\\xdead');
    expect(copyTextValue(new Date(0))).toBe('1970-01-01T00:00:00.000Z');
  });

  it('joins a row with tabs and ends it with a newline', () => {
    expect(copyTextLine([1, null, 'a\nb'])).toBe('1\t\\N\ta\\nb\n');
  });
});

describe('error classification', () => {
  it('treats SQLSTATE classes 22 and 23 as bad rows, not retryable', () => {
    for (const code of ['22P02', '23502', '23505', '23514', '22003']) {
      expect(isRowError({ code })).toBe(true);
      const e = toRunnerError(Object.assign(new Error('bad'), { code }), 'writing');
      expect(e.code).toBe('WRITE_REJECTED');
      expect(e.retryable).toBe(false);
      expect(e.message).toContain(`SQLSTATE ${code}`);
    }
  });

  it('treats connection loss and everything else as retryable', () => {
    for (const err of [{ code: '08006', message: 'x' }, { code: '57P01', message: 'terminating connection due to administrator command' }, Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })]) {
      expect(isConnectionError(err)).toBe(true);
      const e = toRunnerError(err, 'writing');
      expect(e.code).toBe('CONNECTION_FAILED');
      expect(e.retryable).toBe(true);
    }
    const other = toRunnerError(Object.assign(new Error('relation "x" does not exist'), { code: '42P01' }), 'writing');
    expect(other.retryable).toBe(true);
    expect(other.code).toBe('WRITE_FAILED');
  });

  it('never shows a password from a URL in an error', () => {
    const e = toRunnerError(new Error('could not connect to postgres://u:hunter2@db:5432/x'), 'connecting');
    expect(e.message).not.toContain('hunter2');
  });
});

describe('SQL', () => {
  const base = { table: 'heatpump_settings.settings', columns: { device_id: 'device_id', reported_at: 'at', state: '$' } };
  it('quotes identifiers as written', () => {
    expect(quoteTable('heatpump_settings.settings')).toBe('"heatpump_settings"."settings"');
    expect(quoteTable('we"ird')).toBe('"we""ird"');
  });

  it('copy mode: plain COPY of the mapped columns', () => {
    const sql = buildSql({ ...base, mode: 'copy', conflict: { keys: [], action: 'nothing', update_columns: [], where: '' } });
    expect(sql.copy).toBe('COPY "heatpump_settings"."settings" ("device_id", "reported_at", "state") FROM STDIN');
  });

  it('upsert DO NOTHING and DO UPDATE with default update columns and a WHERE', () => {
    const nothing = buildSql({ ...base, mode: 'upsert', conflict: { keys: ['device_id'], action: 'nothing', update_columns: [], where: '' } });
    expect(nothing.insert).toMatch(/ON CONFLICT \("device_id"\) DO NOTHING$/);
    expect(nothing.sequenced).toBe(false);
    const update = buildSql({ ...base, mode: 'upsert', conflict: { keys: ['device_id'], action: 'update', update_columns: [], where: 'EXCLUDED.reported_at > settings.reported_at' } });
    expect(update.insert).toMatch(/ON CONFLICT \("device_id"\) DO UPDATE SET "reported_at" = EXCLUDED\."reported_at", "state" = EXCLUDED\."state" WHERE EXCLUDED\.reported_at > settings\.reported_at$/);
    expect(update.sequenced).toBe(true);
  });
});

describe('lint', () => {
  const lint = (c: Record<string, unknown>) =>
    postgres.spec.lint!(
      { url: 'postgres://x@h/db', table: 't', columns: { a: 'a', b: 'b' }, mode: 'upsert', conflict: { keys: [], action: 'nothing', update_columns: [], where: '' }, batching: { count: 1, byte_size: 0, period: 0 }, max_in_flight: 1, max_connections: 2, ...c } as never,
      { schemasDir: '' },
    ).map((i) => `${i.path.join('.')}: ${i.message}`);

  it('accepts a consistent config', () => expect(lint({})).toEqual([]));
  it('needs keys for update, keys among the columns, and conflict only with upsert', () => {
    expect(lint({ conflict: { keys: [], action: 'update', update_columns: [], where: '' } })).toEqual(['conflict.keys: action update needs the conflict keys (columns of a unique index or primary key)']);
    expect(lint({ conflict: { keys: ['zz'], action: 'nothing', update_columns: [], where: '' } })).toEqual(['conflict.keys.0: key column zz is not in columns']);
    expect(lint({ mode: 'copy', conflict: { keys: ['a'], action: 'nothing', update_columns: [], where: '' } })).toEqual(['conflict: conflict applies only to mode upsert; mode copy writes with plain COPY']);
    expect(lint({ url: 'mysql://x' })).toEqual(['url: the url must start with postgres:// or postgresql://']);
  });
});
