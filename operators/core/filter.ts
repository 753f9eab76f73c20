import { LATER, compileExpression } from '../../core/expression.ts';
import { defineProcessor } from '../../core/operator.ts';
import { perMessage } from '../../core/processor.ts';
import { Expr, Obj, OnInvalid } from '../../core/schema.ts';

const config = Obj({
  expression: Expr('JSONata expression; messages for which it is truthy pass, the others are dropped (acked, logged at debug, counted as discarded).'),
  on_invalid: OnInvalid(),
});

export const filter = defineProcessor({
  spec: {
    name: 'filter',
    kind: 'processor',
    summary: 'Keeps the messages for which a JSONata expression is truthy.',
    description:
      'A message for which `expression` is falsy is dropped on purpose: it is acked (its source advances), logged at debug level and counted in `runner_component_discarded_total{reason="filtered"}`. A message for which the expression fails is rejected (dead_letter, or drop with `on_invalid: drop`).',
    config,
    examples: [{ title: 'Only heat pumps with a supply temperature', config: "expression: '$exists(d5)'" }],
    delivery: 'Filtered messages are acked and counted; nothing else is dropped.',
    rejects: true,
  },
  create(cfg, ctx) {
    const expr = compileExpression(cfg.expression);
    return perMessage(
      ctx,
      (msg) => {
        const decide = (keep: unknown) => {
          if (keep) return msg;
          ctx.logger.debug({ meta: msg.meta }, 'filtered out');
          return null;
        };
        const now = expr.now(msg);
        return now === LATER ? expr.evaluate(msg).then(decide) : decide(now);
      },
      { dropReason: 'filtered' },
    );
  },
});
