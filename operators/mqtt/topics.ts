/**
 * MQTT topic rules, pure: topic filters (subscriptions, with `+`, `#` and `$share/<group>/`),
 * topic names (what a message is published to), matching a name against a filter, and topic
 * patterns such as `heatpump/{device_id}/telemetry` that turn topic segments into metadata.
 */

/** Why `filter` is not a valid subscription, or null when it is. */
export function topicFilterProblem(filter: string): string | null {
  if (filter === '') return 'a topic filter must not be empty';
  if (filter.includes('\u0000')) return 'a topic filter must not contain the NUL character';
  if (Buffer.byteLength(filter) > 65_535) return 'a topic filter must be at most 65535 bytes';
  const shared = parseShared(filter);
  if (shared === 'invalid') return `a shared subscription is written $share/<group>/<filter>, with a group name without "/", "+" or "#"`;
  const inner = shared ? shared.filter : filter;
  if (inner === '') return 'the filter of a shared subscription must not be empty';
  const levels = inner.split('/');
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i]!;
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) return '"#" must be a whole level and the last one (e.g. heatpump/#)';
    if (level.includes('+') && level !== '+') return '"+" must be a whole level (e.g. heatpump/+/telemetry)';
  }
  return null;
}

/** `$share/<group>/<filter>` split in its parts; null for a plain filter; 'invalid' for a malformed one. */
export function parseShared(filter: string): { group: string; filter: string } | null | 'invalid' {
  if (!filter.startsWith('$share/')) return null;
  const rest = filter.slice('$share/'.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return 'invalid';
  const group = rest.slice(0, slash);
  if (/[+#]/.test(group)) return 'invalid';
  return { group, filter: rest.slice(slash + 1) };
}

/** The filter messages are matched against: without a `$share/<group>/` prefix. */
export function matchingFilter(filter: string): string {
  const shared = parseShared(filter);
  return shared && shared !== 'invalid' ? shared.filter : filter;
}

/** Why `topic` cannot be published to, or null when it can. */
export function topicNameProblem(topic: string): string | null {
  if (topic === '') return 'the topic is empty';
  if (/[+#]/.test(topic)) return 'a topic to publish to must not contain the wildcards "+" or "#"';
  if (topic.includes('\u0000')) return 'a topic must not contain the NUL character';
  if (topic.startsWith('$')) return 'topics starting with "$" are reserved for the broker ($SYS, $share)';
  if (Buffer.byteLength(topic) > 65_535) return 'a topic must be at most 65535 bytes';
  return null;
}

/**
 * Whether a topic name matches a filter (MQTT rules: `+` one level, `#` this level and all below,
 * including the parent; filters starting with a wildcard do not match topics starting with `$`).
 */
export function topicMatches(filter: string, topic: string): boolean {
  const f = matchingFilter(filter).split('/');
  const t = topic.split('/');
  if (topic.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false;
  for (let i = 0; i < f.length; i++) {
    const level = f[i]!;
    if (level === '#') return true;
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return f.length === t.length;
}

export type PatternLevel = { kind: 'literal'; text: string } | { kind: 'named'; name: string } | { kind: 'any' } | { kind: 'rest' };

export interface TopicPattern {
  source: string;
  levels: PatternLevel[];
  /** The names of `{name}` levels, in order. */
  names: string[];
}

const NAME = /^[a-z_][a-z0-9_]*$/;
/** Metadata keys the input sets itself; a pattern name must not collide with them. */
const RESERVED_NAMES = new Set(['segments']);

/**
 * Parse a topic pattern: levels separated by `/`, each literal text, `{name}` (one level, kept as
 * metadata `mqtt_topic_<name>`), `+` (one level, not kept) or a final `#` (any number of levels).
 * Throws an Error saying what is wrong.
 */
export function parseTopicPattern(source: string): TopicPattern {
  if (source === '') throw new Error('the topic pattern is empty');
  const parts = source.split('/');
  const levels: PatternLevel[] = [];
  const names: string[] = [];
  parts.forEach((part, i) => {
    const named = /^\{(.*)\}$/.exec(part);
    if (named) {
      const name = named[1]!;
      if (!NAME.test(name)) throw new Error(`"{${name}}": a level name must be lowercase letters, digits and _, starting with a letter or _`);
      if (RESERVED_NAMES.has(name)) throw new Error(`"{${name}}": the name ${name} is reserved (mqtt_topic_${name} is set by the input)`);
      if (names.includes(name)) throw new Error(`"{${name}}" appears twice`);
      names.push(name);
      levels.push({ kind: 'named', name });
    } else if (part === '+') levels.push({ kind: 'any' });
    else if (part === '#') {
      if (i !== parts.length - 1) throw new Error('"#" must be the last level');
      levels.push({ kind: 'rest' });
    } else {
      if (/[{}+#]/.test(part)) throw new Error(`level "${part}": a level is literal text, {name}, + or a final #`);
      levels.push({ kind: 'literal', text: part });
    }
  });
  return { source, levels, names };
}

/** The named levels of `topic`, or null when the topic does not match the pattern. */
export function matchTopicPattern(pattern: TopicPattern, topic: string): Record<string, string> | null {
  const t = topic.split('/');
  const out: Record<string, string> = {};
  for (let i = 0; i < pattern.levels.length; i++) {
    const level = pattern.levels[i]!;
    if (level.kind === 'rest') return out;
    if (i >= t.length) return null;
    const seg = t[i]!;
    if (level.kind === 'literal' && level.text !== seg) return null;
    if (level.kind === 'named') {
      if (seg === '') return null; // an empty level is no value for a name
      out[level.name] = seg;
    }
  }
  return pattern.levels.length === t.length ? out : null;
}

/** The metadata a topic gives: `mqtt_topic_segments` and one `mqtt_topic_<name>` per named level. */
export function topicMetadata(topic: string, pattern: TopicPattern | null): { meta: Record<string, unknown> } | { error: string } {
  const meta: Record<string, unknown> = { mqtt_topic_segments: topic.split('/') };
  if (!pattern) return { meta };
  const named = matchTopicPattern(pattern, topic);
  if (!named) return { error: `topic ${JSON.stringify(topic)} does not match topic_pattern ${JSON.stringify(pattern.source)}` };
  for (const [name, value] of Object.entries(named)) meta[`mqtt_topic_${name}`] = value;
  return { meta };
}
