/**
 * `runner tap <pipeline> [step]`: print the messages passing a step of a pipeline that a running
 * runner process executes, like `vector tap`. Reads `GET /tap/<pipeline>` of that runner's HTTP
 * server (core/tap-http.ts); the pipeline is not disturbed (a slow terminal makes the server drop
 * tap events, never the pipeline wait).
 */
import { existsSync, readFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { parse } from 'yaml';
import type { TapEvent } from './tap.ts';

/** A pipeline name, or the `name:` of a pipeline file given by path. */
function pipelineName(arg: string): string {
  if ((arg.includes('/') || /\.ya?ml$/.test(arg)) && existsSync(arg)) {
    const doc = parse(readFileSync(arg, 'utf8')) as { name?: unknown } | null;
    if (doc && typeof doc.name === 'string') return doc.name;
  }
  return arg.replace(/\.ya?ml$/, '').replace(/^.*\//, '');
}

export function formatTapLine(line: string, format: 'pretty' | 'json'): string | null {
  if (!line.trim()) return null;
  if (format === 'json') return line;
  const obj = JSON.parse(line) as Partial<TapEvent> & { notice?: string; steps?: { step: string }[]; count?: number; reason?: string };
  if (obj.notice === 'tapping') return `# tapping ${obj.steps?.map((s) => s.step).join(', ')} (Ctrl-C to stop)`;
  if (obj.notice === 'dropped') return `# ${obj.count} message(s) not shown: ${obj.reason}`;
  if (obj.notice) return `# ${JSON.stringify(obj)}`;
  const headers = obj.headers && Object.keys(obj.headers).length ? ` headers=${JSON.stringify(obj.headers)}` : '';
  const value = typeof obj.value === 'string' ? obj.value : JSON.stringify(obj.value);
  return `${obj.at} ${obj.step} key=${obj.key ?? '-'}${headers} ${value}`;
}

export function tapCommand(program: Command): void {
  program
    .command('tap')
    .description('Show live messages passing a step of a running pipeline (all steps when none is named), without disturbing it.')
    .argument('<pipeline>', 'pipeline name (or its file)')
    .argument('[step]', 'label or path (pipeline.1.validate), operator name, processor index, input, output or dead_letter')
    .addOption(new Option('--url <url>', 'HTTP address of the running runner').env('RUNNER_TAP_URL'))
    .addOption(new Option('--http-port <port>', 'HTTP port of the running runner, when --url is not given').env('RUNNER_HTTP_PORT').default('4195'))
    .option('-n, --limit <n>', 'stop after n messages')
    .addOption(new Option('--format <format>', 'output format').choices(['pretty', 'json']).default('pretty'))
    .addOption(new Option('--token <token>', 'bearer token when the runner sets RUNNER_TAP_TOKEN').env('RUNNER_TAP_TOKEN'))
    .action(async (arg: string, step: string | undefined, opts: { url?: string; httpPort: string; limit?: string; format: 'pretty' | 'json'; token?: string }) => {
      const base = (opts.url ?? `http://127.0.0.1:${opts.httpPort}`).replace(/\/$/, '');
      const name = pipelineName(arg);
      const query = new URLSearchParams();
      if (step) query.set('step', step);
      if (opts.limit) query.set('limit', opts.limit);
      const url = `${base}/tap/${encodeURIComponent(name)}${query.size ? `?${query}` : ''}`;
      let res: Response;
      try {
        res = await fetch(url, { headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {} });
      } catch (err) {
        const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
        process.stderr.write(`no runner answers at ${base} (${cause}); is \`runner start ${name}\` running? Pass its HTTP address with --url or --http-port\n`);
        process.exit(2);
      }
      if (!res.ok) {
        const body = (await res.json().catch(() => ({}))) as { error?: string; steps?: { step: string; kind: string; operator: string }[]; pipelines?: string[] };
        process.stderr.write(`${body.error ?? `HTTP ${res.status}`}\n`);
        if (body.steps) process.stderr.write(`steps of ${name}:\n${body.steps.map((s) => `  ${s.step}  (${s.kind} ${s.operator})`).join('\n')}\n`);
        if (body.pipelines) process.stderr.write(`pipelines of this runner: ${body.pipelines.join(', ') || '(none)'}\n`);
        process.exit(2);
      }
      const decoder = new TextDecoder();
      let rest = '';
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        rest += decoder.decode(chunk, { stream: true });
        const lines = rest.split('\n');
        rest = lines.pop()!;
        for (const l of lines) {
          const out = formatTapLine(l, opts.format);
          if (out !== null) process.stdout.write(`${out}\n`);
        }
      }
    });
}
