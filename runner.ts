/**
 * The runner's CLI.
 *
 * Exit codes: 0 ok; 1 problems found (lint); 2 usage or configuration error (nothing was started);
 * 3 runtime failure (a pipeline failed, or could not drain within shutdown_timeout).
 */
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
import { registry } from './operators/index.ts';

export const ROOT = dirname(fileURLToPath(import.meta.url));
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
    try {
      server = await startHttpServer({ host: opts.httpHost, port: Number(opts.httpPort), health, metrics });
    } catch (err) {
      logger.error({ err }, `cannot listen on ${opts.httpHost}:${opts.httpPort} for /health and /metrics; set --http-port or RUNNER_HTTP_PORT`);
      process.exit(EXIT.USAGE);
    }
    const address = server.server.address();
    logger.info({ http: typeof address === 'object' && address ? `${address.address}:${address.port}` : address, pipelines: pipelines.map((p) => p.name) }, 'runner started');
    const runtimes = pipelines.map((p) => new PipelineRuntime(p, { logger, metrics, health, rootDir: ROOT }));
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
  .description('Write docs/operators/*.md and schemas/pipeline.schema.json from the operator specs.')
  .option('--out <dir>', 'folder for the operator docs', join(ROOT, 'docs', 'operators'))
  .action((opts: { out: string }) => {
    mkdirSync(opts.out, { recursive: true });
    const files = renderOperatorDocs(registry);
    for (const [name, text] of files) writeFileSync(join(opts.out, name), text);
    writeFileSync(join(ROOT, 'schemas', 'pipeline.schema.json'), renderPipelineSchema(registry));
    process.stderr.write(`wrote ${files.size} files to ${display(opts.out)} and schemas/pipeline.schema.json\n`);
  });

await program.parseAsync(process.argv);
