import { describe, expect, it } from 'vitest';
import { type OperatorFunction, Subject, lastValueFrom, toArray } from 'rxjs';
import { createMsg, type Msg } from '../../../core/message.ts';
import type { OperatorContext } from '../../../core/operator.ts';
import { type StepResult, fusePerMessage, perMessage, perMessageStage } from '../../../core/processor.ts';

/** A context that records what the steps report: rejections, drops, acks. */
function recorder() {
  const events: string[] = [];
  const ctx = (name: string) =>
    ({
      component: name,
      reject: (msg: Msg, err: unknown) => events.push(`${name}:reject:${String(msg.value)}:${(err as Error).message}`),
      metrics: { discarded: (reason: string) => events.push(`${name}:discarded:${reason}`) },
    }) as unknown as OperatorContext;
  const msg = (value: unknown) =>
    createMsg(value, {
      ack: {
        settled: false,
        done: () => events.push(`ack:${String(value)}:done`),
        fail: () => events.push(`ack:${String(value)}:fail`),
        split: (n: number) =>
          Array.from({ length: n }, (_, i) => ({
            settled: false,
            done: () => events.push(`ack:${String(value)}.${i}:done`),
            fail: () => events.push(`ack:${String(value)}.${i}:fail`),
            split: () => [],
          })),
      },
    });
  return { events, ctx, msg };
}

/** Calls of the steps, in the order they happen. */
let calls: string[] = [];
/** fan-out of "fan", a promise for even numbers (in b and c), a drop of "drop", an error for "bad". */
const steps = {
  a: (m: Msg): StepResult => {
    calls.push(`a:${String(m.value)}`);
    return m.value === 'fan' ? [{ ...m, value: 'fan-1' }, { ...m, value: 'fan-2' }] : m.value === 'none' ? [] : m;
  },
  b: (m: Msg): StepResult | Promise<StepResult> => {
    calls.push(`b:${String(m.value)}`);
    return typeof m.value === 'number' && m.value % 2 === 0 ? new Promise((r) => setTimeout(() => r({ ...m, value: (m.value as number) * 10 }), 1)) : m;
  },
  c: (m: Msg): StepResult | Promise<StepResult> => {
    calls.push(`c:${String(m.value)}`);
    if (m.value === 'drop') return null;
    if (m.value === 'bad') throw new Error('no good');
    if (m.value === 20) return Promise.resolve({ ...m, value: '20 later!' });
    return { ...m, value: `${String(m.value)}!` };
  },
};
const inputs = [1, 2, 'fan', 'drop', 3, 'bad', 4, 'none', 5];

async function runThrough(build: (r: ReturnType<typeof recorder>) => OperatorFunction<Msg, Msg>) {
  calls = [];
  const r = recorder();
  const source = new Subject<Msg>();
  const out = lastValueFrom(source.pipe(build(r), toArray()));
  for (const v of inputs) source.next(r.msg(v));
  source.complete();
  const values = (await out).map((m) => m.value);
  return { values, events: r.events, calls };
}

describe('consecutive per-message steps run as one operator with the same results', () => {
  it('gives the same messages, order, drops, rejections and acks as step by step', async () => {
    const stepByStep = await runThrough((r) => (source) =>
      source.pipe(perMessage(r.ctx('a'), steps.a), perMessage(r.ctx('b'), steps.b), perMessage(r.ctx('c'), steps.c, { dropReason: 'filtered' })),
    );
    const after: string[] = [];
    const fused = await runThrough((r) => {
      const stage = (name: string, op: OperatorFunction<Msg, Msg>) => ({ ...perMessageStage(op)!, after: (m: Msg) => after.push(`${name}:${String(m.value)}`) });
      return fusePerMessage([
        stage('a', perMessage(r.ctx('a'), steps.a)),
        stage('b', perMessage(r.ctx('b'), steps.b)),
        stage('c', perMessage(r.ctx('c'), steps.c, { dropReason: 'filtered' })),
      ]);
    });
    expect(stepByStep.values).toEqual(['1!', '20 later!', 'fan-1!', 'fan-2!', '3!', '40!', '5!']);
    expect(fused.values).toEqual(stepByStep.values);
    expect(fused.events).toEqual(stepByStep.events);
    // The same calls in the same order: a step waiting for a promise holds back only its own queue
    // (a goes on with the next messages while b waits), as with separate operators.
    expect(fused.calls).toEqual(stepByStep.calls);
    expect(fused.calls.indexOf('a:fan')).toBeLessThan(fused.calls.indexOf('c:20'));
    expect(fused.events.filter((e) => e.includes('reject'))).toEqual(['c:reject:bad:no good']);
    // Each stage's `after` sees every message it passes on.
    expect(after.filter((e) => e.startsWith('c:'))).toEqual(['c:1!', 'c:20 later!', 'c:fan-1!', 'c:fan-2!', 'c:3!', 'c:40!', 'c:5!']);
    expect(after.filter((e) => e.startsWith('a:'))).toHaveLength(9); // 8 inputs pass a (one as two children), 'none' fans out to nothing
  });
});
