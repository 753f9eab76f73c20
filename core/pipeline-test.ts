/**
 * `runner test`: unit tests of pipelines, written in YAML next to them (`pipelines/<name>.test.yaml`,
 * format in core/pipeline-test-schema.ts, docs/testing-pipelines.md). Finds the test files, loads
 * each with its pipeline (core/pipeline-test-file.ts), runs every case on a fresh pipeline with
 * in-memory input and outputs (core/pipeline-test-run.ts), compares (core/pipeline-test-check.ts)
 * and prints a report: one line per case, and for a failed case its file:line:col and what differs.
 *
 * Exit code: 0 every case passed; 1 a case failed; 2 a test file (or its pipeline) has problems,
 * printed as file:line:col: message, or there is nothing to run.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { formatProblem, type Problem } from './config.ts';
import { verdict } from './pipeline-test-check.ts';
import { formatWhere, loadTestFile, type TestFile } from './pipeline-test-file.ts';
import { runCase } from './pipeline-test-run.ts';
import type { OperatorRegistry } from './registry.ts';

export const TEST_FILE = /\.test\.ya?ml$/;

export interface PipelineTestOptions {
  registry: OperatorRegistry;
  /** The project folder: schemas/ and migrations/ are found there. */
  rootDir: string;
  /** Longest a case may run. */
  timeoutMs: number;
  /** Show the pipelines' logs on stderr at this level. */
  logLevel?: string;
  /** Run only the cases whose name contains this. */
  name?: string;
  env?: Record<string, string | undefined>;
  write: (text: string) => void;
}

const display = (file: string) => {
  const r = relative(process.cwd(), file);
  return r.startsWith('..') || isAbsolute(r) ? file : r;
};

function testFilesIn(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? (e.name === 'node_modules' || e.name.startsWith('.') ? [] : testFilesIn(join(dir, e.name))) : TEST_FILE.test(e.name) ? [join(dir, e.name)] : []))
    .sort();
}

/**
 * The test files named by the arguments: a test file; a folder (its `*.test.yaml`, in subfolders
 * too); a pipeline file or name (its `.test.yaml` beside it). None: every test file in pipelines/.
 */
export function findTestFiles(args: string[], rootDir: string): { files: string[]; problems: string[] } {
  const files: string[] = [];
  const problems: string[] = [];
  if (!args.length) {
    const dir = existsSync(resolve('pipelines')) ? resolve('pipelines') : join(rootDir, 'pipelines');
    if (existsSync(dir)) files.push(...testFilesIn(dir));
    if (!files.length) problems.push(`no test files (*.test.yaml) in ${display(dir)}`);
    return { files, problems };
  }
  for (const arg of args) {
    const path = resolve(arg);
    const st = statSync(path, { throwIfNoEntry: false });
    if (st?.isDirectory()) {
      const found = testFilesIn(path);
      if (!found.length) problems.push(`no test files (*.test.yaml) in ${arg}`);
      files.push(...found);
    } else if (st && TEST_FILE.test(path)) files.push(path);
    else if (st && /\.ya?ml$/.test(path)) {
      const beside = path.replace(/\.ya?ml$/, '.test.yaml');
      if (existsSync(beside)) files.push(beside);
      else problems.push(`${arg} has no tests: expected ${display(beside)}`);
    } else if (!st && !arg.includes('/') && !/\.ya?ml$/.test(arg)) {
      const local = resolve('pipelines', `${arg}.test.yaml`);
      const named = existsSync(local) ? local : join(rootDir, 'pipelines', `${arg}.test.yaml`);
      if (existsSync(named)) files.push(named);
      else problems.push(`pipeline ${arg} has no tests: expected pipelines/${arg}.test.yaml`);
    } else problems.push(`${arg}: no such file or folder`);
  }
  return { files: [...new Set(files)], problems };
}

export async function runPipelineTests(args: string[], opts: PipelineTestOptions): Promise<number> {
  const { write } = opts;
  const found = findTestFiles(args, opts.rootDir);
  for (const p of found.problems) write(`${p}\n`);
  const invalid: Problem[] = [];
  const loaded: TestFile[] = [];
  for (const file of found.files) {
    // Read by the name shown in the report, so that every position in it reads the same way.
    const res = loadTestFile(display(file), { registry: opts.registry, rootDir: opts.rootDir, env: opts.env });
    if (res.ok) loaded.push(res.testFile);
    else invalid.push(...res.problems.map((p) => ({ ...p, file: display(p.file) })));
  }
  for (const p of invalid) write(`${formatProblem(p)}\n`);
  if (invalid.length) write(`${invalid.length} problem(s) in test files or their pipelines; those files were not run\n`);

  let passed = 0;
  let failed = 0;
  for (const tf of loaded) {
    const cases = tf.cases.filter((c) => opts.name === undefined || c.name.includes(opts.name));
    if (!cases.length) continue;
    write(`${display(tf.file)} (${display(tf.pipelineFile)})\n`);
    for (const tc of cases) {
      const run = await runCase(tc, { rootDir: opts.rootDir, timeoutMs: opts.timeoutMs, logLevel: opts.logLevel });
      const v = await verdict(tc, run);
      if (v.passed) {
        passed++;
        write(`  ok    ${tc.name}\n`);
      } else {
        failed++;
        write(`  FAIL  ${tc.name}\n        ${formatWhere(tc.where)}\n`);
        for (const d of v.details) write(`        ${d}\n`);
      }
    }
  }
  const total = passed + failed;
  if (!total && !invalid.length && !found.problems.length) write(opts.name === undefined ? 'no test cases\n' : `no test case name contains ${JSON.stringify(opts.name)}\n`);
  write(`${passed} passed, ${failed} failed (${loaded.length} file(s)${invalid.length ? `, ${new Set(invalid.map((p) => p.file)).size} invalid` : ''})\n`);
  if (invalid.length || found.problems.length || !total) return 2;
  return failed ? 1 : 0;
}
