/**
 * Readiness bookkeeping per pipeline and component, and the process's one HTTP server
 * (fastify): /health/live, /health/ready (all pipelines), /health/ready/:pipeline, /metrics;
 * /ping and /ready as Redpanda Connect users know them.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { Metrics } from './metrics.ts';
import { serveTap } from './tap-http.ts';
import type { TapRegistry } from './tap.ts';

interface ComponentState {
  ready: boolean;
  reason?: string;
}

export interface PipelineHealth {
  ready: boolean;
  state: 'starting' | 'running' | 'stopping' | 'stopped' | 'failed';
  components: Record<string, ComponentState>;
  reasons: string[];
}

export class Health {
  private readonly pipelines = new Map<string, { state: PipelineHealth['state']; components: Map<string, ComponentState> }>();

  constructor(private readonly metrics?: Metrics) {}

  register(pipeline: string) {
    this.pipelines.set(pipeline, { state: 'starting', components: new Map() });
    this.refresh(pipeline);
  }

  setState(pipeline: string, state: PipelineHealth['state']) {
    const p = this.pipelines.get(pipeline);
    if (p) p.state = state;
    this.refresh(pipeline);
  }

  setReady(pipeline: string, component: string, ready: boolean, reason?: string) {
    this.pipelines.get(pipeline)?.components.set(component, { ready, reason });
    this.refresh(pipeline);
  }

  pipeline(name: string): PipelineHealth | undefined {
    const p = this.pipelines.get(name);
    if (!p) return undefined;
    const reasons: string[] = [];
    if (p.state !== 'running') reasons.push(`pipeline is ${p.state}`);
    for (const [c, s] of p.components) if (!s.ready) reasons.push(`${c}: ${s.reason ?? 'not ready'}`);
    return { ready: reasons.length === 0, state: p.state, components: Object.fromEntries(p.components), reasons };
  }

  all(): Record<string, PipelineHealth> {
    return Object.fromEntries([...this.pipelines.keys()].map((n) => [n, this.pipeline(n)!]));
  }

  private refresh(pipeline: string) {
    this.metrics?.up.set({ pipeline }, this.pipeline(pipeline)?.ready ? 1 : 0);
  }
}

export async function startHttpServer(opts: { host: string; port: number; health: Health; metrics: Metrics; taps?: TapRegistry }): Promise<FastifyInstance> {
  const app = Fastify({ logger: false });
  if (opts.taps) serveTap(app, opts.taps);
  const ready = (names?: string[]) => {
    const all = opts.health.all();
    const selected = names ? Object.fromEntries(names.map((n) => [n, all[n]])) : all;
    const ok = Object.values(selected).every((p) => p?.ready);
    return { ok, body: { status: ok ? 'ready' : 'not ready', pipelines: selected } };
  };
  app.get('/health/live', async () => ({ status: 'live' }));
  app.get('/ping', async (_req, reply) => reply.type('text/plain').send('pong'));
  app.get('/health/ready', async (_req, reply) => {
    const r = ready();
    return reply.code(r.ok ? 200 : 503).send(r.body);
  });
  app.get('/ready', async (_req, reply) => {
    const r = ready();
    return reply.code(r.ok ? 200 : 503).send(r.body);
  });
  app.get<{ Params: { pipeline: string } }>('/health/ready/:pipeline', async (req, reply) => {
    const p = opts.health.pipeline(req.params.pipeline);
    if (!p) return reply.code(404).send({ status: 'unknown pipeline', pipeline: req.params.pipeline });
    return reply.code(p.ready ? 200 : 503).send({ status: p.ready ? 'ready' : 'not ready', pipeline: req.params.pipeline, ...p });
  });
  app.get('/metrics', async (_req, reply) => reply.type(opts.metrics.registry.contentType).send(await opts.metrics.registry.metrics()));
  await app.listen({ host: opts.host, port: opts.port });
  return app;
}
