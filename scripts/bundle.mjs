// Bundles kiln's compiled code (dist/src, from tsc) into dist/src/cli/kiln.cjs, the one script
// dist/src/cli/start.cjs runs, and makes its V8 code cache (code-cache.mjs).
// esbuild does the bundling (see the README's dependency notes). The bundle sits in dist/src/cli
// so that paths its modules take relative to import.meta.url (../../native/kiln-sandbox,
// ../rootfs/extract-worker.js) lead where they lead from their own directories.
import { build } from 'esbuild';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeCodeCache } from './code-cache.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outfile = join(root, 'dist', 'src', 'cli', 'kiln.cjs');
rmSync(`${outfile}.cache`, { force: true });

/**
 * fs-xattr is an ES module that finds its compiled addon relative to its own import.meta.url. In the
 * bundle that URL would be the bundle's, so it is pointed back at the package: fs-xattr is then
 * part of the bundle, and no ES module loader has to start for it (~13 ms of every run).
 */
const xattrFromItsPackage = {
  name: 'fs-xattr-addon-path',
  setup(builder) {
    builder.onLoad({ filter: /[\\/]node_modules[\\/]fs-xattr[\\/]index\.js$/ }, ({ path }) => {
      const source = readFileSync(path, 'utf8');
      if (!source.includes('import.meta.url')) throw new Error(`fs-xattr no longer finds its addon through import.meta.url (${path}): see scripts/bundle.mjs`);
      // The addon is also opened on first use rather than as the bundle loads (~3 ms of every run,
      // most of which never touch an xattr before their first request).
      const eager = "const addon = createRequire(import.meta.url)('./build/Release/xattr')";
      if (!source.includes(eager)) throw new Error(`fs-xattr no longer loads its addon as expected (${path}): see scripts/bundle.mjs`);
      const lazy = "let opened; const addon = new Proxy({}, { get: (_, key) => (opened ??= createRequire(import.meta.url)('./build/Release/xattr'))[key] })";
      return { contents: source.replace(eager, lazy).replaceAll('import.meta.url', "require('node:url').pathToFileURL(require('node:module').createRequire(__filename).resolve('fs-xattr')).href"), loader: 'js' };
    });
  },
};

/**
 * undici's HTTP/2 client requires node:http2 as it loads (~10 ms of every start-up) and falls back to
 * `{ constants: {} }` when that require throws, as on runtimes built without http2. kiln never
 * allows HTTP/2 (its dispatchers leave undici's allowH2 off, so TLS offers only http/1.1), so the
 * bundle takes that fallback. The plugin checks that the fallback is still there.
 */
const undiciWithoutHttp2 = {
  name: 'undici-without-http2',
  setup(builder) {
    builder.onLoad({ filter: /[\\/]node_modules[\\/]undici[\\/]lib[\\/]dispatcher[\\/]client-h2\.js$/ }, ({ path }) => {
      const source = readFileSync(path, 'utf8');
      const guarded = /try \{\s*http2 = require\('node:http2'\)\s*\} catch \{(?:\s*\/\/[^\n]*)*\s*http2 = \{ constants: \{\} \}/;
      if (!guarded.test(source)) throw new Error(`undici no longer falls back when node:http2 is missing (${path}): see scripts/bundle.mjs`);
      return { contents: source.replace("require('node:http2')", "(() => { throw new Error('kiln leaves HTTP/2 out') })()"), loader: 'js' };
    });
  },
};

/**
 * Built-in modules that most runs never use before their first request, or at all (a build that
 * only pulls and pushes spawns nothing, starts no worker, and compresses nothing): each is required
 * on first use of one of its exports instead of as the bundle loads (~4 ms of every start-up
 * together). Their export names are the ones this Node.js has, which is the one that runs the bundle.
 */
const LAZY_BUILTINS = ['node:child_process', 'node:worker_threads', 'node:zlib'];
const lazyBuiltins = {
  name: 'lazy-builtins',
  setup(builder) {
    const require = createRequire(import.meta.url);
    builder.onResolve({ filter: /^node:/ }, ({ path, namespace }) => {
      if (!LAZY_BUILTINS.includes(path)) return undefined;
      // The stand-in's own require of the module is the real one.
      return namespace === 'lazy-builtin' ? { path, external: true } : { path, namespace: 'lazy-builtin' };
    });
    builder.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, ({ path }) => {
      const getters = Object.keys(require(path)).map((key) => `Object.defineProperty(exports, ${JSON.stringify(key)}, { enumerable: true, get: () => load()[${JSON.stringify(key)}] });`);
      return { contents: [`let loaded; const load = () => (loaded ??= require(${JSON.stringify(path)}));`, ...getters].join('\n'), loader: 'js' };
    });
  },
};

const bundled = await build({
  entryPoints: [join(root, 'dist', 'src', 'cli', 'main.js')],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  sourcemap: true,
  logLevel: 'warning',
  // zstd-napi, a native addon loaded on first use, stays in node_modules.
  external: ['zstd-napi'],
  plugins: [xattrFromItsPackage, undiciWithoutHttp2, lazyBuiltins],
  // Each module's import.meta.url becomes the bundle's own (see above).
  define: { 'import.meta.url': '__kilnBundleUrl' },
  banner: { js: "const __kilnBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  write: false,
});

/**
 * A script of ASCII only is a one-byte string to V8: Node reads it about twice as fast (~4 ms of every
 * start) and V8 scans half the bytes. esbuild escapes strings but leaves regular expressions and
 * comments as written, so what is left is escaped here (\uXXXX means the same in both). Only a few
 * columns of the source map move, on the lines that had such a character.
 */
const asciiOnly = (text) => text.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
for (const file of bundled.outputFiles) {
  writeFileSync(file.path, file.path === outfile ? asciiOnly(file.text) : file.contents);
}

await makeCodeCache(join(root, 'dist', 'src', 'cli', 'start.cjs'));
