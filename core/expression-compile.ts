/**
 * A direct evaluator for the JSONata expressions pipelines use most: field paths, literals,
 * comparisons, `&`, arithmetic, `and`/`or`, `? :`, object constructors and a few functions
 * ($exists, $lookup, $now, $error, $round, $fromMillis, $string, $number, $uuid, $boolean, $not).
 *
 * It compiles JSONata's own parse tree into plain JavaScript closures: no promise, no generator, no
 * environment frames per evaluation. Anything outside that subset compiles to null, and a value
 * the subset does not model exactly (an array, where JSONata maps and flattens; an object in a
 * comparison or concatenation; a number where a string is needed, ...) throws SLOW at run time.
 * Either way the caller evaluates the expression with JSONata itself, so results are JSONata's.
 * tests/unit/core/expression-fast-path-matches-jsonata.test.ts checks both give the same results.
 */
import { randomUUID } from 'node:crypto';

export const SLOW = Symbol('slow');

export interface Scope {
  value: unknown;
  meta: Record<string, unknown>;
  headers: Record<string, string>;
  key: unknown;
  extra: Record<string, unknown>;
}

type Fn = (s: Scope) => unknown;

interface Node {
  type: string;
  value?: unknown;
  [k: string]: unknown;
}

const PLAIN_KEYS = new Set(['type', 'value', 'position']);
const plain = (n: Node) => Object.keys(n).every((k) => PLAIN_KEYS.has(k));
const slow = (): never => {
  throw SLOW;
};

const isScalar = (v: unknown) => v === null || typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
const isPlainObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v) && !Buffer.isBuffer(v);

/** JSONata's boolean cast, for scalars (arrays and objects go to JSONata). */
function truthy(v: unknown): boolean {
  if (v === undefined || v === null) return false;
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string') return v.length > 0;
  if (typeof v === 'number') return v !== 0;
  if (typeof v === 'function') return false;
  return slow();
}

/** JSONata's $string for scalars. */
function toStr(v: unknown): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return slow(); // JSONata raises D3001
    return String(Number(v.toPrecision(15)));
  }
  if (typeof v === 'boolean' || v === null) return String(v);
  return slow();
}

/** JSONata's $round (half to even) with no precision argument. */
function roundHalfEven(v: number): number {
  let result = Math.round(v);
  const diff = result - v;
  if (Math.abs(diff) === 0.5 && Math.abs(result % 2) === 1) result = result - 1;
  return result;
}

const num = (v: unknown): number => (typeof v === 'number' ? v : slow());

/** The compiled expression, or null when it uses anything outside the subset. */
export function compileAst(ast: Node, extraNames: ReadonlySet<string> = new Set()): Fn | null {
  try {
    return compile(ast, extraNames);
  } catch (err) {
    if (err === UNSUPPORTED) return null;
    throw err;
  }
}

const UNSUPPORTED = Symbol('unsupported');
const unsupported = (): never => {
  throw UNSUPPORTED;
};

function variable(name: string, extraNames: ReadonlySet<string>): Fn {
  switch (name) {
    case '':
      return (s) => (Array.isArray(s.value) ? slow() : s.value);
    case 'meta':
      return (s) => s.meta;
    case 'headers':
      return (s) => s.headers;
    case 'key':
      return (s) => s.key;
    default:
      // Bindings an operator adds ($i of generate); anything else (a function used as a value) goes to JSONata.
      return (s) => (Object.prototype.hasOwnProperty.call(s.extra, name) ? s.extra[name] : slow());
  }
}

function compile(n: Node, extra: ReadonlySet<string>): Fn {
  switch (n.type) {
    case 'string':
    case 'number':
    case 'value': {
      if (!plain(n)) unsupported();
      const v = n.value;
      return () => v;
    }
    case 'variable':
      if (!plain(n)) unsupported();
      return variable(String(n.value), extra);
    case 'name': {
      if (!plain(n)) unsupported();
      const name = String(n.value);
      return (s) => step(s.value, name);
    }
    case 'path': {
      if (!plain({ ...n, steps: undefined } as Node) && Object.keys(n).some((k) => !['type', 'steps', 'position', 'keepSingletonArray'].includes(k))) unsupported();
      if (n.keepSingletonArray) unsupported();
      const steps = n.steps as Node[];
      if (!steps.length || steps.some((st) => !plain(st))) unsupported();
      const first = steps[0]!;
      let head: Fn;
      let rest: Node[];
      if (first.type === 'variable') {
        head = variable(String(first.value), extra);
        rest = steps.slice(1);
      } else if (first.type === 'name') {
        head = (s) => (Array.isArray(s.value) ? slow() : s.value);
        rest = steps;
      } else return unsupported();
      if (rest.some((st) => st.type !== 'name')) unsupported();
      const names = rest.map((st) => String(st.value));
      return (s) => {
        let cur = head(s);
        for (const name of names) {
          cur = step(cur, name);
          if (cur === undefined) return undefined;
        }
        if (Array.isArray(cur)) return slow();
        return cur;
      };
    }
    case 'binary': {
      if (Object.keys(n).some((k) => !['type', 'value', 'lhs', 'rhs', 'position'].includes(k))) unsupported();
      const l = compile(n.lhs as Node, extra);
      const r = compile(n.rhs as Node, extra);
      switch (n.value) {
        case '=':
        case '!=': {
          const eq = n.value === '=';
          return (s) => {
            const a = l(s);
            const b = r(s);
            if (a === undefined || b === undefined) return false;
            if (!isScalar(a) || !isScalar(b)) return slow();
            return eq ? a === b : a !== b;
          };
        }
        case '<':
        case '<=':
        case '>':
        case '>=': {
          const op = n.value;
          return (s) => {
            const a = l(s);
            const b = r(s);
            if (a === undefined || b === undefined) return undefined;
            if (!((typeof a === 'number' && typeof b === 'number') || (typeof a === 'string' && typeof b === 'string'))) return slow();
            return op === '<' ? a < b : op === '<=' ? a <= b : op === '>' ? a > b : a >= b;
          };
        }
        case '&':
          return (s) => {
            const a = l(s);
            const b = r(s);
            return (a === undefined ? '' : toStr(a)) + (b === undefined ? '' : toStr(b));
          };
        case '+':
        case '-':
        case '*':
        case '/':
        case '%': {
          const op = n.value;
          return (s) => {
            const a = l(s);
            const b = r(s);
            // JSONata checks the types first: a string beside a missing value is an error.
            if ((a !== undefined && typeof a !== 'number') || (b !== undefined && typeof b !== 'number')) return slow();
            if (a === undefined || b === undefined) return undefined;
            const x = a as number;
            const y = b as number;
            const v = op === '+' ? x + y : op === '-' ? x - y : op === '*' ? x * y : op === '/' ? x / y : x % y;
            return Number.isFinite(v) ? v : slow(); // JSONata raises D1001
          };
        }
        case 'and':
          return (s) => truthy(l(s)) && truthy(r(s));
        case 'or':
          return (s) => truthy(l(s)) || truthy(r(s));
        default:
          return unsupported();
      }
    }
    case 'condition': {
      if (Object.keys(n).some((k) => !['type', 'condition', 'then', 'else', 'position'].includes(k))) unsupported();
      const c = compile(n.condition as Node, extra);
      const t = compile(n.then as Node, extra);
      const e = n.else === undefined ? () => undefined : compile(n.else as Node, extra);
      return (s) => (truthy(c(s)) ? t(s) : e(s));
    }
    case 'unary': {
      if (n.value === '-') {
        const e = compile(n.expression as Node, extra);
        return (s) => {
          const v = e(s);
          return v === undefined ? undefined : -num(v);
        };
      }
      if (n.value === '{') {
        if (Object.keys(n).some((k) => !['type', 'value', 'lhs', 'position'].includes(k))) unsupported();
        const pairs = (n.lhs as Node[][]).map(([k, v]) => {
          if (k!.type !== 'string' || !plain(k!)) unsupported();
          return [String(k!.value), compile(v!, extra)] as const;
        });
        if (new Set(pairs.map(([k]) => k)).size !== pairs.length) unsupported(); // JSONata raises D1009
        return (s) => {
          if (Array.isArray(s.value)) return slow(); // JSONata groups over the items
          const out: Record<string, unknown> = {};
          for (const [k, f] of pairs) {
            const v = f(s);
            if (Array.isArray(v)) return slow();
            if (v !== undefined) out[k] = v;
          }
          return out;
        };
      }
      return unsupported();
    }
    case 'function': {
      if (Object.keys(n).some((k) => !['type', 'value', 'arguments', 'procedure', 'position', 'name'].includes(k)) || n.name !== undefined) unsupported();
      const proc = n.procedure as Node;
      if (proc.type !== 'variable' || !plain(proc)) unsupported();
      const argNodes = n.arguments as Node[];
      const args = argNodes.map((a) => compile(a, extra));
      // A table given to $lookup as an object of literals (`$lookup({"a": "x", ...}, k)`) is built
      // once: $lookup only reads it.
      if (proc.value === 'lookup' && args.length === 2 && literalObject(argNodes[0]!)) {
        const table = args[0]!({ value: undefined, meta: {}, headers: {}, key: null, extra: {} });
        args[0] = (s) => (Array.isArray(s.value) ? slow() : table); // JSONata groups over the items of an array
      }
      return fn(String(proc.value), args);
    }
    default:
      return unsupported();
  }
}

/**
 * $now(): the time in ISO 8601 with milliseconds, as JSONata gives it. A busy pipeline asks many
 * times within one millisecond: the text is made once per millisecond.
 */
let nowMs = -1;
let nowText = '';
function now(): string {
  const t = Date.now();
  if (t !== nowMs) {
    nowMs = t;
    nowText = new Date(t).toISOString();
  }
  return nowText;
}

/** An object constructor whose keys and values are all literals (strings, numbers, booleans, null). */
function literalObject(n: Node): boolean {
  if (n.type !== 'unary' || n.value !== '{') return false;
  return (n.lhs as Node[][]).every(([, v]) => v !== undefined && (v.type === 'string' || v.type === 'number' || v.type === 'value') && plain(v));
}

function step(cur: unknown, name: string): unknown {
  if (cur === undefined || cur === null) return undefined;
  if (!isPlainObject(cur)) return slow();
  return Object.prototype.hasOwnProperty.call(cur, name) ? cur[name] : undefined;
}

function fn(name: string, args: Fn[]): Fn {
  const arity = (n: number) => {
    if (args.length !== n) unsupported();
  };
  switch (name) {
    case 'exists': {
      arity(1);
      const [a] = args as [Fn];
      return (s) => a(s) !== undefined;
    }
    case 'lookup': {
      arity(2);
      const [o, k] = args as [Fn, Fn];
      return (s) => {
        const obj = o(s);
        const key = k(s);
        // JSONata checks the signature first: a key that is not a string is an error.
        if (typeof key !== 'string') return slow();
        if (obj === undefined) return undefined;
        if (!isPlainObject(obj)) return slow();
        const v = Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
        return Array.isArray(v) ? slow() : v;
      };
    }
    case 'now':
      arity(0);
      return now;
    case 'uuid':
      arity(0);
      return () => randomUUID();
    case 'error': {
      arity(1);
      const [m] = args as [Fn];
      return (s) => {
        const msg = m(s);
        if (typeof msg !== 'string') return slow();
        throw new Error(msg);
      };
    }
    case 'round': {
      arity(1);
      const [a] = args as [Fn];
      return (s) => {
        const v = a(s);
        return v === undefined ? undefined : roundHalfEven(num(v));
      };
    }
    case 'fromMillis': {
      arity(1);
      const [a] = args as [Fn];
      return (s) => {
        const v = a(s);
        if (v === undefined) return undefined;
        const d = new Date(num(v));
        return Number.isNaN(d.getTime()) ? slow() : d.toISOString();
      };
    }
    case 'string': {
      arity(1);
      const [a] = args as [Fn];
      return (s) => {
        const v = a(s);
        return v === undefined ? undefined : toStr(v);
      };
    }
    case 'number': {
      arity(1);
      const [a] = args as [Fn];
      return (s) => {
        const v = a(s);
        if (v === undefined) return undefined;
        if (typeof v === 'number') return v;
        return slow(); // strings, booleans: JSONata's own rules
      };
    }
    case 'boolean': {
      arity(1);
      const [a] = args as [Fn];
      return (s) => {
        const v = a(s);
        return v === undefined ? undefined : truthy(v);
      };
    }
    case 'not': {
      arity(1);
      const [a] = args as [Fn];
      return (s) => {
        const v = a(s);
        return v === undefined ? undefined : !truthy(v);
      };
    }
    default:
      return unsupported();
  }
}
