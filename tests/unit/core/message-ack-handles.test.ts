import { describe, expect, it } from 'vitest';
import { ackHandle, type AckOutcome } from '../../../core/message.ts';

function recorded() {
  const outcomes: AckOutcome[] = [];
  return { outcomes, handle: ackHandle((o) => outcomes.push(o)) };
}

describe('ackHandle', () => {
  it('settles once: the first outcome wins, later calls are ignored', () => {
    const { outcomes, handle } = recorded();
    expect(handle.settled).toBe(false);
    handle.done();
    handle.fail(new Error('late'));
    handle.done();
    expect(outcomes).toEqual([{ ok: true }]);
    expect(handle.settled).toBe(true);
  });

  it('a failure is final too, and carries the error', () => {
    const { outcomes, handle } = recorded();
    const err = new Error('broker down');
    handle.fail(err);
    handle.done();
    expect(outcomes).toEqual([{ ok: false, error: err }]);
  });
});

describe('ackHandle.split (fan-out)', () => {
  it('makes the parent done only after every child is done', () => {
    const { outcomes, handle } = recorded();
    const [a, b, c] = handle.split(3);
    a!.done();
    b!.done();
    expect(outcomes).toEqual([]);
    c!.done();
    expect(outcomes).toEqual([{ ok: true }]);
  });

  it('counts a child that says done twice only once', () => {
    const { outcomes, handle } = recorded();
    const [a] = handle.split(2);
    a!.done();
    a!.done();
    expect(outcomes).toEqual([]);
    expect(handle.settled).toBe(false);
  });

  it('fails the parent as soon as one child fails, whatever the others do later', () => {
    const { outcomes, handle } = recorded();
    const [a, b, c] = handle.split(3);
    const err = new Error('write rejected');
    a!.done();
    b!.fail(err);
    expect(outcomes).toEqual([{ ok: false, error: err }]);
    c!.done();
    b!.done();
    expect(outcomes).toHaveLength(1);
  });

  it('split(0) has no children and the parent is done at once', () => {
    const { outcomes, handle } = recorded();
    expect(handle.split(0)).toEqual([]);
    expect(outcomes).toEqual([{ ok: true }]);
  });

  it('nests: a grandchild failing fails the root', () => {
    const { outcomes, handle } = recorded();
    const [a, b] = handle.split(2);
    const [a1, a2] = a!.split(2);
    b!.done();
    a1!.done();
    expect(outcomes).toEqual([]);
    a2!.fail('nope');
    expect(outcomes).toEqual([{ ok: false, error: 'nope' }]);
  });
});
