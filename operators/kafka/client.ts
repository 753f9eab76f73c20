/**
 * What the kafka input and output share: the connection config (brokers, client id, SASL, TLS),
 * building a kafkajs client from it with its logs routed into the component's pino logger, and
 * turning kafkajs errors into RunnerErrors that say whether a retry can help.
 */
import { Type, type Static } from '@sinclair/typebox';
import kafkajs, { type Kafka, type KafkaConfig, type LogEntry, type SASLOptions } from 'kafkajs';
import type { Logger } from 'pino';
import { RunnerError, errorMessage } from '../../core/errors.ts';
import { Obj, Secret, withoutDefaults } from '../../core/schema.ts';
import { readFileSync } from 'node:fs';

const { Kafka: KafkaClient, logLevel } = kafkajs;

/** The connection fields, spread into each kafka operator's config object. */
export const connectionFields = {
  brokers: Type.Array(Type.String({ minLength: 1, description: 'A broker address as host:port.' }), {
    minItems: 1,
    description: 'Bootstrap brokers as host:port; the client discovers the rest of the cluster from them.',
  }),
  client_id: Type.String({ minLength: 1, default: 'runner', description: 'Client id sent to the brokers; shows in broker logs and quotas.' }),
  sasl: Type.Union(
    [
      Type.Null(),
      Obj(
        {
          mechanism: Type.Union([Type.Literal('plain'), Type.Literal('scram-sha-256'), Type.Literal('scram-sha-512')], {
            description: 'SASL mechanism.',
          }),
          username: Type.String({ minLength: 1, description: 'SASL user name.' }),
          password: Secret('SASL password; take it from the environment (`${KAFKA_PASSWORD}`), never write it into the YAML.'),
        },
        { description: 'SASL credentials.' },
      ),
    ],
    {
      default: null,
      description:
        'SASL authentication: an object with `mechanism` (`plain`, `scram-sha-256` or `scram-sha-512`), `username` and `password` (from the environment, e.g. `${KAFKA_PASSWORD}`); `null` (the default) connects without SASL.',
    },
  ),
  tls: Type.Union(
    [
      Type.Boolean(),
      withoutDefaults(
        Obj(
          {
            root_cas_file: Type.Optional(Type.String({ description: 'PEM file of the CA certificates to trust instead of the system CAs (a private or managed cluster\'s CA).' })),
            cert_file: Type.Optional(Type.String({ description: 'PEM file of the client certificate (mutual TLS); needs key_file.' })),
            key_file: Type.Optional(Type.String({ description: 'PEM file of the client certificate\'s private key.' })),
            server_name: Type.Optional(Type.String({ description: 'Name to verify the brokers\' certificates against, when it differs from the host name in `brokers`.' })),
            skip_cert_verify: Type.Optional(Type.Boolean({ description: 'Do not verify the brokers\' certificates. Only for a test setup: anyone on the path can read and change the traffic.' })),
          },
          { description: 'TLS with options.' },
        ),
      ),
    ],
    {
      default: false,
      description:
        'TLS: `false` (the default) plain TCP; `true` TLS verifying the brokers\' certificates against the system CAs; or an object with `root_cas_file`, `cert_file` + `key_file` (mutual TLS), `server_name`, `skip_cert_verify` (paths relative to the working directory). Files are read when the client is made; a missing file is an error naming it.',
    },
  ),
};

const connectionSchema = Obj(connectionFields);
export type KafkaConnection = Static<typeof connectionSchema>;

/** For log lines and readiness reasons: the brokers, never credentials. */
export const describeBrokers = (cfg: Pick<KafkaConnection, 'brokers'>) => cfg.brokers.join(',');

export function kafkaClient(cfg: KafkaConnection, logger: Logger): Kafka {
  const config: KafkaConfig = {
    clientId: cfg.client_id,
    brokers: cfg.brokers,
    ssl: tlsOptions(cfg.tls),
    logLevel: logger.isLevelEnabled('debug') ? logLevel.DEBUG : logLevel.INFO,
    logCreator: () => kafkaLogEntry(logger.child({ kafka: true })),
    // Our own retry loops back off forever; kafkajs retries briefly, then reports the error to them.
    retry: { initialRetryTime: 300, retries: 5, maxRetryTime: 10_000 },
    connectionTimeout: 5_000,
  };
  if (cfg.sasl) config.sasl = { mechanism: cfg.sasl.mechanism, username: cfg.sasl.username, password: cfg.sasl.password } as SASLOptions;
  return new KafkaClient(config);
}

/** kafkajs `ssl` from the `tls` field; certificate files are read here. */
export function tlsOptions(tls: KafkaConnection['tls']): KafkaConfig['ssl'] {
  if (typeof tls === 'boolean') return tls;
  const read = (what: string, file: string) => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new RunnerError('CONFIG_INVALID', `tls.${what}: cannot read ${file}: ${errorMessage(err)}`);
    }
  };
  if (Boolean(tls.cert_file) !== Boolean(tls.key_file)) throw new RunnerError('CONFIG_INVALID', 'tls: cert_file and key_file go together (mutual TLS needs both)');
  return {
    ...(tls.root_cas_file ? { ca: [read('root_cas_file', tls.root_cas_file)] } : {}),
    ...(tls.cert_file ? { cert: read('cert_file', tls.cert_file) } : {}),
    ...(tls.key_file ? { key: read('key_file', tls.key_file) } : {}),
    ...(tls.server_name ? { servername: tls.server_name } : {}),
    rejectUnauthorized: !tls.skip_cert_verify,
  };
}

/**
 * kafkajs log lines into pino at levels an operator can live with. kafkajs logs at ERROR many
 * things it handles itself (a broker's error response that the caller retries, a rebalance);
 * those become debug / info, the rest keeps its level.
 */
export function kafkaLogEntry(logger: Logger, now: () => number = Date.now) {
  /** When each kind of connection failure was last logged at warn. */
  const lastWarned = new Map<string, number>();
  return ({ namespace, level, log }: LogEntry) => {
    const { message, timestamp: _t, logger: _l, ...extra } = log as unknown as Record<string, unknown> & { message: string };
    const fields = { kafka_ns: namespace, ...extra };
    if (level === logLevel.ERROR || level === logLevel.NOTHING) {
      if (namespace === 'Connection' && message.startsWith('Response ')) return logger.debug(fields, message);
      if (/rebalanc/i.test(message)) return logger.info(fields, message);
      // A broker that is away (restart, network): kafkajs logs every refused connection at error,
      // dozens per restart, while our retry loops report it once with the reason and readiness
      // says so. One warn per kind per 30 s; the rest at debug.
      if (CONNECTION_NOISE.test(message) || namespace === 'Connection' || namespace === 'BrokerPool') {
        const kind = `${namespace}:${message.replace(/[0-9.:]+/g, '#').slice(0, 60)}`;
        const t = now();
        if (t - (lastWarned.get(kind) ?? -Infinity) < 30_000) return logger.debug(fields, message);
        lastWarned.set(kind, t);
        return logger.warn(fields, `${message} (kafkajs retries; repeats of this are logged at debug for 30 s)`);
      }
      return logger.error(fields, message);
    }
    if (level === logLevel.WARN) {
      if (/rebalanc/i.test(message)) return logger.info(fields, message);
      // Our producers limit kafkajs' retries on purpose: the output's own loop retries forever.
      if (message.startsWith('Limiting retries for the idempotent producer')) return logger.debug(fields, message);
      return logger.warn(fields, message);
    }
    if (level === logLevel.INFO) return logger.info(fields, message);
    return logger.debug(fields, message);
  };
}

const CONNECTION_NOISE = /ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|Connection timeout|Closed connection|Failed to connect to (seed )?broker|KafkaJSConnectionError|There is no leader/i;

/** kafkajs protocol error types that say the message itself can never be written. */
const REJECTED_TYPES = new Set([
  'MESSAGE_TOO_LARGE',
  'RECORD_LIST_TOO_LARGE',
  'INVALID_TOPIC_EXCEPTION',
  'INVALID_RECORD',
  'CORRUPT_MESSAGE',
  'INVALID_REQUIRED_ACKS',
]);
const AUTH_TYPES = new Set(['TOPIC_AUTHORIZATION_FAILED', 'GROUP_AUTHORIZATION_FAILED', 'CLUSTER_AUTHORIZATION_FAILED', 'SASL_AUTHENTICATION_FAILED', 'TRANSACTIONAL_ID_AUTHORIZATION_FAILED']);

export interface KafkaErrorInfo {
  /** kafkajs protocol error type (`MESSAGE_TOO_LARGE`, ...) of the innermost error, if any. */
  type?: string;
  name?: string;
  retriable?: boolean;
}

/**
 * The innermost error of a client's error chain: kafkajs wraps the real error
 * (KafkaJSNumberOfRetriesExceeded -> originalError); @platformatic/kafka nests it in `errors` of
 * MultipleErrors / ResponseError and in `cause`, and names the protocol error in `apiId`. Both are
 * reported as kafkajs does (`type` = the protocol error name, `name` = a kafkajs-style class name),
 * so the rules below hold for either client.
 */
export function rootKafkaError(err: unknown): KafkaErrorInfo & { message: string } {
  let cur: unknown = err;
  for (let i = 0; i < 10; i++) {
    const c = cur as { cause?: unknown; originalError?: unknown; errors?: unknown[]; apiId?: string };
    if (!c || typeof c !== 'object' || c.apiId) break;
    // The first nested error that names a protocol error, else the first nested one.
    const nested = Array.isArray(c.errors) && c.errors.length ? (c.errors.find((e) => (e as { apiId?: string })?.apiId) ?? c.errors[0]) : undefined;
    const next = c.originalError ?? nested ?? c.cause;
    if (!next || next === cur) break;
    cur = next;
  }
  const e = cur as { type?: string; name?: string; retriable?: boolean; apiId?: string; code?: string; canRetry?: boolean };
  if (e && typeof e === 'object' && typeof e.code === 'string' && e.code.startsWith('PLT_KFK_')) {
    const name = e.code === 'PLT_KFK_NETWORK' ? 'KafkaJSConnectionError' : e.code === 'PLT_KFK_AUTHENTICATION' ? 'KafkaJSSASLAuthenticationError' : e.name;
    return { type: e.apiId, name, retriable: e.canRetry, message: errorMessage(cur) };
  }
  return { type: e?.type, name: e?.name, retriable: e?.retriable, message: errorMessage(cur) };
}

/**
 * A kafkajs error as a RunnerError. Only errors that say the message itself can never be written
 * (too large, invalid topic or record) are WRITE_REJECTED and not retryable. Everything else is
 * retryable, whatever kafkajs' `retriable` says: its "retries ran out", "the producer is
 * disconnecting" or an authorisation failure (AUTH_FAILED: the component is not ready until
 * someone fixes the ACLs) must never send data to the dead letters. UNKNOWN_TOPIC_OR_PARTITION
 * stays retryable here too: only a metadata check can tell a missing topic from a leader
 * election (the output does that check).
 */
export function toRunnerError(err: unknown, what: string): RunnerError {
  if (err instanceof RunnerError) return err;
  const root = rootKafkaError(err);
  const text = `${what}: ${root.message}`;
  if (root.type && REJECTED_TYPES.has(root.type)) return new RunnerError('WRITE_REJECTED', text, { cause: err, retryable: false });
  if ((root.type && AUTH_TYPES.has(root.type)) || root.name === 'KafkaJSSASLAuthenticationError') {
    return new RunnerError('AUTH_FAILED', text, { cause: err, retryable: true });
  }
  const connection = root.name === 'KafkaJSConnectionError' || root.name === 'KafkaJSConnectionClosedError' || root.name === 'KafkaJSNoBrokerAvailableError' || root.name === 'KafkaJSBrokerNotFound';
  return new RunnerError(connection ? 'CONNECTION_FAILED' : 'WRITE_FAILED', text, { cause: err, retryable: true });
}

/** The kafkajs protocol error type of an error chain, for decisions such as "does the topic exist?". */
export const kafkaErrorType = (err: unknown): string | undefined => {
  if (err instanceof RunnerError) return rootKafkaError(err.cause).type;
  return rootKafkaError(err).type;
};
