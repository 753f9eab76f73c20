/**
 * The runner's CLI.
 *
 * Exit codes: 0 ok; 1 problems found (lint); 2 usage or configuration error (nothing was started);
 * 3 runtime failure (a pipeline failed, or could not drain within shutdown_timeout).
 */
import { PROJECT_ROOT } from './core/paths.ts';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { stringify } from 'yaml';
import { formatProblem, loadPipeline, type PipelineConfig, type Problem } from './core/config.ts';
import { renderOperatorDocs, renderPipelineSchema } from './core/generate.ts';
import { Health, startHttpServer } from './core/health.ts';
import { createLogger } from './core/logger.ts';
import { Metrics } from './core/metrics.ts';
import { PipelineRuntime } from './core/pipeline.ts';
import { redactValue } from './core/redact.ts';
import { runPipelineTests } from './core/pipeline-test.ts';
import { renderPipelineTestSchema } from './core/pipeline-test-schema.ts';
import { parseDuration } from './core/duration.ts';
import { registry } from './operators/index.ts';
import { simulateCommand } from './simulator/cli.ts';
import { tapCommand } from './core/tap-cli.ts';
import { migrateCommand } from './operators/postgres/migrate-cli.ts';
import { applyTopics, describeChange, loadTopics, planTopics } from './operators/kafka/topics.ts';
import kafkajs from 'kafkajs';

const { Kafka, logLevel } = kafkajs;

export const ROOT = PROJECT_ROOT;
export const EXIT = { OK: 0, PROBLEMS: 1, USAGE: 2, RUNTIME: 3 } as const;

/** `name` -> pipelines/<name>.yaml (in the current folder, else the project's); a path as is. */
export function resolvePipelinePath(arg: string): string {
  if (arg.includes('/') || /\.ya?ml$/.test(arg)) return resolve(arg);
  const local = resolve('pipelines', `${arg}.yaml`);
  return existsSync(local) ? local : join(ROOT, 'pipelines', `${arg}.yaml`);
}

const display = (file: string) => {
  const r = relative(process.cwd(), file);
  return r.startsWith('..') || isAbsolute(r) ? file : r;
};

function loadAll(args: string[]): { pipelines: PipelineConfig[]; problems: Problem[] } {
  const pipelines: PipelineConfig[] = [];
  const problems: Problem[] = [];
  for (const arg of args) {
    const file = resolvePipelinePath(arg);
    const res = loadPipeline(file, { registry, rootDir: ROOT });
    if (res.ok) pipelines.push({ ...res.pipeline, file: display(file) });
    else problems.push(...res.problems.map((p) => ({ ...p, file: display(p.file) })));
  }
  const seen = new Map<string, string>();
  for (const p of pipelines) {
    if (seen.has(p.name)) problems.push({ file: p.file, line: 1, col: 1, message: `pipeline name "${p.name}" is also used by ${seen.get(p.name)}; names must be unique in one process` });
    seen.set(p.name, p.file);
  }
  return { pipelines, problems };
}

function defaultPipelineFiles(): string[] {
  const dir = resolve('pipelines');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f) && !f.endsWith('.test.yaml'))
    .sort()
    .map((f) => join(dir, f));
}

export function redactedConfig(p: PipelineConfig): unknown {
  return redactValue(p.raw, p.secretPaths);
}

const program = new Command();
program
  .name('runner')
  .description('Declarative stream-processing pipelines in YAML, run with at-least-once delivery.')
  .addHelpText('after', '\nExit codes: 0 ok, 1 problems found (lint), 2 usage or config error, 3 runtime failure (a pipeline failed or could not drain).')
  .showHelpAfterError()
  .exitOverride((err) => {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(EXIT.OK);
    process.exit(EXIT.USAGE);
  });

program
  .command('start')
  .description('Run one or more pipelines in this process until stopped (SIGINT/SIGTERM) or their inputs end.')
  .argument('<pipeline...>', 'pipeline names (pipelines/<name>.yaml) or paths')
  .addOption(new Option('--http-host <host>', 'address of the health and metrics server').env('RUNNER_HTTP_HOST').default('0.0.0.0'))
  .addOption(new Option('--http-port <port>', 'port of the health and metrics server (0 = any free port)').env('RUNNER_HTTP_PORT').default('4195'))
  .addOption(new Option('--log-level <level>', 'log level').env('LOG_LEVEL').default('info'))
  .action(async (args: string[], opts: { httpHost: string; httpPort: string; logLevel: string }) => {
    const { pipelines, problems } = loadAll(args);
    if (problems.length) {
      for (const p of problems) process.stderr.write(`${formatProblem(p)}\n`);
      process.stderr.write(`${problems.length} problem(s); nothing was started\n`);
      process.exit(EXIT.USAGE);
    }
    const logger = createLogger({ level: opts.logLevel });
    const metrics = new Metrics({ defaults: true });
    const health = new Health(metrics);
    let server: Awaited<ReturnType<typeof startHttpServer>>;
    let runtimes: PipelineRuntime[] = [];
    const taps = { taps: (name: string) => runtimes.find((r) => r.name === name)?.taps, pipelines: () => runtimes.map((r) => r.name) };
    try {
      server = await startHttpServer({ host: opts.httpHost, port: Number(opts.httpPort), health, metrics, taps });
    } catch (err) {
      logger.error({ err }, `cannot listen on ${opts.httpHost}:${opts.httpPort} for /health and /metrics; set --http-port or RUNNER_HTTP_PORT`);
      process.exit(EXIT.USAGE);
    }
    const address = server.server.address();
    logger.info({ http: typeof address === 'object' && address ? `${address.address}:${address.port}` : address, pipelines: pipelines.map((p) => p.name) }, 'runner started');
    runtimes = pipelines.map((p) => new PipelineRuntime(p, { logger, metrics, health, rootDir: ROOT }));
    for (const r of runtimes) r.start();

    let exiting = false;
    const finish = async (results: { drained: boolean }[]) => {
      if (exiting) return;
      exiting = true;
      await server.close();
      const ok = results.every((r) => r.drained);
      logger.info({ ok }, 'runner stopped');
      logger.flush?.();
      process.exit(ok ? EXIT.OK : EXIT.RUNTIME);
    };
    let signals = 0;
    const onSignal = (sig: string) => {
      signals++;
      if (signals > 1) {
        logger.error({ signal: sig }, 'second signal: exiting at once; unfinished messages will be delivered again');
        process.exit(EXIT.RUNTIME);
      }
      logger.info({ signal: sig }, 'stopping');
      void Promise.all(runtimes.map((r) => r.stop())).then(finish);
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    // All inputs ended by themselves (e.g. generate with a count): stop when drained.
    void Promise.all(runtimes.map((r) => r.finished)).then((results) => {
      if (signals === 0) void finish(results);
    });
  });

program
  .command('lint')
  .description('Check pipeline files and report every problem as file:line:col: message.')
  .argument('[file...]', 'pipeline files (default: every file in pipelines/)')
  .action((files: string[]) => {
    const targets = files.length ? files : defaultPipelineFiles();
    if (!targets.length) {
      process.stderr.write('no pipeline files given and none found in pipelines/\n');
      process.exit(EXIT.USAGE);
    }
    const { problems, pipelines } = loadAll(targets);
    for (const p of problems) process.stdout.write(`${formatProblem(p)}\n`);
    if (problems.length) {
      process.stderr.write(`${problems.length} problem(s) in ${targets.length} file(s)\n`);
      process.exit(EXIT.PROBLEMS);
    }
    process.stderr.write(`${pipelines.length} pipeline(s) OK\n`);
  });

program
  .command('echo')
  .description('Print a pipeline as the runner understands it: defaults filled, variables resolved, secrets redacted.')
  .argument('<pipeline>', 'pipeline name or path')
  .action((arg: string) => {
    const { pipelines, problems } = loadAll([arg]);
    if (problems.length) {
      for (const p of problems) process.stderr.write(`${formatProblem(p)}\n`);
      process.exit(EXIT.USAGE);
    }
    process.stdout.write(stringify(redactedConfig(pipelines[0]!)));
  });

program
  .command('list')
  .description('List every operator with its kind and a one-line summary.')
  .option('--json', 'print JSON')
  .action((opts: { json?: boolean }) => {
    const rows = (['input', 'processor', 'output'] as const).flatMap((kind) => registry.names(kind).map((name) => ({ name, kind, summary: registry.get(kind, name)!.spec.summary })));
    if (opts.json) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    else for (const r of rows) process.stdout.write(`${r.kind.padEnd(10)} ${r.name.padEnd(24)} ${r.summary}\n`);
  });

program
  .command('docs')
  .description('Write docs/operators/*.md and schemas/pipeline.schema.json from the operator specs, and schemas/pipeline-test.schema.json.')
  .option('--out <dir>', 'folder for the operator docs', join(ROOT, 'docs', 'operators'))
  .action((opts: { out: string }) => {
    mkdirSync(opts.out, { recursive: true });
    const files = renderOperatorDocs(registry);
    for (const [name, text] of files) writeFileSync(join(opts.out, name), text);
    writeFileSync(join(ROOT, 'schemas', 'pipeline.schema.json'), renderPipelineSchema(registry));
    writeFileSync(join(ROOT, 'schemas', 'pipeline-test.schema.json'), renderPipelineTestSchema());
    process.stderr.write(`wrote ${files.size} files to ${display(opts.out)}, schemas/pipeline.schema.json and schemas/pipeline-test.schema.json\n`);
  });

program
  .command('test')
  .description('Run the unit tests of pipelines written next to them (<name>.test.yaml): input messages, expected output, dead letters, mocks. See docs/testing-pipelines.md.')
  .argument('[path...]', 'test files, folders, or pipeline files or names (default: every pipelines/*.test.yaml)')
  .option('--timeout <duration>', 'longest a case may run before it fails', '10s')
  .option('--name <text>', 'run only the cases whose name contains this text')
  .addOption(new Option('--log <level>', 'show the pipelines\' logs on stderr at this level').choices(['trace', 'debug', 'info', 'warn', 'error']))
  .addHelpText('after', '\nExit codes: 0 every case passed, 1 a case failed, 2 a test file or its pipeline has problems (printed as file:line:col: message).')
  .action(async (paths: string[], opts: { timeout: string; name?: string; log?: string }) => {
    let timeoutMs: number;
    try {
      timeoutMs = parseDuration(/^\d+$/.test(opts.timeout) ? Number(opts.timeout) : opts.timeout);
    } catch {
      process.stderr.write(`--timeout: expected a duration such as 10s, got ${opts.timeout}\n`);
      process.exit(EXIT.USAGE);
    }
    const code = await runPipelineTests(paths, { registry, rootDir: ROOT, timeoutMs, name: opts.name, logLevel: opts.log, write: (t) => process.stdout.write(t) });
    process.exit(code);
  });

const topics = program.command('topics').description('Manage the Kafka topics declared in topics.yaml.');
const topicOpts = (c: Command) =>
  c
    .option('-f, --file <file>', 'topics file', 'topics.yaml')
    .addOption(new Option('--brokers <list>', 'Kafka brokers, comma-separated').env('KAFKA_BROKERS').default('127.0.0.1:9092'));

async function withTopics(opts: { file: string; brokers: string }, fn: (admin: kafkajs.Admin, wanted: ReturnType<typeof loadTopics>['topics']) => Promise<number>) {
  const file = resolve(opts.file);
  const { topics: wanted, problems } = loadTopics(file, join(ROOT, 'schemas', 'topics.schema.json'));
  if (problems.length) {
    for (const p of problems) process.stderr.write(`${formatProblem({ ...p, file: display(p.file) })}\n`);
    process.exit(EXIT.USAGE);
  }
  const kafka = new Kafka({ clientId: 'runner-topics', brokers: opts.brokers.split(',').map((b) => b.trim()), logLevel: logLevel.NOTHING, retry: { retries: 3 } });
  const admin = kafka.admin();
  try {
    await admin.connect();
  } catch (err) {
    process.stderr.write(`cannot connect to Kafka at ${opts.brokers}: ${(err as Error).message}; is it running? (set --brokers or KAFKA_BROKERS)\n`);
    process.exit(EXIT.USAGE);
  }
  try {
    process.exitCode = await fn(admin, wanted);
  } finally {
    await admin.disconnect();
  }
}

topicOpts(topics.command('diff').description('Show what `apply` would change; changes nothing. Exit 1 when there are differences.')).action((opts) =>
  withTopics(opts, async (admin, wanted) => {
    const changes = await planTopics(admin, wanted);
    for (const c of changes) process.stdout.write(`${describeChange(c)}\n`);
    if (!changes.length) process.stdout.write('topics are up to date\n');
    return changes.length ? EXIT.PROBLEMS : EXIT.OK;
  }),
);
topicOpts(topics.command('apply').description('Create missing topics, add partitions and set configs from topics.yaml; prints what it changed.')).action((opts) =>
  withTopics(opts, async (admin, wanted) => {
    const changes = await planTopics(admin, wanted);
    const errors = changes.filter((c) => c.kind === 'error');
    for (const c of errors) process.stderr.write(`${describeChange(c)}\n`);
    if (errors.length) {
      process.stderr.write('nothing was changed\n');
      return EXIT.PROBLEMS;
    }
    await applyTopics(admin, wanted, changes);
    for (const c of changes) process.stdout.write(`${describeChange(c)}\n`);
    process.stdout.write(changes.length ? `${changes.length} change(s) applied\n` : 'topics are up to date\n');
    return EXIT.OK;
  }),
);
topics
  .command('list')
  .description('List the topics declared in topics.yaml.')
  .option('-f, --file <file>', 'topics file', 'topics.yaml')
  .action((opts: { file: string }) => {
    const { topics: wanted, problems } = loadTopics(resolve(opts.file), join(ROOT, 'schemas', 'topics.schema.json'));
    if (problems.length) {
      for (const p of problems) process.stderr.write(`${formatProblem({ ...p, file: display(p.file) })}\n`);
      process.exit(EXIT.USAGE);
    }
    for (const t of wanted) process.stdout.write(`${t.name.padEnd(30)} partitions=${t.partitions} replication=${t.replicationFactor} ${Object.entries(t.configs).map(([k, v]) => `${k}=${v}`).join(' ')}\n`);
  });

simulateCommand(program);
tapCommand(program);
migrateCommand(program);

await program.parseAsync(process.argv);
