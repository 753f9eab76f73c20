/**
 * Route paths of the `http_server` input: `/api/v1/items/{id}`, each `{name}` one whole path
 * segment that becomes metadata `name`. Checked by lint, turned into fastify's `:name` syntax, and
 * into a regular expression to tell "wrong method" (405) from "no such path" (404).
 */

export const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;
export type Method = (typeof METHODS)[number];

/** Metadata the input sets itself; a path parameter may not take one of these names. */
export const RESERVED_META = ['http_method', 'http_path', 'http_route', 'http_route_name', 'http_query', 'http_request_id', 'http_remote_address', 'http_content_type', 'http_headers'];

const PARAM = /^\{([a-z_][a-z0-9_]*)\}$/;
const STATIC_SEGMENT = /^[A-Za-z0-9._~!$&'()*+,;=@-]+$/;

export interface ParsedRoute {
  /** The path as configured. */
  path: string;
  /** fastify syntax: `/items/:id`. */
  fastifyPath: string;
  params: string[];
  regex: RegExp;
}

/** Parse a configured path; throws an Error saying what is wrong. */
export function parseRoutePath(path: string): ParsedRoute {
  if (!path.startsWith('/')) throw new Error(`path ${JSON.stringify(path)} must start with /`);
  if (path.includes('?') || path.includes('#')) throw new Error(`path ${JSON.stringify(path)} must not contain ? or #; query parameters arrive as metadata http_query`);
  const segments = path === '/' ? [] : path.slice(1).split('/');
  const params: string[] = [];
  const fastify: string[] = [];
  const regex: string[] = [];
  segments.forEach((seg, i) => {
    const last = i === segments.length - 1;
    if (seg === '' && last) {
      fastify.push('');
      regex.push('');
      return;
    }
    const p = PARAM.exec(seg);
    if (p) {
      const name = p[1]!;
      if (params.includes(name)) throw new Error(`path ${JSON.stringify(path)} names parameter {${name}} twice`);
      if (RESERVED_META.includes(name)) throw new Error(`path parameter {${name}} would overwrite the input's own metadata ${name}; choose another name`);
      params.push(name);
      fastify.push(`:${name}`);
      regex.push('[^/]+');
    } else if (seg.includes('{') || seg.includes('}')) {
      throw new Error(`path ${JSON.stringify(path)}: segment ${JSON.stringify(seg)}: a parameter is a whole segment {name} (lower case letters, digits, _)`);
    } else if (!STATIC_SEGMENT.test(seg) || seg.startsWith(':') || seg.includes('*')) {
      throw new Error(`path ${JSON.stringify(path)}: segment ${JSON.stringify(seg)} is empty or has characters not allowed in a path (: * space ...)`);
    } else {
      fastify.push(seg);
      regex.push(seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
    }
  });
  return { path, fastifyPath: `/${fastify.join('/')}`, params, regex: new RegExp(`^/${regex.join('/')}$`) };
}
