#!/usr/bin/env -S node --max-old-space-size=512
// Runs the runner. The TypeScript sources are bundled with esbuild into .build/runner.mjs when
// they changed since the last bundle (about half a second), and the bundle is run: the same code as
// the sources, started faster and in less memory than compiling on the fly (tsx keeps a loader
// thread with its own heap). RUNNER_FROM_SOURCE=1 runs the sources with tsx instead (stack traces
// with source lines); so does a bundle that cannot be built.
// The heap limit on the first line (also in the Dockerfile and `npm run runner`) keeps V8 from
// sizing its heap for the whole machine and letting garbage pile up (~160 instead of ~290 MB
// resident for a bridge at full speed); `node bin/runner.mjs` without it runs with V8's default.
import { mkdirSync, readdirSync, renameSync, statSync, utimesSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const bundle = join(root, '.build', 'runner.mjs');
const SOURCES = ['runner.ts', 'core', 'operators', 'simulator', 'package-lock.json'];

/** Newest modification time of the sources (folders walked for .ts files). */
function newestSource() {
  let newest = 0;
  const visit = (p) => {
    const st = statSync(p, { throwIfNoEntry: false });
    if (!st) return;
    if (st.isDirectory()) {
      for (const e of readdirSync(p)) visit(join(p, e));
    } else if (p.endsWith('.ts') || p.endsWith('.json')) newest = Math.max(newest, st.mtimeMs);
  };
  for (const s of SOURCES) visit(join(root, s));
  return newest;
}

async function build() {
  const esbuild = await import('esbuild');
  mkdirSync(dirname(bundle), { recursive: true });
  const tmp = `${bundle}.${process.pid}.tmp`;
  // The bundle is dated when the build began (less a second for coarse file times), not when it
  // was written: a source saved while esbuild was reading (an edit in two steps) is newer than the
  // bundle and triggers the next build, instead of leaving a bundle of the half-edited file.
  const started = (Date.now() - 1000) / 1000;
  await esbuild.build({
    entryPoints: [join(root, 'runner.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    outfile: tmp,
    logLevel: 'silent',
  });
  utimesSync(tmp, started, started);
  // Atomic: another process starting at the same time sees the old bundle or the new one.
  renameSync(tmp, bundle);
}

// `runner list | head`: a closed pipe is not an error.
process.stdout.on('error', (err) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

let entry = null;
if (process.env.RUNNER_FROM_SOURCE !== '1') {
  try {
    const built = statSync(bundle, { throwIfNoEntry: false })?.mtimeMs ?? 0;
    if (built < newestSource()) await build();
    entry = pathToFileURL(bundle).href;
  } catch (err) {
    process.stderr.write(`runner: cannot bundle the sources (${err?.message ?? err}); running them with tsx\n`);
  }
}
if (entry) await import(entry);
else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../runner.ts');
}
