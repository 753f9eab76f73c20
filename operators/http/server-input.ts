import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { Type } from '@sinclair/typebox';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { Observable } from 'rxjs';
import { parse as parseYaml } from 'yaml';
import { parseDuration } from '../../core/duration.ts';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import { type Msg, ackHandle } from '../../core/message.ts';
import { type LintIssue, defineInput } from '../../core/operator.ts';
import { Duration, Obj } from '../../core/schema.ts';
import { type HttpAnswer, responders } from './responders.ts';
import { METHODS, type ParsedRoute, parseRoutePath } from './routes.ts';

const config = Obj({
  address: Type.String({
    minLength: 1,
    default: '0.0.0.0',
    description: 'Address to listen on: `0.0.0.0` (every IPv4 interface, the default), `127.0.0.1` (this machine only), `::`.',
  }),
  port: Type.Integer({
    minimum: 0,
    maximum: 65_535,
    default: 8080,
    description: 'Port to listen on; 0 takes any free port (the bound port is in the `http_server listening` log line). Another process or pipeline on the same port is a startup error.',
  }),
  routes: Type.Array(
    Obj({
      method: Type.Union(
        METHODS.map((m) => Type.Literal(m)),
        { description: 'HTTP method of the route.' },
      ),
      path: Type.String({
        minLength: 1,
        description:
          'Path of the route, e.g. `/api/v1/heatpump/settings/{device_id}`. Each `{name}` (a whole path segment; lower case letters, digits, _) matches one segment and becomes metadata `name` (URL-decoded). A static segment wins over a parameter: `/settings/outbox/{id}` and `/settings/{device_id}` can coexist.',
      }),
      name: Type.String({
        pattern: '^([a-z][a-z0-9_]*)?$',
        default: '',
        description: 'A name for the route, set as metadata `http_route_name` so that later steps can tell routes apart (`$meta.http_route_name = "patch_settings"`). Empty (the default): `<METHOD> <path>`.',
      }),
    }),
    { minItems: 1, description: 'The routes this server answers. A request for another path gets 404, for a known path with another method 405 (with an `Allow` header); neither enters the pipeline.' },
  ),
  timeout: Duration(
    'How long a request waits for the pipeline to answer it (an `http_response` output, or the dead-letter output being one). Past it the client gets `timeout_status` (504) with `"outcome": "unknown"`; the message itself goes on through the pipeline and a later answer is dropped (logged).',
    '5s',
  ),
  timeout_status: Type.Integer({
    minimum: 200,
    maximum: 599,
    default: 504,
    description:
      'Status of the answer after `timeout`. The message may still be carried out after it (the input cannot stop it), so the body says `"outcome": "unknown"`. 504 (the default) is what clients expect of a timeout, but they read it as "failed": when the pipeline answers a timeout of its own with a status that promises nothing was done (a `postgres` step with a shorter `timeout` and a dead-letter answer), give this backstop a status that does not claim failure, e.g. 202 (RFC 9110: accepted, "might or might not eventually be acted upon").',
  }),
  request_headers: Type.Array(Type.String({ pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$" }), {
    default: [],
    description:
      'Request headers copied into metadata `http_headers` (an object keyed by the lower-case header name, e.g. `$meta.http_headers."idempotency-key"`); a header the request does not carry is absent. Only the listed ones, so that credentials and cookies do not travel with the message (and into dead letters and logs). Default: none (`http_headers` is `{}`).',
  }),
  body_limit: Type.Integer({
    minimum: 1,
    default: 1_048_576,
    description: 'Largest request body in bytes; a larger one gets 413 and does not enter the pipeline.',
  }),
  max_in_flight: Type.Integer({
    minimum: 1,
    default: 1000,
    description: 'Messages in the pipeline at the same time, at most (a message counts until it is done or failed, also after its request was answered with 504); a request beyond that gets 503 at once (with `Retry-After: 1`).',
  }),
  openapi: Obj(
    {
      file: Type.String({
        default: '',
        description: 'An OpenAPI document (JSON or YAML), relative to the project folder, e.g. `schemas/settings-api.openapi.json`. Read and checked at startup, served as JSON. Empty (the default): none.',
      }),
      path: Type.String({ pattern: '^/', default: '/openapi.json', description: 'Path the document is served at (GET).' }),
    },
    { default: { file: '', path: '/openapi.json' }, description: 'A static OpenAPI document describing the routes, served by this server itself (not through the pipeline).' },
  ),
  cors: Obj(
    {
      allowed_origins: Type.Array(Type.String({ minLength: 1 }), {
        default: [],
        description:
          'Origins (`scheme://host[:port]`) whose web pages may call this server from a browser, e.g. `http://localhost:8090` (a dashboard served elsewhere). An entry may hold several origins separated by commas (so one environment variable can carry a list: `${DASHBOARD_ORIGINS}`), and `*` in an entry matches any characters of an origin (`http://127.0.0.1:*`; `*` alone: every origin). Empty (the default): no CORS headers, and OPTIONS is not answered (405).',
      }),
      allowed_headers: Type.Array(Type.String({ pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$" }), {
        default: ['content-type'],
        description: 'Request headers a cross-origin request may send (answered in `Access-Control-Allow-Headers` of a preflight).',
      }),
      max_age: Duration('How long a browser may cache a preflight answer (`Access-Control-Max-Age`).', '10m'),
    },
    {
      default: { allowed_origins: [], allowed_headers: ['content-type'], max_age: '10m' },
      description:
        'Cross-origin requests from browsers. A request whose `Origin` is allowed gets `Access-Control-Allow-Origin: <origin>` (and `Vary: Origin`, `Access-Control-Expose-Headers: x-request-id`) on every answer; a preflight `OPTIONS` for a configured path is answered by the server itself (204 with the route\'s methods, `allowed_headers` and `max_age`; 403 for an origin not allowed, 404 for an unknown path), never entering the pipeline.',
    },
  ),
});

type Cfg = typeof config.static;

/** The allowed origins of `cors.allowed_origins` as one test: entries split at commas, `*` any characters. */
export function originMatcher(entries: readonly string[]): (origin: string) => boolean {
  const patterns = entries.flatMap((e) => e.split(/[\s,]+/)).filter(Boolean);
  if (patterns.includes('*')) return () => true;
  const regexes = patterns.map((p) => new RegExp(`^${p.replace(/\/+$/, '').split('*').map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, 'i'));
  return (origin) => regexes.some((r) => r.test(origin));
}

/** Problems of `cors.allowed_origins` entries: each origin is `*` or scheme://host[:port] (with `*` parts). */
function corsIssues(entries: readonly string[]): LintIssue[] {
  const issues: LintIssue[] = [];
  entries.forEach((entry, i) => {
    for (const o of entry.split(/[\s,]+/).filter(Boolean)) {
      if (o !== '*' && !/^[a-z*][a-z0-9+.*-]*:\/\/[^/\s]+$/i.test(o.replace(/\/$/, ''))) {
        issues.push({ path: ['cors', 'allowed_origins', i], message: `${JSON.stringify(o)} is not an origin: write scheme://host[:port] (e.g. http://localhost:8090), optionally with * parts, or * alone` });
      }
    }
  });
  return issues;
}

/** The OpenAPI document of `file` (JSON or YAML), or an Error saying what is wrong with it. */
export function loadOpenApi(rootDir: string, file: string): Record<string, unknown> {
  const path = isAbsolute(file) ? file : join(rootDir, file);
  if (!existsSync(path)) throw new Error(`OpenAPI document ${file} does not exist`);
  const text = readFileSync(path, 'utf8');
  let doc: unknown;
  try {
    doc = /\.ya?ml$/.test(file) ? parseYaml(text) : JSON.parse(text);
  } catch (err) {
    throw new Error(`OpenAPI document ${file} does not parse: ${errorMessage(err)}`);
  }
  if (!doc || typeof doc !== 'object' || typeof (doc as { openapi?: unknown }).openapi !== 'string' || typeof (doc as { paths?: unknown }).paths !== 'object') {
    throw new Error(`${file} is not an OpenAPI 3 document (no "openapi" version or no "paths")`);
  }
  return doc as Record<string, unknown>;
}

function lintConfig(cfg: Cfg, rootDir: string): LintIssue[] {
  const issues: LintIssue[] = [];
  const seen = new Map<string, number>();
  const names = new Map<string, number>();
  cfg.routes.forEach((r, i) => {
    let parsed: ParsedRoute | null = null;
    try {
      parsed = parseRoutePath(r.path);
    } catch (err) {
      issues.push({ path: ['routes', i, 'path'], message: errorMessage(err) });
    }
    if (parsed) {
      // Two routes whose paths differ only in parameter names are the same route.
      const shape = `${r.method} ${parsed.fastifyPath.replace(/:[a-z0-9_]+/g, ':')}`;
      if (seen.has(shape)) issues.push({ path: ['routes', i], message: `${r.method} ${r.path} is the same route as routes.${seen.get(shape)}` });
      seen.set(shape, i);
      if (r.method === 'GET' && cfg.openapi.file && parsed.regex.test(cfg.openapi.path)) issues.push({ path: ['routes', i, 'path'], message: `GET ${r.path} collides with the OpenAPI document's path ${cfg.openapi.path}` });
    }
    if (r.name) {
      if (names.has(r.name)) issues.push({ path: ['routes', i, 'name'], message: `route name ${r.name} is also used by routes.${names.get(r.name)}` });
      names.set(r.name, i);
    }
  });
  issues.push(...corsIssues(cfg.cors.allowed_origins));
  if (cfg.openapi.file) {
    try {
      loadOpenApi(rootDir, cfg.openapi.file);
    } catch (err) {
      issues.push({ path: ['openapi', 'file'], message: errorMessage(err) });
    }
  }
  return issues;
}

const JSON_TYPE = 'application/json; charset=utf-8';

/** The named request headers (lower-case names) that the request carries; a repeated one joined with ", ". */
function copyHeaders(headers: Record<string, string | string[] | undefined>, names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) {
    const v = headers[n];
    if (v !== undefined) out[n] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

/** Send an answer on a fastify reply: bytes as they are, text for non-JSON content types, else JSON. */
export function sendAnswer(reply: FastifyReply, res: HttpAnswer): void {
  if (reply.sent) return;
  reply.code(res.status);
  for (const [k, v] of Object.entries(res.headers)) reply.header(k, v);
  const noBody = res.status === 204 || res.status === 304 || (res.status >= 100 && res.status < 200);
  if (noBody || res.body === undefined) {
    reply.send();
    return;
  }
  const type = String(reply.getHeader('content-type') ?? '');
  if (Buffer.isBuffer(res.body)) {
    if (!type) reply.type('application/octet-stream');
    reply.send(res.body);
  } else if (typeof res.body === 'string' && type && !/[/+]json\b/i.test(type)) {
    reply.send(res.body);
  } else {
    if (!type) reply.type(JSON_TYPE);
    reply.serializer((x: unknown) => x as string).send(JSON.stringify(res.body));
  }
}

export const httpServer = defineInput({
  spec: {
    name: 'http_server',
    kind: 'input',
    summary: 'Receives HTTP requests on configured routes; each request is a message, answered by the pipeline (an http_response output) or with 504 after a timeout.',
    description: [
      'Like the `http_server` input of Redpanda Connect with `sync_response`: the server listens on `address`:`port` and answers the configured `routes`. Each request becomes one message and waits until the pipeline answers it: an `http_response` output (as the pipeline\'s `output`, inside a `switch`, or as the `dead_letter` output) sends the response for the message it receives.',
      '',
      'The message: the value is the parsed JSON body (`application/json` or any `+json` type such as `application/merge-patch+json`), or null without a body. Metadata: `http_method`, `http_path` (the path as requested, without the query), `http_route` (the route\'s path as configured), `http_route_name`, `http_query` (the query parameters as an object; a repeated parameter gives an array), `http_request_id` (a UUID, also sent back as the `X-Request-Id` response header), `http_remote_address`, `http_content_type`, `http_headers` (the request headers listed in `request_headers`), and one field per `{name}` path parameter.',
      '',
      'Answered by the input itself, without entering the pipeline: a body that is not valid JSON (400), an empty JSON body (400), a body over `body_limit` (413), a content type other than JSON (415), an unknown path (404), a known path with another method (405, `Allow` lists the methods), more than `max_in_flight` requests in progress (503), and the OpenAPI document at `openapi.path`. Every such answer is JSON: `{"error": "...", "request_id": "..."}`.',
      '',
      'Answered by the input when the pipeline does not answer: after `timeout`, `timeout_status` (504) with `{"error": "...", "outcome": "unknown", "request_id": "..."}`; when the message fails (its acknowledgement fails, e.g. the dead-letter output could not take it), 500 with a generic message (the reason is logged, never sent); when the message is done but nothing answered it (dropped by a filter, or written by an output that is not `http_response`), 204.',
      '',
      'Readiness: not ready until the server listens (a port in use fails the pipeline). Stopping: the server stops accepting connections (new requests on open connections get 503), the input completes, and requests in progress are answered by the pipeline as it drains (with `Connection: close`); any still waiting when the drain ends get 503.',
    ].join('\n'),
    config,
    examples: [
      {
        title: 'A settings API with a served OpenAPI document',
        config: [
          'port: ${SETTINGS_API_PORT:-8080}',
          'routes:',
          '  - { name: get_settings, method: GET, path: "/api/v1/heatpump/settings/{device_id}" }',
          '  - { name: patch_settings, method: PATCH, path: "/api/v1/heatpump/settings/{device_id}" }',
          'openapi:',
          '  file: schemas/settings-api.openapi.json',
          '  path: /api/v1/openapi.json',
        ].join('\n'),
      },
      {
        title: 'A webhook receiver on localhost with a short timeout and small bodies',
        config: 'address: 127.0.0.1\nport: 9000\ntimeout: 2s\nbody_limit: 65536\nroutes:\n  - { method: POST, path: "/hooks/{source}" }',
      },
    ],
    delivery:
      'At-most-once from the client\'s point of view, at-least-once inside: a request is a message; the client learns the outcome only from the response. A request that times out (`timeout_status`, 504) or whose connection breaks may still be processed completely (to make a timeout mean "not done", let the pipeline enforce a shorter deadline of its own and answer it, e.g. the `postgres` processor\'s `timeout`); a client that retries then sends it again, so make writes idempotent or safe to repeat. Nothing is redelivered by the server itself: a failed message is answered with 500 and not retried. Messages in progress when the runner is killed are lost (their clients see the connection break).',
    rejects: false,
    lint: (cfg, lctx) => lintConfig(cfg, join(lctx.schemasDir, '..')),
  },
  create(cfg, ctx) {
    const routes = cfg.routes.map((r) => ({ ...r, parsed: parseRoutePath(r.path), label: r.name || `${r.method} ${r.path}` }));
    const openapi = cfg.openapi.file ? JSON.stringify(loadOpenApi(ctx.rootDir, cfg.openapi.file)) : null;
    const timeoutMs = parseDuration(cfg.timeout);
    const copiedHeaders = [...new Set(cfg.request_headers.map((h) => h.toLowerCase()))];
    const corsOn = cfg.cors.allowed_origins.some((e) => e.trim() !== '');
    const originAllowed = originMatcher(cfg.cors.allowed_origins);
    const corsMaxAge = String(Math.floor(parseDuration(cfg.cors.max_age) / 1000));
    const log = ctx.logger;
    let app: FastifyInstance | null = null;
    let closing: Promise<void> | null = null;
    let stopping = false;
    /** Requests in the pipeline, with the way to answer each. */
    const inFlight = new Map<string, (res: HttpAnswer) => boolean>();
    /** Messages handed to the pipeline and not settled (done or failed) yet. */
    let unsettled = 0;

    ctx.setReady(false, `starting the HTTP server on ${cfg.address}:${cfg.port}`);

    const errorBody = (error: string, requestId: string) => ({ error, request_id: requestId });

    ctx.onClose(async () => {
      // After the drain: requests the pipeline did not answer get 503, then the server closes.
      for (const [id, answer] of [...inFlight]) {
        answer({ status: 503, headers: { 'retry-after': '1' }, body: errorBody('the server is shutting down; try again', id) });
      }
      stopping = true;
      await (closing ?? app?.close());
    });

    return new Observable<Msg>((subscriber) => {
      let handingOut = true;
      const server = Fastify({
        logger: false,
        bodyLimit: cfg.body_limit,
        exposeHeadRoutes: false,
        return503OnClosing: true,
        genReqId: () => randomUUID(),
      });
      app = server;

      // JSON only: the default JSON parser for application/json and every +json type.
      server.removeContentTypeParser('text/plain');
      server.addContentTypeParser(/^application\/[a-z0-9.+-]*\+json$/i, { parseAs: 'string' }, server.getDefaultJsonParser('error', 'error'));

      server.addHook('onRequest', async (req, reply) => {
        reply.header('x-request-id', req.id);
        if (stopping) reply.header('connection', 'close');
        if (corsOn) {
          reply.header('vary', 'Origin');
          const origin = req.headers.origin;
          if (typeof origin === 'string' && originAllowed(origin)) {
            reply.header('access-control-allow-origin', origin);
            reply.header('access-control-expose-headers', 'x-request-id, retry-after');
          }
        }
      });

      server.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
        const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
        if (status >= 500) log.error({ err: errorMessage(err), requestId: req.id }, 'http_server: request failed');
        const message =
          err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err instanceof SyntaxError
            ? `the request body is not valid JSON: ${err.message}`
            : err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY'
              ? 'the request body is empty but its content type says JSON'
              : err.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
                ? `the request body is larger than ${cfg.body_limit} bytes`
                : err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
                  ? `unsupported content type ${JSON.stringify(req.headers['content-type'] ?? '')}; send JSON (application/json)`
                  : status >= 500
                    ? 'internal error'
                    : err.message;
        sendAnswer(reply, { status, headers: {}, body: errorBody(message, req.id) });
      });

      /** The methods of the routes (and the OpenAPI document) that answer a path. */
      const methodsOf = (url: string): string[] => {
        const path = (url.split('?')[0] ?? '/').replace(/\/+$/, '') || '/';
        const allowed = [...new Set(routes.filter((r) => r.parsed.regex.test(path) || r.parsed.regex.test(`${path}/`)).map((r) => r.method as string))];
        if (openapi && path === cfg.openapi.path) allowed.push('GET');
        return allowed;
      };

      // CORS preflight: answered here for the configured paths, never entering the pipeline.
      if (corsOn) {
        server.route({
          method: 'OPTIONS',
          url: '*',
          handler: (req, reply) => {
            const path = (req.url.split('?')[0] ?? '/').replace(/\/+$/, '') || '/';
            const allowed = methodsOf(req.url);
            const origin = req.headers.origin;
            if (!allowed.length) {
              sendAnswer(reply, { status: 404, headers: {}, body: errorBody(`no route for OPTIONS ${path}`, req.id) });
            } else if (typeof origin !== 'string' || !originAllowed(origin)) {
              sendAnswer(reply, { status: 403, headers: { allow: ['OPTIONS', ...allowed].join(', ') }, body: errorBody(`origin ${JSON.stringify(origin ?? '')} is not allowed to call this server (cors.allowed_origins)`, req.id) });
            } else {
              sendAnswer(reply, {
                status: 204,
                headers: {
                  allow: ['OPTIONS', ...allowed].join(', '),
                  'access-control-allow-methods': allowed.join(', '),
                  'access-control-allow-headers': cfg.cors.allowed_headers.join(', '),
                  'access-control-max-age': corsMaxAge,
                },
                body: undefined,
              });
            }
          },
        });
      }

      server.setNotFoundHandler((req, reply) => {
        const path = (req.url.split('?')[0] ?? '/').replace(/\/+$/, '') || '/';
        const allowed = methodsOf(req.url);
        if (allowed.length) {
          sendAnswer(reply, { status: 405, headers: { allow: allowed.join(', ') }, body: errorBody(`method ${req.method} is not allowed for ${path}; allowed: ${allowed.join(', ')}`, req.id) });
        } else {
          sendAnswer(reply, { status: 404, headers: {}, body: errorBody(`no route for ${req.method} ${path}`, req.id) });
        }
      });

      if (openapi) {
        server.get(cfg.openapi.path, (req, reply) => {
          sendAnswer(reply, { status: 200, headers: { 'content-type': JSON_TYPE }, body: openapi ? Buffer.from(openapi) : undefined });
        });
      }

      for (const route of routes) {
        server.route({
          method: route.method,
          url: route.parsed.fastifyPath,
          handler: (req: FastifyRequest, reply: FastifyReply) => {
            const id = req.id;
            if (!handingOut) {
              sendAnswer(reply, { status: 503, headers: { 'retry-after': '1', connection: 'close' }, body: errorBody('the server is shutting down; try again', id) });
              return;
            }
            // Counted until the message settles, not until it is answered: a request answered
            // with 504 still occupies the pipeline.
            if (unsettled >= cfg.max_in_flight) {
              ctx.metrics.discarded('too_many_requests');
              sendAnswer(reply, { status: 503, headers: { 'retry-after': '1' }, body: errorBody(`more than ${cfg.max_in_flight} requests in progress; try again`, id) });
              return;
            }
            let timer: { unsubscribe(): void } | null = null;
            const answer = (res: HttpAnswer): boolean => {
              if (!inFlight.has(id)) return false;
              inFlight.delete(id);
              responders.unregister(id);
              timer?.unsubscribe();
              if (stopping) res = { ...res, headers: { ...res.headers, connection: 'close' } };
              sendAnswer(reply, res);
              return true;
            };
            inFlight.set(id, answer);
            responders.register(id, { answer });
            timer = ctx.scheduler.schedule(() => {
              if (!inFlight.has(id)) return;
              ctx.metrics.error('timeout');
              log.warn({ requestId: id, method: req.method, path: req.url, timeoutMs, status: cfg.timeout_status }, 'http_server: the pipeline did not answer in time; outcome unknown');
              answer({ status: cfg.timeout_status, headers: {}, body: { error: `the request was not answered within ${cfg.timeout}; it may still be carried out`, outcome: 'unknown', request_id: id } });
            }, timeoutMs);

            unsettled++;
            const ack = ackHandle((outcome) => {
              unsettled--;
              if (!inFlight.has(id)) return;
              if (outcome.ok) {
                answer({ status: 204, headers: {}, body: undefined });
              } else {
                log.warn({ requestId: id, err: errorMessage(outcome.error) }, 'http_server: the message failed; 500');
                answer({ status: 500, headers: {}, body: errorBody('internal error', id) });
              }
            });
            const params = (req.params ?? {}) as Record<string, string>;
            const meta: Record<string, unknown> = {
              http_method: req.method,
              http_path: req.url.split('?')[0],
              http_route: route.path,
              http_route_name: route.label,
              http_query: { ...(req.query as Record<string, unknown>) },
              http_request_id: id,
              http_remote_address: req.ip,
              http_content_type: req.headers['content-type'] ?? null,
              http_headers: copiedHeaders.length ? copyHeaders(req.headers, copiedHeaders) : {},
            };
            for (const p of route.parsed.params) meta[p] = params[p];
            const value = req.body === undefined ? null : req.body;
            subscriber.next({ value, key: null, headers: {}, meta, ack, createdAt: Date.now() });
          },
        });
      }

      server.listen({ host: cfg.address, port: cfg.port }).then(
        () => {
          const addr = server.server.address();
          const port = typeof addr === 'object' && addr ? addr.port : cfg.port;
          const host = typeof addr === 'object' && addr ? addr.address : cfg.address;
          ctx.setReady(true);
          log.info({ address: `${host.includes(':') ? `[${host}]` : host}:${port}`, port, routes: routes.map((r) => `${r.method} ${r.path}`), openapi: openapi ? cfg.openapi.path : null }, 'http_server listening');
        },
        (err) => {
          ctx.setReady(false, `cannot listen on ${cfg.address}:${cfg.port}: ${errorMessage(err)}`);
          subscriber.error(new RunnerError('CONFIG_INVALID', `http_server cannot listen on ${cfg.address}:${cfg.port}: ${errorMessage(err)}`, { cause: err }));
        },
      );

      const stopSub = ctx.stop$.subscribe(() => {
        handingOut = false;
        stopping = true;
        log.info({ inFlight: inFlight.size }, 'http_server stopping: no new requests; answering those in progress as they finish');
        closing = server.close().then(() => undefined);
        subscriber.complete();
      });
      return () => {
        handingOut = false;
        stopSub.unsubscribe();
      };
    });
  },
});
