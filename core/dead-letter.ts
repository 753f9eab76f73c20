/**
 * The message the dead-letter output receives: the original value and key, the original headers,
 * and headers saying what went wrong, where, and the original metadata.
 */
import { RunnerError, errorMessage } from './errors.ts';
import type { Msg } from './message.ts';
import { redactString } from './redact.ts';

export const DLQ_HEADERS = {
  error: 'dlq_error',
  code: 'dlq_error_code',
  operator: 'dlq_operator',
  pipeline: 'dlq_pipeline',
  time: 'dlq_time',
  metaPrefix: 'dlq_meta_',
} as const;

export function deadLetterMsg(msg: Msg, err: unknown, where: { pipeline: string; component: string }): Msg {
  const headers: Record<string, string> = { ...msg.headers };
  headers[DLQ_HEADERS.error] = redactString(errorMessage(err));
  headers[DLQ_HEADERS.code] = err instanceof RunnerError ? err.code : 'INTERNAL';
  headers[DLQ_HEADERS.operator] = where.component;
  headers[DLQ_HEADERS.pipeline] = where.pipeline;
  headers[DLQ_HEADERS.time] = new Date().toISOString();
  for (const [k, v] of Object.entries(msg.meta)) {
    if (v === undefined || v === null) continue;
    headers[`${DLQ_HEADERS.metaPrefix}${k}`] = typeof v === 'string' ? v : JSON.stringify(v);
  }
  return { ...msg, headers, meta: { ...msg.meta, dead_letter: true } };
}
