/**
 * What an operator is: a `spec` (name, kind, summary, description, config schema with a
 * description and default on every field, examples, delivery guarantees) and `create`.
 *
 * - an input's `create` returns an Observable<Msg>; it completes when `ctx.stop$` fires,
 * - a processor's `create` returns an OperatorFunction<Msg, Msg>,
 * - an output's `create` returns an OperatorFunction<Msg, Msg> that emits a message only after it
 *   is durably written (the engine then calls `msg.ack.done()`).
 *
 * The config type is derived from the same TypeBox schema that validates it.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import type { Logger } from 'pino';
import type { Observable, OperatorFunction, SchedulerLike } from 'rxjs';
import type { Msg } from './message.ts';
import type { ComponentMetrics } from './metrics.ts';

export type OperatorKind = 'input' | 'processor' | 'output';

export interface OperatorExample {
  title: string;
  /** The operator's config as YAML (what goes under `<name>:`). */
  config: string;
}

/** A problem found by an operator's own cross-field rules; path is relative to its config. */
export interface LintIssue {
  path: (string | number)[];
  message: string;
}

export interface LintContext {
  /** Folder holding the JSON Schemas that `validate` can name. */
  schemasDir: string;
}

export interface OperatorSpec<S extends TSchema = TSchema> {
  name: string;
  kind: OperatorKind;
  summary: string;
  description: string;
  config: S;
  examples: OperatorExample[];
  /** Delivery guarantees: when can this operator drop or duplicate a message? */
  delivery: string;
  /**
   * Whether the operator can reject messages (invalid payload, rejected write). A pipeline using
   * one needs a `dead_letter` output unless the step says `on_invalid: drop`.
   */
  rejects?: boolean;
  lint?: (config: Static<S>, ctx: LintContext) => LintIssue[];
}

export interface OperatorContext {
  pipeline: string;
  /** The component's label, or its path such as `pipeline.processors.0.validate`. */
  component: string;
  /** Folder of the project (schemas/, pipelines/ are resolved against it). */
  rootDir: string;
  logger: Logger;
  metrics: ComponentMetrics;
  scheduler: SchedulerLike;
  /** Send a message that can never succeed to the dead-letter output, with the reason. */
  reject(msg: Msg, err: unknown): void;
  /** Fires once when the pipeline stops: inputs stop reading and complete. */
  stop$: Observable<void>;
  /** Runs after in-flight messages drained (or the drain timed out): commit, close clients. */
  onClose(fn: () => Promise<void> | void): void;
  /** Readiness of this component; a component that never calls it counts as ready. */
  setReady(ready: boolean, reason?: string): void;
  /**
   * Build a nested component (a config field marked `x-component`, see core/schema.ts) by its
   * dotted path inside this operator's config, e.g. `cases.0.output`. It gets its own context
   * (logs, metrics, readiness, close hooks); what it rejects goes to the dead-letter output.
   */
  child(path: string): OperatorFunction<Msg, Msg>;
}

export interface InputOperator<S extends TSchema = TSchema> {
  spec: OperatorSpec<S> & { kind: 'input' };
  create(config: Static<S>, ctx: OperatorContext): Observable<Msg>;
}
export interface ProcessorOperator<S extends TSchema = TSchema> {
  spec: OperatorSpec<S> & { kind: 'processor' };
  create(config: Static<S>, ctx: OperatorContext): OperatorFunction<Msg, Msg>;
}
export interface OutputOperator<S extends TSchema = TSchema> {
  spec: OperatorSpec<S> & { kind: 'output' };
  create(config: Static<S>, ctx: OperatorContext): OperatorFunction<Msg, Msg>;
}
export type AnyOperator = InputOperator<any> | ProcessorOperator<any> | OutputOperator<any>;

export const defineInput = <S extends TSchema>(op: InputOperator<S>) => op;
export const defineProcessor = <S extends TSchema>(op: ProcessorOperator<S>) => op;
export const defineOutput = <S extends TSchema>(op: OutputOperator<S>) => op;
