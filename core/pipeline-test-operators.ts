/**
 * The in-memory stand-ins `runner test` puts around a pipeline's processors:
 *
 * - `testInput`: emits the case's messages, each with an ack handle that records its outcome, then
 *   completes (the pipeline drains and finishes by itself). It emits nothing when a step reported
 *   at startup that it is not ready (it is waiting for an external system): the case then fails
 *   and says which step to mock, and no message ever reaches a server.
 * - `captureOutput`: stands in for one output (a leaf of a `switch` tree, or the dead-letter
 *   output): evaluates the output's expressions and templates for each message (topic, key,
 *   columns, status, ...) and rejects the message when one fails, as every output does; otherwise
 *   records it, with the component it stands for, and passes it on (the engine then acks it). What
 *   the output's server would refuse (an unknown topic, a constraint) is not simulated.
 * - `mock`: a processor for `mocks:` entries: for the messages `check` selects, a new value from
 *   `value`, or a rejection with an error code (NOT_FOUND, WRITE_REJECTED, ...) as the real step
 *   would reject.
 *
 * Every input message carries a hidden marker (a symbol key in its metadata, which object spreads
 * keep and JSON, JSONata and the dead-letter headers never see) so that what comes out can be
 * traced back to the input message it came from.
 */
import { Type } from '@sinclair/typebox';
import { EMPTY, Observable, concatMap, from, of } from 'rxjs';
import type { ComponentConfig, Path } from './config.ts';
import { ERROR_CODES, RunnerError, errorMessage, type ErrorCode } from './errors.ts';
import { LATER, compileExpression, compileTemplate, type Expression, type Template as CompiledTemplate } from './expression.ts';
import { ackHandle, createMsg, withValue, type AckOutcome, type Msg } from './message.ts';
import { defineInput, defineOutput, defineProcessor } from './operator.ts';
import { perMessage } from './processor.ts';
import { Expr, Obj, Template, type Annotated } from './schema.ts';

/** The metadata key holding the index of the input message a message came from. */
export const INPUT_INDEX: unique symbol = Symbol('runner-test-input-index');

export const inputIndexOf = (msg: Msg): number | undefined => {
  const i = (msg.meta as Record<symbol, unknown>)[INPUT_INDEX];
  return typeof i === 'number' ? i : undefined;
};

export interface FedMessage {
  value: unknown;
  key: string | null;
  headers: Record<string, string>;
  metadata: Record<string, unknown>;
}

export function testInput(messages: FedMessage[], outcomes: (AckOutcome | undefined)[], blocked: () => boolean) {
  return defineInput({
    spec: {
      name: 'test_input',
      kind: 'input',
      summary: 'The messages of a test case (runner test).',
      description: 'Emits the messages of a test case, then completes.',
      config: Obj({}),
      examples: [],
      delivery: 'Test only.',
    },
    create() {
      return new Observable<Msg>((sub) => {
        if (!blocked()) {
          messages.forEach((m, i) => {
            const meta: Record<string | symbol, unknown> = { ...structuredClone(m.metadata), [INPUT_INDEX]: i };
            sub.next(
              createMsg(structuredClone(m.value), {
                key: m.key,
                headers: { ...m.headers },
                meta: meta as Record<string, unknown>,
                ack: ackHandle((o) => (outcomes[i] = o)),
              }),
            );
          });
        }
        sub.complete();
      });
    },
  });
}

export interface Captured {
  msg: Msg;
  /** The output (as configured in the pipeline) this stand-in replaced. */
  target: ComponentConfig;
}

export function captureOutput(target: ComponentConfig, into: Captured[]) {
  return defineOutput({
    spec: {
      name: target.name,
      kind: 'output',
      summary: 'Records messages for a test case (runner test).',
      description: 'Rejects a message for which an expression of the replaced output fails; records and passes on the others.',
      config: Obj({}),
      examples: [],
      delivery: 'Test only.',
    },
    create(_cfg, ctx) {
      const fields: { path: string; expr: Expression | CompiledTemplate }[] = [];
      eachExpression(target.operator.spec.config as Annotated, target.config, [], (kind, source, path) => {
        fields.push({ path: path.join('.'), expr: kind === 'jsonata' ? compileExpression(source) : compileTemplate(source) });
      });
      /** The first field that fails for this message, with the error; null: all evaluate. */
      const failing = async (msg: Msg): Promise<unknown> => {
        for (const f of fields) {
          try {
            await f.expr.evaluate(msg);
          } catch (err) {
            return err instanceof RunnerError ? err : new RunnerError('EXPRESSION_FAILED', `${f.path}: ${errorMessage(err)}`, { cause: err });
          }
        }
        return null;
      };
      return concatMap((msg: Msg) =>
        (fields.length ? from(failing(msg)) : of(null)).pipe(
          concatMap((err) => {
            if (err) {
              ctx.reject(msg, err);
              return EMPTY;
            }
            into.push({ msg, target });
            return of(msg);
          }),
        ),
      );
    },
  });
}

/**
 * The pipeline's output (or dead-letter output) with every leaf replaced by a capture: a routing
 * output such as `switch` stays as configured and routes to the captures of its cases.
 */
export function captureTree(c: ComponentConfig, into: Captured[]): ComponentConfig {
  if (c.children.size === 0) return { ...c, operator: captureOutput(c, into), children: new Map() };
  return { ...c, children: new Map([...c.children].map(([path, child]) => [path, captureTree(child, into)])) };
}

/** Every output a message can end in: the leaves of the tree. */
export function leaves(c: ComponentConfig): ComponentConfig[] {
  return c.children.size === 0 ? [c] : [...c.children.values()].flatMap(leaves);
}

/** Calls back for every expression (`jsonata`) and template in a config, by its schema. */
export function eachExpression(schema: Annotated, value: unknown, path: Path, cb: (kind: 'jsonata' | 'template', source: string, path: Path) => void) {
  if (!schema || value === undefined) return;
  const s = schema as any;
  if (s['x-expression'] && typeof value === 'string') return cb(s['x-expression'], value, path);
  if (value && typeof value === 'object' && !Array.isArray(value) && (s.properties || s.patternProperties)) {
    for (const [k, v] of Object.entries(value)) {
      const sub = s.properties?.[k] ?? Object.entries<Annotated>(s.patternProperties ?? {}).find(([re]) => new RegExp(re).test(k))?.[1];
      if (sub) eachExpression(sub, v, [...path, k], cb);
    }
  } else if (Array.isArray(value) && s.items) value.forEach((v, i) => eachExpression(s.items, v, [...path, i], cb));
  else if (Array.isArray(s.anyOf)) for (const b of s.anyOf) if (b.type === 'object' && value && typeof value === 'object') eachExpression(b, value, path, cb);
}

const CODES = Object.keys(ERROR_CODES) as ErrorCode[];

export const mockProcessor = defineProcessor({
  spec: {
    name: 'mock',
    kind: 'processor',
    summary: 'Stands in for a step in tests (runner test): a new value, or a rejection with an error code.',
    description:
      'For the messages `check` selects (the others pass unchanged), either rejects the message with `reject` (as the real step would: the dead letter gets that code and reason) or replaces its value with `value`.',
    config: Obj({
      check: Expr('JSONata condition: the messages this mock handles; the others pass unchanged (like a step with a `check`).', 'true'),
      value: Expr('JSONata expression for the new value (what the real step would give), with `$meta`, `$headers`, `$key` bound. The default `$` keeps the value.', '$'),
      reject: Type.Optional(
        Obj(
          {
            code: Type.Union(
              CODES.map((c) => Type.Literal(c)),
              { description: 'The error code of the rejection, e.g. NOT_FOUND or WRITE_REJECTED.' },
            ),
            reason: Template('The reason (the dead letter\'s `dlq_error`), a template such as `device ${! $meta.device_id } not found`.'),
          },
          { description: 'Reject the selected messages with this error instead of giving a new value.' },
        ),
      ),
    }),
    examples: [
      { title: 'What a database lookup would return', config: 'value: \'$merge([$, {"outbox_id": 41}])\'' },
      { title: 'A row that does not exist', config: "check: $meta.device_id = \"nope\"\nreject:\n  code: NOT_FOUND\n  reason: device ${! $meta.device_id } not found" },
    ],
    delivery: 'Test only.',
    rejects: true,
  },
  create(cfg, ctx) {
    const check = compileExpression(cfg.check);
    const value = compileExpression(cfg.value);
    const reason = cfg.reject ? compileTemplate(cfg.reject.reason) : null;
    const handle = async (msg: Msg): Promise<Msg> => {
      if ((await check.evaluate(msg)) !== true) return msg;
      if (cfg.reject && reason) throw new RunnerError(cfg.reject.code, await reason.evaluate(msg));
      const v = await value.evaluate(msg);
      if (v === undefined) throw new RunnerError('EXPRESSION_FAILED', `mock value ${JSON.stringify(cfg.value)} produced no value`);
      return withValue(msg, v);
    };
    return perMessage(ctx, (msg) => {
      // The common cases without a promise, so that a mock keeps the order as a sync step would.
      const ok = check.now(msg);
      if (ok === LATER) return handle(msg);
      if (ok !== true) return msg;
      if (cfg.reject) return handle(msg);
      const v = value.now(msg);
      if (v === LATER) return handle(msg);
      if (v === undefined) throw new RunnerError('EXPRESSION_FAILED', `mock value ${JSON.stringify(cfg.value)} produced no value`);
      return withValue(msg, v);
    });
  },
});
