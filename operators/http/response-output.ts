import { Type } from '@sinclair/typebox';
import { EMPTY, concatMap, from } from 'rxjs';
import { RunnerError } from '../../core/errors.ts';
import { type Expression, type Template, compileExpression, compileTemplate } from '../../core/expression.ts';
import type { Msg } from '../../core/message.ts';
import { defineOutput } from '../../core/operator.ts';
import { Expr, Obj, Template as TemplateField } from '../../core/schema.ts';
import { responders } from './responders.ts';

const config = Obj({
  status: Expr(
    'JSONata expression for the HTTP status code (an integer 100-599), e.g. `$meta.http_method = "PATCH" ? 202 : 200`. As the dead-letter output the rejection is in `$headers.dlq_error_code` and `$headers.dlq_error`: `$lookup({"MESSAGE_INVALID": 400, "NOT_FOUND": 404}, $headers.dlq_error_code) ? $lookup({"MESSAGE_INVALID": 400, "NOT_FOUND": 404}, $headers.dlq_error_code) : 500`.',
    '200',
  ),
  body: Expr(
    'JSONata expression for the response body, sent as JSON (a string is sent as a JSON string unless a `content-type` header says otherwise; bytes as they are). The default `$` sends the message value. Nothing (an expression that gives no value) sends no body.',
    '$',
  ),
  headers: Type.Record(Type.String({ pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$' }), TemplateField('Template for this response header value.'), {
    default: {},
    additionalProperties: false,
    description: 'Response headers, each a template (`Location: /api/v1/items/${! id }`). `content-type` defaults to `application/json; charset=utf-8`.',
  }),
});

export const httpResponse = defineOutput({
  spec: {
    name: 'http_response',
    kind: 'output',
    summary: 'Answers the HTTP request a message came from (http_server input) with a status, headers and a body from expressions, then passes the message on.',
    description: [
      'Like `sync_response` in Redpanda Connect: for each message it finds the waiting request by the message\'s `http_request_id` metadata (set by the `http_server` input of the same process), evaluates `status`, `body` and `headers` against the message, sends the response and passes the message on (so the message is done once its request is answered).',
      '',
      'Use it as the pipeline\'s `output`, as a case of a `switch` output, and as the `dead_letter` output: there the message carries the rejection in the headers `dlq_error` (the reason; `validate` lists every problem, separated by `; `) and `dlq_error_code` (`MESSAGE_INVALID`, `NOT_FOUND`, `WRITE_REJECTED`, ...), so that `status` and `body` can turn rejections into 4xx answers.',
      '',
      'A message whose request is no longer waiting (it timed out with 504, or the server shut down) or that never had one (no `http_request_id`) is passed on unchanged and logged. A message whose `status`, `body` or header expression fails, or whose status is not an integer 100-599, is rejected (as the dead-letter output: its acknowledgement fails, and the `http_server` input answers 500).',
    ].join('\n'),
    config,
    examples: [
      { title: 'Answer with the message value', config: 'status: \'$meta.http_method = "POST" ? 201 : 200\'' },
      {
        title: 'As the dead-letter output: validation problems as 400, missing rows as 404, anything else 500',
        config: [
          'status: \'$lookup({"MESSAGE_INVALID": 400, "NOT_FOUND": 404}, $headers.dlq_error_code) ? $lookup({"MESSAGE_INVALID": 400, "NOT_FOUND": 404}, $headers.dlq_error_code) : 500\'',
          'body: \'$headers.dlq_error_code in ["MESSAGE_INVALID", "NOT_FOUND"] ? {"error": $headers.dlq_error} : {"error": "internal error"}\'',
        ].join('\n'),
      },
      { title: 'A created resource with its location', config: "status: '201'\nbody: '{\"id\": id}'\nheaders:\n  location: '/api/v1/items/${! id }'" },
    ],
    delivery:
      'A message is passed on as soon as its response is handed to the connection (HTTP gives no acknowledgement that the client read it). A request answered already (timed out) gets no second answer; its message is passed on all the same.',
    rejects: true,
  },
  create(cfg, ctx) {
    const status: Expression = compileExpression(cfg.status);
    const body: Expression | null = cfg.body.trim() === '$' ? null : compileExpression(cfg.body);
    const headers: [string, Template][] = Object.entries(cfg.headers).map(([k, v]) => [k.toLowerCase(), compileTemplate(v)]);
    const log = ctx.logger;
    let warnedNoId = false;

    const respond = async (msg: Msg): Promise<Msg | null> => {
      const id = msg.meta.http_request_id;
      if (typeof id !== 'string') {
        if (!warnedNoId) log.warn({ meta: msg.meta }, 'http_response: a message without http_request_id (not from an http_server input); passed on without an answer');
        warnedNoId = true;
        ctx.metrics.error('no_request');
        return msg;
      }
      if (!responders.has(id)) {
        log.warn({ requestId: id }, 'http_response: the request is no longer waiting (timed out or shut down); passed on without an answer');
        ctx.metrics.error('request_gone');
        return msg;
      }
      const code = await status.evaluate(msg);
      const n = typeof code === 'string' && /^\d{3}$/.test(code) ? Number(code) : code;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < 100 || n > 599) {
        throw new RunnerError('EXPRESSION_FAILED', `http_response: status ${JSON.stringify(cfg.status)} gave ${JSON.stringify(code)}, not an HTTP status 100-599`);
      }
      const value = body ? await body.evaluate(msg) : msg.value;
      const h: Record<string, string> = {};
      for (const [name, t] of headers) h[name] = await t.evaluate(msg);
      if (responders.answer(id, { status: n, headers: h, body: value }) === 'gone') {
        log.warn({ requestId: id }, 'http_response: the request stopped waiting meanwhile; passed on without an answer');
        ctx.metrics.error('request_gone');
      }
      return msg;
    };

    return (source) =>
      source.pipe(
        concatMap((msg) =>
          from(
            respond(msg).catch((err) => {
              ctx.metrics.error('respond');
              ctx.reject(msg, err);
              return null;
            }),
          ).pipe(concatMap((m) => (m ? [m] : EMPTY))),
        ),
      );
  },
});
