import { describe, expect, it } from 'vitest';
import { buildRuntime, counterValue, memoryHarness } from '../../helpers/memory-operators.ts';
import { settle } from '../../helpers/virtual-time.ts';

const telemetry = (device: string) => ({ device_id: device, timestamp: 1_700_000_000, d5: 35 });

describe('PipelineRuntime acknowledges a message only when it is finished', () => {
  it('acks a message only after the output emitted it (durably written)', async () => {
    const h = memoryHarness({ messages: [{ id: 'm1', value: telemetry('hp-1') }] });
    const { runtime } = buildRuntime(h, 'name: engine-test\ninput:\n  memory: {}\noutput:\n  hold: {}\n');
    runtime.start();

    await h.until(() => h.held('output.hold').length === 1);
    await settle();
    expect(h.outcomes.has('m1'), 'acked while the output still holds the message').toBe(false);

    h.held('output.hold')[0]!.release();
    await h.until(() => h.outcomes.has('m1'));
    expect(h.outcomes.get('m1')).toEqual({ ok: true });
    expect(h.events).toEqual(['held:output.hold:m1', 'ack:m1:done']);
    await runtime.stop();
  });

  it('acks each message on its own, in whatever order the output finishes them', async () => {
    const h = memoryHarness({ messages: [{ id: 'a', value: 1 }, { id: 'b', value: 2 }] });
    const { runtime } = buildRuntime(h, 'name: engine-test\ninput:\n  memory: {}\noutput:\n  hold: {}\n');
    runtime.start();
    await h.until(() => h.held('output.hold').length === 2);

    h.held('output.hold')[1]!.release();
    await h.until(() => h.outcomes.has('b'));
    expect(h.outcomes.has('a')).toBe(false);
    h.held('output.hold')[0]!.release();
    await h.until(() => h.outcomes.has('a'));
    await runtime.stop();
  });

  it('does not ack a message whose write broke the output; the pipeline reports failure', async () => {
    const h = memoryHarness({ messages: [{ id: 'm1', value: telemetry('hp-1') }] });
    const { runtime, health } = buildRuntime(h, 'name: engine-test\ninput:\n  memory: {}\noutput:\n  hold: {}\n');
    runtime.start();
    await h.until(() => h.held('output.hold').length === 1);

    h.held('output.hold')[0]!.error(new Error('disk full'));
    const result = await runtime.finished;
    expect(result.drained).toBe(false);
    expect(h.outcomes.get('m1')?.ok).not.toBe(true);
    expect(health.pipeline('engine-test')?.state).toBe('failed');
    expect(h.events).toContain('close:input.memory');
  });

  it('acks and counts messages a filter drops; kept messages still wait for the output', async () => {
    const h = memoryHarness({
      messages: [
        { id: 'drop-me', value: { keep: false } },
        { id: 'keep-me', value: { keep: true } },
      ],
    });
    const { runtime, metrics } = buildRuntime(
      h,
      "name: engine-test\ninput:\n  memory: {}\npipeline:\n  - filter:\n      expression: 'keep = true'\noutput:\n  hold: {}\ndead_letter:\n  hold: {}\n",
    );
    runtime.start();
    await h.until(() => h.outcomes.has('drop-me') && h.held('output.hold').length === 1);

    expect(h.outcomes.get('drop-me')).toEqual({ ok: true });
    expect(h.outcomes.has('keep-me')).toBe(false);
    expect(h.held('output.hold').map((x) => x.msg.meta.id)).toEqual(['keep-me']);
    expect(await counterValue(metrics, 'runner_component_discarded_total', { pipeline: 'engine-test', component: 'pipeline.0.filter', reason: 'filtered' })).toBe(1);
    // Received and sent on: the input both read and handed on 2; the filter passed 1 of them.
    expect(await counterValue(metrics, 'runner_component_received_total', { pipeline: 'engine-test', component: 'input.memory' })).toBe(2);
    expect(await counterValue(metrics, 'runner_component_sent_total', { pipeline: 'engine-test', component: 'input.memory' })).toBe(2);
    expect(await counterValue(metrics, 'runner_component_sent_total', { pipeline: 'engine-test', component: 'pipeline.0.filter' })).toBe(1);
    h.held('output.hold')[0]!.release();
    await runtime.stop();
  });
});
