/**
 * Helpers for operator config schemas (TypeBox). Every object is closed, every field has a
 * description, optional fields have defaults. Annotations read by the loader:
 *   x-secret      the value is redacted wherever config is printed
 *   x-expression  `jsonata` (an expression) or `template` (text with `${! expr }` parts);
 *                 compiled at lint time so a syntax error has its line and column
 *   x-duration    a duration (ms number or `5s`)
 *   x-component   a nested component (`output` or `processor`): one operator name -> its config,
 *                 resolved, validated and linted by the loader like a top-level slot; the operator
 *                 builds it with `ctx.child(path)`
 */
import { Type, type ObjectOptions, type TProperties, type TSchema } from '@sinclair/typebox';
import { DURATION_PATTERN } from './duration.ts';

export const Obj = <P extends TProperties>(props: P, opts: ObjectOptions = {}) =>
  Type.Object(props, { additionalProperties: false, ...opts });

export const Duration = (description: string, def?: string) =>
  Type.Union([Type.String({ pattern: DURATION_PATTERN }), Type.Integer({ minimum: 0 })], {
    description,
    'x-duration': true,
    ...(def === undefined ? {} : { default: def }),
  });

export const Expr = (description: string, def?: string) =>
  Type.String({ description, 'x-expression': 'jsonata', minLength: 1, ...(def === undefined ? {} : { default: def }) });

export const Template = (description: string, def?: string) =>
  Type.String({ description, 'x-expression': 'template', minLength: 1, ...(def === undefined ? {} : { default: def }) });

export const Secret = (description: string) => Type.String({ description, 'x-secret': true });

/** A nested component of the given kind (`{ postgres: {...} }`, with an optional label). */
export const Component = (kind: 'output' | 'processor', description: string) =>
  Type.Unsafe<Record<string, unknown>>({ type: 'object', 'x-component': kind, description });

export type Annotated = TSchema & { 'x-secret'?: boolean; 'x-expression'?: 'jsonata' | 'template'; 'x-duration'?: boolean; 'x-component'?: 'output' | 'processor' };

/** For steps that can reject messages: where rejected messages go. */
export const OnInvalid = () =>
  Type.Union([Type.Literal('dead_letter'), Type.Literal('drop')], {
    description:
      'What happens to a message this step rejects: `dead_letter` sends it to the pipeline\'s dead_letter output with the reason (the pipeline must have one); `drop` drops it, logged and counted in runner_component_discarded_total.',
    default: 'dead_letter',
  });

/**
 * A copy of a schema without `default` keywords, for object schemas used inside a union branch
 * (ajv applies no defaults there and strict mode refuses them); the operator fills them itself.
 */
export function withoutDefaults<T extends TSchema>(schema: T): T {
  const strip = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object') {
      const out: Record<string | symbol, unknown> = Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'default').map(([k, x]) => [k, strip(x)]));
      // Keep TypeBox's symbols (Kind, Optional) at every level so Static<> and Value still work.
      for (const sym of Object.getOwnPropertySymbols(v)) out[sym] = (v as Record<symbol, unknown>)[sym];
      return out;
    }
    return v;
  };
  return strip(schema) as T;
}
