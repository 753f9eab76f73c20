/**
 * The stack a soak restarts servers of: a checkout's scripts/stack and its .stack/ folder.
 *
 * scripts/stack keeps its state (pid files, data, configs) under the .stack/ folder of the checkout
 * it is run from, and takes the ports from KAFKA_PORT, KAFKA_CONTROLLER_PORT, PG_PORT, MQTT_PORT, ...
 * Run from a checkout whose stack is up on other ports, `restart kafka` would stop that checkout's
 * Kafka and write the other ports into its config (a changed controller port even makes it start
 * with a new, empty log). So the ports are read from the stack's own config files and must match
 * the addresses the environment gives the clients; the script is then run with exactly those ports.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ADMIN_URL } from '../../tests/helpers/postgres.ts';
import { readPid } from '../lib/proc.ts';

export interface StackPorts {
  kafka: number;
  controller: number;
  sasl: number;
  pg: number;
  mqtt: number;
  registry: number | null;
}

export type StackServer = 'kafka' | 'postgres' | 'mosquitto';

export interface Stack {
  dir: string;
  ports: StackPorts;
  /** `bash <dir>/scripts/stack <action> [server]` with the stack's ports; never rejects. */
  run(action: string, server?: string): Promise<{ ms: number; code: number | null; output: string }>;
  /** The pid of a server (from its pid file), or null. */
  serverPid(server: string): number | null;
}

export const portOf = (text: string | undefined): number | null => {
  const m = /:(\d+)(?:[/,]|$)/.exec(text ?? '');
  return m ? Number(m[1]) : null;
};

/**
 * The stack of checkout `dir`, checked against the environment (KAFKA_BROKERS, PGPORT/DATABASE_URL,
 * MQTT_URL). `fail` is called with the problem when it does not match, or when it is the shared
 * default stack (default ports) and `allowShared` is not set.
 */
export function openStack(dir: string, opts: { allowShared: boolean; fail: (msg: string) => never }): Stack {
  const state = join(dir, '.stack');
  const read = (f: string) => {
    try {
      return readFileSync(join(state, f), 'utf8');
    } catch {
      return opts.fail(`no ${join(state, f)}: the stack directory must be a checkout whose scripts/stack up has run`);
    }
  };
  const listeners = /^listeners=(.*)$/m.exec(read('kafka/server.properties'))?.[1] ?? '';
  const lp = (name: string) => Number(new RegExp(`${name}://[^:,]+:(\\d+)`).exec(listeners)?.[1] ?? NaN);
  const ports: StackPorts = {
    kafka: lp('PLAINTEXT'),
    controller: lp('CONTROLLER'),
    sasl: lp('SASL_PLAINTEXT'),
    pg: Number(/^port = (\d+)/m.exec(read('pg/data/stack.conf'))?.[1] ?? NaN),
    mqtt: Number(/^listener (\d+)/m.exec(read('mosquitto/mosquitto.conf'))?.[1] ?? NaN),
    registry: portOf(process.env.SCHEMA_REGISTRY_URL),
  };
  // The clients' defaults when unset (tests/e2e/mqtt-bridge-harness.ts, tests/helpers/postgres.ts).
  const brokers = process.env.KAFKA_BROKERS ?? '127.0.0.1:9092';
  const mqttUrl = process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';
  const env = { kafka: portOf(brokers), pg: Number(process.env.PGPORT ?? portOf(ADMIN_URL)), mqtt: portOf(mqttUrl) };
  const problems: string[] = [];
  if (env.kafka !== ports.kafka) problems.push(`KAFKA_BROKERS (${brokers}) is not the stack's Kafka (port ${ports.kafka})`);
  if (env.pg !== ports.pg) problems.push(`PGPORT (${env.pg}) is not the stack's PostgreSQL (port ${ports.pg})`);
  if (portOf(ADMIN_URL) !== ports.pg) problems.push(`DATABASE_URL (${ADMIN_URL}) is not the stack's PostgreSQL (port ${ports.pg})`);
  if (env.mqtt !== ports.mqtt) problems.push(`MQTT_URL (${mqttUrl}) is not the stack's Mosquitto (port ${ports.mqtt})`);
  if (problems.length) opts.fail(`the environment does not point at the stack in ${dir}:\n  ${problems.join('\n  ')}\n  (eval "$(bash ${join(dir, 'scripts/stack')} env)" with that stack's port variables)`);
  if ((ports.kafka === 9092 || ports.pg === 5432 || ports.mqtt === 1883) && !opts.allowShared) {
    opts.fail('the stack is on the default ports, i.e. the shared local stack: restarting its servers disturbs everyone testing against it. Use a second stack (bench/README.md, "soak").');
  }
  const stackEnv = {
    ...process.env,
    KAFKA_PORT: String(ports.kafka),
    KAFKA_CONTROLLER_PORT: String(ports.controller),
    KAFKA_SASL_PORT: String(ports.sasl),
    PG_PORT: String(ports.pg),
    MQTT_PORT: String(ports.mqtt),
    ...(ports.registry ? { SCHEMA_REGISTRY_PORT: String(ports.registry) } : {}),
  };
  return {
    dir,
    ports,
    run(action, server) {
      const t0 = performance.now();
      return new Promise((resolve) => {
        const child = spawn('bash', [join(dir, 'scripts/stack'), action, ...(server ? [server] : [])], { cwd: dir, env: stackEnv, stdio: ['ignore', 'pipe', 'pipe'] });
        let output = '';
        child.stdout!.on('data', (d) => (output += d));
        child.stderr!.on('data', (d) => (output += d));
        child.once('error', (err) => resolve({ ms: performance.now() - t0, code: null, output: String(err) }));
        child.once('exit', (code) => resolve({ ms: performance.now() - t0, code, output }));
      });
    },
    serverPid(server) {
      if (server === 'postgres') {
        try {
          return Number(readFileSync(join(state, 'pg/data/postmaster.pid'), 'utf8').split('\n')[0]) || null;
        } catch {
          return null;
        }
      }
      return readPid(join(state, server, `${server}.pid`));
    },
  };
}
