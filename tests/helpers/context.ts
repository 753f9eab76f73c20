/** An OperatorContext for tests: records rejections, readiness and close hooks. */
import { Subject, asyncScheduler, type SchedulerLike } from 'rxjs';
import pino from 'pino';
import { Metrics } from '../../core/metrics.ts';
import type { Msg } from '../../core/message.ts';
import type { OperatorContext } from '../../core/operator.ts';

export interface TestContext extends OperatorContext {
  rejected: { msg: Msg; err: unknown }[];
  ready: { ready: boolean; reason?: string };
  stopSubject: Subject<void>;
  close(): Promise<void>;
  metricsRegistry: Metrics;
}

export function testContext(opts: { scheduler?: SchedulerLike; pipeline?: string; component?: string } = {}): TestContext {
  const closers: (() => Promise<void> | void)[] = [];
  const stopSubject = new Subject<void>();
  const metrics = new Metrics();
  const ctx: TestContext = {
    pipeline: opts.pipeline ?? 'test',
    component: opts.component ?? 'test-component',
    rootDir: new URL('../..', import.meta.url).pathname,
    logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    metrics: metrics.component(opts.pipeline ?? 'test', opts.component ?? 'test-component', 'test'),
    metricsRegistry: metrics,
    scheduler: opts.scheduler ?? asyncScheduler,
    rejected: [],
    ready: { ready: true },
    stopSubject,
    stop$: stopSubject.asObservable(),
    reject(msg, err) {
      ctx.rejected.push({ msg, err });
    },
    onClose(fn) {
      closers.push(fn);
    },
    setReady(ready, reason) {
      ctx.ready = { ready, reason };
    },
    child(path) {
      throw new Error(`testContext cannot build nested components (${path}); load the pipeline with buildRuntime (tests/helpers/memory-operators.ts)`);
    },
    async close() {
      for (const fn of closers.reverse()) await fn();
    },
  };
  return ctx;
}
