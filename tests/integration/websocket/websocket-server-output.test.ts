/**
 * websocket_server output on loopback with real WebSocket clients (the ws package): topic and
 * device subscriptions, error frames, the bearer token, flood protection, and a client that never
 * reads being disconnected while the others get every message.
 */
import { Value } from '@sinclair/typebox/value';
import pino from 'pino';
import { Subject, lastValueFrom, toArray } from 'rxjs';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createMsg, type Msg } from '../../../core/message.ts';
import { websocketServer } from '../../../operators/websocket/server-output.ts';
import { testContext, type TestContext } from '../../helpers/context.ts';

type Cfg = typeof websocketServer.spec.config.static;

interface Server {
  ctx: TestContext;
  source: Subject<Msg>;
  out: Promise<Msg[]>;
  url: string;
  close(): Promise<void>;
}

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function start(c: Partial<Cfg> = {}): Promise<Server> {
  const ctx = testContext({ component: 'ws' });
  let resolvePort!: (p: number) => void;
  const port = new Promise<number>((r) => (resolvePort = r));
  ctx.logger = pino({ level: 'info' }, { write: (line: string) => { const l = JSON.parse(line); if (l.msg === 'websocket server listening') resolvePort(l.port); } });
  const cfg = Value.Default(websocketServer.spec.config, { address: '127.0.0.1:0', topics: ['heatpump-realtime', 'energy-realtime'], auth_token: '', ...c }) as Cfg;
  const source = new Subject<Msg>();
  const out = lastValueFrom(source.pipe(websocketServer.create(cfg, ctx), toArray()));
  const url = `ws://127.0.0.1:${await port}/ws`;
  const s = {
    ctx,
    source,
    out,
    url,
    async close() {
      source.complete();
      await out;
      await ctx.close();
    },
  };
  servers.push(s);
  return s;
}

/** A connected client and every frame it received, parsed. */
async function client(url: string, opts: WebSocket.ClientOptions = {}) {
  const ws = new WebSocket(url, opts);
  const frames: any[] = [];
  const waiters: { pred: () => boolean; resolve: () => void }[] = [];
  const check = () => {
    for (const w of waiters.splice(0)) if (w.pred()) w.resolve(); else waiters.push(w);
  };
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('message', (d) => {
    frames.push(JSON.parse(d.toString()));
    check();
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('close', () => resolve());
  });
  return {
    ws,
    frames,
    closed,
    messages: () => frames.filter((f) => f.type === 'message'),
    until(pred: () => boolean) {
      return new Promise<void>((resolve) => {
        waiters.push({ pred, resolve });
        check();
      });
    },
    send: (frame: unknown) => ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame)),
  };
}

const msg = (topic: string, device: string, n: number) => createMsg({ device_id: device, n }, { key: device, meta: { kafka_topic: topic } });

describe('websocket_server output', () => {
  it('sends each message, tagged with its topic, to the clients subscribed to its topic and device', async () => {
    const s = await start();
    const all = await client(s.url);
    const heat = await client(`${s.url}?topics=heatpump-realtime`);
    const one = await client(`${s.url}?devices=device-002`);
    await all.until(() => all.frames.some((f) => f.type === 'welcome'));
    s.source.next(msg('heatpump-realtime', 'device-001', 1));
    s.source.next(msg('energy-realtime', 'meter-001', 2));
    s.source.next(msg('heatpump-realtime', 'device-002', 3));
    await all.until(() => all.messages().length === 3);
    await heat.until(() => heat.messages().length === 2);
    await one.until(() => one.messages().length === 1);
    expect(all.messages()[0]).toEqual({ type: 'message', topic: 'heatpump-realtime', device: 'device-001', data: { device_id: 'device-001', n: 1 } });
    expect(heat.messages().map((f) => f.data.n)).toEqual([1, 3]);
    expect(one.messages().map((f) => f.data.n)).toEqual([3]);
    // Nothing more arrives for them: the last message was the 3rd; all three saw it in order.
    expect(all.messages().map((f) => f.data.n)).toEqual([1, 2, 3]);
    for (const c of [all, heat, one]) c.ws.close();
  });

  it('gets every message to each of many clients in order while messages keep arriving during the writer\'s passes', async () => {
    const s = await start();
    // More clients than the writer visits in one step, half of them on one topic only.
    const clients = await Promise.all(Array.from({ length: 250 }, (_, i) => client(i % 2 ? `${s.url}?topics=heatpump-realtime` : s.url)));
    const n = 60;
    for (let i = 0; i < n; i++) {
      s.source.next(msg(i % 3 ? 'heatpump-realtime' : 'energy-realtime', `device-${i % 5}`, i));
      // Each message in a turn of its own: most arrive while a pass over the clients is under way.
      await new Promise((r) => setImmediate(r));
    }
    const all = Array.from({ length: n }, (_, i) => i);
    const heatOnly = all.filter((i) => i % 3);
    await Promise.all(clients.map((c, i) => c.until(() => c.messages().length === (i % 2 ? heatOnly : all).length)));
    clients.forEach((c, i) => expect(c.messages().map((f) => f.data.n)).toEqual(i % 2 ? heatOnly : all));
    const sent = await s.ctx.metricsRegistry.registry.getSingleMetric('runner_websocket_frames_sent_total')!.get();
    expect(sent.values.reduce((a, v) => a + v.value, 0)).toBe(125 * n + 125 * heatOnly.length);
    for (const c of clients) c.ws.close();
  });

  it('answers subscribe, ping, malformed frames and unknown topics, and keeps the client connected', async () => {
    const s = await start();
    const c = await client(s.url);
    c.send({ type: 'subscribe', topics: ['energy-realtime'] });
    c.send({ type: 'subscribe', topics: ['nope'] });
    c.send('not json');
    c.send({ type: 'dance' });
    c.send({ type: 'ping' });
    await c.until(() => c.frames.some((f) => f.type === 'pong'));
    const replies = c.frames.filter((f) => f.type !== 'welcome');
    expect(replies[0]).toEqual({ type: 'subscribed', topics: ['energy-realtime'], devices: 'all' });
    expect(replies[1]).toEqual({ type: 'error', error: 'unknown topic nope; known: heatpump-realtime, energy-realtime' });
    expect(replies[2].error).toMatch(/^malformed frame/);
    expect(replies[3].error).toMatch(/unknown frame type "dance"/);
    s.source.next(msg('heatpump-realtime', 'device-001', 1));
    s.source.next(msg('energy-realtime', 'meter-001', 2));
    await c.until(() => c.messages().length === 1);
    expect(c.messages()[0].topic).toBe('energy-realtime');
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    c.ws.close();
  });

  it('refuses a client without the bearer token and accepts it in the header or the query', async () => {
    const s = await start({ auth_token: 's3cret' });
    const anon = await client(s.url);
    expect(await anon.closed).toEqual({ code: 1008, reason: 'unauthorized: a bearer token is required' });
    const header = await client(s.url, { headers: { authorization: 'Bearer s3cret' } });
    const query = await client(`${s.url}?token=s3cret`);
    s.source.next(msg('heatpump-realtime', 'device-001', 1));
    await header.until(() => header.messages().length === 1);
    await query.until(() => query.messages().length === 1);
    header.ws.close();
    query.ws.close();
  });

  it('disconnects a client that floods the server', async () => {
    const s = await start({ max_client_messages: 5 });
    const c = await client(s.url);
    for (let i = 0; i < 10; i++) c.send({ type: 'ping' });
    expect((await c.closed).code).toBe(1008);
  });

  it('disconnects a client that stops reading with close code 1013, while a reading client gets every message', async () => {
    // Only the byte rule: probes after every 4 KiB written, no timed probes, no lag limit.
    const s = await start({ slow_client: { max_unread_bytes: 16 * 1024, max_lag: '1h', probe_interval: '1h' } });
    const reader = await client(s.url);
    const stalled = await client(s.url);
    await stalled.until(() => stalled.frames.some((f) => f.type === 'welcome'));
    // The stalled client stops reading its socket; what the server writes stays in the kernel's buffers.
    const raw = (stalled.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    raw.pause();
    const slowDisconnects = async () => (await s.ctx.metricsRegistry.registry.getSingleMetric('runner_websocket_slow_disconnects_total')!.get()).values.reduce((a, v) => a + v.value, 0);
    const pad = 'x'.repeat(400);
    let n = 0;
    const next = async () => {
      s.source.next(createMsg({ i: n++, pad }, { key: 'device-001', meta: { kafka_topic: 'heatpump-realtime' } }));
      await reader.until(() => reader.messages().length === n);
    };
    // A live stream: the next message once the reader has the last one.
    while ((await slowDisconnects()) === 0) {
      await next();
      if (n > 1000) throw new Error(`the stalled client was not disconnected after ${n} messages (~${n * 0.45} KiB)`);
    }
    const disconnectedAt = n;
    for (let k = 0; k < 200; k++) await next();
    expect(reader.messages().map((f) => f.data.i)).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(reader.ws.readyState).toBe(WebSocket.OPEN);
    expect(await slowDisconnects()).toBe(1);
    // Reading again, the stalled client finds what was written before it fell 16 KiB behind, then the close frame.
    raw.resume();
    expect(await stalled.closed).toEqual({ code: 1013, reason: 'too slow: the server does not wait for slow clients' });
    const got = stalled.messages().map((f) => f.data.i);
    expect(got.length).toBeLessThan(disconnectedAt);
    expect(got).toEqual(Array.from({ length: got.length }, (_, i) => i));
    reader.ws.close();
  });

  it('disconnects a client whose unsent bytes in this process pass max_buffered_bytes, and the others still get every message', async () => {
    const s = await start({ max_buffered_bytes: 64 * 1024, slow_client: { max_unread_bytes: 1 << 30, max_lag: '1h', probe_interval: '1h' } });
    const reader = await client(s.url);
    const stalled = await client(s.url);
    // Stop reading from the socket: the server's send buffer for this client fills up.
    (stalled.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const big = 'x'.repeat(16 * 1024);
    const n = 2000;
    // Two messages at a time, the next two once the reader has them (a live stream, not a burst
    // that would fill even a reading client's buffer in this single process).
    for (let i = 0; i < n; i += 2) {
      for (const k of [i, i + 1]) s.source.next(createMsg({ i: k, big }, { key: 'device-001', meta: { kafka_topic: 'heatpump-realtime' } }));
      await reader.until(() => reader.messages().length === i + 2);
    }
    expect(reader.messages().map((f) => f.data.i)).toEqual(Array.from({ length: n }, (_, i) => i));
    const slow = await s.ctx.metricsRegistry.registry.getSingleMetric('runner_websocket_slow_disconnects_total')!.get();
    expect(slow.values.reduce((a, v) => a + v.value, 0)).toBe(1);
    reader.ws.close();
  });

  it('answers the messages of the last window over HTTP, by topic and device, oldest first', async () => {
    const s = await start({ recent: { path: '/recent', window: '1h', max_messages: 100, max_bytes: 1 << 20 } });
    const at = (minutesAgo: number) => Date.now() - minutesAgo * 60_000;
    const fed = [
      createMsg({ n: 'too-old' }, { key: 'device-001', meta: { kafka_topic: 'heatpump-realtime', kafka_timestamp: at(61) } }),
      createMsg({ n: 'a' }, { key: 'device-001', meta: { kafka_topic: 'heatpump-realtime', kafka_timestamp: at(30) } }),
      createMsg({ n: 'b' }, { key: 'meter-001', meta: { kafka_topic: 'energy-realtime', kafka_timestamp: at(20) } }),
      createMsg({ n: 'c' }, { key: 'device-002', meta: { kafka_topic: 'heatpump-realtime', kafka_timestamp: at(10) } }),
    ];
    for (const m of fed) s.source.next(m);
    const base = s.url.replace(/^ws/, 'http').replace(/\/ws$/, '/recent');
    const get = async (q = '') => {
      const res = await fetch(`${base}${q}`);
      return { status: res.status, body: (await res.json()) as { messages?: { data: { n: string } }[]; error?: string } };
    };
    await expect.poll(async () => (await get()).body.messages?.length).toBe(3);
    expect((await get()).body.messages!.map((m) => m.data.n)).toEqual(['a', 'b', 'c']);
    expect((await get('?topic=heatpump-realtime')).body.messages!.map((m) => m.data.n)).toEqual(['a', 'c']);
    expect((await get('?topic=heatpump-realtime&device=device-002')).body.messages!.map((m) => m.data.n)).toEqual(['c']);
    expect(await get('?topic=nope')).toEqual({ status: 400, body: { error: 'unknown topic nope; known: heatpump-realtime, energy-realtime' } });
  });

  it('keeps the recent window within max_bytes and max_messages: the newest messages, the oldest evicted and counted', async () => {
    const evicted = async (s: Server) => (await s.ctx.metricsRegistry.registry.getSingleMetric('runner_websocket_recent_evicted_total')!.get()).values.reduce((a, v) => a + v.value, 0);
    const pad = 'x'.repeat(1000);
    const feed = (s: Server, n: number) => {
      for (let i = 0; i < n; i++) s.source.next(createMsg({ i, pad }, { key: 'device-001', meta: { kafka_topic: 'heatpump-realtime', kafka_timestamp: Date.now() } }));
    };
    const get = async (s: Server) => {
      const res = await fetch(s.url.replace(/^ws/, 'http').replace(/\/ws$/, '/recent'));
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      return ((await res.json()) as { window: string; messages: { topic: string; device: string; data: { i: number; pad: string } }[] }).messages;
    };
    const n = 1000;

    // ~1 KiB a message, 100 KiB allowed: fewer than 100 kept.
    const bytes = await start({ recent: { path: '/recent', window: '1h', max_messages: 100_000, max_bytes: 100 * 1024 } });
    feed(bytes, n);
    await expect.poll(async () => (await get(bytes)).at(-1)?.data.i).toBe(n - 1);
    const kept = await get(bytes);
    expect(kept.length).toBeGreaterThan(50);
    expect(kept.length).toBeLessThan(100);
    expect(kept.map((m) => m.data.i)).toEqual(Array.from({ length: kept.length }, (_, k) => n - kept.length + k));
    expect(kept.reduce((a, m) => a + JSON.stringify(m.data).length, 0)).toBeLessThanOrEqual(100 * 1024);
    expect(kept[0]).toMatchObject({ topic: 'heatpump-realtime', device: 'device-001', data: { pad } });
    expect(await evicted(bytes)).toBe(n - kept.length);

    const count = await start({ recent: { path: '/recent', window: '1h', max_messages: 10, max_bytes: 1 << 30 } });
    feed(count, n);
    await expect.poll(async () => (await get(count)).at(-1)?.data.i).toBe(n - 1);
    expect((await get(count)).map((m) => m.data.i)).toEqual(Array.from({ length: 10 }, (_, k) => n - 10 + k));
    expect(await evicted(count)).toBe(n - 10);
  });

  it('passes every message on (done) whether or not anyone listens', async () => {
    const s = await start();
    for (let i = 0; i < 5; i++) s.source.next(msg('heatpump-realtime', 'device-001', i));
    s.source.complete();
    expect((await s.out).length).toBe(5);
  });
});
