/**
 * Route paths of http_server ({name} segments, static segments, what is refused) and what lint
 * reports for http_server, http_response and the postgres processor, with positions.
 */
import { describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../../../core/config.ts';
import { registry } from '../../../../operators/index.ts';
import { parseRoutePath } from '../../../../operators/http/routes.ts';
import { placeholders } from '../../../../operators/postgres/query-processor.ts';

const ROOT = new URL('../../../..', import.meta.url).pathname;
const lint = (text: string) => {
  const res = loadPipeline('p.yaml', { registry, rootDir: ROOT, text, env: {} });
  return res.ok ? [] : res.problems.map(formatProblem);
};

describe('http_server route paths', () => {
  it('turns {name} segments into parameters and tells a matching path by regex', () => {
    const r = parseRoutePath('/api/v1/heatpump/settings/{device_id}');
    expect(r.params).toEqual(['device_id']);
    expect(r.fastifyPath).toBe('/api/v1/heatpump/settings/:device_id');
    expect(r.regex.test('/api/v1/heatpump/settings/dev-1')).toBe(true);
    expect(r.regex.test('/api/v1/heatpump/settings/dev-1/x')).toBe(false);
    expect(parseRoutePath('/').fastifyPath).toBe('/');
    expect(parseRoutePath('/a.b/{x}/c').regex.test('/a.b/1/c')).toBe(true);
    expect(parseRoutePath('/a.b/{x}/c').regex.test('/aXb/1/c')).toBe(false);
  });

  it.each([
    ['api/v1', /must start with \//],
    ['/a?x=1', /query parameters arrive as metadata/],
    ['/a/{id}/{id}', /names parameter \{id\} twice/],
    ['/a/{http_method}', /overwrite the input's own metadata/],
    ['/a/x{id}', /a parameter is a whole segment/],
    ['/a/{Id}', /a parameter is a whole segment/],
    ['/a//b', /is empty or has characters/],
    ['/a/:id', /is empty or has characters/],
    ['/a/*', /is empty or has characters/],
  ])('refuses %s', (path, why) => {
    expect(() => parseRoutePath(path)).toThrow(why);
  });
});

const pipeline = (input: string, processors = '', output = 'http_response: {}') =>
  `name: p\ninput:\n  http_server:\n${input.replace(/^/gm, '    ')}\n${processors ? `pipeline:\n${processors.replace(/^/gm, '  ')}\n` : ''}output:\n  ${output}\ndead_letter:\n  http_response: {}\n`;

describe('lint', () => {
  it('reports cors origins that are not scheme://host[:port] or *', () => {
    const problems = lint(pipeline(['routes:', '  - { method: GET, path: "/a" }', 'cors:', '  allowed_origins: ["http://localhost:8090, localhost:8090", "*", "http://x/path"]'].join('\n')));
    expect(problems).toEqual([
      expect.stringMatching(/^p\.yaml:7:25: "localhost:8090" is not an origin/),
      expect.stringMatching(/^p\.yaml:7:71: "http:\/\/x\/path" is not an origin/),
    ]);
  });

  it('reports bad paths, duplicate routes and names, and a missing OpenAPI file, with their positions', () => {
    const problems = lint(
      pipeline(
        [
          'routes:',
          '  - { method: GET, path: "/a/{id}", name: one }',
          '  - { method: GET, path: "/a/{other}", name: one }',
          '  - { method: GET, path: "a" }',
          'openapi: { file: schemas/nothing.openapi.json }',
        ].join('\n'),
      ),
    );
    expect(problems).toEqual([
      'p.yaml:6:9: GET /a/{other} is the same route as routes.0',
      'p.yaml:6:50: route name one is also used by routes.0',
      'p.yaml:7:30: path "a" must start with /',
      'p.yaml:8:22: OpenAPI document schemas/nothing.openapi.json does not exist',
    ]);
  });

  it('postgres processor: one arg per placeholder, no gaps, unique result names', () => {
    const problems = lint(
      pipeline(
        'routes: [{ method: GET, path: /x }]',
        [
          '- postgres:',
          '    url: postgres://localhost/db',
          '    statements:',
          '      - { sql: "SELECT $1, $2", args: [a] }',
          '      - { sql: "SELECT $2", args: [a, b], result: r }',
          "      - { sql: \"SELECT '$1', $$ $2 $$ -- $3\", result: r }",
        ].join('\n'),
      ),
    );
    expect(problems).toEqual([
      'p.yaml:9:41: the statement uses placeholders up to $2 but has 1 args; give one arg per placeholder',
      'p.yaml:10:18: placeholder $1 is not used; PostgreSQL cannot tell its type',
      'p.yaml:11:57: result r is also stored by statements.1',
    ]);
  });

  it('finds placeholders outside strings, quoted names, comments and dollar quotes', () => {
    expect(placeholders('SELECT $1, $2::jsonb, $1 FROM t WHERE a = $10')).toEqual([1, 2, 10]);
    expect(placeholders(`SELECT '$1', "$2", $3 /* $4 */ -- $5\n, $tag$ $6 $tag$, $7`)).toEqual([3, 7]);
  });
});
