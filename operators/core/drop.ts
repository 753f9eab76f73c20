import { map } from 'rxjs';
import { defineOutput } from '../../core/operator.ts';
import { Obj } from '../../core/schema.ts';

export const drop = defineOutput({
  spec: {
    name: 'drop',
    kind: 'output',
    summary: 'Discards every message (acked and counted); for benchmarks and pipelines run for their side effects.',
    description: 'Every message is done at once and counted in `runner_component_discarded_total{reason="drop_output"}`.',
    config: Obj({}),
    examples: [{ title: 'Discard', config: '{}' }],
    delivery: 'Drops everything on purpose, counted.',
  },
  create(_cfg, ctx) {
    return map((msg) => {
      ctx.metrics.discarded('drop_output');
      return msg;
    });
  },
});
