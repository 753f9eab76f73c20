/**
 * docs/metrics.md, the alert rules in it and docs/grafana/runner-dashboard.json must name the
 * metrics the runner really exports, with their real types and labels, and every exported metric
 * must be documented.
 *
 * Where the real names come from (no server is needed):
 * - `new Metrics({ defaults: true })`, exactly as `runner start` builds it: the engine's metrics
 *   (registered in its constructor) and prom-client's process metrics with the `runner_` prefix.
 * - Operators that register metrics of their own do so in `create()`, on the registry their
 *   context hands them. The test loads small pipelines with those operators through the real
 *   loader (`loadPipeline`, defaults filled) and calls each component's `create()` with a context
 *   on that same registry, without subscribing: the kafka and postgres_outbox inputs connect only
 *   when subscribed (the outbox's pg pool connects lazily), and websocket_server listens on
 *   127.0.0.1:0 until its close hook runs. No Kafka, PostgreSQL or MQTT is contacted.
 * - So that a new operator metric cannot be missed by that list: every `'runner_...'` string in a
 *   source file of operators/ or core/ that imports prom-client is a metric name, and must be in
 *   the registry built here; if it is not, add the operator to OPERATOR_PIPELINES below.
 * Checking PromQL: every `name{...}` selector and every `runner_*` name in an expression must be a
 * registered metric (`_bucket`, `_sum`, `_count` of a histogram included), and every label in its
 * selectors and `by (...)` clauses one of its labels (or Prometheus' `job`, `instance`, and `le`
 * of a histogram).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import pino from 'pino';
import { NEVER, asyncScheduler } from 'rxjs';
import { parse } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatProblem, loadPipeline } from '../../core/config.ts';
import { Metrics } from '../../core/metrics.ts';
import type { AnyOperator, OperatorContext } from '../../core/operator.ts';
import { registry } from '../../operators/index.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const DOC = 'docs/metrics.md';
const DASHBOARD = 'docs/grafana/runner-dashboard.json';
const SCRAPE_LABELS = ['job', 'instance'];

/** Pipelines whose components register operator metrics at create(); built, never started. */
const OPERATOR_PIPELINES = [
  `name: metrics-kafka-websocket
input:
  kafka: { brokers: ["127.0.0.1:9"], topics: [metrics-reference], consumer_group: metrics-reference }
output:
  websocket_server: { address: "127.0.0.1:0", auth_token: "" }
dead_letter:
  drop: {}
`,
  `name: metrics-outbox
input:
  postgres_outbox: { url: "postgres://nobody@127.0.0.1:9/none", sources: [{ table: reference.outbox }] }
output:
  drop: {}
dead_letter:
  drop: {}
`,
];

interface Registered {
  type: string;
  labels: string[];
}

const registered = new Map<string, Registered>();
const closers: (() => unknown)[] = [];

beforeAll(async () => {
  const metrics = new Metrics({ defaults: true });
  for (const text of OPERATOR_PIPELINES) {
    const res = loadPipeline('metrics-reference.yaml', { registry, rootDir: ROOT, env: {}, text });
    if (!res.ok) throw new Error(res.problems.map(formatProblem).join('\n'));
    const p = res.pipeline;
    for (const c of [p.input, ...p.processors, p.output, ...(p.deadLetter ? [p.deadLetter] : [])]) {
      const ctx: OperatorContext = {
        pipeline: p.name,
        component: c.component,
        rootDir: ROOT,
        logger: pino({ level: 'silent' }),
        metrics: metrics.component(p.name, c.component, c.kind),
        scheduler: asyncScheduler,
        stop$: NEVER,
        reject: () => undefined,
        onClose: (fn) => void closers.push(fn),
        setReady: () => undefined,
        child: () => {
          throw new Error('no nested components here');
        },
      };
      (c.operator as AnyOperator).create(c.config as never, ctx);
    }
  }
  for (const { name } of metrics.registry.getMetricsAsArray()) {
    const metric = metrics.registry.getSingleMetric(name)!;
    const { type } = await metric.get();
    registered.set(name, { type: String(type), labels: [...((metric as unknown as { labelNames?: string[] }).labelNames ?? [])] });
  }
});

afterAll(async () => {
  for (const fn of closers.reverse()) await fn();
});

/** A series name as written in PromQL, resolved to the registered metric it belongs to. */
function metricOf(name: string): { metric: string; bucket: boolean } | undefined {
  if (registered.has(name)) return { metric: name, bucket: false };
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (m && registered.get(m[1]!)?.type === 'histogram') return { metric: m[1]!, bucket: m[2] === 'bucket' };
  return undefined;
}

/** Problems of one PromQL expression: unknown metrics, labels the metrics do not have. */
function promqlProblems(expr: string): string[] {
  const problems: string[] = [];
  const names = new Set<string>();
  for (const m of expr.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{/g)) names.add(m[1]!);
  for (const m of expr.matchAll(/\brunner_[a-z0-9_]+\b/g)) names.add(m[0]);
  const allowed = new Set(SCRAPE_LABELS);
  for (const n of names) {
    const found = metricOf(n);
    if (!found) {
      problems.push(`${n} is not a registered metric`);
      continue;
    }
    for (const l of registered.get(found.metric)!.labels) allowed.add(l);
    if (found.bucket) allowed.add('le');
  }
  const used = new Set<string>();
  for (const sel of expr.matchAll(/\{([^{}]*)\}/g)) for (const l of sel[1]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)) used.add(l[1]!);
  for (const g of expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) for (const l of g[1]!.split(',')) if (l.trim()) used.add(l.trim());
  for (const l of used) if (!allowed.has(l)) problems.push(`label ${l} is not a label of ${[...names].join(', ')}`);
  if (names.size === 0) problems.push('names no metric');
  return problems;
}

/** The reference rows of docs/metrics.md: | `name` | type | labels | meaning |. */
function documentedRows(): Map<string, { type: string; labels: string[]; line: number }> {
  const rows = new Map<string, { type: string; labels: string[]; line: number }>();
  readFileSync(join(ROOT, DOC), 'utf8')
    .split('\n')
    .forEach((line, i) => {
      const cells = line.split('|').map((c) => c.trim());
      const name = /^`(runner_[a-z0-9_]+)`$/.exec(cells[1] ?? '')?.[1];
      if (!name || !/^(counter|gauge|histogram|summary)$/.test(cells[2] ?? '')) return;
      if (rows.has(name)) throw new Error(`${DOC}:${i + 1}: ${name} is documented twice`);
      rows.set(name, { type: cells[2]!, labels: [...(cells[3] ?? '').matchAll(/`([a-z_]+)`/g)].map((m) => m[1]!), line: i + 1 });
    });
  return rows;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? sourceFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

describe('the metrics the runner registers', () => {
  it('include the engine, process and operator metrics', () => {
    for (const name of ['runner_component_received_total', 'runner_pipeline_ready', 'runner_process_resident_memory_bytes', 'runner_kafka_consumer_lag', 'runner_outbox_pending_rows', 'runner_websocket_clients']) {
      expect(registered.has(name), name).toBe(true);
    }
  });

  it('include every metric name written in operators/ and core/ (files that use prom-client)', () => {
    const missing: string[] = [];
    for (const file of [...sourceFiles(join(ROOT, 'operators')), ...sourceFiles(join(ROOT, 'core'))]) {
      const text = readFileSync(file, 'utf8');
      if (!/from 'prom-client'/.test(text)) continue;
      for (const m of text.matchAll(/'(runner_[a-z0-9_]+)'/g)) {
        if (!registered.has(m[1]!)) missing.push(`${relative(ROOT, file)}: ${m[1]} (build its operator in OPERATOR_PIPELINES of this test)`);
      }
    }
    expect(missing).toEqual([]);
  });
});

describe(DOC, () => {
  it('documents every registered metric with its type and labels', () => {
    const rows = documentedRows();
    const problems: string[] = [];
    for (const [name, r] of registered) {
      const d = rows.get(name);
      if (!d) problems.push(`${name} (${r.type}; labels ${r.labels.join(', ') || 'none'}) is not documented`);
      else {
        if (d.type !== r.type) problems.push(`${DOC}:${d.line}: ${name} is a ${r.type}, documented as ${d.type}`);
        if ([...d.labels].sort().join() !== [...r.labels].sort().join()) problems.push(`${DOC}:${d.line}: ${name} has labels ${r.labels.join(', ') || 'none'}, documented as ${d.labels.join(', ') || 'none'}`);
      }
    }
    for (const [name, d] of rows) if (!registered.has(name)) problems.push(`${DOC}:${d.line}: ${name} is documented but not registered`);
    expect(problems).toEqual([]);
  });

  it('names no metric that is not registered', () => {
    const text = readFileSync(join(ROOT, DOC), 'utf8');
    const unknown = [...new Set([...text.matchAll(/\brunner_[a-z0-9_]+\b/g)].map((m) => m[0]))].filter((n) => !metricOf(n));
    expect(unknown).toEqual([]);
  });

  it('has alert rules that query registered metrics and their labels', () => {
    const block = /```yaml\n(groups:[\s\S]*?)```/.exec(readFileSync(join(ROOT, DOC), 'utf8'))?.[1];
    expect(block, 'the rules block').toBeDefined();
    const rules = (parse(block!) as { groups: { rules: { alert: string; expr: string }[] }[] }).groups.flatMap((g) => g.rules);
    expect(rules.length).toBeGreaterThan(5);
    for (const r of rules) expect(promqlProblems(r.expr), r.alert).toEqual([]);
  });
});

describe(DASHBOARD, () => {
  const dashboard = JSON.parse(readFileSync(join(ROOT, DASHBOARD), 'utf8')) as {
    schemaVersion: number;
    uid: string;
    title: string;
    panels: { id: number; type: string; title: string; gridPos: object; datasource?: { uid?: string }; targets?: { expr: string; datasource?: { uid?: string } }[] }[];
    templating: { list: { name: string; type: string; query: unknown; definition?: string; datasource?: { uid?: string } }[] };
  };
  const DS = '${DS_PROMETHEUS}';
  const panels = dashboard.panels.filter((p) => p.type !== 'row');

  it('is an importable dashboard: schema version, unique panel ids, positions', () => {
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    expect(dashboard.uid).toMatch(/^[a-z0-9-]+$/);
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of dashboard.panels) expect(p.gridPos, p.title).toBeDefined();
  });

  it('takes its Prometheus from the DS_PROMETHEUS variable and has pipeline and component variables', () => {
    const vars = new Map(dashboard.templating.list.map((v) => [v.name, v]));
    expect(vars.get('DS_PROMETHEUS')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(vars.get('pipeline')?.type).toBe('query');
    expect(vars.get('component')?.type).toBe('query');
    for (const p of panels) {
      expect(p.datasource?.uid, p.title).toBe(DS);
      for (const t of p.targets ?? []) expect(t.datasource?.uid, p.title).toBe(DS);
    }
    for (const v of dashboard.templating.list.filter((x) => x.type === 'query')) expect(v.datasource?.uid, v.name).toBe(DS);
  });

  it('queries only registered metrics, with labels they have', () => {
    const problems: string[] = [];
    for (const p of panels) {
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) for (const e of promqlProblems(t.expr)) problems.push(`${p.title}: ${e}: ${t.expr}`);
    }
    for (const v of dashboard.templating.list.filter((x) => x.type === 'query')) {
      const m = /^label_values\((.*),\s*([a-z_]+)\)$/.exec(v.definition ?? '');
      if (!m) {
        problems.push(`variable ${v.name}: expected label_values(<selector>, <label>)`);
        continue;
      }
      for (const e of promqlProblems(`${m[1]} by (${m[2]})`)) problems.push(`variable ${v.name}: ${e}`);
    }
    expect(problems).toEqual([]);
  });

  it('covers the runner: throughput, errors, dead letters, in flight, latency, readiness, lag, outbox, websocket, process', () => {
    const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)).join('\n');
    for (const name of [
      'runner_component_received_total',
      'runner_component_sent_total',
      'runner_component_errors_total',
      'runner_component_discarded_total',
      'runner_dead_letter_total',
      'runner_pipeline_in_flight',
      'runner_component_latency_seconds_bucket',
      'runner_component_batch_size_bucket',
      'runner_pipeline_ready',
      'runner_kafka_consumer_lag',
      'runner_outbox_pending_rows',
      'runner_outbox_oldest_pending_age_seconds',
      'runner_websocket_clients',
      'runner_websocket_messages_dropped_total',
      'runner_process_resident_memory_bytes',
      'runner_process_cpu_seconds_total',
    ]) {
      expect(exprs, name).toContain(name);
    }
    expect(exprs).toContain('histogram_quantile(');
  });
});
