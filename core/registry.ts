/** The explicit operator registry: operators/index.ts lists every operator; nothing registers itself. */
import type { AnyOperator, OperatorKind } from './operator.ts';

export class OperatorRegistry {
  private readonly byKind = new Map<OperatorKind, Map<string, AnyOperator>>();

  constructor(readonly operators: readonly AnyOperator[]) {
    for (const op of operators) {
      const { kind, name } = op.spec;
      if (!this.byKind.has(kind)) this.byKind.set(kind, new Map());
      const m = this.byKind.get(kind)!;
      if (m.has(name)) throw new Error(`operator registry: two ${kind}s are named ${name}`);
      m.set(name, op);
    }
  }

  get(kind: OperatorKind, name: string): AnyOperator | undefined {
    return this.byKind.get(kind)?.get(name);
  }

  names(kind: OperatorKind): string[] {
    return [...(this.byKind.get(kind)?.keys() ?? [])].sort();
  }

  /** Kinds under which a name exists (to say "map is a processor, not an output"). */
  kindsOf(name: string): OperatorKind[] {
    return (['input', 'processor', 'output'] as const).filter((k) => this.byKind.get(k)?.has(name));
  }
}

/** Closest candidate by edit distance, if close enough to be a plausible typo. */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = levenshtein(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

export function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}
