/**
 * Every component reports the same metrics (received, sent, errors by stage, discarded, latency,
 * batch sizes), labelled by pipeline and component; operators add their own through `registry`.
 * Exposed as Prometheus text on /metrics (prom-client).
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface ComponentMetrics {
  received(n?: number): void;
  sent(n?: number): void;
  error(stage: string, n?: number): void;
  discarded(reason: string, n?: number): void;
  latency(seconds: number): void;
  batchSize(n: number): void;
  /** The process registry, for operator-specific metrics (consumer lag, outbox depth, ...). */
  registry: Registry;
  labels: { pipeline: string; component: string };
}

export class Metrics {
  readonly registry = new Registry();
  private readonly received: Counter;
  private readonly sent: Counter;
  private readonly errors: Counter;
  private readonly discardedC: Counter;
  private readonly latencyH: Histogram;
  private readonly batchH: Histogram;
  readonly deadLettered: Counter;
  readonly inFlight: Gauge;
  readonly up: Gauge;

  constructor(opts: { defaults?: boolean } = {}) {
    if (opts.defaults) collectDefaultMetrics({ register: this.registry, prefix: 'runner_' });
    const labelNames = ['pipeline', 'component', 'kind'] as const;
    const r = [this.registry];
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    this.received = new Counter({ name: 'runner_component_received_total', help: 'Messages received by a component', labelNames, registers: r, collect: () => self.flush() });
    this.sent = new Counter({ name: 'runner_component_sent_total', help: 'Messages sent on by a component (outputs: durably written)', labelNames, registers: r, collect: () => self.flush() });
    this.errors = new Counter({ name: 'runner_component_errors_total', help: 'Errors by component and stage', labelNames: [...labelNames, 'stage'], registers: r });
    this.discardedC = new Counter({ name: 'runner_component_discarded_total', help: 'Messages deliberately dropped, by reason', labelNames: [...labelNames, 'reason'], registers: r });
    this.latencyH = new Histogram({
      name: 'runner_component_latency_seconds',
      help: 'Time from input to durable write (outputs)',
      labelNames,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: r,
    });
    this.batchH = new Histogram({ name: 'runner_component_batch_size', help: 'Messages per batch', labelNames, buckets: [1, 10, 50, 100, 500, 1000, 5000], registers: r });
    this.deadLettered = new Counter({ name: 'runner_dead_letter_total', help: 'Messages sent to the dead-letter output', labelNames: ['pipeline', 'component', 'code'], registers: r });
    this.inFlight = new Gauge({ name: 'runner_pipeline_in_flight', help: 'Messages read and not yet done', labelNames: ['pipeline'], registers: r, collect: () => self.flush() });
    this.up = new Gauge({ name: 'runner_pipeline_ready', help: '1 when the pipeline is ready', labelNames: ['pipeline'], registers: r });
  }

  /**
   * Per-message counts are plain numbers, added to the prom-client counters when /metrics is read
   * (the counters' collect hook): a counter update per message was several percent of the CPU of a
   * busy pipeline.
   */
  private readonly pending: { received: number; sent: number; receivedC: { inc(n: number): void }; sentC: { inc(n: number): void } }[] = [];
  /** Gauges read when /metrics is read. */
  private readonly gauges: (() => void)[] = [];

  /** Add the counts of every component to the counters and refresh gauges; runs at each scrape. */
  flush(): void {
    for (const p of this.pending) {
      if (p.received) p.receivedC.inc(p.received);
      if (p.sent) p.sentC.inc(p.sent);
      p.received = 0;
      p.sent = 0;
    }
    for (const g of this.gauges) g();
  }

  /** A gauge value computed when /metrics is read. */
  onScrape(fn: () => void): void {
    this.gauges.push(fn);
  }

  component(pipeline: string, component: string, kind: string): ComponentMetrics {
    const l = { pipeline, component, kind };
    // Bound children: the label hash is computed once, not per message.
    const latency = this.latencyH.labels(l);
    const batch = this.batchH.labels(l);
    const counts = { received: 0, sent: 0, receivedC: this.received.labels(l), sentC: this.sent.labels(l) };
    // Zero-valued series exist from the start, as with prom-client's own children.
    counts.receivedC.inc(0);
    counts.sentC.inc(0);
    this.pending.push(counts);
    // Children per stage / reason, bound once (a label lookup per message showed in profiles).
    const errorsBy = new Map<string, { inc(n: number): void }>();
    const discardedBy = new Map<string, { inc(n: number): void }>();
    const bound = (cache: Map<string, { inc(n: number): void }>, counter: Counter, label: string, value: string) => {
      let c = cache.get(value);
      if (!c) cache.set(value, (c = counter.labels({ ...l, [label]: value })));
      return c;
    };
    return {
      received: (n = 1) => void (counts.received += n),
      sent: (n = 1) => void (counts.sent += n),
      error: (stage, n = 1) => bound(errorsBy, this.errors, 'stage', stage).inc(n),
      discarded: (reason, n = 1) => bound(discardedBy, this.discardedC, 'reason', reason).inc(n),
      latency: (s) => latency.observe(s),
      batchSize: (n) => batch.observe(n),
      registry: this.registry,
      labels: { pipeline, component },
    };
  }
}
