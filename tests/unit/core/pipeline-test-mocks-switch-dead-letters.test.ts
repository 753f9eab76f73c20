/**
 * core/pipeline-test.ts in process, on tests/fixtures/pipeline-tests/routing.yaml: mocks replace
 * steps (file-wide and per case), a switch output tells which case took a message, `fields`
 * evaluates the real output's expressions, dead letters carry reason, code and step, dropped
 * messages are counted, a step that needs an external system stops the case and is named.
 */
import { describe, expect, it } from 'vitest';
import { runPipelineTests } from '../../../core/pipeline-test.ts';
import { registry } from '../../../operators/index.ts';

const ROOT = new URL('../../..', import.meta.url).pathname;
const FIXTURES = 'tests/fixtures/pipeline-tests';

async function run(args: string[]) {
  let out = '';
  const code = await runPipelineTests(args, { registry, rootDir: ROOT, timeoutMs: 30_000, env: {}, write: (t) => (out += t) });
  return { code, out };
}

describe('runner test on a fixture pipeline', () => {
  it('passes every case of a file that describes the pipeline right', async () => {
    const { code, out } = await run([`${FIXTURES}/routing.test.yaml`]);
    expect(out.split('\n').filter((l) => /^ {2}(ok|FAIL)/.test(l))).toEqual([
      '  ok    a warm reading reaches the normal output, converted and keyed',
      '  ok    a hot reading reaches the hot kafka output with its topic',
      '  ok    the environment of a case reaches the pipeline',
      '  ok    a reading with keep false is dropped on purpose',
      '  ok    an invalid reading is dead-lettered with the reason',
      '  ok    a hot reading without a room has no topic, so the hot output rejects it',
      '  ok    a case can mock a step differently, here a missing row',
    ]);
    expect(code).toBe(0);
  });

  it('runs only the cases whose name contains --name', async () => {
    let out = '';
    const code = await runPipelineTests([`${FIXTURES}/routing.test.yaml`], { registry, rootDir: ROOT, timeoutMs: 30_000, env: {}, name: 'dropped', write: (t) => (out += t) });
    expect(out.split('\n').filter((l) => /^ {2}(ok|FAIL)/.test(l))).toEqual(['  ok    a reading with keep false is dropped on purpose']);
    expect(code).toBe(0);
  });

  it('stops a case whose step needs an external system before any message is fed, and names the step to mock', async () => {
    const { code, out } = await run([`${FIXTURES}/unmocked.test.yaml`]);
    expect(out).toContain('  FAIL  the database step is not mocked');
    expect(out).toContain('lookup is not ready: connecting to PostgreSQL at 127.0.0.1:1/none');
    expect(out).toContain("replace it under `mocks:`, e.g. lookup: { mock: { value: '...' } }");
    expect(code).toBe(1);
  });

  it('says what differs: unexpected and missing messages, drops, with the input each came from', async () => {
    const { code, out } = await run([`${FIXTURES}/failing.test.yaml`]);
    const lines = out.split('\n');
    const at = lines.indexOf('  FAIL  this one misses a drop and expects a dead letter that does not come');
    expect(lines.slice(at + 1, at + 7).map((l) => l.replace(/, headers .*/, ''))).toEqual([
      `        ${FIXTURES}/failing.test.yaml:18:5`,
      '        output: expected 0 message(s), got 1',
      '          + output[0] not expected: from input[1], at normal: value {"sensor_id":"s4","timestamp":1,"temperature":20,"fahrenheit":68}, key "s4"',
      '        dead_letter: expected 1 message(s), got 0',
      `          - dead_letter[0] missing (${FIXTURES}/failing.test.yaml:23:9)`,
      '        dropped: expected 0 message(s), got 1 (input [0] reached no output)',
    ]);
    expect(code).toBe(1);
  });
});
