/**
 * The engine: builds one pipeline from its config as an RxJS chain and runs it.
 *
 *   input$ -> processors... -> output -> ack.done()
 *                 \ reject ----> dead_letter output -> ack.done()
 *
 * Every message read is counted in flight until its ack settles. Stopping: the inputs are told to
 * stop reading (ctx.stop$) and complete; the chain drains; then the dead-letter flow drains; then
 * close hooks run (final commits, clients closed). If draining takes longer than shutdown_timeout
 * the chain is cut, close hooks still run (positions only cover done messages, so the rest is
 * delivered again after a restart) and `stop()` reports that it could not drain.
 */
import { Subject, asyncScheduler, type OperatorFunction, concatMap, defer, from, map, share, take, tap, type Observable, type SchedulerLike, type Subscription } from 'rxjs';
import type { Logger } from 'pino';
import type { ComponentConfig, PipelineConfig } from './config.ts';
import { deadLetterMsg } from './dead-letter.ts';
import { RunnerError, errorMessage } from './errors.ts';
import type { Health } from './health.ts';
import { ackHandle, type Msg } from './message.ts';
import type { Metrics } from './metrics.ts';
import type { InputOperator, OperatorContext, OutputOperator, ProcessorOperator } from './operator.ts';
import { type PerMessageStage, fusePerMessage, perMessageStage } from './processor.ts';
import { PipelineTaps } from './tap.ts';

export interface RuntimeDeps {
  logger: Logger;
  metrics: Metrics;
  health: Health;
  rootDir: string;
  scheduler?: SchedulerLike;
}

export interface StopResult {
  drained: boolean;
  inFlight: number;
}

export class PipelineRuntime {
  private readonly stopSignal = new Subject<void>();
  private readonly closers: { component: string; fn: () => Promise<void> | void }[] = [];
  private readonly subs: Subscription[] = [];
  private inFlight = 0;
  private mainDone!: Promise<void>;
  private dlqDone!: Promise<void>;
  private readonly dlq$ = new Subject<{ msg: Msg; err: unknown; component: string }>();
  private failure: unknown = null;
  private stopping = false;
  private readonly logger: Logger;
  /** Live copies of the messages passing each step, for `runner tap` (core/tap.ts). */
  readonly taps: PipelineTaps;
  /** Resolves when the pipeline finished (input completed and everything drained) or failed. */
  finished!: Promise<StopResult>;

  constructor(
    readonly config: PipelineConfig,
    private readonly deps: RuntimeDeps,
  ) {
    this.logger = deps.logger.child({ pipeline: config.name });
    this.taps = new PipelineTaps(config.name);
  }

  get name() {
    return this.config.name;
  }

  private ctx(c: ComponentConfig, kind: string): OperatorContext {
    const logger = this.logger.child({ component: c.component, operator: c.name });
    const pipeline = this.config.name;
    const health = this.deps.health;
    const metrics = this.deps.metrics.component(pipeline, c.component, kind);
    const onInvalidDrop = c.config.on_invalid === 'drop';
    return {
      pipeline,
      component: c.component,
      rootDir: this.deps.rootDir,
      logger,
      metrics,
      scheduler: this.deps.scheduler ?? asyncScheduler,
      stop$: this.stopSignal.pipe(take(1)),
      reject: (rejected, err) => {
        metrics.error('rejected');
        // An input rejects before the message entered the chain: count it in flight from here.
        const msg = kind === 'input' ? this.track(rejected) : rejected;
        if (kind === 'dead_letter') {
          // Never back into the dead-letter flow (it would loop): the input delivers it again.
          logger.warn({ err: errorMessage(err), meta: msg.meta }, 'dead-letter output rejected a message; it will be delivered again');
          msg.ack.fail(err);
        } else if (this.config.deadLetter && !onInvalidDrop) {
          this.dlq$.next({ msg, err, component: c.component });
        } else if (onInvalidDrop) {
          logger.warn({ err: errorMessage(err), meta: msg.meta }, 'message dropped (on_invalid: drop)');
          metrics.discarded('invalid');
          msg.ack.done();
        } else {
          // Lint forbids this configuration; never drop silently if it happens anyway.
          logger.error({ err: errorMessage(err) }, 'message rejected and no dead_letter output: it will be delivered again');
          msg.ack.fail(err);
        }
      },
      onClose: (fn) => this.closers.push({ component: c.component, fn }),
      setReady: (ready, reason) => health.setReady(pipeline, c.component, ready, reason),
      child: (path) => {
        const child = c.children.get(path);
        if (!child) throw new RunnerError('INTERNAL', `${c.component} has no nested component at ${path}`);
        return this.build(child, kind === 'dead_letter' ? 'dead_letter' : child.kind);
      },
    };
  }

  /** A processor or output as an operator function, counted in its component metrics. */
  private build(c: ComponentConfig, kind: string): OperatorFunction<Msg, Msg> {
    const cctx = this.ctx(c, kind);
    const op = (c.operator as ProcessorOperator | OutputOperator).create(c.config, cctx);
    const point = this.taps.point(c.component, kind, c.name);
    return (source) =>
      source.pipe(
        tap(() => cctx.metrics.received()),
        op,
        tap((m) => {
          cctx.metrics.sent();
          point.emit(m);
        }),
      );
  }

  /** Count a message in flight until its ack settles (the gauge reads the count at each scrape). */
  private track(msg: Msg): Msg {
    this.inFlight++;
    const inner = msg.ack;
    return {
      ...msg,
      ack: ackHandle((outcome) => {
        this.inFlight--;
        if (outcome.ok) inner.done();
        else inner.fail(outcome.error);
      }),
    };
  }

  /** Build the chain and start reading. */
  start(): void {
    const { config, deps } = this;
    deps.health.register(config.name);
    deps.metrics.onScrape(() => deps.metrics.inFlight.set({ pipeline: config.name }, this.inFlight));
    const inputCfg = config.input;
    const inputCtx = this.ctx(inputCfg, 'input');
    const inputTap = this.taps.point(inputCfg.component, 'input', inputCfg.name);
    const steps = config.processors.map((p) => {
      const pctx = this.ctx(p, 'processor');
      const op = (p.operator as ProcessorOperator).create(p.config, pctx);
      return { pctx, op, point: this.taps.point(p.component, 'processor', p.name) };
    });
    const outCtx = this.ctx(config.output, 'output');
    const outTap = this.taps.point(config.output.component, 'output', config.output.name);
    const output = (config.output.operator as OutputOperator).create(config.output.config, outCtx);

    // Between two steps one hop counts both (what step i sent, step i+1 received): every RxJS
    // operator is a few calls per message, and a busy pipeline spends its time in them.
    const firstReceived = (steps[0]?.pctx ?? outCtx).metrics;
    const input$ = defer(() => (inputCfg.operator as InputOperator).create(inputCfg.config, inputCtx)).pipe(
      map((msg): Msg => {
        // An input passes on what it reads: both counts, so `sent` means the same for every kind.
        inputCtx.metrics.received();
        inputCtx.metrics.sent();
        inputTap.emit(msg);
        firstReceived.received();
        return this.track(msg);
      }),
    );

    let stream: Observable<Msg> = input$;
    let fused: PerMessageStage[] = [];
    const flushFused = () => {
      if (fused.length) stream = stream.pipe(fusePerMessage(fused));
      fused = [];
    };
    steps.forEach(({ pctx, op, point }, i) => {
      const next = (steps[i + 1]?.pctx ?? outCtx).metrics;
      const after = (m: Msg) => {
        pctx.metrics.sent();
        point.emit(m);
        next.received();
      };
      // Consecutive per-message steps (map, validate, filter, ...) run as one operator.
      const stage = perMessageStage(op);
      if (stage) {
        fused.push({ ...stage, after });
        return;
      }
      flushFused();
      stream = stream.pipe(op, tap(after));
    });
    flushFused();
    stream = stream.pipe(output);

    // Dead-letter flow.
    let dlqStream: Observable<Msg>;
    if (config.deadLetter) {
      const dctx = this.ctx(config.deadLetter, 'dead_letter');
      const dout = (config.deadLetter.operator as OutputOperator).create(config.deadLetter.config, dctx);
      const dlqTap = this.taps.point(config.deadLetter.component, 'dead_letter', config.deadLetter.name);
      dlqStream = this.dlq$.pipe(
        map(({ msg, err, component }) => {
          deps.metrics.deadLettered.inc({ pipeline: config.name, component, code: err instanceof RunnerError ? err.code : 'INTERNAL' });
          this.logger.warn({ component, err: errorMessage(err), meta: msg.meta }, 'message sent to dead_letter');
          return deadLetterMsg(msg, err, { pipeline: config.name, component });
        }),
        tap(() => dctx.metrics.received()),
        dout,
        tap((m) => {
          dctx.metrics.sent();
          dlqTap.emit(m);
        }),
      );
    } else {
      dlqStream = this.dlq$.pipe(concatMap(() => from([] as Msg[])));
    }

    // The dead-letter flow first: an input may emit (and a step reject) as soon as it is subscribed.
    this.dlqDone = new Promise((resolve, reject) => {
      this.subs.push(
        dlqStream.pipe(share()).subscribe({
          next: (msg) => msg.ack.done(),
          error: (err) => reject(err),
          complete: () => resolve(),
        }),
      );
    });
    this.mainDone = new Promise((resolve, reject) => {
      this.subs.push(
        stream.subscribe({
          next: (msg) => {
            outCtx.metrics.sent();
            outCtx.metrics.latency((Date.now() - msg.createdAt) / 1000);
            outTap.emit(msg);
            msg.ack.done();
          },
          error: (err) => reject(err),
          complete: () => resolve(),
        }),
      );
    });
    deps.health.setState(config.name, 'running');
    this.logger.info({ input: inputCfg.name, output: config.output.name, processors: config.processors.map((p) => p.name) }, 'pipeline started');

    this.finished = (async () => {
      try {
        await this.mainDone;
        this.dlq$.complete();
        await this.dlqDone;
      } catch (err) {
        this.failure = err;
        deps.health.setState(config.name, 'failed');
        this.logger.error({ err }, 'pipeline failed');
      }
      if (!this.stopping) {
        if (!this.failure) this.logger.info('input finished; pipeline drained');
        await this.runClosers();
      }
      return { drained: !this.failure, inFlight: this.inFlight };
    })();
  }

  /** Stop reading, drain up to shutdown_timeout, run close hooks. */
  async stop(): Promise<StopResult> {
    if (this.stopping) return this.finished;
    this.stopping = true;
    this.deps.health.setState(this.config.name, 'stopping');
    this.logger.info({ inFlight: this.inFlight, timeoutMs: this.config.shutdownTimeoutMs }, 'stopping: draining in-flight messages');
    this.stopSignal.next();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), this.config.shutdownTimeoutMs);
    });
    const outcome = await Promise.race([this.finished.then(() => 'done' as const), timedOut]);
    clearTimeout(timer);
    let drained = outcome === 'done' && !this.failure && this.inFlight === 0;
    if (outcome === 'timeout') {
      this.logger.error({ inFlight: this.inFlight, timeoutMs: this.config.shutdownTimeoutMs }, 'could not drain within shutdown_timeout; unfinished messages will be delivered again after a restart');
      for (const s of this.subs) s.unsubscribe();
      drained = false;
    }
    await this.runClosers();
    this.deps.health.setState(this.config.name, drained ? 'stopped' : 'failed');
    this.logger.info({ drained, inFlight: this.inFlight }, 'pipeline stopped');
    return { drained, inFlight: this.inFlight };
  }

  private closed = false;
  private async runClosers() {
    if (this.closed) return;
    this.closed = true;
    for (const { component, fn } of [...this.closers].reverse()) {
      try {
        await fn();
      } catch (err) {
        this.logger.error({ component, err }, 'error while closing');
      }
    }
  }
}
