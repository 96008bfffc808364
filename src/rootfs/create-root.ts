// Picks and makes build roots for a build: chroot isolation on overlayfs when the kernel allows it
// (probed once), on a plain directory otherwise; container isolation on "/" itself.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import { log } from '../log/logger.js';
import { sandboxBinary } from '../isolation/sandbox-binary.js';
import type { SnapshotMode } from '../snapshot/walk-snapshot.js';
import type { ExtractJob } from './extract-in-worker.js';
import { isIgnored } from '../snapshot/tree-walk.js';
import type { LayerListing } from '../cache/layer-listing.js';
import type { BuildRoot, LayerSource } from './build-root.js';
import { DirectoryRoot } from './directory-root.js';
import type { AheadLayer, LayersAhead } from './layers-ahead.js';
import { LayerDirectories, OverlayRoot } from './overlay-root.js';
import { removeTree } from '../util/remove-tree.js';

export type Isolation = 'chroot' | 'container';

export interface RootOptions {
  isolation: Isolation;
  /** kiln's own directory in container isolation (kaniko's --kaniko-dir). */
  kanikoDir: string;
  /** --ignore-path values (absolute in-image paths). */
  ignorePaths: string[];
  ignoreVarRun: boolean;
  snapshotMode: SnapshotMode;
  /** Container isolation: wipe "/" when the build ends. */
  cleanup: boolean;
  /** Extra attempts at extracting a layer that failed. */
  extractRetries: number;
}

export interface RootFactory {
  readonly description: string;
  /** A root for the next stage (container isolation: "/" wiped back to empty but for ignored paths). */
  create(): Promise<BuildRoot>;
  /**
   * Unpacks a layer that a root of this build will need, before any root asks (overlay roots only:
   * others unpack in create()), listing it in the same pass; undefined when it was not listed.
   */
  unpack?(layer: LayerSource): Promise<LayerListing | undefined>;
  /** Starts unpacking a layer still downloading into the blob file `path` will name (LayerDirectories.unpackGrowing). */
  unpackGrowing?(layer: { digest: string; size: number }, path: string, growing: NonNullable<ExtractJob['growing']>): void;
  /**
   * Starts applying the first layers of the next root (a stage's base) as they download (container
   * isolation: DirectoryRoot.applyAhead); undefined when that root is in use already.
   */
  applyAhead?(layers: readonly AheadLayer[], stored: (digest: string) => LayerSource): LayersAhead | undefined;
  dispose(): Promise<void>;
}

export async function createRootFactory(options: RootOptions): Promise<RootFactory> {
  if (options.isolation === 'container') return containerFactory(options);
  const work = await mkdtemp(join(tmpdir(), 'kiln-root-'));
  // KILN_OVERLAY=0 forces the walk (troubleshooting, and the tests of the fallback).
  if (process.env['KILN_OVERLAY'] !== '0' && await overlayWorks(join(work, 'probe'))) {
    const dirs = new LayerDirectories(work, options.extractRetries);
    return { description: 'chroot isolation on overlayfs', create: async () => new OverlayRoot(dirs), unpack: (layer) => dirs.unpack(layer),
      unpackGrowing: (layer, path, growing) => dirs.unpackGrowing(layer, path, growing), dispose: () => dirs.dispose() };
  }
  log.info('overlayfs is not used here: RUN snapshots compare the whole tree before and after each step');
  let n = 0;
  return {
    description: 'chroot isolation on a directory',
    create: async () => {
      const path = join(work, `root${n++}`);
      await mkdir(path);
      return new DirectoryRoot({ path, isolation: 'chroot', workDir: path + '.work', ignored: [], snapshotMode: options.snapshotMode, extractRetries: options.extractRetries });
    },
    dispose: () => removeTree(work, 'rm-program'),
  };
}

async function overlayWorks(dir: string): Promise<boolean> {
  const ok = await new Promise<boolean>((resolve) => {
    const child = spawn(sandboxBinary(), ['probe-overlay', dir], { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('close', (code) => resolve(code === 0));
  });
  await rm(dir, { recursive: true, force: true });
  return ok;
}

async function containerFactory(options: RootOptions): Promise<RootFactory> {
  const ignored = await containerIgnoreList(options);
  log.debug(`Ignore list: ${ignored.map((p) => '/' + p).join(' ')}`);
  const workDir = join(options.kanikoDir, 'run');
  let used = false;
  /** "/" holds the layers applied ahead for the next create(): it must not be wiped. */
  let claimed = false;
  const root = new DirectoryRoot({ path: '/', isolation: 'container', workDir, ignored, snapshotMode: options.snapshotMode, extractRetries: options.extractRetries });
  return {
    description: 'container isolation',
    create: async () => {
      if (used && !claimed) await wipe('/', '', ignored);
      used = true;
      claimed = false;
      return root;
    },
    applyAhead: (layers, stored) => {
      if (used) return undefined;
      used = claimed = true;
      return root.applyAhead(layers, stored);
    },
    dispose: async () => {
      await rm(workDir, { recursive: true, force: true });
      if (options.cleanup && used) await wipe('/', '', ignored);
    },
  };
}

/** kaniko's ignore list: every mount point but "/", kiln's directory, /etc/mtab, /var/run, --ignore-path. */
async function containerIgnoreList(options: RootOptions): Promise<string[]> {
  const paths = new Set<string>();
  const add = (abs: string): void => {
    const rel = abs.replace(/^\/+/, '').replace(/\/+$/, '');
    if (rel !== '') paths.add(rel);
  };
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  for (const line of mountinfo.split('\n')) {
    const field = line.split(' ')[4];
    if (field) add(field.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  add(options.kanikoDir);
  add('/etc/mtab');
  if (options.ignoreVarRun) add('/var/run');
  for (const p of options.ignorePaths) add(p);
  return [...paths].sort();
}

/** Removes everything under dir that is neither ignored nor holding an ignored path. */
async function wipe(abs: string, rel: string, ignored: readonly string[]): Promise<void> {
  for (const name of await readdir(abs)) {
    const path = rel === '' ? name : `${rel}/${name}`;
    if (isIgnored(path, ignored)) continue;
    const child = join(abs, name);
    if (ignored.some((p) => p.startsWith(path + '/'))) await wipe(child, path, ignored);
    else await rm(child, { recursive: true, force: true });
  }
}

/** Whether kiln runs inside a container (kaniko's check before it writes to "/"). */
export async function inContainer(): Promise<boolean> {
  if (existsSync('/.dockerenv') || existsSync('/run/.containerenv') || process.env['container']) return true;
  const cgroup = await readFile('/proc/1/cgroup', 'utf8').catch(() => '');
  return /docker|kubepods|containerd|libpod|lxc/.test(cgroup);
}

/**
 * Why container isolation would be unsafe here, or undefined. It makes "/" the build root, so kiln
 * must be in a container (kaniko's check) and everything kiln runs from (Node.js, its code) must
 * live under its own directory, which the build never touches.
 */
export async function containerIsolationProblem(kanikoDir: string): Promise<string | undefined> {
  if (!(await inContainer())) return 'kiln does not seem to be running in a container';
  const inside = (path: string): boolean => {
    const rel = relative(kanikoDir, path);
    return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel);
  };
  for (const path of [process.execPath, fileURLToPath(import.meta.url)]) {
    if (!inside(path)) return `kiln runs from ${path}, outside its directory ${kanikoDir}, and the base image would replace it`;
  }
  return undefined;
}
