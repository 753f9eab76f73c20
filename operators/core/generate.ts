import { Type } from '@sinclair/typebox';
import { Observable } from 'rxjs';
import { parseDuration } from '../../core/duration.ts';
import { compileExpression } from '../../core/expression.ts';
import { ackHandle, createMsg } from '../../core/message.ts';
import { defineInput } from '../../core/operator.ts';
import { Duration, Expr, Obj } from '../../core/schema.ts';

const config = Obj({
  count: Type.Integer({ minimum: 0, default: 0, description: 'How many messages to generate; 0 = until stopped.' }),
  interval: Duration('Time between messages; 0 = as fast as the pipeline takes them.', '1s'),
  expression: Expr('JSONata expression for each message value. Bindings: $i (index from 0), $now(), $millis(), $random(), $uuid().', '{"i": $i}'),
  key: Expr('JSONata expression for the message key, evaluated against the generated value (e.g. `device_id`); the default `null` means no key.', 'null'),
  max_in_flight: Type.Integer({ minimum: 1, default: 1000, description: 'Pause generating while this many messages are not yet done (backpressure).' }),
});

export const generate = defineInput({
  spec: {
    name: 'generate',
    kind: 'input',
    summary: 'Generates messages from an expression, for demos, tests and simulated devices.',
    description:
      'Emits `count` messages (or forever), one every `interval`, each the result of `expression` with `$i` bound to the message index. Stops generating while `max_in_flight` messages are not done, so a slow output slows it down instead of filling memory.',
    config,
    examples: [
      {
        title: 'Simulated heat-pump telemetry',
        config: `count: 100\ninterval: 100ms\nexpression: |\n  {"device_id": "device-" & $pad($string($i % 3 + 1), -3, "0"), "timestamp": $floor($millis() / 1000), "d0": 5.2, "d5": 35.0, "d6": 30.5}\nkey: device_id`,
      },
    ],
    delivery: 'Generated messages have no source to redeliver from: a message not done when the process dies is not generated again.',
  },
  create(cfg, ctx) {
    const expr = compileExpression(cfg.expression);
    const keyExpr = cfg.key ? compileExpression(cfg.key) : undefined;
    const intervalMs = parseDuration(cfg.interval);
    return new Observable((subscriber) => {
      let stopped = false;
      let inFlight = 0;
      // Two separate wake-ups: an ack must end a wait for acks, never cut an interval short.
      let wakeSleep: (() => void) | null = null;
      let wakeAck: (() => void) | null = null;
      const pending = new Set<{ unsubscribe(): void }>();
      const sleep = (ms: number) =>
        new Promise<void>((resolve) => {
          const action = ctx.scheduler.schedule(() => {
            pending.delete(action);
            resolve();
          }, ms);
          pending.add(action);
          wakeSleep = () => {
            action.unsubscribe();
            pending.delete(action);
            resolve();
          };
        });
      const stopSub = ctx.stop$.subscribe(() => {
        stopped = true;
        wakeSleep?.();
        wakeAck?.();
      });
      (async () => {
        for (let i = 0; !stopped && (cfg.count === 0 || i < cfg.count); i++) {
          if (i > 0 && intervalMs > 0) await sleep(intervalMs);
          while (!stopped && inFlight >= cfg.max_in_flight) await new Promise<void>((resolve) => (wakeAck = resolve));
          if (stopped) break;
          const base = { value: null, meta: {}, headers: {}, key: null };
          const value = await expr.evaluate(base, { i });
          const key = keyExpr ? await keyExpr.evaluate({ ...base, value }) : null;
          inFlight++;
          subscriber.next(
            createMsg(value, {
              key: key == null ? null : String(key),
              meta: { generate_index: i },
              ack: ackHandle(() => {
                inFlight--;
                const w = wakeAck;
                wakeAck = null;
                w?.();
              }),
            }),
          );
        }
        subscriber.complete();
      })().catch((err) => subscriber.error(err));
      return () => {
        stopped = true;
        stopSub.unsubscribe();
        for (const p of pending) p.unsubscribe();
      };
    });
  },
});
