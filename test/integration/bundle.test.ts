// kiln runs as one bundle with a V8 code cache (src/cli/bundle.cts, scripts/bundle.mjs): the cache
// must be one V8 accepts, and the bundle must hold all the code it runs, building what the module
// tree builds.
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { mustRun } from '../helpers/exec.js';
import { repoRoot } from '../helpers/paths.js';

const cliDir = join(repoRoot, 'dist', 'src', 'cli');
let dir: string;
let bundleOnly: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-bundle-'));
  // Inside dist, so node_modules resolves as from the real bundle; outside dist/src, so no module of
  // the tree is within reach of a relative import.
  bundleOnly = await mkdtemp(join(repoRoot, 'dist', 'bundle-only-'));
  await mkdir(join(bundleOnly, 'src', 'cli'), { recursive: true });
  for (const file of ['start.cjs', 'bundle.cjs', 'kiln.cjs', 'kiln.cjs.cache']) await copyFile(join(cliDir, file), join(bundleOnly, 'src', 'cli', file));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
  await rm(bundleOnly, { recursive: true, force: true });
});

describe("kiln's bundle", () => {
  it('starts with the code cache made at build time, not a rejected or missing one', async () => {
    const cache = await mustRun(process.execPath, ['-e', `process.stdout.write(require(${JSON.stringify(join(cliDir, 'bundle.cjs'))}).compileBundle().cache)`], { env: { ...process.env, NODE_OPTIONS: '' } });
    assert.equal(cache, 'used');
  });

  it('loads child_process, worker_threads and zlib on first use only: a build that needs none never loads them', async () => {
    const ctx = join(dir, 'metadata-only');
    await mkdir(ctx);
    await writeFile(join(ctx, 'Dockerfile'), 'FROM scratch\nENV A=1\nLABEL b=c\n');
    const preload = join(dir, 'loaded-at-exit.cjs');
    await writeFile(preload, "process.on('exit', () => require('fs').writeFileSync(process.env.KILN_TEST_LOADED, process.moduleLoadList.join('\\n')));\n");
    const loaded = async (name: string, args: string[]): Promise<string[]> => {
      const out = join(dir, `loaded-${name}.txt`);
      await mustRun(process.execPath, ['--require', preload, join(bundleOnly, 'src', 'cli', 'start.cjs'), ...args], { env: { ...process.env, NODE_OPTIONS: '', KILN_TEST_LOADED: out } });
      return (await readFile(out, 'utf8')).split('\n').filter((m) => /^NativeModule (child_process|worker_threads|zlib)$/.test(m));
    };
    assert.deepEqual(await loaded('metadata', ['executor', '-c', ctx, '--no-push', '-d', 'kiln.invalid/lazy:1', '--tar-path', join(dir, 'lazy.tar')]), []);
    // A layer is gzipped: zlib is there when its first export is used.
    await writeFile(join(ctx, 'a.txt'), 'a\n');
    await writeFile(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY a.txt /a.txt\n');
    assert.ok((await loaded('copy', ['executor', '-c', ctx, '--no-push', '-d', 'kiln.invalid/lazy:2', '--tar-path', join(dir, 'lazy2.tar')])).includes('NativeModule zlib'));
  });

  it('builds without the module tree, the same image as the module tree builds', async () => {
    const ctx = join(dir, 'ctx');
    await mkdir(ctx);
    await writeFile(join(ctx, 'a.txt'), 'a\n');
    await writeFile(join(ctx, 'Dockerfile'), 'FROM scratch\nARG V=1\nENV V=$V\nWORKDIR /app\nCOPY a.txt .\nLABEL x=y\nCMD ["/app/a.txt"]\n');
    const build = async (entry: string, name: string): Promise<string> => {
      const tar = join(dir, `${name}.tar`);
      await mustRun(process.execPath, [entry, 'executor', '-c', ctx, '--no-push', '--reproducible', '-d', 'kiln.invalid/bundle:1', '--tar-path', tar]);
      return createHash('sha256').update(await readFile(tar)).digest('hex');
    };
    const fromBundleAlone = await build(join(bundleOnly, 'src', 'cli', 'start.cjs'), 'bundle-only');
    assert.equal(fromBundleAlone, await build(join(cliDir, 'main.js'), 'module-tree'));
  });
});
