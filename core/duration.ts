/** Durations in config: a number of milliseconds or a string such as `250ms`, `5s`, `2m`, `1h`. */
const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
export const DURATION_PATTERN = '^\\d+(\\.\\d+)?(ms|s|m|h|d)$';

export function parseDuration(v: string | number): number {
  if (typeof v === 'number') return v;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(v.trim());
  if (!m) throw new Error(`invalid duration ${JSON.stringify(v)}: use a number of ms or e.g. 500ms, 5s, 2m, 1h`);
  return Math.round(Number(m[1]) * UNITS[m[2]!]!);
}
