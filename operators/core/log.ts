import { Type } from '@sinclair/typebox';
import { tap, concatMap, from } from 'rxjs';
import { compileTemplate } from '../../core/expression.ts';
import { defineProcessor } from '../../core/operator.ts';
import { Obj, Template } from '../../core/schema.ts';

const config = Obj({
  level: Type.Union([Type.Literal('trace'), Type.Literal('debug'), Type.Literal('info'), Type.Literal('warn'), Type.Literal('error')], { default: 'info', description: 'Log level.' }),
  message: Template('The log text; `${! expr }` parts are evaluated against the message.', 'message'),
  fields: Type.Boolean({ default: true, description: 'Add the message value, key and metadata to the log line.' }),
});

export const log = defineProcessor({
  spec: {
    name: 'log',
    kind: 'processor',
    summary: 'Writes a JSON log line for each message and passes it on unchanged.',
    description: 'Logs `message` (a template) at `level`, with the value, key and metadata when `fields` is true. Useful for debugging a pipeline; the message itself is not changed.',
    config,
    examples: [{ title: 'Log each device id', config: "level: info\nmessage: 'telemetry from ${! device_id }'" }],
    delivery: 'Passes every message on; never drops.',
  },
  create(cfg, ctx) {
    const text = compileTemplate(cfg.message);
    return concatMap((msg) =>
      from(text.evaluate(msg).catch((err) => `(message template failed: ${(err as Error).message})`)).pipe(
        tap((t) => ctx.logger[cfg.level](cfg.fields ? { value: msg.value, key: msg.key, meta: msg.meta } : {}, t)),
        concatMap(() => [msg]),
      ),
    );
  },
});
