/**
 * The one expression language of the runner: JSONata (https://jsonata.org), compiled once at load.
 *
 * An expression is evaluated against the message value; these bindings are available:
 *   $meta     the message metadata (mqtt_topic, kafka_partition, ...)
 *   $headers  the message headers
 *   $key      the message key
 *   $uuid()   a random UUID
 * and any extra bindings an operator adds (generate adds $i, the message index).
 *
 * Fields that name a string such as a topic are templates: literal text with `${! expression }`
 * parts, e.g. `heatpump/${! device_id }/command`.
 */
import { randomUUID } from 'node:crypto';
import jsonata from 'jsonata';
import { RunnerError, errorMessage } from './errors.ts';
import { SLOW, compileAst } from './expression-compile.ts';
import type { Msg } from './message.ts';

export interface Expression {
  source: string;
  /** Evaluated without JSONata where it can be (core/expression-compile.ts); false: always JSONata. */
  direct: boolean;
  /**
   * The value now, without a promise, or LATER when this message needs JSONata (then use
   * `evaluate`). Throws the same errors as `evaluate`.
   */
  now(msg: Pick<Msg, 'value' | 'meta' | 'headers' | 'key'>, extra?: Record<string, unknown>): unknown;
  evaluate(msg: Pick<Msg, 'value' | 'meta' | 'headers' | 'key'>, extra?: Record<string, unknown>): Promise<unknown>;
}

/** What `now()` returns when the value needs JSONata's asynchronous evaluation. */
export const LATER: unique symbol = Symbol('later');

/** Thrown at load time for an expression that does not compile; `offset` is within the source. */
export class ExpressionSyntaxError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(message);
  }
}

export function compileExpression(source: string): Expression {
  let compiled: jsonata.Expression;
  try {
    compiled = jsonata(source);
  } catch (err) {
    const e = err as { message?: string; position?: number };
    throw new ExpressionSyntaxError(`invalid expression: ${e.message ?? String(err)}`, Math.max(0, (e.position ?? 1) - 1));
  }
  compiled.registerFunction('uuid', () => randomUUID(), '<:s>');
  const direct = compileAst(compiled.ast() as never);
  const fail = (err: unknown) => new RunnerError('EXPRESSION_FAILED', `expression ${JSON.stringify(source)} failed: ${errorMessage(err)}`, { cause: err });
  const viaJsonata = async (msg: Pick<Msg, 'value' | 'meta' | 'headers' | 'key'>, extra: Record<string, unknown>) => {
    try {
      return normalise(await compiled.evaluate(msg.value, { meta: msg.meta, headers: msg.headers, key: msg.key, ...extra }));
    } catch (err) {
      throw fail(err);
    }
  };
  return {
    source,
    direct: direct !== null,
    now(msg, extra = {}) {
      if (!direct) return LATER;
      try {
        return normalise(direct({ value: msg.value, meta: msg.meta, headers: msg.headers, key: msg.key, extra }));
      } catch (err) {
        if (err === SLOW) return LATER;
        throw fail(err);
      }
    },
    evaluate(msg, extra = {}) {
      if (direct) {
        try {
          return Promise.resolve(normalise(direct({ value: msg.value, meta: msg.meta, headers: msg.headers, key: msg.key, extra })));
        } catch (err) {
          if (err !== SLOW) return Promise.reject(fail(err));
        }
      }
      return viaJsonata(msg, extra);
    },
  };
}

/** JSONata returns arrays with a hidden `sequence` flag; make results plain JSON values. */
function normalise(v: unknown): unknown {
  if (v === undefined || v === null || typeof v !== 'object') return v;
  if (Buffer.isBuffer(v)) return v;
  // Copy only when an array (possibly a flagged sequence) is inside; plain objects pass as they are.
  return hasArray(v) ? JSON.parse(JSON.stringify(v)) : v;
}

function hasArray(v: object): boolean {
  if (Array.isArray(v)) return true;
  for (const k in v) {
    const x = (v as Record<string, unknown>)[k];
    if (x !== null && typeof x === 'object' && !Buffer.isBuffer(x) && hasArray(x)) return true;
  }
  return false;
}

export interface Template {
  source: string;
  /** True when the template has no `${! }` part: the value is the literal text. */
  isStatic: boolean;
  evaluate(msg: Pick<Msg, 'value' | 'meta' | 'headers' | 'key'>, extra?: Record<string, unknown>): Promise<string>;
  /** The text now, or LATER when a part needs JSONata (then use `evaluate`). */
  now(msg: Pick<Msg, 'value' | 'meta' | 'headers' | 'key'>, extra?: Record<string, unknown>): string | typeof LATER;
}

/**
 * The `${! expr }` parts of a template: the expression ends at the `}` that balances the opening
 * one, so object constructors (`$lookup({"a": 1}, x)`) and strings holding braces work.
 */
function templateParts(source: string): { index: number; length: number; raw: string }[] {
  const parts: { index: number; length: number; raw: string }[] = [];
  let from = 0;
  for (;;) {
    const at = source.indexOf('${!', from);
    if (at < 0) return parts;
    let depth = 1;
    let i = at + 3;
    let quote = '';
    for (; i < source.length && depth > 0; i++) {
      const c = source[i]!;
      if (quote) {
        if (c === '\\' && quote !== '`') i++;
        else if (c === quote) quote = '';
      } else if (c === '"' || c === "'" || c === '`') quote = c;
      else if (c === '{') depth++;
      else if (c === '}') depth--;
    }
    if (depth > 0) throw new ExpressionSyntaxError('unterminated ${! ...}: no closing }', at);
    parts.push({ index: at, length: i - at, raw: source.slice(at + 3, i - 1) });
    from = i;
  }
}

export function compileTemplate(source: string): Template {
  const parts: (string | Expression)[] = [];
  let last = 0;
  for (const m of templateParts(source)) {
    const at = m.index;
    if (at > last) parts.push(source.slice(last, at));
    const raw = m.raw;
    try {
      parts.push(compileExpression(raw.trim()));
    } catch (err) {
      // Offset in the template: past `${!` and the spaces that trim() removed.
      if (err instanceof ExpressionSyntaxError) throw new ExpressionSyntaxError(err.message, at + 3 + (raw.length - raw.trimStart().length) + err.offset);
      throw err;
    }
    last = at + m.length;
  }
  if (last < source.length) parts.push(source.slice(last));
  const isStatic = parts.every((p) => typeof p === 'string');
  const piece = (p: Expression, v: unknown) => {
    if (v === undefined || v === null) {
      throw new RunnerError('EXPRESSION_FAILED', `template ${JSON.stringify(source)}: ${JSON.stringify(p.source)} gave nothing`);
    }
    return typeof v === 'string' ? v : JSON.stringify(v);
  };
  return {
    source,
    isStatic,
    now(msg, extra) {
      if (isStatic) return source;
      let out = '';
      for (const p of parts) {
        if (typeof p === 'string') out += p;
        else {
          const v = p.now(msg, extra);
          if (v === LATER) return LATER;
          out += piece(p, v);
        }
      }
      return out;
    },
    async evaluate(msg, extra) {
      if (isStatic) return source;
      let out = '';
      for (const p of parts) {
        if (typeof p === 'string') out += p;
        else {
          const v = await p.evaluate(msg, extra);
          if (v === undefined || v === null) {
            throw new RunnerError('EXPRESSION_FAILED', `template ${JSON.stringify(source)}: ${JSON.stringify(p.source)} gave nothing`);
          }
          out += typeof v === 'string' ? v : JSON.stringify(v);
        }
      }
      return out;
    },
  };
}
