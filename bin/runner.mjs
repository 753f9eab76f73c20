#!/usr/bin/env node
// Runs the TypeScript CLI from source (no build step): tsx compiles on the fly.
import { register } from 'tsx/esm/api';

register();
await import('../runner.ts');
