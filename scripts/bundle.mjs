// Bundles kiln's compiled code (dist/src, from tsc) into dist/src/cli/kiln.cjs, the one script
// dist/src/cli/start.cjs runs, and makes its V8 code cache (code-cache.mjs).
// esbuild does the bundling (see the README's dependency notes). The bundle sits in dist/src/cli
// so that paths its modules take relative to import.meta.url (../../native/kiln-sandbox,
// ../rootfs/extract-worker.js) lead where they lead from their own directories.
import { build } from 'esbuild';
import { readFileSync, rmSync } from 'node:fs';
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
      return { contents: source.replaceAll('import.meta.url', "require('node:url').pathToFileURL(require('node:module').createRequire(__filename).resolve('fs-xattr')).href"), loader: 'js' };
    });
  },
};

await build({
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
  plugins: [xattrFromItsPackage],
  // Each module's import.meta.url becomes the bundle's own (see above).
  define: { 'import.meta.url': '__kilnBundleUrl' },
  banner: { js: "const __kilnBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
});

await makeCodeCache(join(root, 'dist', 'src', 'cli', 'start.cjs'));
