import { describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../../core/config.ts';
import { registry } from '../../../operators/index.ts';

const ROOT = new URL('../../..', import.meta.url).pathname;

/** Every problem of a pipeline text, formatted as `runner lint` prints them. */
function lint(text: string, file = 'p.yaml'): string[] {
  const res = loadPipeline(file, { registry, rootDir: ROOT, text, env: {} });
  return res.ok ? [] : res.problems.map(formatProblem);
}

describe('lint: YAML syntax', () => {
  it('reports a tab used as indentation where it is', () => {
    const problems = lint('name: x\ninput:\n\tgenerate: {}\noutput:\n  drop: {}\n');
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^p\.yaml:3:1: .*[Tt]ab/);
  });

  it('reports a duplicated key at the second occurrence', () => {
    const problems = lint('name: x\ninput:\n  generate: {}\nname: y\noutput:\n  drop: {}\n');
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^p\.yaml:4:1: .*unique/);
  });

  it('reports an unclosed flow collection', () => {
    // The map opened on line 3 runs into line 4, where the parser notices.
    const problems = lint('name: x\ninput:\n  generate: {count: 1\noutput:\n  drop: {}\n');
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^p\.yaml:4:1: .*end with a \}/);
  });
});

describe('lint: operators', () => {
  it('reports an unknown operator with a did-you-mean, at its key', () => {
    expect(lint('name: x\ninput:\n  generat:\n    count: 1\noutput:\n  drop: {}\n')).toEqual(['p.yaml:3:3: unknown input "generat"; did you mean "generate"?']);
    expect(lint("name: x\ninput:\n  generate: {}\npipeline:\n  - mapp:\n      expression: a\noutput:\n  drop: {}\ndead_letter:\n  drop: {}\n")).toEqual([
      'p.yaml:5:5: unknown processor "mapp"; did you mean "map"?',
    ]);
  });

  it('lists the known operators when nothing is close', () => {
    expect(lint('name: x\ninput:\n  zzzzzzzzzz: {}\noutput:\n  drop: {}\n')).toEqual([`p.yaml:3:3: unknown input "zzzzzzzzzz"; known: ${registry.names('input').join(', ')}`]);
  });

  it('says so when a processor is used as an output', () => {
    expect(lint("name: x\ninput:\n  generate: {}\noutput:\n  map:\n    expression: 'a'\n")).toEqual(['p.yaml:5:3: map is a processor, not an output']);
  });

  it('says so when an output is used as a processor', () => {
    expect(lint('name: x\ninput:\n  generate: {}\npipeline:\n  - stdout: {}\noutput:\n  drop: {}\n')).toEqual(['p.yaml:5:5: stdout is an output, not a processor']);
  });

  it('reports two operators in one slot', () => {
    expect(lint('name: x\ninput:\n  generate: {}\noutput:\n  drop: {}\n  stdout: {}\n')).toEqual(['p.yaml:5:3: expected exactly one output, found drop, stdout']);
  });
});

describe('lint: operator config against its schema', () => {
  it('reports a wrong type at the value', () => {
    expect(lint('name: x\ninput:\n  generate:\n    count: many\noutput:\n  drop: {}\n')).toEqual(['p.yaml:4:12: must be integer, got string "many"']);
  });

  it('reports an unknown field at its key, with a did-you-mean', () => {
    expect(lint('name: x\ninput:\n  generate:\n    cont: 3\noutput:\n  drop: {}\n')).toEqual(['p.yaml:4:5: unknown field "cont"; did you mean "count"?']);
  });

  it('reports an unknown top-level field with a did-you-mean', () => {
    expect(lint('name: x\ninput:\n  generate: {}\noutput:\n  drop: {}\nshutdown_timout: 5s\n')).toEqual(['p.yaml:6:1: unknown field "shutdown_timout"; did you mean "shutdown_timeout"?']);
  });

  it('reports a missing required field at the object that lacks it', () => {
    expect(lint('name: x\ninput:\n  generate: {}\npipeline:\n  - validate: {}\noutput:\n  drop: {}\ndead_letter:\n  drop: {}\n')).toEqual(['p.yaml:5:15: missing required field "schema"']);
    expect(lint('name: x\ninput:\n  generate: {}\n')).toEqual(['p.yaml:1:1: missing required field "output"']);
  });

  it('reports a value outside an enum with the allowed values', () => {
    expect(lint('name: x\ninput:\n  generate: {}\noutput:\n  stdout:\n    format: xml\n')).toEqual(['p.yaml:6:13: must be one of "value", "envelope", got string "xml"']);
    expect(lint('name: x\ninput:\n  generate: {}\npipeline:\n  - log:\n      level: loud\noutput:\n  drop: {}\n')).toEqual([
      'p.yaml:6:14: must be one of "trace", "debug", "info", "warn", "error", got string "loud"',
    ]);
  });

  it('reports a bad duration', () => {
    expect(lint('name: x\ninput:\n  generate:\n    interval: 5 seconds\noutput:\n  drop: {}\n')).toEqual([
      'p.yaml:4:15: must be a duration such as 500ms, 5s, 2m or a number of milliseconds, got string "5 seconds"',
    ]);
    expect(lint('name: x\ninput:\n  generate: {}\noutput:\n  drop: {}\nshutdown_timeout: soon\n')).toEqual([
      'p.yaml:6:19: must be a duration such as 500ms, 5s, 2m or a number of milliseconds, got string "soon"',
    ]);
  });

  it('reports a bad pipeline name', () => {
    expect(lint('name: My Pipeline\ninput:\n  generate: {}\noutput:\n  drop: {}\n')).toEqual(['p.yaml:1:7: must be text matching ^[a-z0-9][a-z0-9_-]*$, got string "My Pipeline"']);
  });
});

describe('lint: expressions compile at load, errors point into the string', () => {
  const withMap = (expr: string) => `name: x\ninput:\n  generate: {}\npipeline:\n  - map:\n      expression: ${expr}\noutput:\n  drop: {}\ndead_letter:\n  drop: {}\n`;

  it('in a quoted string', () => {
    // `      expression: '{"a": $.b +}'`: the quote is at col 19, the `}` at col 31.
    expect(lint(withMap(`'{"a": $.b +}'`))).toEqual(['p.yaml:6:31: invalid expression: The symbol "}" cannot be used as a unary operator']);
  });

  it('in a plain string', () => {
    // `      expression: a +`: `a` at col 19, the dangling `+` at col 21.
    expect(lint(withMap('a +'))).toEqual(['p.yaml:6:21: invalid expression: Unexpected end of expression']);
    expect(lint(withMap('(a'))).toEqual(['p.yaml:6:20: invalid expression: Expected ")" before end of expression']);
  });

  it('in a double-quoted string', () => {
    expect(lint(withMap('"$sum(a) +"'))).toEqual(['p.yaml:6:28: invalid expression: Unexpected end of expression']);
  });

  it('in a folded block scalar', () => {
    expect(lint(withMap('>\n        $sum(a)\n        + ]'))).toEqual(['p.yaml:8:11: invalid expression: The symbol "]" cannot be used as a unary operator']);
  });

  it('in a block scalar, on the right line and column', () => {
    const text = `name: x
input:
  generate: {}
pipeline:
  - map:
      expression: |
        {
          "a": $.b +
        }
output:
  drop: {}
dead_letter:
  drop: {}
`;
    expect(lint(text)).toEqual(['p.yaml:9:9: invalid expression: The symbol "}" cannot be used as a unary operator']);
  });

  it('in a template field, pointing into the ${! } part', () => {
    // `      message: 'device ${!  device_id + }'`: the quote is at col 16, the dangling `+` at col 39.
    expect(lint("name: x\ninput:\n  generate: {}\npipeline:\n  - log:\n      message: 'device ${!  device_id + }'\noutput:\n  drop: {}\n")).toEqual([
      'p.yaml:6:39: invalid expression: Unexpected end of expression',
    ]);
  });
});

describe('lint: cross-field rules', () => {
  it('reports a validate schema name that has no file in schemas/', () => {
    expect(lint('name: x\ninput:\n  generate: {}\npipeline:\n  - validate:\n      schema: heatpump-telemetri\noutput:\n  drop: {}\ndead_letter:\n  drop: {}\n')).toEqual([
      'p.yaml:6:15: schema "heatpump-telemetri" not found: expected the file schemas/heatpump-telemetri.schema.json',
    ]);
  });

  it('requires a dead_letter output for a step that can reject messages', () => {
    expect(lint('name: x\ninput:\n  generate: {}\npipeline:\n  - validate:\n      schema: heatpump-telemetry\noutput:\n  drop: {}\n')).toEqual([
      'p.yaml:5:5: validate can reject messages but the pipeline has no dead_letter output; add one, or set on_invalid: drop to drop them (logged and counted)',
    ]);
  });

  it('accepts the step without dead_letter when it says on_invalid: drop', () => {
    expect(lint('name: x\ninput:\n  generate: {}\npipeline:\n  - validate:\n      schema: heatpump-telemetry\n      on_invalid: drop\noutput:\n  drop: {}\n')).toEqual([]);
  });

  it('reports a duplicate label at its second use', () => {
    const text = 'name: x\ninput:\n  label: source\n  generate: {}\npipeline:\n  - label: step\n    log: {}\n  - label: step\n    log: {}\noutput:\n  drop: {}\n';
    expect(lint(text)).toEqual(['p.yaml:8:12: label "step" is used 2 times; labels must be unique in a pipeline']);
  });

  it('reports a badly formed label', () => {
    expect(lint('name: x\ninput:\n  label: My Source\n  generate: {}\noutput:\n  drop: {}\n')).toEqual(['p.yaml:3:10: label must be lowercase letters, digits, - and _']);
  });
});

describe('lint reports every problem at once', () => {
  it('lists all problems of a file, in file order, not only the first', () => {
    const text = `name: Bad Name
input:
  generate:
    cont: 3
    interval: 5 seconds
pipeline:
  - validate:
      schema: heatpump-telemetry
  - mapp:
      expression: a
  - map:
      expression: '{"a": $.b +}'
output:
  stdout:
    format: xml
`;
    expect(lint(text)).toEqual([
      'p.yaml:1:7: must be text matching ^[a-z0-9][a-z0-9_-]*$, got string "Bad Name"',
      'p.yaml:4:5: unknown field "cont"; did you mean "count"?',
      'p.yaml:5:15: must be a duration such as 500ms, 5s, 2m or a number of milliseconds, got string "5 seconds"',
      'p.yaml:7:5: validate can reject messages but the pipeline has no dead_letter output; add one, or set on_invalid: drop to drop them (logged and counted)',
      'p.yaml:9:5: unknown processor "mapp"; did you mean "map"?',
      'p.yaml:11:5: map can reject messages but the pipeline has no dead_letter output; add one, or set on_invalid: drop to drop them (logged and counted)',
      'p.yaml:12:31: invalid expression: The symbol "}" cannot be used as a unary operator',
      'p.yaml:15:13: must be one of "value", "envelope", got string "xml"',
    ]);
  });
});

describe('lint never echoes a secret', () => {
  it('reports a wrongly typed password without its value, and only the deeper error of a union', () => {
    const text = 'name: s\ninput:\n  kafka:\n    brokers: [x:1]\n    topics: [t]\n    consumer_group: g\n    sasl: { mechanism: plain, username: u, password: 123456789012 }\noutput: { drop: {} }\n';
    const res = loadPipeline('s.yaml', { registry, rootDir: ROOT, text, env: {} });
    const lines = res.problems.map(formatProblem);
    expect(lines).toEqual(['s.yaml:7:54: must be string, got a secret (value not shown)']);
    expect(lines.join('\n')).not.toContain('123456789012');
  });
});
