import { existsSync } from 'node:fs';
import { Readable } from 'node:stream';
import { isAbsolute, join } from 'node:path';
import fastifyStatic from '@fastify/static';
import fastifyWebsocket from '@fastify/websocket';
import { Type } from '@sinclair/typebox';
import Fastify, { type FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { concatMap, filter, from } from 'rxjs';
import type { WebSocket } from 'ws';
import { parseDuration } from '../../core/duration.ts';
import { errorMessage } from '../../core/errors.ts';
import { compileExpression } from '../../core/expression.ts';
import type { Msg } from '../../core/message.ts';
import { defineOutput } from '../../core/operator.ts';
import { Duration, Expr, Obj, Secret } from '../../core/schema.ts';
import { RECENT_ENTRY_OVERHEAD, RecentWindow } from './recent-window.ts';

const config = Obj({
  address: Type.String({
    default: '0.0.0.0:8090',
    pattern: '^[^\\s:]+:\\d{1,5}$',
    description: 'host:port to listen on, e.g. `0.0.0.0:${REALTIME_PORT:-8090}`. Port 0 picks a free port (logged as `websocket server listening`).',
  }),
  path: Type.String({ default: '/ws', pattern: '^/', description: 'Path of the WebSocket endpoint.' }),
  topic: Expr('What a message is tagged with and what clients subscribe to, usually the Kafka topic it came from.', '$meta.kafka_topic'),
  device: Expr('The device a message is about, for clients that subscribe to some devices only. Nothing (undefined) = not about one device: sent to every client of the topic.', '$key'),
  topics: Type.Array(Type.String({ minLength: 1 }), {
    default: [],
    description: 'The topics clients may subscribe to; a subscription naming another one is answered with an error frame. Empty: any topic is accepted.',
  }),
  auth_token: Secret('Bearer token clients must present (`Authorization: Bearer <token>`, or `?token=<token>` since browsers cannot set headers on a WebSocket). Empty: no authentication.'),
  heartbeat: Duration('How often the server pings each client; a client that has not answered the previous ping by the next one is disconnected.', '15s'),
  max_buffered_bytes: Type.Integer({
    minimum: 1024,
    default: 1_048_576,
    description: 'Bytes that may wait unsent in this process for one client (the memory a client can hold here). A client that falls further behind is disconnected (close code 1013, counted as slow). The kernel\'s socket buffers take megabytes before anything waits here, so `slow_client` usually notices first.',
  }),
  slow_client: Obj(
    {
      max_unread_bytes: Type.Integer({
        minimum: 1024,
        default: 1_048_576,
        description: 'Bytes written to one client that it has not yet confirmed reading (kernel socket buffers and the network included). More: disconnected as slow. Must exceed what a healthy client receives in `probe_interval` plus a round trip.',
      }),
      max_lag: Duration('A client that has not answered a probe within this time is disconnected as slow (it reads too slowly or not at all).', '5s'),
      probe_interval: Duration('How often a client that was sent something is probed (at most; also after every quarter of `max_unread_bytes`).', '1s'),
    },
    {
      default: { max_unread_bytes: 1_048_576, max_lag: '5s', probe_interval: '1s' },
      description:
        'Noticing a client that falls behind, early and cheaply. After the broadcast frames the server writes a WebSocket ping whose payload is the number of bytes written to that client so far; a client answers it with a pong (browsers and WebSocket libraries do so on their own) once it has read up to there. A client more than `max_unread_bytes` behind the last offset it confirmed, or with a probe unanswered for `max_lag`, is disconnected with close code 1013 and counted in `runner_websocket_slow_disconnects_total`.',
    },
  ),
  max_client_messages: Type.Integer({
    minimum: 1,
    default: 20,
    description: 'Messages a client may send per second (subscriptions, pings). A client that sends more is disconnected with close code 1008.',
  }),
  max_clients: Type.Integer({ minimum: 1, default: 10_000, description: 'Connections accepted at the same time; more are refused with close code 1013.' }),
  recent: Obj(
    {
      path: Type.String({ default: '', pattern: '^(/.*)?$', description: 'HTTP path (GET) that answers with the messages of the last `window`, e.g. `/api/v1/heatpump/realtime/last-hour`. Empty: off.' }),
      window: Duration('How far back `path` answers. Messages are kept in memory for this long (time: the Kafka timestamp `$meta.kafka_timestamp`, else when the message arrived).', '1h'),
      max_messages: Type.Integer({ minimum: 1, default: 100_000, description: 'At most this many messages are kept (the oldest go first, counted in `runner_websocket_recent_evicted_total`).' }),
      max_bytes: Type.Integer({
        minimum: 1024,
        default: 64 * 1_048_576,
        description:
          'At most about this many bytes of messages are kept (each counted as its JSON plus its device and ' +
          `${RECENT_ENTRY_OVERHEAD} bytes, about what it takes in memory: the values are packed as bytes in large buffers outside the JS heap; ` +
          'the oldest go first, counted in `runner_websocket_recent_evicted_total`). The default, 64 MiB, holds ~110,000 heat-pump messages (an hour at 30 a second) and keeps the runner well under 300 MB; at higher rates the window holds less than `window`.',
      }),
    },
    {
      default: { path: '', window: '1h', max_messages: 100_000, max_bytes: 64 * 1_048_576 },
      description:
        'Recent messages over HTTP on the same port: `GET <path>?topic=<topic>&device=<device>` (both optional) answers `{"window": "1h", "messages": [{"topic", "device", "time", "data"}, ...]}`, oldest first; an unknown topic is a 400 with the reason. With the kafka input\'s `replay` set to the same window, a restarted pipeline has the last hour again at once.',
    },
  ),
  static_dir: Type.String({
    default: '',
    description: 'A folder of static files (a web dashboard) served at `/` on the same port, relative to the project folder. Empty: none.',
  }),
});

type Cfg = typeof config.static;

interface Client {
  socket: WebSocket;
  topics: Set<string> | null;
  devices: Set<string> | null;
  /** Same for clients that receive the same messages (they share one buffer per turn). */
  subscription: string;
  alive: boolean;
  windowStart: number;
  windowCount: number;
  /** Broadcast bytes (frames and probes) written to the socket. */
  written: number;
  /** The highest offset the client confirmed reading (a probe's pong). */
  confirmed: number;
  /** `written` when the last probe was sent. */
  probed: number;
  /** Probes not answered yet, oldest first: [offset, sent at (ms)]. */
  probes: [number, number][];
  /** Sequence number of the first broadcast message not yet written to this client. */
  nextSeq: number;
  /** A probe is to go with the next write of frames to this client (one system call for both). */
  probeDue: boolean;
}

const subscriptionKey = (topics: Iterable<string> | null, devices: Iterable<string> | null) =>
  `${topics ? JSON.stringify([...topics].sort()) : '*'}|${devices ? JSON.stringify([...devices].sort()) : '*'}`;

/** A broadcast message not yet written to every client: its frame, and since when it exists (ms). */
interface Pending {
  topic: string;
  device: string | undefined;
  frame: Buffer;
  since: number;
}

/** A ping frame (FIN, opcode 9) carrying `offset` as 8 bytes: the pong echoes it. */
const PROBE_BYTES = 10;
function probeFrame(offset: number): Buffer {
  const frame = Buffer.allocUnsafe(PROBE_BYTES);
  frame[0] = 0x89;
  frame[1] = 8;
  frame.writeDoubleBE(offset, 2);
  return frame;
}

function metrics(registry: Registry) {
  const get = <T>(name: string, make: () => T): T => (registry.getSingleMetric(name) as T | undefined) ?? make();
  const labelNames = ['pipeline', 'component'] as const;
  return {
    clients: get('runner_websocket_clients', () => new Gauge({ name: 'runner_websocket_clients', help: 'WebSocket clients connected', labelNames, registers: [registry] })),
    broadcast: get('runner_websocket_messages_broadcast_total', () => new Counter({ name: 'runner_websocket_messages_broadcast_total', help: 'Messages broadcast (each counted once, whatever the number of clients)', labelNames, registers: [registry] })),
    sent: get('runner_websocket_frames_sent_total', () => new Counter({ name: 'runner_websocket_frames_sent_total', help: 'Message frames sent to clients (one per message and subscribed client)', labelNames, registers: [registry] })),
    slow: get('runner_websocket_slow_disconnects_total', () => new Counter({ name: 'runner_websocket_slow_disconnects_total', help: 'Clients disconnected (close 1013) because they fell behind: slow_client.max_unread_bytes unread, a probe unanswered for slow_client.max_lag, or max_buffered_bytes unsent', labelNames, registers: [registry] })),
    recentEvicted: get('runner_websocket_recent_evicted_total', () => new Counter({ name: 'runner_websocket_recent_evicted_total', help: 'Messages dropped from the recent window before they were older than recent.window, to stay within recent.max_messages or recent.max_bytes', labelNames, registers: [registry] })),
    age: get('runner_websocket_broadcast_age_seconds', () => new Histogram({ name: 'runner_websocket_broadcast_age_seconds', help: 'Age of a message when its frames have been written to the sockets of all its clients (its last write): since its Kafka timestamp, else since it entered the pipeline', labelNames, buckets: [0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30], registers: [registry] })),
    dropped: get('runner_websocket_messages_dropped_total', () => new Counter({ name: 'runner_websocket_messages_dropped_total', help: 'Message frames not sent because their client was disconnected as slow', labelNames, registers: [registry] })),
    refused: get('runner_websocket_refused_total', () => new Counter({ name: 'runner_websocket_refused_total', help: 'Connections refused or closed by the server, by reason', labelNames: [...labelNames, 'reason'], registers: [registry] })),
  };
}

/**
 * A whole unmasked text frame (FIN, opcode 1) around `parts` (joined, as UTF-8): what every client
 * receives for a broadcast message, built once. Server frames are never masked and these are never
 * compressed, so the same bytes are valid on every connection (RFC 6455 5.2).
 */
export function textFrame(...parts: (Buffer | string)[]): Buffer {
  let n = 0;
  for (const p of parts) n += typeof p === 'string' ? Buffer.byteLength(p, 'utf8') : p.length;
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(head + n);
  frame[0] = 0x81;
  if (n < 126) frame[1] = n;
  else if (n < 65536) {
    frame[1] = 126;
    frame.writeUInt16BE(n, 2);
  } else {
    frame[1] = 127;
    frame.writeBigUInt64BE(BigInt(n), 2);
  }
  let at = head;
  for (const p of parts) at += typeof p === 'string' ? frame.write(p, at, 'utf8') : p.copy(frame, at);
  return frame;
}

const CLOSE_BRACE = Buffer.from('}');

/** The TCP socket under a ws connection (ws keeps it as `_socket`), when it can take writes. */
const rawSocket = (ws: WebSocket): import('node:net').Socket | undefined => {
  const raw = (ws as unknown as { _socket?: import('node:net').Socket })._socket;
  return raw && raw.writable && !raw.destroyed ? raw : undefined;
};

const send = (socket: WebSocket, frame: object) => {
  if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(frame));
};

export const websocketServer = defineOutput({
  spec: {
    name: 'websocket_server',
    kind: 'output',
    summary: 'Broadcasts each message as JSON to the WebSocket clients subscribed to its topic (and device); slow clients are disconnected, never waited for.',
    description: [
      'Serves a WebSocket endpoint (`ws://<address><path>`) and sends every message to each connected client that subscribed to its topic (and, if the client named devices, to its device), as one text frame:',
      '',
      '    {"type": "message", "topic": "heatpump-realtime", "device": "device-001", "data": {...the message value...}}',
      '',
      'A client receives every topic until it subscribes. It subscribes in the URL (`/ws?topics=heatpump-realtime,energy-realtime&devices=device-001`) or by sending `{"type": "subscribe", "topics": [...], "devices": [...]}` (both optional; omitted = all), answered by `{"type": "subscribed", "topics": [...], "devices": [...]}`. `{"type": "ping"}` is answered by `{"type": "pong"}`. A frame that is not JSON, of an unknown type, or naming a topic not in `topics` is answered by `{"type": "error", "error": "<reason>"}` and the client stays connected.',
      '',
      'Protection: an optional bearer token (`auth_token`; 401 without it); at most `max_clients` connections; WebSocket pings every `heartbeat` (a client that does not answer is dropped); at most `max_client_messages` frames per second from a client (more: close 1008); and slow clients disconnected with close code 1013 (metric `runner_websocket_slow_disconnects_total`): a client that has not confirmed reading the last `slow_client.max_unread_bytes` written to it, has left a probe unanswered for `slow_client.max_lag`, or has more than `max_buffered_bytes` waiting unsent in this process. So one slow client never slows the others or grows memory.',
      '',
      'With `static_dir`, the same port serves that folder at `/` (a dashboard). Metrics: `runner_websocket_clients`, `runner_websocket_messages_broadcast_total`, `runner_websocket_frames_sent_total`, `runner_websocket_slow_disconnects_total`, `runner_websocket_messages_dropped_total`, `runner_websocket_refused_total`, `runner_websocket_broadcast_age_seconds` (how old a message is when written to the last client\'s socket), `runner_websocket_recent_evicted_total`.',
    ].join('\n'),
    config,
    examples: [
      {
        title: 'Live heat-pump and energy data for dashboards',
        config: ['address: 0.0.0.0:${REALTIME_PORT:-8090}', 'path: /ws', 'topics: [heatpump-realtime, energy-realtime]', 'auth_token: ${REALTIME_TOKEN:-}', 'static_dir: dashboard'].join('\n'),
      },
    ],
    delivery:
      'Broadcast, at most once per client: a message is done (its input may commit past it) once it has been queued for the clients; its frames are written to every client connected when it was queued, within about one pass of the writer over the clients (a pass writes each client everything queued for it since its last write, with the event loop free between groups of clients). Clients that connect later do not receive it, and a client disconnected as slow loses what was queued for it; clients that need history read it from the history API. A message whose `topic` or `device` expression fails is rejected to the dead-letter output.',
    rejects: true,
  },
  create(cfg: Cfg, ctx) {
    const log = ctx.logger;
    const m = metrics(ctx.metrics.registry);
    const labels = ctx.metrics.labels;
    const topicExpr = compileExpression(cfg.topic);
    const deviceExpr = compileExpression(cfg.device);
    const known = new Set(cfg.topics);
    const heartbeatMs = parseDuration(cfg.heartbeat);
    const clients = new Set<Client>();
    const [host, portText] = [cfg.address.slice(0, cfg.address.lastIndexOf(':')), cfg.address.slice(cfg.address.lastIndexOf(':') + 1)];
    const app: FastifyInstance = Fastify({ logger: false, forceCloseConnections: true });
    let closing = false;

    const unknownTopics = (topics: string[]) => (known.size ? topics.filter((t) => !known.has(t)) : []);
    const parseList = (v: unknown): string[] | null | undefined => {
      if (v === undefined || v === null) return null;
      if (typeof v === 'string') return v.split(',').map((s) => s.trim()).filter(Boolean);
      if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
      return undefined;
    };
    const refuse = (socket: WebSocket, code: number, reason: string, metricReason: string) => {
      m.refused.inc({ ...labels, reason: metricReason });
      log.info({ reason }, 'websocket client disconnected');
      socket.close(code, reason);
    };

    void app.register(fastifyWebsocket, { options: { maxPayload: 64 * 1024 } });
    void app.register(async (scope) => {
      scope.get(cfg.path, { websocket: true }, (socket, req) => {
        const query = req.query as Record<string, unknown>;
        if (cfg.auth_token) {
          const header = req.headers.authorization ?? '';
          const token = header.startsWith('Bearer ') ? header.slice(7) : typeof query.token === 'string' ? query.token : '';
          if (token !== cfg.auth_token) return refuse(socket, 1008, 'unauthorized: a bearer token is required', 'unauthorized');
        }
        if (clients.size >= cfg.max_clients) return refuse(socket, 1013, `too many clients (max_clients ${cfg.max_clients})`, 'max_clients');
        const topics = parseList(query.topics);
        const devices = parseList(query.devices);
        const unknown = unknownTopics(topics ?? []);
        if (unknown.length) return refuse(socket, 1008, `unknown topic ${unknown.join(', ')}; known: ${cfg.topics.join(', ')}`, 'unknown_topic');
        const client: Client = { socket, topics: topics ? new Set(topics) : null, devices: devices ? new Set(devices) : null, subscription: subscriptionKey(topics ?? null, devices ?? null), alive: true, windowStart: Date.now(), windowCount: 0, written: 0, confirmed: 0, probed: 0, probes: [], nextSeq: endSeq(), probeDue: false };
        clients.add(client);
        m.clients.inc(labels);
        socket.on('pong', (data: Buffer) => {
          client.alive = true;
          if (data.length !== 8) return;
          // A probe's answer: the client has read everything written before that probe.
          const offset = data.readDoubleBE(0);
          if (!(offset <= client.written)) return;
          // (A heartbeat's probe may repeat an offset already confirmed: it is answered all the same.)
          if (offset > client.confirmed) client.confirmed = offset;
          while (client.probes.length && client.probes[0]![0] <= offset) client.probes.shift();
        });
        socket.on('close', () => {
          if (clients.delete(client)) m.clients.dec(labels);
        });
        socket.on('error', (err) => log.debug({ err: errorMessage(err) }, 'websocket client error'));
        socket.on('message', (data, isBinary) => {
          const now = Date.now();
          if (now - client.windowStart >= 1000) {
            client.windowStart = now;
            client.windowCount = 0;
          }
          if (++client.windowCount > cfg.max_client_messages) return refuse(socket, 1008, `too many messages (max_client_messages ${cfg.max_client_messages} per second)`, 'flood');
          let frame: { type?: unknown; topics?: unknown; devices?: unknown };
          try {
            if (isBinary) throw new Error('binary frames are not accepted');
            frame = JSON.parse(data.toString());
            if (!frame || typeof frame !== 'object' || Array.isArray(frame)) throw new Error('a frame is a JSON object');
          } catch (err) {
            return send(socket, { type: 'error', error: `malformed frame: ${errorMessage(err)}` });
          }
          if (frame.type === 'ping') return send(socket, { type: 'pong' });
          if (frame.type !== 'subscribe') return send(socket, { type: 'error', error: `unknown frame type ${JSON.stringify(frame.type)}; expected subscribe or ping` });
          const t = parseList(frame.topics);
          const d = parseList(frame.devices);
          if (t === undefined || d === undefined) return send(socket, { type: 'error', error: 'topics and devices are lists of strings' });
          const bad = unknownTopics(t ?? []);
          if (bad.length) return send(socket, { type: 'error', error: `unknown topic ${bad.join(', ')}; known: ${cfg.topics.join(', ')}` });
          client.topics = t ? new Set(t) : null;
          client.devices = d ? new Set(d) : null;
          client.subscription = subscriptionKey(client.topics, client.devices);
          send(socket, { type: 'subscribed', topics: t ?? 'all', devices: d ?? 'all' });
        });
        send(socket, { type: 'welcome', topics: cfg.topics, subscribed: { topics: topics ?? 'all', devices: devices ?? 'all' } });
        log.debug({ clients: clients.size }, 'websocket client connected');
      });
    });
    // Recent messages, oldest first (recent-window.ts: each value's JSON bytes packed in large
    // Buffers, the rest in typed arrays; no object per message).
    const windowMs = parseDuration(cfg.recent.window);
    const recent = new RecentWindow({ windowMs, maxMessages: cfg.recent.max_messages, maxBytes: cfg.recent.max_bytes });
    if (cfg.recent.path) {
      const windowJson = JSON.stringify(cfg.recent.window);
      app.get(cfg.recent.path, async (req, reply) => {
        const q = req.query as Record<string, unknown>;
        const topic = typeof q.topic === 'string' && q.topic ? q.topic : undefined;
        const device = typeof q.device === 'string' && q.device ? q.device : undefined;
        if (topic && unknownTopics([topic]).length) return reply.code(400).send({ error: `unknown topic ${topic}; known: ${cfg.topics.join(', ')}` });
        if (cfg.auth_token) {
          const header = req.headers.authorization ?? '';
          const token = header.startsWith('Bearer ') ? header.slice(7) : typeof q.token === 'string' ? q.token : '';
          if (token !== cfg.auth_token) return reply.code(401).send({ error: 'unauthorized: a bearer token is required' });
        }
        const evicted = recent.trim(Date.now());
        if (evicted) m.recentEvicted.inc(labels, evicted);
        const picked = recent.pick(topic, device);
        // Streamed in chunks of Buffers: the values are sent from where they are kept, never as one string.
        async function* body() {
          yield Buffer.from(`{"window":${windowJson},"messages":[`);
          for (let i = 0; i < picked.count; i += 500) {
            const parts: Buffer[] = [];
            for (let k = i; k < Math.min(i + 500, picked.count); k++) {
              const dev = picked.devices[k];
              parts.push(Buffer.from(`${k ? ',' : ''}{"topic":${JSON.stringify(picked.topics[k])}${dev === undefined ? '' : `,"device":${JSON.stringify(dev)}`},"time":"${new Date(picked.times[k]!).toISOString()}","data":`), picked.data[k]!, CLOSE_BRACE);
            }
            yield Buffer.concat(parts);
          }
          yield Buffer.from(']}');
        }
        return reply.type('application/json; charset=utf-8').send(Readable.from(body()));
      });
    }
    if (cfg.static_dir) {
      const root = isAbsolute(cfg.static_dir) ? cfg.static_dir : join(ctx.rootDir, cfg.static_dir);
      if (!existsSync(root)) log.error({ static_dir: root }, 'static_dir does not exist; nothing is served at /');
      else void app.register(fastifyStatic, { root, prefix: '/' });
    }

    // Slow clients: probes and the two limits of slow_client.
    const maxUnread = cfg.slow_client.max_unread_bytes;
    const probeEvery = Math.max(1, Math.floor(maxUnread / 4));
    const maxLagMs = parseDuration(cfg.slow_client.max_lag);
    const probeIntervalMs = parseDuration(cfg.slow_client.probe_interval);
    const disconnectSlow = (c: Client, why: string, detail: Record<string, number>, dropped = 0) => {
      m.slow.inc(labels);
      if (dropped) m.dropped.inc(labels, dropped);
      clients.delete(c);
      m.clients.dec(labels);
      log.warn({ why, ...detail }, 'websocket client too slow; disconnected');
      c.socket.close(1013, 'too slow: the server does not wait for slow clients');
      // close() waits for the closing handshake behind the unsent data; do not wait for that either.
      setTimeout(() => c.socket.terminate(), 1000).unref();
    };
    const probe = (c: Client, raw: import('node:net').Socket) => {
      c.probeDue = false;
      c.written += PROBE_BYTES;
      c.probed = c.written;
      c.probes.push([c.written, Date.now()]);
      raw.write(probeFrame(c.written));
    };
    /**
     * A probe for `c`: with its next frames while the writer is busy (one system call for both,
     * rather than a burst of writes of its own for every client each interval), else now.
     */
    const requestProbe = (c: Client) => {
      if (pass || frames.length) {
        c.probeDue = true;
        return;
      }
      const raw = rawSocket(c.socket);
      if (raw) probe(c, raw);
    };
    const probeTimer = setInterval(() => {
      // After this turn's I/O (setImmediate runs after the poll phase): pongs that arrived while the
      // event loop was busy are read before anyone is judged late.
      setImmediate(() => {
        const now = Date.now();
        for (const c of clients) {
          const oldest = c.probes[0];
          if (oldest && now - oldest[1] > maxLagMs) {
            disconnectSlow(c, 'max_lag', { lag_ms: now - oldest[1], unread: c.written - c.confirmed });
            continue;
          }
          if (c.written !== c.probed) requestProbe(c);
        }
      });
    }, probeIntervalMs);
    probeTimer.unref();

    const heartbeat = setInterval(() => {
      for (const c of clients) {
        if (!c.alive) {
          m.refused.inc({ ...labels, reason: 'heartbeat' });
          c.socket.terminate();
          continue;
        }
        c.alive = false;
        // A probe is a ping: its pong (any pong) marks the client alive.
        requestProbe(c);
      }
    }, heartbeatMs);
    heartbeat.unref();

    ctx.setReady(false, `starting the websocket server on ${cfg.address}`);
    const listening = app
      .listen({ host, port: Number(portText) })
      .then((url) => {
        const addr = app.server.address();
        const port = addr && typeof addr === 'object' ? addr.port : Number(portText);
        log.info({ url: url.replace(/^http/, 'ws') + cfg.path, port, path: cfg.path }, 'websocket server listening');
        ctx.setReady(true);
      })
      .catch((err) => {
        const reason = `cannot listen on ${cfg.address}: ${errorMessage(err)}`;
        log.error(reason);
        ctx.setReady(false, reason);
      });

    ctx.onClose(async () => {
      closing = true;
      clearInterval(heartbeat);
      clearInterval(probeTimer);
      await listening;
      for (const c of clients) c.socket.close(1001, 'server shutting down');
      await app.close().catch((err) => log.warn({ err: errorMessage(err) }, 'closing the websocket server failed'));
    });

    /**
     * The writer: passes over the clients, CLIENTS_PER_STEP at a time with the event loop free in
     * between (Kafka's next fetch, pongs and new clients are handled during a pass, not after it).
     * Each client visited gets everything broadcast since its last write in one write (clients with
     * the same subscription and position share one buffer). A message that arrives during a pass
     * reaches the clients not yet visited in that pass and the others in the next one, which starts
     * at once; so a message waits at most about one pass, and one pass over 1,000 clients is one
     * system call per client whatever the rate.
     */
    const CLIENTS_PER_STEP = 100;
    /** Broadcast messages not yet written to every client, oldest first; `firstSeq` numbers frames[0]. */
    let frames: Pending[] = [];
    let firstSeq = 0;
    function endSeq() {
      return firstSeq + frames.length;
    }
    let pass: Client[] | null = null;
    let passAt = 0;
    const startPass = () => {
      if (pass || closing) return;
      pass = [...clients];
      passAt = 0;
      setImmediate(step);
    };
    const step = () => {
      const list = pass!;
      if (closing) {
        pass = null;
        return;
      }
      const end = endSeq();
      const shared = new Map<string, { buf: Buffer | null; count: number }>();
      const stop = Math.min(list.length, passAt + CLIENTS_PER_STEP);
      let sent = 0;
      for (; passAt < stop; passAt++) {
        const c = list[passAt]!;
        const from = c.nextSeq;
        if (from >= end || !clients.has(c)) continue;
        c.nextSeq = end;
        if (c.socket.readyState !== c.socket.OPEN) continue;
        const key = `${from}|${c.subscription}`;
        let group = shared.get(key);
        if (!group) {
          const pending = frames.slice(from - firstSeq);
          const mine = c.topics || c.devices ? pending.filter((p) => (!c.topics || c.topics.has(p.topic)) && (!c.devices || p.device === undefined || c.devices.has(p.device))) : pending;
          group = { buf: mine.length === 0 ? null : mine.length === 1 ? mine[0]!.frame : Buffer.concat(mine.map((p) => p.frame)), count: mine.length };
          shared.set(key, group);
        }
        const raw = rawSocket(c.socket);
        if (!raw) continue;
        if (!group.buf) {
          if (c.probeDue) probe(c, raw);
          continue;
        }
        if (c.written - c.confirmed > maxUnread) {
          disconnectSlow(c, 'max_unread_bytes', { unread: c.written - c.confirmed, buffered: raw.writableLength }, group.count);
          continue;
        }
        if (raw.writableLength > cfg.max_buffered_bytes) {
          disconnectSlow(c, 'max_buffered_bytes', { unread: c.written - c.confirmed, buffered: raw.writableLength }, group.count);
          continue;
        }
        if (c.probeDue || c.written + group.buf.length - c.probed >= probeEvery) {
          // Frames and probe in one writev.
          raw.cork();
          raw.write(group.buf);
          c.written += group.buf.length;
          probe(c, raw);
          raw.uncork();
        } else {
          raw.write(group.buf);
          c.written += group.buf.length;
        }
        sent += group.count;
      }
      if (sent) m.sent.inc(labels, sent);
      if (passAt < list.length) return void setImmediate(step);
      pass = null;
      // What every connected client has now is done: its age is observed, its frame let go.
      let low = endSeq();
      for (const c of clients) if (c.nextSeq < low) low = c.nextSeq;
      const now = Date.now();
      const done = low - firstSeq;
      for (let k = 0; k < done; k++) m.age.observe(labels, (now - frames[k]!.since) / 1000);
      if (done) {
        frames = frames.slice(done);
        firstSeq = low;
      }
      // Messages that came during this pass, for the clients visited before they came (with the
      // probes due since); or no more writes coming: the probes due go now.
      if (frames.length) startPass();
      else
        for (const c of clients) {
          if (!c.probeDue) continue;
          const raw = rawSocket(c.socket);
          if (raw) probe(c, raw);
        }
    };

    const broadcast = async (msg: Msg): Promise<Msg | null> => {
      let topic: string;
      let rawDevice: unknown;
      try {
        topic = String((await topicExpr.evaluate(msg)) ?? '');
        rawDevice = await deviceExpr.evaluate(msg);
      } catch (err) {
        ctx.reject(msg, err);
        return null;
      }
      const device = rawDevice === undefined || rawDevice === null ? undefined : String(rawDevice);
      m.broadcast.inc(labels);
      // The value as JSON, once for the recent window and every client: its source bytes while
      // unchanged (no serialising, no string), else JSON text.
      const data: Buffer | string = msg.source !== undefined && msg.source.value === msg.value && msg.value !== null && typeof msg.value === 'object' ? msg.source.bytes : (JSON.stringify(msg.value) ?? 'null');
      if (cfg.recent.path) {
        const now = Date.now();
        const ts = Number(msg.meta.kafka_timestamp);
        const evicted = recent.push(topic, device, Number.isFinite(ts) && ts > 0 ? ts : now, data, now);
        if (evicted) m.recentEvicted.inc(labels, evicted);
      }
      if (!clients.size || closing) return msg;
      // The frame is built once, as bytes, for every client (ws would encode a string per send).
      const frame = textFrame(`{"type":"message","topic":${JSON.stringify(topic)}${device === undefined ? '' : `,"device":${JSON.stringify(device)}`},"data":`, data, '}');
      const ts = Number(msg.meta.kafka_timestamp);
      frames.push({ topic, device, frame, since: Number.isFinite(ts) && ts > 0 ? ts : msg.createdAt });
      startPass();
      return msg;
    };

    return (source) =>
      source.pipe(
        concatMap((msg) => from(broadcast(msg))),
        filter((msg): msg is Msg => msg !== null),
      );
  },
});
