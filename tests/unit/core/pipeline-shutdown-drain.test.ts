import { describe, expect, it } from 'vitest';
import { buildRuntime, memoryHarness } from '../../helpers/memory-operators.ts';
import { settle } from '../../helpers/virtual-time.ts';

const YAML = (timeout: string) => `name: engine-test
input:
  memory: {}
output:
  hold: {}
shutdown_timeout: ${timeout}
`;

describe('PipelineRuntime.stop drains in-flight messages, then closes', () => {
  it('stops reading, waits for in-flight messages, and runs close hooks only after the drain', async () => {
    const h = memoryHarness({ messages: [{ id: 'm1', value: 1 }] });
    const { runtime, health } = buildRuntime(h, YAML('20s'));
    runtime.start();
    await h.until(() => h.held('output.hold').length === 1);

    const stopping = runtime.stop();
    await h.until(() => h.events.includes('input:stopped'));
    await settle();
    expect(h.events.filter((e) => e.startsWith('close:')), 'closed before the in-flight message was finished').toEqual([]);

    h.held('output.hold')[0]!.release();
    const result = await stopping;
    expect(result).toEqual({ drained: true, inFlight: 0 });
    const ack = h.events.indexOf('ack:m1:done');
    expect(ack).toBeGreaterThanOrEqual(0);
    expect(h.events.indexOf('close:input.memory')).toBeGreaterThan(ack);
    expect(h.events.indexOf('close:output.hold')).toBeGreaterThan(ack);
    expect(health.pipeline('engine-test')?.state).toBe('stopped');
  });

  it('gives up after shutdown_timeout when the output never finishes: drained false, closed, message not acked', async () => {
    const h = memoryHarness({ messages: [{ id: 'stuck', value: 1 }] });
    const { runtime, health } = buildRuntime(h, YAML('50ms'));
    runtime.start();
    await h.until(() => h.held('output.hold').length === 1);

    const result = await runtime.stop();
    expect(result).toEqual({ drained: false, inFlight: 1 });
    expect(h.events).toContain('close:input.memory');
    expect(h.events).toContain('close:output.hold');
    expect(h.outcomes.has('stuck')).toBe(false);
    expect(health.pipeline('engine-test')?.state).toBe('failed');
  });

  it('reads nothing more once stopping', async () => {
    const h = memoryHarness();
    const { runtime } = buildRuntime(h, YAML('20s'));
    runtime.start();
    await runtime.stop();
    h.push({ id: 'late', value: 1 });
    await settle();
    expect(h.held('output.hold')).toHaveLength(0);
  });
});
