/**
 * The mqtt operators' configs: every field documented with a default, the examples load, lint
 * reports what the schema cannot see, and mqtt.js errors become RunnerErrors that say who refused
 * what and whether a retry helps. (Also covered by the registry-wide tests once the operators are
 * listed in operators/index.ts; these run either way.)
 */
import { ErrorWithReasonCode } from 'mqtt';
import { describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../../../core/config.ts';
import { OperatorRegistry } from '../../../../core/registry.ts';
import { operators } from '../../../../operators/index.ts';
import { connectionError, defaultClientId, describeBrokers } from '../../../../operators/mqtt/client.ts';
import { mqttInput } from '../../../../operators/mqtt/input.ts';
import { mqttOutput, publishError } from '../../../../operators/mqtt/output.ts';

const ROOT = new URL('../../../..', import.meta.url).pathname;
const registry = new OperatorRegistry([...operators.filter((op) => op !== mqttInput && op !== mqttOutput), mqttInput, mqttOutput]);

function lint(text: string, env: Record<string, string> = {}): string[] {
  const res = loadPipeline('p.yaml', { registry, rootDir: ROOT, text, env });
  return res.ok ? [] : res.problems.map(formatProblem);
}

const indent = (text: string, n: number) =>
  text
    .split('\n')
    .map((l) => (l.trim() === '' ? l : ' '.repeat(n) + l))
    .join('\n');
const inputPipeline = (cfg: string) => `name: p\ninput:\n  mqtt:\n${indent(cfg, 4)}\noutput:\n  drop: {}\ndead_letter:\n  drop: {}\n`;
const outputPipeline = (cfg: string) => `name: p\ninput:\n  generate: {count: 1}\noutput:\n  mqtt:\n${indent(cfg, 4)}\ndead_letter:\n  drop: {}\n`;

/** Fields without a description, optional fields without a default, open objects. */
function findings(schema: any, path = ''): string[] {
  const out: string[] = [];
  if (schema?.type === 'object') {
    if (schema.additionalProperties !== false) out.push(`${path || '(config)'}: open`);
    const required = new Set<string>(schema.required ?? []);
    for (const [k, sub] of Object.entries<any>(schema.properties ?? {})) {
      const p = path ? `${path}.${k}` : k;
      if (!sub.description) out.push(`${p}: no description`);
      if (!required.has(k) && sub.default === undefined) out.push(`${p}: no default`);
      out.push(...findings(sub, p));
    }
  }
  if (schema?.type === 'array') out.push(...findings(schema.items, `${path}[]`));
  for (const b of [...(schema?.anyOf ?? []), ...(schema?.oneOf ?? [])]) out.push(...findings(b, path));
  return out;
}

describe('mqtt operator specs', () => {
  it.each([mqttInput, mqttOutput])('$spec.kind mqtt: closed config, every field described, optional fields with defaults', (op) => {
    expect(findings(op.spec.config)).toEqual([]);
    expect(op.spec.rejects).toBe(true);
    expect(op.spec.delivery).toMatch(/[Dd]uplicates happen when/);
  });

  it.each(mqttInput.spec.examples.map((e) => [e.title, e] as const))('input example "%s" loads', (_t, ex) => {
    expect(lint(inputPipeline(ex.config))).toEqual([]);
  });

  it.each(mqttOutput.spec.examples.map((e) => [e.title, e] as const))('output example "%s" loads', (_t, ex) => {
    expect(lint(outputPipeline(ex.config))).toEqual([]);
  });
});

describe('mqtt lint', () => {
  it('reports a bad topic filter, a bad topic_pattern and a credential in a URL, each at its line', () => {
    const problems = lint(
      inputPipeline('urls: ["mqtt://user:secret@127.0.0.1:1883"]\ntopics: ["heatpump/#/telemetry", "ok/+"]\ntopic_pattern: "heatpump/{Device}/telemetry"'),
    );
    expect(problems).toEqual([
      expect.stringMatching(/^p\.yaml:4:12: put credentials in username and password/),
      expect.stringMatching(/^p\.yaml:5:14: "heatpump\/#\/telemetry": "#" must be a whole level and the last one/),
      expect.stringMatching(/^p\.yaml:6:20: "\{Device\}": a level name must be lowercase/),
    ]);
    expect(problems.join('\n')).not.toContain('secret');
  });

  it('reports tls settings without an mqtts:// URL, and an unknown scheme', () => {
    expect(lint(inputPipeline('urls: ["http://127.0.0.1:1883"]\ntopics: [a]\ntls: {ca: /tmp/ca.pem}'))).toEqual([
      expect.stringMatching(/unsupported scheme http; use mqtt, mqtts, ws or wss/),
      expect.stringMatching(/tls settings apply to mqtts:\/\/ and wss:\/\/ URLs/),
    ]);
  });

  it('reports a literal output topic that cannot be published to; a template is checked per message', () => {
    expect(lint(outputPipeline('urls: ["mqtt://127.0.0.1:1883"]\ntopic: heatpump/+/command'))).toEqual([expect.stringMatching(/p\.yaml:7:12: .*wildcards/)]);
    expect(lint(outputPipeline('urls: ["mqtt://127.0.0.1:1883"]\ntopic: heatpump/${! device_id }/command'))).toEqual([]);
  });

  it('reports a typo in a field name (strict config)', () => {
    expect(lint(inputPipeline('urls: ["mqtt://127.0.0.1:1883"]\ntopics: [a]\nclean_sesion: true'))).toEqual([expect.stringMatching(/p\.yaml:6:5: .*clean_sesion/)]);
  });
});

describe('mqtt errors', () => {
  const where = { broker: 'mqtt://127.0.0.1:1883', clientId: 'runner-p-input.mqtt', username: 'bridge' };

  it.each([
    [4, 'Connection refused: Bad username or password'],
    [5, 'Connection refused: Not authorized'],
    [134, 'Connection refused: Bad User Name or Password'],
    [135, 'Connection refused: Not authorized'],
  ])('a CONNACK refusal %i is AUTH_FAILED naming the broker, the user and what to check', (code, text) => {
    const e = connectionError(new ErrorWithReasonCode(text, code), where);
    expect(e.code).toBe('AUTH_FAILED');
    expect(e.retryable).toBe(true);
    expect(e.message).toContain('mqtt://127.0.0.1:1883');
    expect(e.message).toContain('user "bridge"');
    expect(e.message).toMatch(/check username and password/);
  });

  it('a refused connection is CONNECTION_FAILED, retryable', () => {
    const err = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    const e = connectionError(err, where);
    expect([e.code, e.retryable]).toEqual(['CONNECTION_FAILED', true]);
    expect(e.message).toContain('mqtt://127.0.0.1:1883');
  });

  it('PUBACK reason codes: invalid topic / too large / bad payload format are rejected, not authorised retries, others retry', () => {
    const code = (rc: number) => publishError(new ErrorWithReasonCode('Publish error', rc), 't', 'mqtt://b:1883');
    for (const rc of [0x90, 0x95, 0x99]) expect([code(rc).code, code(rc).retryable]).toEqual(['WRITE_REJECTED', false]);
    expect([code(0x87).code, code(0x87).retryable]).toEqual(['AUTH_FAILED', true]);
    for (const rc of [0x80, 0x83, 0x97]) expect([code(rc).code, code(rc).retryable]).toEqual(['WRITE_FAILED', true]);
    expect([publishError(new Error('client disconnecting'), 't', 'b').retryable]).toEqual([true]);
  });

  it('the default client id is stable for a pipeline and component, and broker descriptions never carry credentials', () => {
    expect(defaultClientId('mqtt-bridge', 'input.mqtt')).toBe('runner-mqtt-bridge-input.mqtt');
    expect(defaultClientId('a b', 'x/y')).toBe('runner-a-b-x-y');
    expect(describeBrokers({ urls: ['mqtt://u:p@h:1883', 'mqtts://h2:8883'] })).toBe('mqtt://h:1883,mqtts://h2:8883');
  });
});

describe('mqtt lint: sessions', () => {
  it('reports a persistent MQTT 5 session that expires at once', () => {
    expect(lint(inputPipeline('urls: ["mqtt://127.0.0.1:1883"]\ntopics: [a]\nsession_expiry: 0'))).toEqual([expect.stringMatching(/p\.yaml:6:21: with session_expiry 0 the broker ends the session/)]);
    expect(lint(inputPipeline('urls: ["mqtt://127.0.0.1:1883"]\ntopics: [a]\nsession_expiry: 0\nclean_session: true'))).toEqual([]);
  });
});
