/**
 * The process-wide registry of HTTP requests waiting for their response, keyed by request id
 * (`http_request_id` metadata). The `http_server` input registers each request it hands to its
 * pipeline; the `http_response` output answers it. A request leaves the registry when it is
 * answered (by the output, or by the input itself: timeout, failed ack, shutdown).
 */

export interface HttpAnswer {
  status: number;
  headers: Record<string, string>;
  /** undefined: no body; a Buffer: raw bytes; a string with a non-JSON content-type: text; else JSON. */
  body: unknown;
}

export interface Responder {
  /** Answer the request; false when it was answered already (timed out, shut down). */
  answer(res: HttpAnswer): boolean;
}

const waiting = new Map<string, Responder>();

export const responders = {
  register(id: string, r: Responder): void {
    waiting.set(id, r);
  },
  unregister(id: string): void {
    waiting.delete(id);
  },
  /** Answer request `id`: 'sent', or 'gone' when no such request is waiting (any more). */
  answer(id: string, res: HttpAnswer): 'sent' | 'gone' {
    const r = waiting.get(id);
    if (!r) return 'gone';
    waiting.delete(id);
    return r.answer(res) ? 'sent' : 'gone';
  },
  has(id: string): boolean {
    return waiting.has(id);
  },
  get size(): number {
    return waiting.size;
  },
};
