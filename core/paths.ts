/**
 * The project folder (the one holding package.json and runner.ts), found from any module: from
 * source (core/, operators/postgres/, simulator/) and from the bundle bin/runner.mjs builds into
 * .build/, where every module shares one import.meta.url.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function findProjectRoot(from: string = import.meta.url): string {
  let dir = dirname(fileURLToPath(from));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'runner.ts'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`no project folder (package.json and runner.ts) above ${fileURLToPath(from)}`);
    dir = up;
  }
}

export const PROJECT_ROOT = findProjectRoot();
