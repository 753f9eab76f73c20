import { describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../../core/config.ts';
import { OperatorRegistry } from '../../../core/registry.ts';
import { operators } from '../../../operators/index.ts';
import { ROOT, buildRuntime, memoryHarness } from '../../helpers/memory-operators.ts';

const PIPELINE = `name: engine-test
input:
  memory: {}
output:
  switch:
    cases:
      - check: $meta.topic = "a"
        output:
          label: out-a
          hold: {}
      - check: $meta.topic = "b"
        output:
          hold: {}
dead_letter:
  hold: { release: auto }
`;

const fed = (id: string, topic: string) => ({ id, value: { n: id }, meta: { topic } });

describe('switch output', () => {
  it('sends each message to the output of the first matching case and acks it only after that output wrote it', async () => {
    const h = memoryHarness({ messages: [fed('1', 'a'), fed('2', 'b'), fed('3', 'a')] });
    const { runtime } = buildRuntime(h, PIPELINE);
    runtime.start();
    await h.until(() => h.held('out-a').length === 2 && h.held('output.switch.cases.1.output.hold').length === 1);
    expect(h.held('out-a').map((x) => x.msg.meta.id)).toEqual(['1', '3']);
    expect(h.held('output.switch.cases.1.output.hold').map((x) => x.msg.meta.id)).toEqual(['2']);
    expect(h.outcomes.size).toBe(0);

    h.held('output.switch.cases.1.output.hold')[0]!.release();
    await h.until(() => h.outcomes.has('2'));
    expect([...h.outcomes.keys()]).toEqual(['2']);
    for (const x of h.held('out-a')) x.release();
    await h.until(() => h.outcomes.size === 3);
    expect([...h.outcomes.values()].every((o) => o.ok)).toBe(true);
    await runtime.stop();
  });

  it('dead-letters a message that matches no case, with the reason', async () => {
    const h = memoryHarness({ messages: [fed('x', 'c')] });
    const { runtime } = buildRuntime(h, PIPELINE);
    runtime.start();
    await h.until(() => h.held('dead_letter.hold').length === 1);
    expect(h.held('dead_letter.hold')[0]!.msg.headers.dlq_error).toMatch(/switch: no case matched/);
    await h.until(() => h.outcomes.has('x'));
    expect(h.outcomes.get('x')).toEqual({ ok: true });
    await runtime.stop();
  });

  it('a case output that rejects sends the message to the dead-letter output', async () => {
    const h = memoryHarness({ messages: [fed('r', 'a')] });
    const { runtime } = buildRuntime(h, PIPELINE);
    runtime.start();
    await h.until(() => h.held('out-a').length === 1);
    h.held('out-a')[0]!.reject(new Error('row refused'));
    await h.until(() => h.held('dead_letter.hold').length === 1);
    expect(h.held('dead_letter.hold')[0]!.msg.headers).toMatchObject({ dlq_operator: 'out-a', dlq_error: 'row refused' });
    await runtime.stop();
  });

  it('lints nested outputs like top-level ones: positions, unknown operators, labels, dead_letter', () => {
    const registry = new OperatorRegistry(operators);
    const text = `name: t
input:
  generate: { expression: '{}', count: 1 }
output:
  switch:
    cases:
      - check: $meta.x = 1
        output:
          postgress: {}
      - output:
          label: dup
          stdout: {}
      - output:
          label: dup
          postgres:
            url: postgres://h/db
            table: t
            columns: { a: a }
            nonsense: 1
`;
    const res = loadPipeline('p.yaml', { registry, rootDir: ROOT, text, env: {} });
    expect(res.ok).toBe(false);
    const problems = res.problems.map(formatProblem);
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^p\.yaml:9:11: unknown output "postgress"; did you mean "postgres"\?/),
        expect.stringMatching(/^p\.yaml:19:13: unknown field "nonsense"/),
        expect.stringMatching(/^p\.yaml:14:18: label "dup" is used 2 times/),
        expect.stringMatching(/^p\.yaml:5:3: switch can reject messages but the pipeline has no dead_letter output/),
        expect.stringMatching(/^p\.yaml:15:11: postgres can reject messages but the pipeline has no dead_letter output/),
      ]),
    );
  });
});
