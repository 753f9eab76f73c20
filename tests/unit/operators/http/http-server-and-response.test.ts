/**
 * The http_server input and the http_response output together, on a real port (0: any free one),
 * with test contexts: what a request becomes, what the input answers itself (400/404/405/413/415,
 * 504 on timeout, 500 on a failed ack, 204 when nobody answers, 503 at shutdown), and what the
 * output sends. The timeout runs on virtual time: no waiting, no timing thresholds.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Subject, VirtualTimeScheduler, type Subscription } from 'rxjs';
import { afterEach, describe, expect, it } from 'vitest';
import { RunnerError } from '../../../../core/errors.ts';
import type { Msg } from '../../../../core/message.ts';
import { deadLetterMsg } from '../../../../core/dead-letter.ts';
import { httpResponse } from '../../../../operators/http/response-output.ts';
import { responders } from '../../../../operators/http/responders.ts';
import { httpServer } from '../../../../operators/http/server-input.ts';
import { testContext, type TestContext } from '../../../helpers/context.ts';
import { advanceTo } from '../../../helpers/virtual-time.ts';

type ServerCfg = Parameters<typeof httpServer.create>[0];

const defaults = (over: Partial<ServerCfg> = {}): ServerCfg => ({
  address: '127.0.0.1',
  port: 0,
  routes: [
    { method: 'PATCH', path: '/api/v1/items/{item_id}', name: 'patch_item' },
    { method: 'GET', path: '/api/v1/items/{item_id}', name: '' },
    { method: 'GET', path: '/api/v1/items/special/{n}', name: 'special' },
  ],
  timeout: '5s',
  timeout_status: 504,
  request_headers: [],
  body_limit: 1024,
  max_in_flight: 10,
  openapi: { file: '', path: '/openapi.json' },
  cors: { allowed_origins: [], allowed_headers: ['content-type'], max_age: '10m' },
  ...over,
});

interface Running {
  ctx: TestContext;
  base: string;
  messages: Msg[];
  /** Resolves with the next message the input emits. */
  next(): Promise<Msg>;
  completed: Promise<void>;
  sub: Subscription;
}

const running: Running[] = [];

async function start(over: Partial<ServerCfg> = {}, scheduler?: VirtualTimeScheduler): Promise<Running> {
  const ctx = testContext({ scheduler });
  const messages: Msg[] = [];
  const waiters: ((m: Msg) => void)[] = [];
  const listening = new Promise<number>((resolve) => {
    const base = ctx.logger;
    ctx.logger = new Proxy(base, {
      get(target, prop) {
        if (prop === 'info') return (obj: unknown, msg?: string) => (msg === 'http_server listening' ? resolve((obj as { port: number }).port) : undefined);
        return Reflect.get(target, prop);
      },
    });
  });
  let complete!: () => void;
  const completed = new Promise<void>((resolve) => (complete = resolve));
  const sub = httpServer.create(defaults(over), ctx).subscribe({
    next: (m) => {
      const w = waiters.shift();
      if (w) w(m);
      else messages.push(m);
    },
    complete: () => complete(),
  });
  const port = await listening;
  const r: Running = {
    ctx,
    base: `http://127.0.0.1:${port}`,
    messages,
    next: () => (messages.length ? Promise.resolve(messages.shift()!) : new Promise((resolve) => waiters.push(resolve))),
    completed,
    sub,
  };
  running.push(r);
  return r;
}

afterEach(async () => {
  for (const r of running.splice(0)) {
    r.ctx.stopSubject.next();
    await r.ctx.close();
    r.sub.unsubscribe();
  }
});

async function call(base: string, method: string, path: string, body?: string, type = 'application/json') {
  const res = await fetch(`${base}${path}`, { method, headers: body === undefined ? {} : { 'content-type': type }, body });
  const text = await res.text();
  const isJson = /json/.test(res.headers.get('content-type') ?? '');
  return { status: res.status, headers: res.headers, text, body: text && isJson ? (JSON.parse(text) as any) : undefined };
}

/** Pass messages through an http_response output with `cfg`; resolves with what it emitted. */
async function respond(msgs: Msg[], cfg: Partial<Parameters<typeof httpResponse.create>[0]> = {}) {
  const ctx = testContext();
  const out: Msg[] = [];
  const src = new Subject<Msg>();
  const done = new Promise<void>((resolve) => httpResponse.create({ status: '200', body: '$', headers: {}, ...cfg }, ctx)(src).subscribe({ next: (m) => out.push(m), complete: resolve }));
  for (const m of msgs) src.next(m);
  src.complete();
  await done;
  return { out, ctx };
}

describe('http_server input', () => {
  it('makes each request a message (body, route, path parameters, query, request id) and waits for http_response', async () => {
    const s = await start();
    expect(s.ctx.ready.ready).toBe(true);
    const pending = call(s.base, 'PATCH', '/api/v1/items/a%20b?x=1&x=2&y=z', '{"mode": 2}');
    const msg = await s.next();
    expect(msg.value).toEqual({ mode: 2 });
    expect(msg.meta).toMatchObject({
      http_method: 'PATCH',
      http_path: '/api/v1/items/a%20b',
      http_route: '/api/v1/items/{item_id}',
      http_route_name: 'patch_item',
      http_query: { x: ['1', '2'], y: 'z' },
      item_id: 'a b',
      http_content_type: 'application/json',
    });
    expect(responders.has(msg.meta.http_request_id as string)).toBe(true);
    const { out } = await respond([msg], { status: '202', body: '{"got": mode, "id": $meta.item_id}', headers: { location: '/api/v1/items/${! $meta.item_id }' } });
    expect(out).toEqual([msg]);
    const res = await pending;
    expect(res.status).toBe(202);
    expect(res.body).toEqual({ got: 2, id: 'a b' });
    expect(res.headers.get('location')).toBe('/api/v1/items/a b');
    expect(res.headers.get('x-request-id')).toBe(msg.meta.http_request_id);
    expect(responders.has(msg.meta.http_request_id as string)).toBe(false);
  });

  it('a request without a body is the value null; a static segment wins over a parameter; unnamed routes are named by method and path', async () => {
    const s = await start();
    const a = call(s.base, 'GET', '/api/v1/items/special/7');
    const m1 = await s.next();
    expect(m1.value).toBeNull();
    expect(m1.meta).toMatchObject({ http_route_name: 'special', n: '7' });
    await respond([m1]);
    expect((await a).body).toBeNull();
    const b = call(s.base, 'GET', '/api/v1/items/42');
    const m2 = await s.next();
    expect(m2.meta).toMatchObject({ http_route_name: 'GET /api/v1/items/{item_id}', item_id: '42' });
    await respond([m2], { body: '"text"', headers: { 'content-type': 'text/plain' } });
    const res = await b;
    expect(res.text).toBe('text');
  });

  it('answers malformed JSON (400), empty JSON (400), too large (413), not JSON (415), unknown path (404), other method (405) without a message', async () => {
    const s = await start();
    const bad = await call(s.base, 'PATCH', '/api/v1/items/1', '{"mode": ');
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatch(/not valid JSON/);
    expect(bad.body.request_id).toBe(bad.headers.get('x-request-id'));
    expect((await call(s.base, 'PATCH', '/api/v1/items/1', '')).status).toBe(400);
    expect((await call(s.base, 'PATCH', '/api/v1/items/1', JSON.stringify({ pad: 'x'.repeat(2000) }))).status).toBe(413);
    expect((await call(s.base, 'PATCH', '/api/v1/items/1', 'mode=2', 'text/plain')).status).toBe(415);
    const notFound = await call(s.base, 'GET', '/api/v2/items/1');
    expect(notFound.status).toBe(404);
    expect(notFound.body.error).toBe('no route for GET /api/v2/items/1');
    const wrong = await call(s.base, 'DELETE', '/api/v1/items/1');
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toBe('PATCH, GET');
    expect((await call(s.base, 'POST', '/api/v1/items/special/1', '{}')).headers.get('allow')).toBe('GET');
    expect(s.messages).toEqual([]);
  });

  it('answers 504 when nothing answers within the timeout; a later answer is not sent and the message passes on', async () => {
    const scheduler = new VirtualTimeScheduler();
    const s = await start({ timeout: '2s' }, scheduler);
    const pending = call(s.base, 'GET', '/api/v1/items/1');
    const msg = await s.next();
    await advanceTo(scheduler, 1999);
    expect(responders.has(msg.meta.http_request_id as string)).toBe(true);
    await advanceTo(scheduler, 2000);
    const res = await pending;
    expect(res.status).toBe(504);
    expect(res.body).toEqual({ error: 'the request was not answered within 2s; it may still be carried out', outcome: 'unknown', request_id: msg.meta.http_request_id });
    const { out } = await respond([msg]);
    expect(out).toEqual([msg]);
  });

  it('timeout_status sets the status of the timeout answer (a backstop that does not claim failure)', async () => {
    const scheduler = new VirtualTimeScheduler();
    const s = await start({ timeout: '2s', timeout_status: 202 }, scheduler);
    const pending = call(s.base, 'GET', '/api/v1/items/1');
    const msg = await s.next();
    await advanceTo(scheduler, 2000);
    const res = await pending;
    expect(res.status).toBe(202);
    expect(res.body.outcome).toBe('unknown');
    await respond([msg]);
  });

  it('request_headers are copied into metadata http_headers (lower-case names); other headers are not', async () => {
    const s = await start({ request_headers: ['Idempotency-Key', 'x-absent'] });
    const pending = fetch(`${s.base}/api/v1/items/1`, { method: 'PATCH', headers: { 'content-type': 'application/json', 'idempotency-key': 'k-1', authorization: 'Bearer secret' }, body: '{"mode": 1}' });
    const msg = await s.next();
    expect(msg.meta.http_headers).toEqual({ 'idempotency-key': 'k-1' });
    await respond([msg]);
    expect((await pending).status).toBe(200);
    const other = await start();
    const p2 = call(other.base, 'GET', '/api/v1/items/1');
    const m2 = await other.next();
    expect(m2.meta.http_headers).toEqual({});
    await respond([m2]);
    await p2;
  });

  it('answers 500 with a generic message when the ack fails, and 204 when the message is done without an answer', async () => {
    const s = await start();
    const failing = call(s.base, 'GET', '/api/v1/items/1');
    (await s.next()).ack.fail(new Error('secret detail of the failure'));
    const failed = await failing;
    expect(failed.status).toBe(500);
    expect(failed.body.error).toBe('internal error');
    expect(failed.text).not.toMatch(/secret/);
    const dropped = call(s.base, 'GET', '/api/v1/items/2');
    (await s.next()).ack.done();
    expect((await dropped).status).toBe(204);
  });

  it('answers 503 beyond max_in_flight messages not yet settled', async () => {
    const s = await start({ max_in_flight: 1 });
    const first = call(s.base, 'GET', '/api/v1/items/1');
    const msg = await s.next();
    const second = await call(s.base, 'GET', '/api/v1/items/2');
    expect(second.status).toBe(503);
    expect(second.headers.get('retry-after')).toBe('1');
    await respond([msg]);
    expect((await first).status).toBe(200);
    // Answered is not finished: the message still counts until its ack settles.
    expect((await call(s.base, 'GET', '/api/v1/items/3')).status).toBe(503);
    msg.ack.done();
    const third = call(s.base, 'GET', '/api/v1/items/3');
    await respond([await s.next()]);
    expect((await third).status).toBe(200);
  });

  it('serves the OpenAPI document (YAML files are served as JSON)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'http-server-openapi-'));
    const file = join(dir, 'api.openapi.yaml');
    writeFileSync(file, 'openapi: 3.1.0\ninfo: { title: t, version: "1" }\npaths: {}\n');
    const s = await start({ openapi: { file, path: '/docs/openapi.json' } });
    rmSync(dir, { recursive: true });
    const res = await call(s.base, 'GET', '/docs/openapi.json');
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ openapi: '3.1.0', info: { title: 't', version: '1' }, paths: {} });
    expect((await call(s.base, 'POST', '/docs/openapi.json', '{}')).status).toBe(405);
    expect(s.messages).toEqual([]);
  });

  it('without cors: no CORS headers, and OPTIONS is a method not allowed (405)', async () => {
    const s = await start();
    const pre = await fetch(`${s.base}/api/v1/items/1`, { method: 'OPTIONS', headers: { origin: 'http://localhost:8090', 'access-control-request-method': 'PATCH' } });
    expect(pre.status).toBe(405);
    expect(pre.headers.get('access-control-allow-origin')).toBeNull();
    expect(s.messages).toEqual([]);
  });

  it('with cors: answers a preflight of an allowed origin itself (204, the route\'s methods), 403 another origin, 404 an unknown path; allowed origins get Access-Control-Allow-Origin on every answer', async () => {
    const s = await start({ cors: { allowed_origins: ['http://localhost:8090, http://127.0.0.1:*'], allowed_headers: ['content-type', 'if-match'], max_age: '1m' } });
    const preflight = (origin: string, path = '/api/v1/items/1') =>
      fetch(`${s.base}${path}`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'PATCH', 'access-control-request-headers': 'content-type' } });

    const ok = await preflight('http://localhost:8090');
    expect(ok.status).toBe(204);
    expect(ok.headers.get('access-control-allow-origin')).toBe('http://localhost:8090');
    expect(ok.headers.get('access-control-allow-methods')).toBe('PATCH, GET');
    expect(ok.headers.get('access-control-allow-headers')).toBe('content-type, if-match');
    expect(ok.headers.get('access-control-max-age')).toBe('60');
    expect(ok.headers.get('vary')).toMatch(/Origin/);
    const wildcard = await preflight('http://127.0.0.1:43123');
    expect(wildcard.status).toBe(204);
    expect(wildcard.headers.get('access-control-allow-origin')).toBe('http://127.0.0.1:43123');

    const other = await preflight('http://evil.example');
    expect(other.status).toBe(403);
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
    expect(((await other.json()) as { error: string }).error).toMatch(/origin "http:\/\/evil.example" is not allowed/);
    expect((await preflight('http://localhost:8090', '/nothing/here')).status).toBe(404);
    expect(s.messages).toEqual([]);

    // The actual request: answered by the pipeline, with the CORS headers of the input.
    const res = fetch(`${s.base}/api/v1/items/7`, { headers: { origin: 'http://localhost:8090' } });
    await respond([await s.next()]);
    const answered = await res;
    expect(answered.status).toBe(200);
    expect(answered.headers.get('access-control-allow-origin')).toBe('http://localhost:8090');
    expect(answered.headers.get('access-control-expose-headers')).toMatch(/x-request-id/);
    // Errors of the input itself carry them too; a request from another origin does not get them.
    const missing = await fetch(`${s.base}/nothing`, { headers: { origin: 'http://localhost:8090' } });
    expect(missing.status).toBe(404);
    expect(missing.headers.get('access-control-allow-origin')).toBe('http://localhost:8090');
    const foreign = fetch(`${s.base}/api/v1/items/8`, { headers: { origin: 'http://evil.example' } });
    await respond([await s.next()]);
    expect((await foreign).headers.get('access-control-allow-origin')).toBeNull();
  });

  it('with cors: * allows every origin', async () => {
    const s = await start({ cors: { allowed_origins: ['*'], allowed_headers: ['content-type'], max_age: '10m' } });
    const pre = await fetch(`${s.base}/api/v1/items/special/1`, { method: 'OPTIONS', headers: { origin: 'https://anything.example:444', 'access-control-request-method': 'GET' } });
    expect(pre.status).toBe(204);
    expect(pre.headers.get('access-control-allow-origin')).toBe('https://anything.example:444');
    expect(pre.headers.get('access-control-allow-methods')).toBe('GET');
  });

  it('on stop: completes, answers the request in progress with Connection: close, refuses new ones, and 503s what is left at close', async () => {
    const s = await start();
    const inProgress = call(s.base, 'GET', '/api/v1/items/1');
    const leftOver = call(s.base, 'GET', '/api/v1/items/2');
    const m1 = await s.next();
    await s.next();
    s.ctx.stopSubject.next();
    await s.completed;
    const refused = await fetch(`${s.base}/api/v1/items/3`).then(
      (r) => r.status,
      () => 'refused',
    );
    expect([503, 'refused']).toContain(refused);
    await respond([m1]);
    const res = await inProgress;
    expect(res.status).toBe(200);
    expect(res.headers.get('connection')).toBe('close');
    await s.ctx.close();
    running.splice(running.indexOf(s), 1);
    const left = await leftOver;
    expect(left.status).toBe(503);
  });
});

describe('http_response output', () => {
  it('as the dead-letter output turns the rejection code into a status and the reason into the body', async () => {
    const s = await start();
    const pending = call(s.base, 'PATCH', '/api/v1/items/1', '{"mode": 9}');
    const msg = await s.next();
    const dead = deadLetterMsg(msg, new RunnerError('MESSAGE_INVALID', 'does not match schema x: /mode must be <= 3; /a must be number'), { pipeline: 'p', component: 'c' });
    await respond([dead], {
      status: '$lookup({"MESSAGE_INVALID": 400, "NOT_FOUND": 404}, $headers.dlq_error_code)',
      body: '{"problems": $split($substringAfter($headers.dlq_error, ": "), "; ")}',
    });
    const res = await pending;
    expect(res.status).toBe(400);
    expect(res.body).toEqual({ problems: ['/mode must be <= 3', '/a must be number'] });
  });

  it('rejects a message whose status is not an HTTP status; passes on messages without a waiting request', async () => {
    const s = await start();
    const pending = call(s.base, 'GET', '/api/v1/items/1');
    const msg = await s.next();
    const { out, ctx } = await respond([msg, { ...msg, meta: {} }, { ...msg, meta: { http_request_id: 'gone' } }], { status: '"abc"' });
    expect(ctx.rejected.map((r) => (r.err as RunnerError).code)).toEqual(['EXPRESSION_FAILED']);
    expect(out).toHaveLength(2);
    // Rejected: the request is still waiting (the dead-letter output, or the failed ack, answers it).
    msg.ack.fail(ctx.rejected[0]!.err);
    expect((await pending).status).toBe(500);
  });
});
