/**
 * `GET /tap/<pipeline>?step=<step>&limit=<n>`: the messages passing a step of a running pipeline
 * as newline-delimited JSON (one TapEvent per line), until the client disconnects or `limit`
 * events were sent. Lines of the form `{"notice": ...}` report what the stream itself did:
 * which steps it taps, and how many events it dropped because the client read too slowly (a tap
 * never slows the pipeline down).
 *
 * Only clients on the loopback interface may tap, unless RUNNER_TAP_TOKEN is set: then a client
 * sending `Authorization: Bearer <token>` may tap from anywhere.
 */
import { timingSafeEqual } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { merge, type Subscription } from 'rxjs';
import type { TapRegistry } from './tap.ts';

/** Bytes a slow tap client may have waiting in the socket buffer before events are dropped. */
const MAX_BUFFERED = 1 << 20;

const isLoopback = (addr: string | undefined) => !!addr && (addr === '::1' || addr.startsWith('127.') || addr.startsWith('::ffff:127.'));

function tokenOk(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(.+)$/i.exec(header ?? '');
  if (!m) return false;
  const a = Buffer.from(m[1]!);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export function serveTap(app: FastifyInstance, registry: TapRegistry): void {
  const open = new Set<ServerResponse>();
  // Taps stream until the client leaves; a stopping runner ends them so that close() completes.
  app.addHook('preClose', async () => {
    for (const res of open) res.end();
  });

  app.get<{ Params: { pipeline: string }; Querystring: { step?: string; limit?: string } }>('/tap/:pipeline', async (req, reply) => {
    const token = process.env.RUNNER_TAP_TOKEN;
    if (token ? !tokenOk(req.headers.authorization, token) : !isLoopback(req.socket.remoteAddress)) {
      return reply.code(403).send({ error: token ? 'tap needs the token of RUNNER_TAP_TOKEN as a bearer token' : 'tap is only served to loopback clients; set RUNNER_TAP_TOKEN on the runner to allow others with a token' });
    }
    const taps = registry.taps(req.params.pipeline);
    if (!taps) return reply.code(404).send({ error: `this runner does not run a pipeline named "${req.params.pipeline}"`, pipelines: registry.pipelines() });
    const limit = req.query.limit === undefined ? Infinity : Number(req.query.limit);
    if (limit !== Infinity && (!Number.isInteger(limit) || limit < 1)) return reply.code(400).send({ error: `limit must be a whole number of at least 1, got "${req.query.limit}"` });
    const points = taps.select(req.query.step);
    if (!points.length) return reply.code(404).send({ error: `pipeline "${req.params.pipeline}" has no step "${req.query.step}"`, steps: taps.steps() });

    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'cache-control': 'no-store' });
    open.add(res);
    let sent = 0;
    let dropped = 0;
    let sub: Subscription | undefined;
    const finish = () => {
      sub?.unsubscribe();
      open.delete(res);
      if (!res.writableEnded) res.end();
    };
    const line = (obj: unknown) => res.write(`${JSON.stringify(obj)}\n`);
    line({ notice: 'tapping', pipeline: req.params.pipeline, steps: points.map((p) => p.info) });
    res.on('drain', () => {
      if (dropped > 0) {
        line({ notice: 'dropped', count: dropped, reason: 'the tap client read slower than messages passed' });
        dropped = 0;
      }
    });
    res.on('close', finish);
    sub = merge(...points.map((p) => p.events())).subscribe((event) => {
      if (res.writableLength > MAX_BUFFERED) {
        dropped++;
        return;
      }
      line(event);
      if (++sent >= limit) finish();
    });
  });
}
