import { Type } from '@sinclair/typebox';
import { Observable, concatMap } from 'rxjs';
import { defineOutput } from '../../core/operator.ts';
import { Obj } from '../../core/schema.ts';

const config = Obj({
  format: Type.Union([Type.Literal('value'), Type.Literal('envelope')], {
    default: 'value',
    description: '`value`: one line per message with its value as JSON; `envelope`: a JSON object with key, headers, meta and value.',
  }),
});

export const stdout = defineOutput({
  spec: {
    name: 'stdout',
    kind: 'output',
    summary: 'Writes each message as a line of JSON to standard output.',
    description: 'A message is done once its line has been handed to the operating system (the write callback fired).',
    config,
    examples: [{ title: 'Messages with their metadata', config: 'format: envelope' }],
    delivery: 'At-least-once up to the pipe: a line written just before a crash may be printed again after a restart.',
  },
  create(cfg) {
    return concatMap(
      (msg) =>
        new Observable<typeof msg>((sub) => {
          const body = cfg.format === 'envelope' ? { key: msg.key, headers: msg.headers, meta: msg.meta, value: Buffer.isBuffer(msg.value) ? msg.value.toString('base64') : msg.value } : msg.value;
          const line = `${typeof body === 'string' ? body : JSON.stringify(body)}\n`;
          process.stdout.write(line, (err) => {
            if (err) sub.error(err);
            else {
              sub.next(msg);
              sub.complete();
            }
          });
        }),
    );
  },
});
