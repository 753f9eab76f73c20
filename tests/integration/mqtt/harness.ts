/**
 * Running the mqtt input and output against a real broker in tests: configs with their schema
 * defaults, a context whose readiness and rejections can be waited on, received messages read
 * with a cursor, plain mqtt.js clients to publish and subscribe, and unique names per test.
 * Everything waits on events; nothing sleeps. TEST_LOG_FILE=<path> appends the operators' log lines there.
 */
import { appendFileSync } from 'node:fs';
import type { TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import mqtt, { type IClientPublishOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { BehaviorSubject, Subject, type Subscription, filter, firstValueFrom } from 'rxjs';
import type { Msg } from '../../../core/message.ts';
import { createMsg } from '../../../core/message.ts';
import { mqttInput } from '../../../operators/mqtt/input.ts';
import { mqttOutput } from '../../../operators/mqtt/output.ts';
import { topicMatches } from '../../../operators/mqtt/topics.ts';
import { type TestContext, testContext } from '../../helpers/context.ts';
import pino from 'pino';

export const MQTT_URL = process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';

let counter = 0;
const run = `${process.pid.toString(36)}${Date.now().toString(36)}`;
/** A name no other test (or earlier run) uses: for topics and client ids. */
export const uniq = (name: string) => `${name}-${run}-${counter++}`;

export type InputCfg = Parameters<typeof mqttInput.create>[0];
export type OutputCfg = Parameters<typeof mqttOutput.create>[0];

export function withDefaults<T>(schema: TSchema, partial: Partial<T>): T {
  return Value.Default(schema, Value.Clone(partial)) as T;
}

export interface LogLine {
  level: number;
  msg: string;
  [k: string]: unknown;
}

/** A test context whose log lines, readiness changes and rejections can be awaited. */
export function watchedContext(opts: { pipeline?: string; component?: string } = {}) {
  const ctx = testContext(opts);
  const logs: LogLine[] = [];
  const log$ = new Subject<void>();
  ctx.logger = pino(
    { level: 'debug' },
    {
      write(line: string) {
        logs.push(JSON.parse(line) as LogLine);
        log$.next();
        if (process.env.TEST_LOG_FILE) appendFileSync(process.env.TEST_LOG_FILE, line);
      },
    },
  );
  const ready$ = new BehaviorSubject<{ ready: boolean; reason?: string }>(ctx.ready);
  const rejected$ = new Subject<{ msg: Msg; err: unknown }>();
  const setReady = ctx.setReady;
  ctx.setReady = (ready, reason) => {
    setReady(ready, reason);
    ready$.next({ ready, reason });
  };
  const reject = ctx.reject;
  ctx.reject = (msg, err) => {
    reject(msg, err);
    rejected$.next({ msg, err });
  };
  return {
    ctx,
    /** Resolves with the first readiness state (current or later) that satisfies `pred`. */
    readiness: (pred: (r: { ready: boolean; reason?: string }) => boolean) => firstValueFrom(ready$.pipe(filter(pred))),
    /** Resolves with the first log line (so far or later) that satisfies `pred`. */
    logged: (pred: (l: LogLine) => boolean): Promise<LogLine> => {
      const found = logs.find(pred);
      if (found) return Promise.resolve(found);
      return firstValueFrom(log$.pipe(filter(() => logs.some(pred)))).then(() => logs.find(pred)!);
    },
    /** Resolves once `n` messages were rejected in total. */
    rejections: (n: number) => (ctx.rejected.length >= n ? Promise.resolve(ctx.rejected.slice(0, n)) : firstValueFrom(rejected$.pipe(filter(() => ctx.rejected.length >= n))).then(() => ctx.rejected.slice(0, n))),
  };
}

/** Collects emitted items; `next(n)` resolves with the next n items after those already taken. */
export class Collector<T> {
  readonly all: T[] = [];
  private cursor = 0;
  private readonly changed = new Subject<void>();
  completed = false;
  push(item: T) {
    this.all.push(item);
    this.changed.next();
  }
  complete() {
    this.completed = true;
    this.changed.next();
  }
  async next(n: number): Promise<T[]> {
    const want = this.cursor + n;
    if (this.all.length < want) await firstValueFrom(this.changed.pipe(filter(() => this.all.length >= want)));
    const out = this.all.slice(this.cursor, want);
    this.cursor = want;
    return out;
  }
  /** Resolves when the source completed. */
  async done(): Promise<void> {
    if (!this.completed) await firstValueFrom(this.changed.pipe(filter(() => this.completed)));
  }
}

export interface RunningInput {
  cfg: InputCfg;
  ctx: TestContext;
  msgs: Collector<Msg>;
  readiness: ReturnType<typeof watchedContext>['readiness'];
  rejections: ReturnType<typeof watchedContext>['rejections'];
  logged: ReturnType<typeof watchedContext>['logged'];
  /** Resolves once connected and subscribed. */
  ready(): Promise<void>;
  /** Stop reading (ctx.stop$), then run the close hooks: acknowledgements due are sent, the client disconnects. */
  stop(): Promise<void>;
}

export function startInput(partial: Partial<InputCfg>): RunningInput {
  const cfg = withDefaults<InputCfg>(mqttInput.spec.config, { urls: [MQTT_URL], ...partial });
  const { ctx, readiness, rejections, logged } = watchedContext({ pipeline: 'mqtt-test', component: 'input.mqtt' });
  const msgs = new Collector<Msg>();
  let sub: Subscription | null = mqttInput.create(cfg, ctx).subscribe({ next: (m) => msgs.push(m), complete: () => msgs.complete() });
  return {
    cfg,
    ctx,
    msgs,
    readiness,
    rejections,
    logged,
    ready: async () => {
      await readiness((r) => r.ready);
    },
    async stop() {
      ctx.stopSubject.next();
      await msgs.done();
      await ctx.close();
      sub?.unsubscribe();
      sub = null;
    },
  };
}

export interface RunningOutput {
  cfg: OutputCfg;
  ctx: TestContext;
  /** Messages the output passed on (published and acknowledged by the broker). */
  emitted: Collector<Msg>;
  readiness: ReturnType<typeof watchedContext>['readiness'];
  rejections: ReturnType<typeof watchedContext>['rejections'];
  logged: ReturnType<typeof watchedContext>['logged'];
  send(value: unknown, headers?: Record<string, string>): Msg;
  close(): Promise<void>;
}

export function startOutput(partial: Partial<OutputCfg>): RunningOutput {
  const cfg = withDefaults<OutputCfg>(mqttOutput.spec.config, { urls: [MQTT_URL], ...partial });
  const { ctx, readiness, rejections, logged } = watchedContext({ pipeline: 'mqtt-test', component: 'output.mqtt' });
  const input = new Subject<Msg>();
  const emitted = new Collector<Msg>();
  const sub = input.pipe(mqttOutput.create(cfg, ctx)).subscribe({ next: (m) => emitted.push(m), complete: () => emitted.complete() });
  return {
    cfg,
    ctx,
    emitted,
    readiness,
    rejections,
    logged,
    send(value, headers) {
      const msg = createMsg(value, { headers });
      input.next(msg);
      return msg;
    },
    async close() {
      input.complete();
      await emitted.done();
      await ctx.close();
      sub.unsubscribe();
    },
  };
}

/** A plain mqtt.js client (the devices' side of the tests). */
export async function client(opts: { url?: string; protocolVersion?: 4 | 5; clientId?: string } = {}): Promise<MqttClient> {
  return mqtt.connectAsync(opts.url ?? MQTT_URL, { protocolVersion: opts.protocolVersion ?? 5, clientId: opts.clientId ?? uniq('test-client'), reconnectPeriod: 0 });
}

export async function publishAll(c: MqttClient, topic: string, payloads: (string | Buffer)[], opts: IClientPublishOptions = { qos: 1 }) {
  for (const p of payloads) await c.publishAsync(topic, p, opts);
}

/** Subscribe with a plain client; messages on topics the filter matches are collected as mqtt.js packets. */
export async function subscribe(c: MqttClient, filterTopic: string, qos: 0 | 1 | 2 = 2): Promise<Collector<IPublishPacket>> {
  const got = new Collector<IPublishPacket>();
  c.on('message', (topic, _p, packet) => {
    if (topicMatches(filterTopic, topic)) got.push(packet);
  });
  await c.subscribeAsync(filterTopic, { qos });
  return got;
}

/** Remove a persistent session from the broker: connect with a clean start and leave. */
export async function forgetSession(clientId: string, url = MQTT_URL, protocolVersion: 4 | 5 = 5) {
  const c = await mqtt.connectAsync(url, { clientId, clean: true, protocolVersion, reconnectPeriod: 0, properties: protocolVersion === 5 ? { sessionExpiryInterval: 0 } : undefined });
  await c.endAsync();
}
