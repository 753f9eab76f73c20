import { Type } from '@sinclair/typebox';
import { RunnerError } from '../../core/errors.ts';
import { LATER, compileExpression, compileTemplate } from '../../core/expression.ts';
import { type Msg, copyRecord, withValue } from '../../core/message.ts';
import { defineProcessor } from '../../core/operator.ts';
import { perMessage } from '../../core/processor.ts';
import { Expr, Obj, OnInvalid, Template } from '../../core/schema.ts';

const config = Obj({
  expression: Expr('JSONata expression whose result becomes the new message value. Bindings: $meta, $headers, $key. The default `$` keeps the value.', '$'),
  key: Expr('JSONata expression for the message key, evaluated against the NEW value; the default `$key` keeps the key.', '$key'),
  meta: Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), Expr('JSONata expression for this metadata field, evaluated against the NEW value.'), {
    default: {},
    additionalProperties: false,
    description: 'Metadata fields to set, each from a JSONata expression evaluated against the new value (`$meta` is the incoming metadata). Metadata is internal: outputs use it in templates (`${! $meta.target }`), it is not written out.',
  }),
  headers: Type.Record(Type.String({ minLength: 1 }), Template('Template for this header value.'), {
    default: {},
    additionalProperties: false,
    description: 'Headers to set, each from a template evaluated against the new value (`${! $meta.mqtt_topic }`). Outputs such as kafka write headers with the message.',
  }),
  on_invalid: OnInvalid(),
});

export const map = defineProcessor({
  spec: {
    name: 'map',
    kind: 'processor',
    summary: 'Replaces each message value by the result of a JSONata expression.',
    description:
      'Evaluates `expression` against the message value (with `$meta`, `$headers` and `$key` bound) and makes the result the new value; optionally sets a new key. An expression that fails or yields nothing for a message rejects that message (dead_letter, or drop with `on_invalid: drop`).',
    config,
    examples: [
      { title: 'Add the MQTT topic and a receive time', config: `expression: '$merge([$, {"topic": $meta.mqtt_topic, "received_at": $now()}])'` },
      {
        title: 'Key by device, route by kind, MQTT topic as a header',
        config: "key: device_id\nmeta:\n  target: '\"homelab-\" & $meta.mqtt_topic_kind'\nheaders:\n  mqtt_topic: '${! $meta.mqtt_topic }'",
      },
    ],
    delivery: 'One message in, one message out, same ack; a message the expression cannot handle is dead-lettered, never dropped silently.',
    rejects: true,
  },
  create(cfg, ctx) {
    const expr = compileExpression(cfg.expression);
    const keepValue = cfg.expression.trim() === '$';
    const keyExpr = cfg.key && cfg.key.trim() !== '$key' ? compileExpression(cfg.key) : undefined;
    const metaExprs = Object.entries(cfg.meta ?? {}).map(([name, src]) => [name, compileExpression(src)] as const);
    const headerTmpls = Object.entries(cfg.headers ?? {}).map(([name, src]) => [name, compileTemplate(src)] as const);
    const evaluateAsync = async (msg: Msg): Promise<Msg> => {
      const value = keepValue ? msg.value : await expr.evaluate(msg);
      if (value === undefined) throw new RunnerError('EXPRESSION_FAILED', `expression ${JSON.stringify(cfg.expression)} produced no value`);
      const next = { ...msg, value };
      let key = msg.key;
      if (keyExpr) {
        const k = await keyExpr.evaluate(next);
        key = k == null ? null : String(k);
      }
      let meta = msg.meta;
      if (metaExprs.length) {
        meta = copyRecord(msg.meta);
        for (const [name, e] of metaExprs) meta[name] = await e.evaluate(next);
      }
      let headers = msg.headers;
      if (headerTmpls.length) {
        headers = copyRecord(msg.headers);
        for (const [name, t] of headerTmpls) headers[name] = await t.evaluate(next);
      }
      return withValue(msg, value, { key, meta, headers });
    };
    /** The same without promises when every expression can be evaluated now; LATER otherwise. */
    const evaluateNow = (msg: Msg): Msg | typeof LATER => {
      const value = keepValue ? msg.value : expr.now(msg);
      if (value === LATER) return LATER;
      if (value === undefined) throw new RunnerError('EXPRESSION_FAILED', `expression ${JSON.stringify(cfg.expression)} produced no value`);
      // The expressions below see the new value; with `$` that is the message as it is (no copy).
      const next = value === msg.value ? msg : { ...msg, value };
      let key = msg.key;
      if (keyExpr) {
        const k = keyExpr.now(next);
        if (k === LATER) return LATER;
        key = k == null ? null : String(k);
      }
      let meta = msg.meta;
      if (metaExprs.length) {
        meta = copyRecord(msg.meta);
        for (const [name, e] of metaExprs) {
          const v = e.now(next);
          if (v === LATER) return LATER;
          meta[name] = v;
        }
      }
      let headers = msg.headers;
      if (headerTmpls.length) {
        headers = copyRecord(msg.headers);
        for (const [name, t] of headerTmpls) {
          const v = t.now(next);
          if (v === LATER) return LATER;
          headers[name] = v;
        }
      }
      return { ...msg, key, meta, headers, value };
    };
    return perMessage(ctx, (msg) => {
      const out = evaluateNow(msg);
      return out === LATER ? evaluateAsync(msg) : out;
    });
  },
});
