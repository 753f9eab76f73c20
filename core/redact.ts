/** Redaction of secrets in printed config, errors and logs. */
export const REDACTED = '[REDACTED]';

/** Passwords inside URLs (`scheme://user:password@host`) and `password=` pairs. */
export function redactString(s: string): string {
  return s
    .replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@\s]*:)([^@\s]+)@/gi, `$1${REDACTED}@`)
    .replace(/\b(password|passwd|pwd|secret|token)=([^&\s]+)/gi, `$1=${REDACTED}`);
}

const SECRET_KEY = /(password|passwd|secret|token|api_key|apikey|credentials)$/i;

/**
 * A copy of a config value with secrets replaced: fields marked secret by the schema (paths given),
 * fields whose name says secret, and passwords inside URLs.
 */
export function redactValue(value: unknown, secretPaths: Set<string> = new Set(), path: string[] = []): unknown {
  if (typeof value === 'string') return secretPaths.has(path.join('.')) ? REDACTED : redactString(value);
  if (Array.isArray(value)) return value.map((v, i) => redactValue(v, secretPaths, [...path, String(i)]));
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      out[k] = SECRET_KEY.test(k) && v != null && typeof v !== 'object' ? REDACTED : redactValue(v, secretPaths, [...path, k]);
    }
    return out;
  }
  return value;
}
