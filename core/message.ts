/**
 * Messages and acknowledgement: the ack contract of the runner.
 *
 * - An input creates each message with an AckHandle. The input learns the outcome through it:
 *   `done` when the message is finished (durably written by the output, deliberately dropped by a
 *   processor, or stored by the dead-letter output), `fail` when it could not be finished and must
 *   be delivered again (the input then does not advance its position past it).
 * - A handle settles once; later calls are ignored (and counted as a bug in tests).
 * - Fan-out splits a handle into children: the parent is done when every child is done, failed as
 *   soon as one child fails. Batching never merges handles: each message keeps its own.
 */
import { RunnerError, errorMessage } from './errors.ts';

export type Headers = Record<string, string>;

export interface AckHandle {
  /** The message is finished; the input may advance past it. */
  done(): void;
  /** The message was not finished; the input must redeliver it. */
  fail(err: unknown): void;
  readonly settled: boolean;
  /** Split into n children (fan-out). */
  split(n: number): AckHandle[];
}

export interface Msg {
  /** The payload: parsed JSON, a string, or bytes. */
  value: unknown;
  key: string | null;
  headers: Headers;
  /** Source facts: mqtt_topic, kafka_topic/partition/offset, outbox row id, ... */
  meta: Record<string, unknown>;
  ack: AckHandle;
  /** When the input created it (ms since epoch); for latency metrics. */
  createdAt: number;
  /**
   * The bytes `value` was parsed from, set by inputs that parse JSON. While the value is still that
   * very object (no step replaced it: steps never change a value in place), outputs write these
   * bytes instead of serialising the value again.
   */
  source?: { value: unknown; bytes: Buffer };
}

export type AckOutcome = { ok: true } | { ok: false; error: unknown };

/**
 * An ack handle as a small class: a busy pipeline makes one or two per message, and prototype
 * methods allocate less than a handle of closures.
 */
class Ack implements AckHandle {
  private done_ = false;
  constructor(private readonly onSettle: (outcome: AckOutcome) => void) {}
  get settled(): boolean {
    return this.done_;
  }
  done(): void {
    if (this.done_) return;
    this.done_ = true;
    this.onSettle(OK);
  }
  fail(error: unknown): void {
    if (this.done_) return;
    this.done_ = true;
    this.onSettle({ ok: false, error });
  }
  split(n: number): AckHandle[] {
    if (n <= 0) {
      this.done();
      return [];
    }
    let remaining = n;
    return Array.from({ length: n }, () =>
      ackHandle((outcome) => {
        if (!outcome.ok) return this.fail(outcome.error);
        remaining -= 1;
        if (remaining === 0) this.done();
      }),
    );
  }
}
const OK: AckOutcome = Object.freeze({ ok: true }) as AckOutcome;

export function ackHandle(onSettle: (outcome: AckOutcome) => void): AckHandle {
  return new Ack(onSettle);
}

/** A handle for messages whose outcome nobody waits for (generated data, tests). */
export const noopAck = (): AckHandle => ackHandle(() => undefined);

export function createMsg(
  value: unknown,
  opts: { key?: string | null; headers?: Headers; meta?: Record<string, unknown>; ack?: AckHandle } = {},
): Msg {
  return {
    value,
    key: opts.key ?? null,
    headers: opts.headers ?? {},
    meta: opts.meta ?? {},
    ack: opts.ack ?? noopAck(),
    createdAt: Date.now(),
  };
}

/** A copy with a new value (and optionally key/headers/meta), keeping the same ack handle. */
export function withValue(msg: Msg, value: unknown, patch: Partial<Pick<Msg, 'key' | 'headers' | 'meta'>> = {}): Msg {
  return { ...msg, ...patch, value };
}

/**
 * A shallow copy of a record (meta, headers) that a step then adds fields to. Not `{ ...rec }`:
 * V8 gives a spread copy a map of its own, and adding fields to it afterwards builds new maps every
 * time (several µs per message, measured); a copy made field by field follows the shared ones.
 */
export function copyRecord<T>(rec: Record<string, T>): Record<string, T> {
  const out: Record<string, T> = {};
  for (const k in rec) {
    if (!Object.prototype.hasOwnProperty.call(rec, k)) continue;
    // `__proto__` is an own field like any other here, as with the spread (never the prototype).
    if (k === '__proto__') Object.defineProperty(out, k, { value: rec[k], enumerable: true, writable: true, configurable: true });
    else out[k] = rec[k]!;
  }
  return out;
}

/** The message's value for the wire: its source bytes while the value is unchanged, else valueToBuffer. */
export function msgBytes(msg: Pick<Msg, 'value' | 'source'>): Buffer {
  if (msg.source !== undefined && msg.source.value === msg.value && msg.value !== null && typeof msg.value === 'object') return msg.source.bytes;
  return valueToBuffer(msg.value);
}

/** Serialise a value for the wire: bytes stay bytes, strings stay strings, the rest is JSON. */
export function valueToBuffer(value: unknown): Buffer {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value);
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  return Buffer.from(JSON.stringify(value), 'utf8');
}

export type ValueFormat = 'json' | 'auto' | 'string' | 'bytes';

/**
 * Parse bytes from the wire. `json` throws a non-retryable MESSAGE_INVALID for text that is not
 * JSON (the message then goes to the dead-letter output); `auto` falls back to the string.
 */
export function bufferToValue(buf: Buffer | null | undefined, format: ValueFormat = 'json'): unknown {
  if (buf == null) return null;
  if (format === 'bytes') return buf;
  const text = buf.toString('utf8');
  if (format === 'string') return text;
  try {
    return JSON.parse(text);
  } catch (err) {
    if (format === 'auto') return text;
    throw new RunnerError('MESSAGE_INVALID', `payload is not JSON: ${errorMessage(err)}`, { cause: err });
  }
}

/** Approximate size in bytes, for batching by byte_size. */
export function msgSize(msg: Msg): number {
  const v = msg.value;
  if (Buffer.isBuffer(v)) return v.length;
  if (typeof v === 'string') return Buffer.byteLength(v);
  return Buffer.byteLength(JSON.stringify(v) ?? '');
}
