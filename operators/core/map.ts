import { RunnerError } from '../../core/errors.ts';
import { compileExpression } from '../../core/expression.ts';
import { withValue } from '../../core/message.ts';
import { defineProcessor } from '../../core/operator.ts';
import { perMessage } from '../../core/processor.ts';
import { Expr, Obj, OnInvalid } from '../../core/schema.ts';

const config = Obj({
  expression: Expr('JSONata expression whose result becomes the new message value. Bindings: $meta, $headers, $key.'),
  key: Expr('JSONata expression for the message key, evaluated against the NEW value; the default `$key` keeps the key.', '$key'),
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
    examples: [{ title: 'Add the MQTT topic and a receive time', config: `expression: '$merge([$, {"topic": $meta.mqtt_topic, "received_at": $now()}])'` }],
    delivery: 'One message in, one message out, same ack; a message the expression cannot handle is dead-lettered, never dropped silently.',
    rejects: true,
  },
  create(cfg, ctx) {
    const expr = compileExpression(cfg.expression);
    const keyExpr = cfg.key ? compileExpression(cfg.key) : undefined;
    return perMessage(ctx, async (msg) => {
      const value = await expr.evaluate(msg);
      if (value === undefined) throw new RunnerError('EXPRESSION_FAILED', `expression ${JSON.stringify(cfg.expression)} produced no value`);
      if (!keyExpr) return withValue(msg, value);
      const key = await keyExpr.evaluate({ ...msg, value });
      return withValue(msg, value, { key: key == null ? null : String(key) });
    });
  },
});
