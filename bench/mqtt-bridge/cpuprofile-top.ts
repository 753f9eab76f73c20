/**
 * Top functions and packages of a V8 CPU profile (`node --cpu-prof`), by self time and by total
 * (inclusive) time.
 *
 *   node --import tsx bench/mqtt-bridge/cpuprofile-top.ts <file.cpuprofile> [--top 25] [--from-s 5 --to-s 25]
 *
 * Self time is what the function itself ran; total time includes what it called (each sample
 * counts once per function even under recursion). "Where" groups by package: a node_modules
 * package, the project's own folders (core/, operators/, ...), node:internal, or V8's own entries
 * ((garbage collector), (idle), (program)).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '25' }, 'from-s': { type: 'string' }, 'to-s': { type: 'string' } },
});
const file = positionals[0];
if (!file) {
  process.stderr.write('usage: cpuprofile-top.ts <file.cpuprofile> [--top 25] [--from-s S --to-s S]\n');
  process.exit(2);
}
const top = Number(values.top);
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// `head` closes the pipe early: stop quietly.
process.stdout.on('error', () => process.exit(0));
/** The project's folder as it appears in profile URLs (file:///.../). */
const ROOT = new URL('../..', import.meta.url).href;

const where = (cf: CallFrame): string => {
  const url = cf.url;
  if (!url) return cf.functionName.startsWith('(') ? cf.functionName : '(native)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith('node:')) return 'node:internal';
  if (url.startsWith(ROOT)) return `project ${url.slice(ROOT.length).split('/')[0]}${url.slice(ROOT.length).includes('/') ? '/' : ''}`;
  return url;
};
const fnKey = (cf: CallFrame) => {
  const short = cf.url.replace(/.*node_modules\//, '').replace(ROOT, '').replace(/^file:\/\//, '');
  return `${cf.functionName || '(anonymous)'} ${short ? `${short}:${cf.lineNumber + 1}` : ''}`.trim();
};

// Sample times: timeDeltas[i] is the time since the previous sample; weight each sample by the delta to the next one.
const t0 = profile.startTime;
const fromUs = values['from-s'] !== undefined ? t0 + Number(values['from-s']) * 1e6 : -Infinity;
const toUs = values['to-s'] !== undefined ? t0 + Number(values['to-s']) * 1e6 : Infinity;
const selfFn = new Map<string, number>();
const totalFn = new Map<string, number>();
const selfWhere = new Map<string, number>();
const totalWhere = new Map<string, number>();
let total = 0;
let t = t0;
for (let i = 0; i < profile.samples.length; i++) {
  t += profile.timeDeltas[i] ?? 0;
  if (t < fromUs || t > toUs) continue;
  const dt = profile.timeDeltas[i + 1] ?? 0;
  if (dt <= 0) continue;
  total += dt;
  const leaf = byId.get(profile.samples[i]!)!;
  selfFn.set(fnKey(leaf.callFrame), (selfFn.get(fnKey(leaf.callFrame)) ?? 0) + dt);
  selfWhere.set(where(leaf.callFrame), (selfWhere.get(where(leaf.callFrame)) ?? 0) + dt);
  const seenFn = new Set<string>();
  const seenWhere = new Set<string>();
  for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
    const cf = byId.get(id)!.callFrame;
    if (cf.functionName === '(root)') continue;
    const k = fnKey(cf);
    if (!seenFn.has(k)) {
      seenFn.add(k);
      totalFn.set(k, (totalFn.get(k) ?? 0) + dt);
    }
    const w = where(cf);
    if (!seenWhere.has(w)) {
      seenWhere.add(w);
      totalWhere.set(w, (totalWhere.get(w) ?? 0) + dt);
    }
  }
}

const pct = (us: number) => `${((us / total) * 100).toFixed(1).padStart(5)}%`;
const ms = (us: number) => `${(us / 1000).toFixed(0).padStart(7)} ms`;
const print = (title: string, m: Map<string, number>, n: number) => {
  process.stdout.write(`\n${title}\n`);
  for (const [k, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) process.stdout.write(`${pct(v)} ${ms(v)}  ${k}\n`);
};
const idle = selfWhere.get('(idle)') ?? 0;
process.stdout.write(`${file}: ${(total / 1e6).toFixed(1)} s sampled, ${pct(idle).trim()} idle, ${pct(total - idle).trim()} busy\n`);
print('self time by package', selfWhere, 20);
print('total (inclusive) time by package', totalWhere, 20);
print(`self time by function (top ${top})`, selfFn, top);
print(`total (inclusive) time by function (top ${top})`, totalFn, top);
