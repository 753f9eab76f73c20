import { Type } from '@sinclair/typebox';
import { concatMap, connect, filter, from, ignoreElements, map, merge, tap, type Observable } from 'rxjs';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import { compileExpression, type Expression } from '../../core/expression.ts';
import type { Msg } from '../../core/message.ts';
import { defineOutput } from '../../core/operator.ts';
import { Component, Expr, Obj } from '../../core/schema.ts';

const config = Obj({
  cases: Type.Array(
    Obj({
      check: Expr('JSONata condition evaluated against the message (`$meta`, `$key`, `$headers` bound); the first case whose check is true takes the message. `true` matches every message (a catch-all last case).', 'true'),
      output: Component('output', 'The output for the messages of this case: one output operator and its config, like the pipeline\'s `output` (a `label` may name it).'),
    }),
    { minItems: 1, description: 'Cases in order: each message goes to the output of the first case whose `check` is true.' },
  ),
});

export const switchOutput = defineOutput({
  spec: {
    name: 'switch',
    kind: 'output',
    summary: 'Routes each message to the output of the first case whose check is true, e.g. one table per Kafka topic.',
    description: [
      'Like the `switch` output of Redpanda Connect: `cases` are tried in order and a message goes to the output of the first case whose `check` (a JSONata condition) is true. Each case\'s output is a complete output with its own batching, retries, readiness, metrics and logs (its component name is its label, or its path such as `output.switch.cases.0.output.postgres`).',
      '',
      'A message that matches no case, or whose check fails to evaluate, is rejected to the dead-letter output with the reason: nothing is dropped silently. End the list with `check: "true"` for a default.',
      '',
      'The pipeline is ready when every case\'s output is ready.',
    ].join('\n'),
    config,
    examples: [
      {
        title: 'One PostgreSQL table per Kafka topic',
        config: [
          'cases:',
          '  - check: $meta.kafka_topic = "homelab-temperature"',
          '    output:',
          '      postgres:',
          '        url: ${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/telemetry}',
          '        table: temperature',
          '        columns:',
          "          time: '$fromMillis(timestamp * 1000)'",
          '          sensor_id: sensor_id',
          '          temperature: temperature',
          '  - check: "true"',
          '    output:',
          '      stdout: {}',
        ].join('\n'),
      },
    ],
    delivery:
      'As the case outputs: a message is passed on (and acknowledged) after the output of its case has written it. Messages of different cases are written independently and may be acknowledged out of order; inputs that commit positions (kafka) commit only up to the oldest message not yet written.',
    rejects: true,
  },
  create(cfg, ctx) {
    const checks: Expression[] = cfg.cases.map((c) => compileExpression(c.check));
    const outputs = cfg.cases.map((_, i) => ctx.child(`cases.${i}.output`));
    const route = async (msg: Msg): Promise<number> => {
      for (let i = 0; i < checks.length; i++) if ((await checks[i]!.evaluate(msg)) === true) return i;
      return -1;
    };
    return (source: Observable<Msg>) =>
      source.pipe(
        // In order: messages of one case reach its output in the order they came.
        concatMap((msg) =>
          from(
            route(msg).then(
              (i) => ({ msg, i }),
              (err) => {
                ctx.reject(msg, new RunnerError('MESSAGE_INVALID', `switch: a check failed: ${errorMessage(err)}`, { cause: err }));
                return null;
              },
            ),
          ),
        ),
        filter((r): r is { msg: Msg; i: number } => r !== null),
        // `connect` subscribes every case before the first message flows.
        connect((routed$) =>
          merge(
            ...outputs.map((out, i) =>
              routed$.pipe(
                filter((r) => r.i === i),
                map((r) => r.msg),
                out,
              ),
            ),
            routed$.pipe(
              filter((r) => r.i === -1),
              tap((r) => ctx.reject(r.msg, new RunnerError('MESSAGE_INVALID', `switch: no case matched (checks: ${cfg.cases.map((c) => c.check).join(' | ')})`))),
              ignoreElements(),
            ),
          ),
        ),
      );
  },
});
