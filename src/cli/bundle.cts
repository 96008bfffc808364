// kiln's code as one bundle: dist/src/cli/kiln.cjs, made by scripts/bundle.mjs after tsc, run with
// the V8 code cache made at build time. Start-up is part of every CI job, and a tree of ~110 ES
// modules costs ~100 ms more to find, read, compile and link than one cached script.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { Script } from 'node:vm';

// main.ts sets this too; V8 rejects a code cache made under other flags, so it must come first here.
setFlagsFromString('--liftoff-only');

export const bundlePath = join(__dirname, 'kiln.cjs');
const cachePath = `${bundlePath}.cache`;

export interface CompiledBundle {
  script: Script;
  /** used: V8 took the cache; rejected: it did not (another Node.js, other V8 flags); missing: none was made. */
  cache: 'used' | 'rejected' | 'missing';
}

export function compileBundle(): CompiledBundle {
  let cachedData: Buffer | undefined;
  try {
    cachedData = readFileSync(cachePath);
  } catch {
    // No cache (the warm-up build failed at build time): V8 compiles as usual.
  }
  const wrapped = `(function (exports, require, module, __filename, __dirname) {${readFileSync(bundlePath, 'utf8')}\n})`;
  const script = new Script(wrapped, { filename: bundlePath, cachedData });
  return { script, cache: !cachedData ? 'missing' : script.cachedDataRejected ? 'rejected' : 'used' };
}

type ModuleFunction = (exports: object, require: NodeJS.Require, module: { exports: object }, filename: string, dirname: string) => void;

/** Runs kiln (its command line starts as the bundle runs). */
export function runBundle(): void {
  // Node's own loader maps stack traces through the bundle's source map; vm scripts are not mapped.
  if (process.sourceMapsEnabled) {
    createRequire(__filename)(bundlePath);
    return;
  }
  const { script } = compileBundle();
  // scripts/code-cache.mjs runs a warm-up build with this set, so the cache holds the functions kiln runs.
  if (process.env['KILN_WRITE_CODE_CACHE'] === '1') {
    process.once('exit', () => {
      writeFileSync(`${cachePath}.tmp`, script.createCachedData());
      renameSync(`${cachePath}.tmp`, cachePath);
    });
  }
  const loaded = { exports: {} };
  (script.runInThisContext() as ModuleFunction)(loaded.exports, createRequire(bundlePath), loaded, bundlePath, __dirname);
}
