/**
 * What the mqtt input and output share: the connection config (broker URLs, client id,
 * credentials, TLS, protocol version, keepalive, reconnect backoff), building an mqtt.js client
 * from it with its logs and events routed into the component's pino logger, and turning mqtt.js
 * errors into RunnerErrors that say whether a retry can help.
 *
 * Reconnecting is mqtt.js's own (`reconnectPeriod`), with the period changed before every attempt
 * so the waits back off exponentially (core/retry.ts backoffDelay) up to `reconnect.max`. A broker
 * that refuses the credentials is retried too (`reconnectOnConnackError`): the operator is not
 * ready meanwhile and the log says which broker refused and what to fix.
 */
import { readFileSync } from 'node:fs';
import { format } from 'node:util';
import { Type, type Static } from '@sinclair/typebox';
import mqtt, { type IClientOptions, type IConnackPacket, type IDisconnectPacket, type IStore, type MqttClient } from 'mqtt';
import { parseDuration } from '../../core/duration.ts';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import type { LintIssue, OperatorContext } from '../../core/operator.ts';
import { type BackoffPolicy, DEFAULT_BACKOFF, backoffDelay } from '../../core/retry.ts';
import { Duration, Obj } from '../../core/schema.ts';

/** The connection fields, spread into each mqtt operator's config object. */
export const connectionFields = {
  urls: Type.Array(
    Type.String({ minLength: 1, description: 'A broker URL: `mqtt://host:1883`, `mqtts://host:8883` (TLS), `ws://` or `wss://` (WebSocket).' }),
    {
      minItems: 1,
      description:
        'Broker URLs. With several, each connection attempt takes the next one (for brokers that share sessions, such as a cluster behind several addresses). Credentials go in `username`/`password`, never in the URL.',
    },
  ),
  client_id: Type.String({
    default: '',
    description:
      'Client id. The broker keeps a persistent session (subscriptions and queued messages) under it, so it must stay the same across restarts, and two running instances must never share it (the broker disconnects the older one each time the other connects): when running a pipeline more than once, give each instance its own, e.g. `bridge-${HOSTNAME}`. Empty (the default): `runner-<pipeline>-<component>`, stable across restarts. MQTT 3.1.1 only promises ids of up to 23 characters; Mosquitto takes longer ones.',
  }),
  username: Type.String({ default: '', description: 'User name sent to the broker; empty (the default) connects without credentials.' }),
  password: Type.String({
    default: '',
    'x-secret': true,
    description: 'Password sent with `username`; take it from the environment (`${MQTT_PASSWORD}`), never write it into the YAML.',
  }),
  tls: Obj(
    {
      ca: Type.String({ default: '', description: 'PEM file with the CA certificate(s) that signed the broker\'s certificate; empty (the default): the system CAs.' }),
      cert: Type.String({ default: '', description: 'PEM file with the client certificate, for brokers that authenticate clients by certificate; empty (the default): none.' }),
      key: Type.String({ default: '', description: 'PEM file with the private key of `cert`; empty (the default): none.' }),
      reject_unauthorized: Type.Boolean({
        default: true,
        description: 'Refuse a broker whose certificate does not verify (the default). Turn off only for a test broker with a self-signed certificate.',
      }),
    },
    {
      default: { ca: '', cert: '', key: '', reject_unauthorized: true },
      description: 'TLS settings for `mqtts://` and `wss://` URLs (TLS is chosen by the URL scheme). The defaults verify the broker against the system CAs, without a client certificate.',
    },
  ),
  protocol_version: Type.Union([Type.Literal(4), Type.Literal(5)], {
    default: 5,
    description:
      'MQTT protocol version: 5 (the default; receive maximum, session expiry, user properties and reason codes) or 4 (MQTT 3.1.1, for brokers without MQTT 5).',
  }),
  keepalive: Duration('Keepalive interval: a PINGREQ is sent when nothing else was for a while, and the connection counts as dead after 1.5 intervals without an answer (for the mqtt input, a message it handles counts as an answer: it may read far behind the broker\'s PINGRESP).', '30s'),
  connect_timeout: Duration('How long a connection attempt waits for the broker\'s CONNACK.', '10s'),
  reconnect: Obj(
    {
      min: Duration('Wait before the first reconnect attempt.', '500ms'),
      max: Duration('Longest wait between attempts; the wait doubles from `min` up to this.', '30s'),
    },
    {
      default: { min: '500ms', max: '30s' },
      description: 'Backoff between reconnect attempts; attempts go on forever (the operator is not ready meanwhile and says why).',
    },
  ),
};

const connectionSchema = Obj(connectionFields);
export type MqttConnectionConfig = Static<typeof connectionSchema>;

const PROTOCOLS = new Set(['mqtt:', 'mqtts:', 'ws:', 'wss:']);

/** Problems with the connection fields that the schema cannot see. */
export function lintConnection(cfg: MqttConnectionConfig): LintIssue[] {
  const issues: LintIssue[] = [];
  cfg.urls.forEach((u, i) => {
    let url: URL;
    try {
      url = new URL(u);
    } catch {
      issues.push({ path: ['urls', i], message: `${JSON.stringify(u)} is not a URL; write e.g. mqtt://127.0.0.1:1883` });
      return;
    }
    if (!PROTOCOLS.has(url.protocol)) issues.push({ path: ['urls', i], message: `unsupported scheme ${url.protocol.replace(/:$/, '')}; use mqtt, mqtts, ws or wss` });
    if (url.username || url.password) issues.push({ path: ['urls', i], message: 'put credentials in username and password, not in the URL' });
    if (!url.hostname) issues.push({ path: ['urls', i], message: 'the URL has no host' });
  });
  const tlsSet = cfg.tls.ca !== '' || cfg.tls.cert !== '' || cfg.tls.key !== '' || !cfg.tls.reject_unauthorized;
  if (tlsSet && !cfg.urls.some((u) => /^(mqtts|wss):/i.test(u))) {
    issues.push({ path: ['tls'], message: 'tls settings apply to mqtts:// and wss:// URLs, and there is none in urls' });
  }
  if ((cfg.tls.cert === '') !== (cfg.tls.key === '')) {
    issues.push({ path: ['tls'], message: 'a client certificate needs both cert and key' });
  }
  if (parseDuration(cfg.reconnect.max) < parseDuration(cfg.reconnect.min)) issues.push({ path: ['reconnect', 'max'], message: 'reconnect.max is shorter than reconnect.min' });
  return issues;
}

/** The client id used when `client_id` is empty: stable for a pipeline and component. */
export function defaultClientId(pipeline: string, component: string): string {
  return `runner-${pipeline}-${component}`.replace(/[^A-Za-z0-9._-]/g, '-');
}

/** For log lines and readiness reasons: the brokers, never credentials. */
export const describeBrokers = (cfg: Pick<MqttConnectionConfig, 'urls'>) =>
  cfg.urls
    .map((u) => {
      try {
        const url = new URL(u);
        url.username = '';
        url.password = '';
        return url.toString().replace(/\/$/, '');
      } catch {
        return u;
      }
    })
    .join(',');

/** CONNACK reason codes that mean "these credentials may not connect" (3.1.1: 4, 5; 5.0: 134, 135, 138, 140). */
const AUTH_CONNACK = new Set([4, 5, 134, 135, 138, 140]);
/** mqtt.js errors that carry an MQTT reason code. */
const reasonCode = (err: unknown): number | undefined => {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'number' ? code : undefined;
};

export interface ErrorContext {
  broker: string;
  clientId: string;
  username: string;
}

/** An mqtt.js connection error as a RunnerError; every one of them is retryable (the client reconnects). */
export function connectionError(err: unknown, where: ErrorContext): RunnerError {
  if (err instanceof RunnerError) return err;
  const msg = errorMessage(err);
  const rc = reasonCode(err);
  if (rc !== undefined && AUTH_CONNACK.has(rc) && /Connection refused/i.test(msg)) {
    const who = where.username ? `user ${JSON.stringify(where.username)}` : 'an anonymous client (no username)';
    return new RunnerError(
      'AUTH_FAILED',
      `MQTT broker ${where.broker} refused ${who} with client id ${JSON.stringify(where.clientId)} (${msg}): check username and password (e.g. MQTT_PASSWORD) against the broker's password file, and that its ACL lets this user connect`,
      { cause: err, retryable: true },
    );
  }
  const sys = (err as { code?: unknown })?.code;
  if (typeof sys === 'string' && /CERT|SSL|TLS|SELF_SIGNED|ALTNAME/.test(sys)) {
    return new RunnerError('CONNECTION_FAILED', `TLS with MQTT broker ${where.broker} failed (${sys}: ${msg}): check tls.ca and the broker's certificate`, {
      cause: err,
      retryable: true,
    });
  }
  return new RunnerError('CONNECTION_FAILED', `MQTT broker ${where.broker}: ${msg}`, { cause: err, retryable: true });
}

const readPem = (file: string, what: string): Buffer => {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new RunnerError('CONFIG_INVALID', `cannot read tls.${what} ${file}: ${errorMessage(err)}`, { cause: err });
  }
};

export interface LinkOptions {
  /** Start a new session (true) or resume the persistent one (false). */
  clean: boolean;
  /** MQTT 5: seconds the broker keeps the session after a disconnect. */
  sessionExpirySec?: number;
  /** MQTT 5: unacknowledged QoS 1/2 messages the broker may send us at once. */
  receiveMaximum?: number;
  /** mqtt.js's store of unacknowledged outgoing QoS 1/2 packets; default: its in-memory one. */
  outgoingStore?: IStore;
  /** Called when a connection is up (CONNACK accepted). */
  onConnect(connack: IConnackPacket): void;
  /** Called when the connection is down or an attempt failed, with the reason (readiness). */
  onDown(reason: string): void;
}

export interface MqttLink {
  client: MqttClient;
  clientId: string;
  /** The broker of the current (or last) connection attempt. */
  broker(): string;
  /** Disconnect (gracefully when connected, within `timeoutMs`), keeping the broker session. */
  end(timeoutMs?: number): Promise<void>;
}

/**
 * Build and start an mqtt.js client for `cfg`. Events are logged on `ctx.logger`; the caller
 * hears about connections through `opts`.
 */
export function connectMqtt(cfg: MqttConnectionConfig, ctx: OperatorContext, opts: LinkOptions): MqttLink {
  const log = ctx.logger;
  const clientId = cfg.client_id || defaultClientId(ctx.pipeline, ctx.component);
  const policy: BackoffPolicy = {
    ...DEFAULT_BACKOFF,
    initialMs: Math.max(1, parseDuration(cfg.reconnect.min)),
    maxMs: Math.max(1, parseDuration(cfg.reconnect.max), parseDuration(cfg.reconnect.min)),
  };
  const servers = cfg.urls.map((u) => {
    const url = new URL(u);
    const protocol = url.protocol.replace(/:$/, '') as 'mqtt' | 'mqtts' | 'ws' | 'wss';
    const port = url.port ? Number(url.port) : protocol === 'mqtts' ? 8883 : protocol === 'ws' ? 80 : protocol === 'wss' ? 443 : 1883;
    return { host: url.hostname, port, protocol };
  });
  const options: IClientOptions = {
    clientId,
    protocolVersion: cfg.protocol_version,
    clean: opts.clean,
    keepalive: Math.ceil(parseDuration(cfg.keepalive) / 1000),
    connectTimeout: Math.max(1, parseDuration(cfg.connect_timeout)),
    reconnectPeriod: backoffDelay(policy, 1),
    reconnectOnConnackError: true,
    // Subscriptions are the input's business: it subscribes on every connection without a session.
    resubscribe: false,
    servers,
    // mqtt.js needs a first URL-ish start; `servers` rotates from there.
    host: servers[0]!.host,
    port: servers[0]!.port,
    protocol: servers[0]!.protocol,
    log: log.isLevelEnabled('trace') ? (...args: unknown[]) => log.trace({ mqttjs: true }, format(...args)) : () => undefined,
  };
  if (opts.outgoingStore) options.outgoingStore = opts.outgoingStore;
  if (cfg.username) options.username = cfg.username;
  if (cfg.password) options.password = cfg.password;
  if (servers.some((s) => s.protocol === 'mqtts' || s.protocol === 'wss')) {
    if (cfg.tls.ca) options.ca = readPem(cfg.tls.ca, 'ca');
    if (cfg.tls.cert) options.cert = readPem(cfg.tls.cert, 'cert');
    if (cfg.tls.key) options.key = readPem(cfg.tls.key, 'key');
    options.rejectUnauthorized = cfg.tls.reject_unauthorized;
  }
  if (cfg.protocol_version === 5) {
    const properties: NonNullable<IClientOptions['properties']> = {};
    if (!opts.clean && opts.sessionExpirySec !== undefined) properties.sessionExpiryInterval = Math.min(0xffff_ffff, opts.sessionExpirySec);
    if (opts.receiveMaximum !== undefined) properties.receiveMaximum = Math.min(65_535, Math.max(1, opts.receiveMaximum));
    options.properties = properties;
  }

  const client = mqtt.connect(options);
  const broker = () => {
    const o = client.options;
    return `${o.protocol ?? servers[0]!.protocol}://${o.host ?? servers[0]!.host}:${o.port ?? servers[0]!.port}`;
  };
  const where = (): ErrorContext => ({ broker: broker(), clientId, username: cfg.username });

  let attempt = 0;
  let lastError: RunnerError | null = null;
  let ending = false;
  let everConnected = false;

  client.on('connect', (connack) => {
    attempt = 0;
    lastError = null;
    client.options.reconnectPeriod = backoffDelay(policy, 1);
    log.info({ broker: broker(), clientId, sessionPresent: Boolean(connack.sessionPresent) }, everConnected ? 'mqtt reconnected' : 'mqtt connected');
    everConnected = true;
    opts.onConnect(connack);
  });
  client.on('reconnect', () => {
    attempt++;
    // Read by mqtt.js when it schedules the next attempt, should this one fail.
    client.options.reconnectPeriod = backoffDelay(policy, attempt + 1);
    log.info({ broker: broker(), clientId, attempt }, 'mqtt reconnecting');
  });
  client.on('error', (err) => {
    const e = connectionError(err, where());
    const first = lastError?.message !== e.message;
    lastError = e;
    ctx.metrics.error('connection');
    if (e.code === 'AUTH_FAILED') log.error({ broker: broker(), clientId, nextAttemptInMs: client.options.reconnectPeriod }, e.message);
    else if (first) log.warn({ broker: broker(), clientId, err: errorMessage(err) }, 'mqtt connection error');
    else log.debug({ broker: broker(), clientId, err: errorMessage(err) }, 'mqtt connection error');
  });
  client.on('disconnect', (packet: IDisconnectPacket) => {
    // MQTT 5: the broker says why it closes the connection.
    const rc = packet.reasonCode ?? 0;
    if (rc === 142) {
      log.error(
        { broker: broker(), clientId },
        `the broker closed the connection because another client connected with client id ${JSON.stringify(clientId)} (session taken over); two instances must never share a client_id`,
      );
    } else log.warn({ broker: broker(), clientId, reasonCode: rc, reason: packet.properties?.reasonString }, 'mqtt broker sent DISCONNECT');
  });
  client.on('close', () => {
    if (ending) return;
    const reason = lastError ? lastError.message : `connection to MQTT broker ${broker()} closed; reconnecting`;
    if (everConnected && attempt === 0) log.warn({ broker: broker(), clientId }, 'mqtt connection lost; reconnecting');
    opts.onDown(reason);
  });

  return {
    client,
    clientId,
    broker,
    async end(timeoutMs = 5_000) {
      if (ending) return;
      ending = true;
      const graceful = client.connected;
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
      });
      const outcome = await Promise.race([client.endAsync(!graceful).then(() => 'ended' as const), timedOut]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        log.warn({ broker: broker(), clientId }, 'mqtt disconnect did not finish in time; closing the socket');
        client.stream?.destroy();
      }
      log.info({ broker: broker(), clientId }, 'mqtt disconnected');
    },
  };
}
