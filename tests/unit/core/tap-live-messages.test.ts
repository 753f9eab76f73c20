/**
 * `runner tap`: the runner's HTTP server streams copies of the messages passing a step of a running
 * pipeline, and a tap never holds the pipeline up.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { Health, startHttpServer } from '../../../core/health.ts';
import { formatTapLine } from '../../../core/tap-cli.ts';
import type { PipelineRuntime } from '../../../core/pipeline.ts';
import { buildRuntime, memoryHarness, type MemoryHarness } from '../../helpers/memory-operators.ts';

const PIPELINE = `
name: tapped
input:
  memory: {}
pipeline:
  - map:
      expression: '$merge([$, {"double": n * 2}])'
      key: device_id
      on_invalid: drop
  - label: big_only
    filter:
      expression: 'n >= 10'
      on_invalid: drop
output:
  hold:
    release: auto
`;

let server: FastifyInstance | undefined;
let runtime: PipelineRuntime | undefined;
afterEach(async () => {
  await runtime?.stop();
  await server?.close();
  delete process.env.RUNNER_TAP_TOKEN;
});

async function serve(h: MemoryHarness) {
  const built = buildRuntime(h, PIPELINE);
  runtime = built.runtime;
  const rt = runtime;
  server = await startHttpServer({ host: '127.0.0.1', port: 0, health: new Health(built.metrics), metrics: built.metrics, taps: { taps: (n) => (n === rt.name ? rt.taps : undefined), pipelines: () => [rt.name] } });
  rt.start();
  const addr = server.server.address() as { port: number };
  return `http://127.0.0.1:${addr.port}`;
}

/** Read NDJSON lines from a tap response until `n` lines arrived. */
async function readLines(res: Response, n: number): Promise<Record<string, any>[]> {
  const lines: Record<string, any>[] = [];
  const decoder = new TextDecoder();
  let rest = '';
  const reader = res.body!.getReader();
  while (lines.length < n) {
    const { value, done } = await reader.read();
    if (done) break;
    rest += decoder.decode(value, { stream: true });
    const parts = rest.split('\n');
    rest = parts.pop()!;
    for (const p of parts) if (p) lines.push(JSON.parse(p));
  }
  await reader.cancel();
  return lines;
}

describe('runner tap', () => {
  it('streams each step a message passes, with the value as that step left it', async () => {
    const h = memoryHarness();
    const base = await serve(h);
    const res = await fetch(`${base}/tap/tapped`);
    expect(res.status).toBe(200);
    const reading = readLines(res, 5);
    // The tap is subscribed once the server answered; a message sent now passes every step.
    h.push({ id: 'a', value: { device_id: 'device-001', n: 21 } });
    const [hello, ...events] = await reading;
    expect(hello).toMatchObject({ notice: 'tapping', pipeline: 'tapped' });
    expect(hello!.steps.map((s: { step: string }) => s.step)).toEqual(['input.memory', 'pipeline.0.map', 'big_only', 'output.hold']);
    expect(events.map((e) => e.step)).toEqual(['input.memory', 'pipeline.0.map', 'big_only', 'output.hold']);
    expect(events[0]).toMatchObject({ key: null, value: { device_id: 'device-001', n: 21 }, meta: { id: 'a' } });
    expect(events[1]).toMatchObject({ kind: 'processor', operator: 'map', key: 'device-001', value: { device_id: 'device-001', n: 21, double: 42 } });
    expect(events[3]).toMatchObject({ kind: 'output', operator: 'hold', key: 'device-001' });
    await h.until(() => h.outcomes.get('a')?.ok === true);
  });

  it('taps one step by label, operator name or processor index, and stops after the limit', async () => {
    const h = memoryHarness();
    const base = await serve(h);
    for (const [step, expected] of [
      ['big_only', 'big_only'],
      ['map', 'pipeline.0.map'],
      ['0', 'pipeline.0.map'],
      ['output', 'output.hold'],
    ] as const) {
      const res = await fetch(`${base}/tap/tapped?step=${step}&limit=1`);
      const reading = readLines(res, 3);
      h.push({ id: `m-${step}`, value: { device_id: 'device-002', n: 50 } });
      const lines = await reading;
      expect(lines[0]!.steps.map((s: { step: string }) => s.step)).toEqual([expected]);
      // limit=1: one event, then the server ends the stream.
      expect(lines.slice(1).map((l) => l.step)).toEqual([expected]);
    }
  });

  it('a message a filter drops shows up before the filter and not after it', async () => {
    const h = memoryHarness();
    const base = await serve(h);
    const res = await fetch(`${base}/tap/tapped`);
    const reading = readLines(res, 1 + 2 + 4);
    h.push({ id: 'small', value: { device_id: 'device-003', n: 1 } });
    h.push({ id: 'big', value: { device_id: 'device-003', n: 99 } });
    const events = (await reading).slice(1);
    expect(events.filter((e) => e.value.n === 1).map((e) => e.step)).toEqual(['input.memory', 'pipeline.0.map']);
    expect(events.filter((e) => e.value.n === 99).map((e) => e.step)).toEqual(['input.memory', 'pipeline.0.map', 'big_only', 'output.hold']);
  });

  it('a tap client that never reads does not hold the pipeline up; it is told how much it missed', async () => {
    const h = memoryHarness();
    const base = await serve(h);
    const res = await fetch(`${base}/tap/tapped?step=output`);
    // Far more than socket buffers and the server's 1 MiB allowance hold: 3,000 messages of 8 KiB.
    const pad = 'x'.repeat(8192);
    const ids = Array.from({ length: 3000 }, (_, i) => `slow-${i}`);
    for (const id of ids) h.push({ id, value: { device_id: 'device-004', n: 100, pad } });
    await h.until(() => ids.every((id) => h.outcomes.get(id)?.ok === true));
    // Now read: every message of the step is either in the stream or counted in a `dropped` notice.
    let shown = 0;
    let dropped = 0;
    const decoder = new TextDecoder();
    let rest = '';
    const reader = res.body!.getReader();
    while (shown + dropped < ids.length) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += decoder.decode(value, { stream: true });
      const parts = rest.split('\n');
      rest = parts.pop()!;
      for (const p of parts) {
        if (!p) continue;
        const l = JSON.parse(p);
        if (l.notice === 'dropped') dropped += l.count;
        else if (!l.notice) shown++;
      }
    }
    await reader.cancel();
    expect(dropped).toBeGreaterThan(0);
    expect(shown + dropped).toBe(ids.length);
  });

  it('unknown pipeline or step: an error listing what exists', async () => {
    const h = memoryHarness();
    const base = await serve(h);
    const noPipeline = await fetch(`${base}/tap/other`);
    expect(noPipeline.status).toBe(404);
    expect(await noPipeline.json()).toMatchObject({ pipelines: ['tapped'] });
    const noStep = await fetch(`${base}/tap/tapped?step=nope`);
    expect(noStep.status).toBe(404);
    expect((await noStep.json()).steps.map((s: { step: string }) => s.step)).toContain('big_only');
    const badLimit = await fetch(`${base}/tap/tapped?limit=0`);
    expect(badLimit.status).toBe(400);
  });

  it('with RUNNER_TAP_TOKEN set, only a client with the token may tap', async () => {
    process.env.RUNNER_TAP_TOKEN = 'tap-token-for-test';
    const h = memoryHarness();
    const base = await serve(h);
    const without = await fetch(`${base}/tap/tapped`);
    expect(without.status).toBe(403);
    const wrong = await fetch(`${base}/tap/tapped`, { headers: { authorization: 'Bearer nope' } });
    expect(wrong.status).toBe(403);
    const right = await fetch(`${base}/tap/tapped?limit=1`, { headers: { authorization: 'Bearer tap-token-for-test' } });
    expect(right.status).toBe(200);
    await right.body?.cancel();
  });

  it('the CLI prints one readable line per message', () => {
    const line = JSON.stringify({ pipeline: 'p', step: 'pipeline.0.map', kind: 'processor', operator: 'map', at: '2026-11-23T10:00:00.000Z', key: 'device-001', headers: { mqtt_topic: 'heatpump/device-001/telemetry' }, meta: {}, value: { t: 1 } });
    expect(formatTapLine(line, 'pretty')).toBe('2026-11-23T10:00:00.000Z pipeline.0.map key=device-001 headers={"mqtt_topic":"heatpump/device-001/telemetry"} {"t":1}');
    expect(formatTapLine(line, 'json')).toBe(line);
    expect(formatTapLine('{"notice":"dropped","count":7,"reason":"slow"}', 'pretty')).toBe('# 7 message(s) not shown: slow');
  });
});
