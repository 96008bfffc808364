// kiln's entry point (bin/kiln; kiln-launch in kiln's image): the bundle when the build made one
// (bundle.cts), else the module tree tsc wrote.
import { existsSync } from 'node:fs';
import { bundlePath, runBundle } from './bundle.cjs';

if (existsSync(bundlePath)) runBundle();
else void import('./main.js');
