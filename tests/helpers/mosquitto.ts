/**
 * A private Mosquitto for tests that must stop, restart or lock down a broker without disturbing
 * the shared one of scripts/stack: a real `mosquitto` process on a free loopback port, with its
 * own config, persistence folder and (optionally) password file. It is ready when it logs that it
 * is running and then answers a CONNECT (no polling); `stop` waits for the process to exit (it
 * saves persistence on SIGTERM).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';

export interface PrivateBroker {
  url: string;
  port: number;
  dir: string;
  stop(): Promise<void>;
  start(): Promise<void>;
}

const MOSQUITTO = ['/usr/sbin/mosquitto', '/usr/bin/mosquitto'].find((p) => existsSync(p)) ?? 'mosquitto';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/**
 * `users` turns anonymous access off and writes a password file; `acl` (lines of a Mosquitto
 * acl_file, e.g. `user runner` / `topic read allowed/#`) restricts what they may do.
 */
export async function privateMosquitto(opts: { users?: Record<string, string>; acl?: string[]; config?: string[] } = {}): Promise<PrivateBroker> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'runner-mosquitto-'));
  const lines = [
    ...(process.getuid?.() === 0 ? ['user root'] : []),
    `listener ${port} 127.0.0.1`,
    'persistence true',
    `persistence_location ${dir}/`,
    'max_queued_messages 0',
    'max_inflight_messages 100',
    'log_dest stderr', // stderr is not block-buffered when piped
    'log_type error',
    'log_type warning',
    'log_type notice',
    'log_type information',
  ];
  if (opts.users) {
    const file = join(dir, 'passwords');
    writeFileSync(file, '');
    for (const [user, password] of Object.entries(opts.users)) {
      const r = spawnSync('mosquitto_passwd', ['-b', file, user, password], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`mosquitto_passwd failed: ${r.stderr}`);
    }
    lines.push('allow_anonymous false', `password_file ${file}`);
  } else lines.push('allow_anonymous true');
  if (opts.acl) {
    const file = join(dir, 'acl');
    writeFileSync(file, `${opts.acl.join('\n')}\n`);
    lines.push(`acl_file ${file}`);
  }
  lines.push(...(opts.config ?? []));
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(conf, `${lines.join('\n')}\n`);

  let child: ChildProcess | null = null;
  const broker: PrivateBroker = {
    url: `mqtt://127.0.0.1:${port}`,
    port,
    dir,
    start: async () => {
      await new Promise<void>((resolve, reject) => {
        const c = spawn(MOSQUITTO, ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
        child = c;
        let out = '';
        const onData = (d: Buffer) => {
          out += d.toString();
          if (/mosquitto version \S+ running/.test(out)) resolve();
        };
        c.stdout!.on('data', onData);
        c.stderr!.on('data', onData);
        c.once('exit', (code) => reject(new Error(`mosquitto exited with ${code} before it was running:\n${out}`)));
        c.once('error', reject);
      });
      // "running" is logged just before the main loop starts, and a SIGTERM in between is lost:
      // the broker is up once it answers a CONNECT (a refusal of anonymous clients counts).
      try {
        const probe = await mqtt.connectAsync(broker.url, { reconnectPeriod: 0, connectTimeout: 5_000, clientId: `probe-${process.pid}` });
        await probe.endAsync();
      } catch (err) {
        if (typeof (err as { code?: unknown }).code !== 'number') throw err;
      }
    },
    stop: async () => {
      const c = child;
      child = null;
      if (!c || c.exitCode !== null) return;
      await new Promise<void>((resolve) => {
        const hard = setTimeout(() => c.kill('SIGKILL'), 15_000);
        c.once('exit', () => {
          clearTimeout(hard);
          resolve();
        });
        c.kill('SIGTERM');
      });
    },
  };
  await broker.start();
  return broker;
}
