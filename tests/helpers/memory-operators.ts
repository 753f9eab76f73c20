/**
 * In-memory operators for engine tests, and a way to build a PipelineRuntime around them.
 *
 * - input `memory`: emits the harness's messages (each with an ack handle that records its
 *   outcome), then whatever `push` sends, and completes when the pipeline stops (ctx.stop$).
 * - output `hold`: keeps each message until the test releases it (the durable write happened),
 *   errors it (the write failed and broke the stream) or rejects it (ctx.reject); with
 *   `release: auto` it passes every message on at once.
 *
 * Everything that happens is appended to `events`, and `until` waits for a condition without
 * sleeping: it is re-checked on every event.
 */
import { Type } from '@sinclair/typebox';
import pino from 'pino';
import { Observable, Subject, mergeMap } from 'rxjs';
import { formatProblem, loadPipeline } from '../../core/config.ts';
import { Health } from '../../core/health.ts';
import { ackHandle, createMsg, type AckOutcome, type Headers, type Msg } from '../../core/message.ts';
import { Metrics } from '../../core/metrics.ts';
import { defineInput, defineOutput, type OperatorContext } from '../../core/operator.ts';
import { PipelineRuntime } from '../../core/pipeline.ts';
import { OperatorRegistry } from '../../core/registry.ts';
import { Obj } from '../../core/schema.ts';
import { operators } from '../../operators/index.ts';

export const ROOT = new URL('../..', import.meta.url).pathname;

export interface Fed {
  id: string;
  value: unknown;
  meta?: Record<string, unknown>;
  headers?: Headers;
}

export interface Held {
  msg: Msg;
  /** The write is durable: the output emits the message. */
  release(): void;
  /** The write failed and the output's stream errors. */
  error(err: unknown): void;
  /** The output rejects the message (ctx.reject) and goes on. */
  reject(err: unknown): void;
}

export function memoryHarness(opts: { messages?: Fed[]; notReady?: string } = {}) {
  const events: string[] = [];
  const outcomes = new Map<string, AckOutcome>();
  const heldBy = new Map<string, Held[]>();
  const contexts = new Map<string, OperatorContext>();
  const push$ = new Subject<Fed>();
  const checks = new Set<() => void>();
  const changed = () => {
    for (const c of [...checks]) c();
  };
  const record = (e: string) => {
    events.push(e);
    changed();
  };
  const held = (component: string): Held[] => {
    if (!heldBy.has(component)) heldBy.set(component, []);
    return heldBy.get(component)!;
  };

  const toMsg = (f: Fed): Msg =>
    createMsg(f.value, {
      meta: { id: f.id, ...f.meta },
      headers: f.headers,
      ack: ackHandle((o) => {
        outcomes.set(f.id, o);
        record(`ack:${f.id}:${o.ok ? 'done' : 'fail'}`);
      }),
    });

  const input = defineInput({
    spec: {
      name: 'memory',
      kind: 'input',
      summary: 'Test input.',
      description: 'Emits messages given by the test.',
      config: Obj({}),
      examples: [],
      delivery: 'Test only.',
    },
    create(_cfg, ctx) {
      contexts.set(ctx.component, ctx);
      if (opts.notReady) ctx.setReady(false, opts.notReady);
      ctx.onClose(() => record(`close:${ctx.component}`));
      return new Observable<Msg>((sub) => {
        for (const f of opts.messages ?? []) sub.next(toMsg(f));
        const pushed = push$.subscribe((f) => sub.next(toMsg(f)));
        const stopped = ctx.stop$.subscribe(() => {
          record('input:stopped');
          sub.complete();
        });
        return () => {
          pushed.unsubscribe();
          stopped.unsubscribe();
        };
      });
    },
  });

  const output = defineOutput({
    spec: {
      name: 'hold',
      kind: 'output',
      summary: 'Test output.',
      description: 'Holds messages until the test releases them.',
      config: Obj({
        release: Type.Union([Type.Literal('manual'), Type.Literal('auto')], { default: 'manual', description: 'manual: the test releases each message; auto: at once.' }),
      }),
      examples: [],
      delivery: 'Test only.',
    },
    create(cfg, ctx) {
      contexts.set(ctx.component, ctx);
      ctx.onClose(() => record(`close:${ctx.component}`));
      return mergeMap(
        (msg: Msg) =>
          new Observable<Msg>((sub) => {
            const h: Held = {
              msg,
              release: () => {
                sub.next(msg);
                sub.complete();
              },
              error: (err) => sub.error(err),
              reject: (err) => {
                ctx.reject(msg, err);
                sub.complete();
              },
            };
            held(ctx.component).push(h);
            record(`held:${ctx.component}:${String(msg.meta.id)}`);
            if (cfg.release === 'auto') h.release();
          }),
      );
    },
  });

  return {
    input,
    output,
    events,
    outcomes,
    held,
    /** The context the engine gave a component, by its name (e.g. `input.memory`). */
    ctx: (component: string) => contexts.get(component)!,
    push: (f: Fed) => push$.next(f),
    /** Resolves once `pred` holds; re-checked on every event (no polling, no sleeping). */
    until(pred: () => boolean): Promise<void> {
      return new Promise((resolve) => {
        if (pred()) return resolve();
        const check = () => {
          if (!pred()) return;
          checks.delete(check);
          resolve();
        };
        checks.add(check);
      });
    },
  };
}

export type MemoryHarness = ReturnType<typeof memoryHarness>;

/** Load a pipeline text with the real operators plus the harness's, and build its runtime. */
export function buildRuntime(h: MemoryHarness, yaml: string) {
  const registry = new OperatorRegistry([...operators, h.input, h.output]);
  const res = loadPipeline('engine-test.yaml', { registry, rootDir: ROOT, text: yaml, env: {} });
  if (!res.ok) throw new Error(res.problems.map(formatProblem).join('\n'));
  const metrics = new Metrics();
  const health = new Health(metrics);
  const runtime = new PipelineRuntime(res.pipeline, { logger: pino({ level: 'silent' }), metrics, health, rootDir: ROOT });
  return { runtime, metrics, health };
}

/** The value of a counter for the series whose labels include `labels`. */
export async function counterValue(metrics: Metrics, name: string, labels: Record<string, string>): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  return values.filter((v) => Object.entries(labels).every(([k, l]) => (v.labels as Record<string, unknown>)[k] === l)).reduce((n, v) => n + v.value, 0);
}
