import { describe, expect, it } from 'vitest';
import { RunnerError } from '../../../core/errors.ts';
import { buildRuntime, counterValue, memoryHarness } from '../../helpers/memory-operators.ts';
import { settle } from '../../helpers/virtual-time.ts';

const WITH_DLQ = `name: engine-test
input:
  memory: {}
pipeline:
  - label: check-telemetry
    validate:
      schema: heatpump-telemetry
output:
  hold: {}
dead_letter:
  hold: {}
`;

const invalid = { id: 'bad', value: { device_id: 'hp-1', timestamp: 'yesterday' }, meta: { mqtt_topic: 'heatpump/hp-1/telemetry', mqtt_qos: 1 }, headers: { trace_id: 'abc' } };

describe('PipelineRuntime sends rejected messages to the dead-letter output', () => {
  it('delivers a message rejected by validate with the error, code, operator, pipeline and original metadata', async () => {
    const h = memoryHarness({ messages: [invalid] });
    const { runtime, metrics } = buildRuntime(h, WITH_DLQ);
    runtime.start();
    await h.until(() => h.held('dead_letter.hold').length === 1);

    const dead = h.held('dead_letter.hold')[0]!.msg;
    expect(dead.value).toEqual(invalid.value);
    expect(dead.headers).toMatchObject({
      trace_id: 'abc',
      dlq_error_code: 'MESSAGE_INVALID',
      dlq_operator: 'check-telemetry',
      dlq_pipeline: 'engine-test',
      dlq_meta_mqtt_topic: 'heatpump/hp-1/telemetry',
      dlq_meta_mqtt_qos: '1',
    });
    expect(dead.headers.dlq_error).toContain('/timestamp must be number');
    expect(dead.meta).toMatchObject({ mqtt_topic: 'heatpump/hp-1/telemetry', mqtt_qos: 1 });
    expect(h.held('output.hold')).toHaveLength(0);
    expect(await counterValue(metrics, 'runner_dead_letter_total', { pipeline: 'engine-test', component: 'check-telemetry', code: 'MESSAGE_INVALID' })).toBe(1);
    h.held('dead_letter.hold')[0]!.release();
    await runtime.stop();
  });

  it('acks a dead-lettered message only after the dead-letter output emitted it', async () => {
    const h = memoryHarness({ messages: [invalid] });
    const { runtime } = buildRuntime(h, WITH_DLQ);
    runtime.start();
    await h.until(() => h.held('dead_letter.hold').length === 1);
    await settle();
    expect(h.outcomes.has('bad'), 'acked before the dead-letter output stored it').toBe(false);

    h.held('dead_letter.hold')[0]!.release();
    await h.until(() => h.outcomes.has('bad'));
    expect(h.outcomes.get('bad')).toEqual({ ok: true });
    await runtime.stop();
  });

  it('fails (redelivers) a message the dead-letter output itself rejects, instead of dead-lettering it again', async () => {
    const h = memoryHarness({ messages: [invalid] });
    const { runtime } = buildRuntime(h, WITH_DLQ);
    runtime.start();
    await h.until(() => h.held('dead_letter.hold').length === 1);

    h.held('dead_letter.hold')[0]!.reject(new RunnerError('WRITE_REJECTED', 'message too large'));
    await h.until(() => h.outcomes.has('bad') || h.held('dead_letter.hold').length > 1);
    await settle();
    expect(h.held('dead_letter.hold'), 'the rejected dead letter went round to the dead-letter output again').toHaveLength(1);
    expect(h.outcomes.get('bad')?.ok).toBe(false);
    await runtime.stop();
  });

  it('with on_invalid: drop, acks the rejected message and counts it as discarded', async () => {
    const h = memoryHarness({ messages: [invalid, { id: 'good', value: { device_id: 'hp-2', timestamp: 1 } }] });
    const { runtime, metrics } = buildRuntime(
      h,
      'name: engine-test\ninput:\n  memory: {}\npipeline:\n  - validate:\n      schema: heatpump-telemetry\n      on_invalid: drop\noutput:\n  hold:\n    release: auto\n',
    );
    runtime.start();
    await h.until(() => h.outcomes.has('bad') && h.outcomes.has('good'));

    expect(h.outcomes.get('bad')).toEqual({ ok: true });
    expect(h.held('output.hold').map((x) => x.msg.meta.id)).toEqual(['good']);
    expect(await counterValue(metrics, 'runner_component_discarded_total', { pipeline: 'engine-test', component: 'pipeline.0.validate', reason: 'invalid' })).toBe(1);
    await runtime.stop();
  });
});
