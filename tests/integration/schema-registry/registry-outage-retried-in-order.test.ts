/**
 * The registry goes away: a TCP proxy in front of the real registry is stopped (connections are
 * refused) and started again. Decoding waits, retrying with backoff; no message is rejected or
 * dropped, and once the registry is back they come out in their order. Encode with a schema id
 * is not ready while it cannot look the schema up, and says why; it becomes ready by itself.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { BehaviorSubject, Subject, filter, firstValueFrom } from 'rxjs';
import { afterEach, describe, expect } from 'vitest';
import { createMsg, type Msg } from '../../../core/message.ts';
import { schemaRegistryDecode } from '../../../operators/schema-registry/decode.ts';
import { schemaRegistryEncode } from '../../../operators/schema-registry/encode.ts';
import { testContext } from '../../helpers/context.ts';
import { decodeConfig, encodeConfig, logLines, readiness, registerRaw, subjectName, test, through, url } from './harness.ts';

/** A TCP proxy to the registry on a fixed port that can be stopped (refusing) and started. */
async function registryProxy() {
  const target = new URL(url!);
  const sockets = new Set<Socket>();
  let server: Server | null = null;
  const listen = (port: number) =>
    new Promise<Server>((resolve, reject) => {
      const s = createServer((client) => {
        const upstream = connect(Number(target.port || 80), target.hostname);
        for (const sock of [client, upstream]) {
          sockets.add(sock);
          sock.on('close', () => sockets.delete(sock));
          sock.on('error', () => undefined);
        }
        client.pipe(upstream).pipe(client);
      });
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => resolve(s));
    });
  // Take a free port, then free it: while stopped, connections to it are refused.
  const probe = await listen(0);
  const port = (probe.address() as { port: number }).port;
  await new Promise((r) => probe.close(r));
  return {
    url: `http://127.0.0.1:${port}${target.pathname}`,
    async start() {
      server = await listen(port);
    },
    async stop() {
      for (const s of sockets) s.destroy();
      if (server) await new Promise((r) => server!.close(r));
      server = null;
    },
  };
}

const proxies: Awaited<ReturnType<typeof registryProxy>>[] = [];
afterEach(async () => {
  for (const p of proxies.splice(0)) await p.stop();
});

const reading = (i: number) => ({ device_id: `device-00${i}`, timestamp: 1698765432 + i, d0: i });

describe('schema registry outage', () => {
  test('decode holds messages while the registry is unreachable and delivers all of them, in order, once it is back', async () => {
    const proxy = await registryProxy();
    proxies.push(proxy);
    const subject = subjectName('outage');
    await registerRaw(subject, 'JSON', { $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', properties: { device_id: { type: 'string' } } });
    // Encoded through the registry directly; the decoder talks to the proxy (its own client, empty cache).
    const encoded = await through(schemaRegistryEncode.create(encodeConfig({ schema_type: 'json', subject }), testContext()), [1, 2, 3].map(reading));
    expect(encoded).toHaveLength(3);

    const ctx = testContext({ component: 'decode' });
    const logs = logLines(ctx);
    const ready = readiness(ctx);
    const step = schemaRegistryDecode.create(decodeConfig({ url: proxy.url, timeout: '2s' }), ctx);
    const input = new Subject<Msg>();
    const out: unknown[] = [];
    const count$ = new BehaviorSubject(0);
    input.pipe(step).subscribe((m) => {
      out.push(m.value);
      count$.next(out.length);
    });
    for (const m of encoded) input.next(createMsg(m.value));

    // Two failed attempts for the first message, the others waiting behind it.
    const retried = await logs.count('schema registry request failed; retrying the message', 2);
    expect(retried.err).toMatch(/ECONNREFUSED/);
    expect((await ready.next((r) => !r.ready)).reason).toMatch(/^schema registry request fails, retrying: .*ECONNREFUSED/);
    expect(out).toEqual([]);
    expect(ctx.rejected).toEqual([]);

    await proxy.start();
    await firstValueFrom(count$.pipe(filter((n) => n === 3)));
    expect(out).toEqual([1, 2, 3].map(reading));
    expect(ctx.rejected).toEqual([]);
    await ready.next((r) => r.ready);
    input.complete();
  });

  test('encode with a schema id is not ready while the registry is unreachable, and becomes ready by itself', async () => {
    const proxy = await registryProxy();
    proxies.push(proxy);
    const id = await registerRaw(subjectName('outage-encode'), 'JSON', { $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', properties: { device_id: { type: 'string' } } });
    const ctx = testContext({ component: 'encode' });
    const ready = readiness(ctx);
    const logs = logLines(ctx);
    const step = schemaRegistryEncode.create(encodeConfig({ schema_type: 'json', schema_id: id, url: proxy.url }), ctx);
    await logs.count('schema registry unavailable; retrying', 1);
    expect(ctx.ready).toEqual({ ready: false, reason: expect.stringMatching(new RegExp(`^schema id ${id} from the schema registry at http://127\\.0\\.0\\.1:\\d+/.*ECONNREFUSED`)) });

    await proxy.start();
    await ready.next((r) => r.ready);
    const out = await through(step, [reading(1)]);
    expect((out[0]!.value as Buffer).readInt32BE(1)).toBe(id);
    await ctx.close();
  });

  test('encode keeps using a subject\'s cached latest id while the registry is unreachable', async () => {
    const proxy = await registryProxy();
    proxies.push(proxy);
    const subject = subjectName('outage-latest');
    const id = await registerRaw(subject, 'JSON', { $schema: 'http://json-schema.org/draft-07/schema#', type: 'object', properties: { device_id: { type: 'string' } } });
    await proxy.start();
    const ctx = testContext({ component: 'encode' });
    const logs = logLines(ctx);
    // refresh_interval 0: every message asks for the latest version
    const step = schemaRegistryEncode.create(encodeConfig({ schema_type: 'json', subject, refresh_interval: 0, url: proxy.url }), ctx);
    const input = new Subject<Msg>();
    const ids: number[] = [];
    const count$ = new BehaviorSubject(0);
    input.pipe(step).subscribe((m) => {
      ids.push((m.value as Buffer).readInt32BE(1));
      count$.next(ids.length);
    });
    input.next(createMsg(reading(1)));
    await firstValueFrom(count$.pipe(filter((n) => n === 1)));

    await proxy.stop();
    input.next(createMsg(reading(2)));
    await firstValueFrom(count$.pipe(filter((n) => n === 2)));
    expect(ids).toEqual([id, id]);
    expect(await logs.count("cannot refresh the subject's schema id; using the cached one", 1)).toMatchObject({ subject, schema_id: id });
    expect(ctx.rejected).toEqual([]);
    input.complete();
  });
});
