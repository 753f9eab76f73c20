/**
 * Taps: live copies of the messages passing a step of a running pipeline, like `vector tap`.
 *
 * Each step of a pipeline (input, every processor, the output, the dead-letter output and nested
 * outputs) has a tap point. A tap point costs one boolean check per message while nobody listens;
 * while someone listens it sends a snapshot of each message (value, key, headers, meta) to the
 * listeners. A listener never slows the pipeline down: the HTTP stream drops events (and says how
 * many) when its client reads slower than messages pass.
 *
 * Served by the runner's HTTP server as newline-delimited JSON: `GET /tap/<pipeline>?step=<step>`,
 * read by `runner tap`. Only loopback clients may tap, unless RUNNER_TAP_TOKEN is set and the client
 * sends it as a bearer token (message contents are data the operator of the machine may not want on
 * the network).
 */
import { Subject, type Observable } from 'rxjs';
import type { Msg } from './message.ts';

export interface TapEvent {
  pipeline: string;
  /** The component: its label, or its path such as `pipeline.1.validate`. */
  step: string;
  kind: string;
  operator: string;
  /** When the message passed the step (ISO time). */
  at: string;
  key: string | null;
  headers: Record<string, string>;
  meta: Record<string, unknown>;
  value: unknown;
  /** `base64` when the value is bytes that are not UTF-8 text. */
  value_encoding?: 'base64';
}

export interface TapStep {
  step: string;
  kind: string;
  operator: string;
}

/** One step's tap point: `emit` is called for every message passing it. */
export class TapPoint {
  private readonly subject = new Subject<TapEvent>();
  constructor(
    readonly pipeline: string,
    readonly info: TapStep,
  ) {}

  /** Whether anyone listens (checked per message; the only cost while nobody does). */
  get observed(): boolean {
    return this.subject.observed;
  }

  emit(msg: Msg): void {
    if (!this.subject.observed) return;
    this.subject.next(snapshot(this.pipeline, this.info, msg));
  }

  events(): Observable<TapEvent> {
    return this.subject.asObservable();
  }
}

/** A JSON-safe copy of a message as it is now. */
export function snapshot(pipeline: string, info: TapStep, msg: Msg): TapEvent {
  const event: TapEvent = {
    pipeline,
    step: info.step,
    kind: info.kind,
    operator: info.operator,
    at: new Date().toISOString(),
    key: msg.key,
    headers: { ...msg.headers },
    meta: jsonSafe(msg.meta) as Record<string, unknown>,
    value: null,
  };
  const v = msg.value;
  if (v instanceof Uint8Array) {
    const buf = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    const text = buf.toString('utf8');
    if (Buffer.from(text, 'utf8').equals(buf)) event.value = text;
    else {
      event.value = buf.toString('base64');
      event.value_encoding = 'base64';
    }
  } else event.value = jsonSafe(v);
  return event;
}

function jsonSafe(v: unknown, depth = 0): unknown {
  if (v === undefined) return null;
  if (v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Date) return v.toISOString();
  if (v instanceof Uint8Array) return `<${v.byteLength} bytes>`;
  if (depth > 32) return '<nested too deep>';
  if (Array.isArray(v)) return v.map((x) => jsonSafe(x, depth + 1));
  if (typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) if (typeof x !== 'function') out[k] = jsonSafe(x, depth + 1);
    return out;
  }
  return String(v);
}

/** The tap points of one pipeline, by step. */
export class PipelineTaps {
  private readonly points = new Map<string, TapPoint>();
  constructor(readonly pipeline: string) {}

  point(step: string, kind: string, operator: string): TapPoint {
    let p = this.points.get(step);
    if (!p) {
      p = new TapPoint(this.pipeline, { step, kind, operator });
      this.points.set(step, p);
    }
    return p;
  }

  steps(): TapStep[] {
    return [...this.points.values()].map((p) => p.info);
  }

  /**
   * Find the steps a user named: a label or path (`pipeline.1.validate`), an operator
   * name (`validate`: every step of that operator), `input`, `output`, `dead_letter`, or a processor
   * index (`1`, `processors.1`). No name: every step.
   */
  select(name?: string): TapPoint[] {
    const all = [...this.points.values()];
    if (!name) return all;
    const exact = all.filter((p) => p.info.step === name);
    if (exact.length) return exact;
    if (/^(processors\.)?\d+$/.test(name)) {
      const i = name.replace('processors.', '');
      return all.filter((p) => p.info.kind === 'processor' && p.info.step.startsWith(`pipeline.${i}.`));
    }
    if (name === 'input' || name === 'output' || name === 'dead_letter') return all.filter((p) => p.info.kind === name || (name === 'dead_letter' && p.info.step.startsWith('dead_letter')));
    return all.filter((p) => p.info.operator === name || p.info.step.endsWith(`.${name}`));
  }
}

export interface TapRegistry {
  /** The taps of a pipeline, or undefined when this process does not run it. */
  taps(pipeline: string): PipelineTaps | undefined;
  pipelines(): string[];
}
