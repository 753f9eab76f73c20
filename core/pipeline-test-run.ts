/**
 * Running one test case: the pipeline as loaded (its processors built from the real config by the
 * real engine, core/pipeline.ts), with the input replaced by the case's messages, every output
 * (each case of a `switch`, and the dead-letter output) replaced by an in-memory capture, and the
 * mocked steps replaced by their mocks. Then the pipeline drains and finishes by itself.
 *
 * Nothing reaches an external system: a step that is not ready at startup (it connects to
 * something, like the postgres processor) stops the case before any message is fed, and a step
 * that becomes not ready later (a retry against a server) stops it at once; either way the case
 * fails and says which step to mock. A case that does not finish within the timeout is stopped.
 */
import pino, { type Logger } from 'pino';
import type { ComponentConfig, PipelineConfig } from './config.ts';
import { Health } from './health.ts';
import type { AckOutcome } from './message.ts';
import { Metrics } from './metrics.ts';
import type { AnyOperator, OperatorContext } from './operator.ts';
import { PipelineRuntime } from './pipeline.ts';
import type { TestCase } from './pipeline-test-file.ts';
import { captureTree, testInput, type Captured } from './pipeline-test-operators.ts';

export interface CaseRun {
  outputs: Captured[];
  deadLetters: Captured[];
  /** Outcome of each input message's acknowledgement (undefined: never settled). */
  outcomes: (AckOutcome | undefined)[];
  /** Steps that were not ready (waiting for an external system), with the reason. */
  notReady: { component: string; reason: string }[];
  timedOut: boolean;
  /** Error lines the pipeline logged (a failed pipeline, a failed close). */
  errors: string[];
}

export interface RunOptions {
  rootDir: string;
  timeoutMs: number;
  /** Log level for the pipeline's own logs on stderr; undefined: only errors, kept for the report. */
  logLevel?: string;
}

function caseLogger(errors: string[], level: string | undefined): Logger {
  const keep = {
    write(line: string) {
      try {
        const rec = JSON.parse(line) as { level?: number; msg?: string; err?: unknown; component?: string };
        if ((rec.level ?? 0) >= 50) errors.push(`${rec.component ? `${rec.component}: ` : ''}${rec.msg ?? ''}${rec.err ? `: ${typeof rec.err === 'string' ? rec.err : ((rec.err as { message?: string }).message ?? JSON.stringify(rec.err))}` : ''}`);
      } catch {
        /* not JSON: ignore */
      }
    },
  };
  if (!level) return pino({ level: 'error' }, keep);
  return pino({ level }, pino.multistream([{ level: 'error', stream: keep }, { level: level as pino.Level, stream: process.stderr }]));
}

/** A processor whose readiness is watched: not ready means it waits for an external system. */
function watched(c: ComponentConfig, onNotReady: (component: string, reason: string) => void): ComponentConfig {
  const real = c.operator;
  const operator = {
    spec: real.spec,
    create: (config: never, ctx: OperatorContext) =>
      real.create(config, {
        ...ctx,
        setReady: (ready: boolean, reason?: string) => {
          ctx.setReady(ready, reason);
          if (!ready) onNotReady(ctx.component, reason ?? 'not ready');
        },
      }),
  } as AnyOperator;
  return { ...c, operator };
}

export async function runCase(tc: TestCase, opts: RunOptions): Promise<CaseRun> {
  const p = tc.pipeline;
  const outputs: Captured[] = [];
  const deadLetters: Captured[] = [];
  const outcomes: (AckOutcome | undefined)[] = tc.input.map(() => undefined);
  const notReady: CaseRun['notReady'] = [];
  const errors: string[] = [];
  let abort: () => void = () => undefined;
  const aborted = new Promise<'aborted'>((resolve) => (abort = () => resolve('aborted')));
  const onNotReady = (component: string, reason: string) => {
    if (!notReady.some((n) => n.component === component)) notReady.push({ component, reason });
    abort();
  };

  const processors = p.processors.map((c, i) => {
    const mock = tc.mocks.get(i);
    if (!mock) return watched(c, onNotReady);
    const replaced: ComponentConfig = { kind: 'processor', name: mock.name, component: c.component, label: c.label, config: mock.config, operator: mock.operator, children: new Map() };
    return replaced;
  });
  const input: ComponentConfig = {
    ...p.input,
    config: {},
    operator: testInput(tc.input, outcomes, () => notReady.length > 0),
    children: new Map(),
  };
  const config: PipelineConfig = {
    ...p,
    input,
    processors,
    output: captureTree(p.output, outputs),
    deadLetter: p.deadLetter ? captureTree(p.deadLetter, deadLetters) : undefined,
    // A stopped case (timeout, a step not ready) is cut at once.
    shutdownTimeoutMs: 0,
  };
  const metrics = new Metrics();
  const runtime = new PipelineRuntime(config, { logger: caseLogger(errors, opts.logLevel), metrics, health: new Health(metrics), rootDir: opts.rootDir });
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), opts.timeoutMs)));
  runtime.start();
  const how = await Promise.race([runtime.finished.then(() => 'finished' as const), aborted, timeout]);
  clearTimeout(timer);
  if (how !== 'finished') await runtime.stop();
  return { outputs, deadLetters, outcomes, notReady, timedOut: how === 'timeout', errors };
}
