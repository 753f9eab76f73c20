import { describe, expect, it } from 'vitest';
import { buildRuntime, memoryHarness } from '../../helpers/memory-operators.ts';

describe('PipelineRuntime readiness', () => {
  it('is not ready while a component says it is not, with its reason, and ready once it is', async () => {
    const h = memoryHarness({ notReady: 'connecting to broker' });
    const { runtime, health } = buildRuntime(h, 'name: engine-test\ninput:\n  memory: {}\noutput:\n  hold: {}\n');
    runtime.start();

    const before = health.pipeline('engine-test')!;
    expect(before.ready).toBe(false);
    expect(before.reasons).toEqual(['input.memory: connecting to broker']);

    h.ctx('input.memory').setReady(true);
    expect(health.pipeline('engine-test')).toMatchObject({ ready: true, state: 'running', reasons: [] });

    h.ctx('output.hold').setReady(false, 'no write permission on topic x');
    expect(health.pipeline('engine-test')?.reasons).toEqual(['output.hold: no write permission on topic x']);
    await runtime.stop();
  });

  it('is not ready once stopped', async () => {
    const h = memoryHarness();
    const { runtime, health } = buildRuntime(h, 'name: engine-test\ninput:\n  memory: {}\noutput:\n  hold: {}\n');
    runtime.start();
    expect(health.pipeline('engine-test')?.ready).toBe(true);
    await runtime.stop();
    expect(health.pipeline('engine-test')).toMatchObject({ ready: false, state: 'stopped' });
  });
});
