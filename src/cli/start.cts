// kiln's entry point (bin/kiln; kiln-launch in kiln's image): the bundle when the build made one
// (bundle.cts), else the module tree tsc wrote.
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { bundlePath, runBundle } from './bundle.cjs';

// Layer compression runs in libuv's thread pool (4 threads by default): give it every core. libuv
// reads the variable when the pool first starts, which is after this line.
process.env['UV_THREADPOOL_SIZE'] ||= String(Math.max(4, availableParallelism() + 2));

if (existsSync(bundlePath)) runBundle();
else void import('./main.js');
