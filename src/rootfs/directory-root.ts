// A build root that is one plain directory tree: layers are applied onto it in place and a step's
// changes are found by comparing an lstat index of the tree before and after the step. Used for
// chroot isolation where overlayfs is unavailable, and for container isolation, where the tree is
// "/" itself and kiln's own files and the container's mounts are left out (the ignore list).
import { lstat, mkdir, rmdir, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LayerListing } from '../cache/layer-listing.js';
import { extractLayer } from './extract-layer.js';
import { extractListed } from './extract-in-worker.js';
import { LayersAhead, type AheadLayer, type Growing } from './layers-ahead.js';
import { runStepProcess, type StepProcess } from '../isolation/step-process.js';
import { isIgnored } from '../snapshot/tree-walk.js';
import { diffTrees, indexTree, type SnapshotMode, type TreeIndex } from '../snapshot/walk-snapshot.js';
import { withExtractRetries } from './extract-retries.js';
import { MOUNT_POINTS, writeNetworkFiles, STEP_HOSTNAME, type BuildRoot, type ImageLookup, type LayerSource, type StepOutcome } from './build-root.js';
import { log } from '../log/logger.js';
import { removeTree } from '../util/remove-tree.js';

export interface DirectoryRootOptions {
  /** The tree: a fresh directory (chroot isolation) or "/" (container isolation). */
  path: string;
  isolation: 'chroot' | 'container';
  /** Where kiln keeps its temporary files for this root (never inside an indexed tree). */
  workDir: string;
  /** In-image paths ("proc", "kaniko") never extracted over, snapshotted or deleted, nor anything below them. */
  ignored: readonly string[];
  snapshotMode: SnapshotMode;
  extractRetries: number;
}

export class DirectoryRoot implements BuildRoot {
  private index?: TreeIndex;
  private readonly volumes: string[] = [];
  /** Layers being applied as they become readable, which addLayer() takes in order (see applyAhead). */
  private ahead?: LayersAhead;

  constructor(private readonly options: DirectoryRootOptions) {
  }

  private ignored(): string[] {
    return [...this.options.ignored, ...this.volumes];
  }

  ignoreVolume(path: string): void {
    // kaniko's model: after VOLUME, what steps write there is not part of the image.
    if (this.options.isolation !== 'container') return;
    const rel = path.replace(/^\/+/, '').replace(/\/+$/, '');
    if (rel !== '' && !this.volumes.includes(rel)) this.volumes.push(rel);
  }

  /**
   * Starts applying the layers the root will be asked for first, in their order, as each becomes
   * readable (see LayersAhead). `stored` opens a layer's blob in the store.
   */
  applyAhead(layers: readonly AheadLayer[], stored: (digest: string) => LayerSource): LayersAhead | undefined {
    if (this.ahead && !this.ahead.allTaken) return undefined; // the ones given before are still to be taken
    this.ahead = new LayersAhead(layers, (layer, growing) => this.applyListed(stored(layer.digest), layer.size, growing));
    return this.ahead;
  }

  /** Applies a layer, listing it in the same pass; big blobs (and growing ones) on a worker thread. */
  private async applyListed(layer: LayerSource, size: number, growing?: Growing): Promise<LayerListing | undefined> {
    const { path: root, extractRetries } = this.options;
    const ignored = this.ignored();
    log.debug(`Applying layer ${layer.digest} to ${root} for the stage's first RUN${growing ? ', as it downloads' : ''}`);
    if (growing) return extractListed(layer, root, { whiteouts: 'apply', size, growing, ignored });
    let listing: LayerListing | undefined;
    await withExtractRetries(extractRetries, layer.digest, async () => {
      listing = await extractListed(layer, root, { whiteouts: 'apply', size, ignored });
    });
    return listing;
  }

  async addLayer(layer: LayerSource): Promise<void> {
    const applied = this.ahead?.take(layer.digest);
    if (applied) {
      await applied;
      this.index = undefined;
      return;
    }
    this.ahead = undefined; // every layer applied ahead was taken
    await withExtractRetries(this.options.extractRetries, layer.digest, async () => {
      const ignored = this.ignored();
      await extractLayer(await layer.open(), this.options.path, { whiteouts: 'apply', layerName: layer.digest, ignore: (p) => isIgnored(p, ignored) });
    });
    this.index = undefined; // the next step indexes afresh
  }

  async run(step: StepProcess, image: ImageLookup): Promise<StepOutcome> {
    const { path: root, snapshotMode, workDir } = this.options;
    const ignored = this.ignored();
    const before = this.index ?? await indexTree(root, ignored);
    let exitCode: number;
    /** Directories whose change time kiln moved (by making mount points in them): compared without it. */
    let relaxed: string[] = [];
    const touched: string[] = []; // RUN --mount targets made and taken away again
    if (this.options.isolation === 'container') {
      exitCode = await runStepProcess(step, { kind: 'container', touched });
    } else {
      const made = await makeMountPoints(root, image);
      relaxed = [...made.parents.keys()];
      const hostsFile = join(workDir, 'hosts');
      const resolvFile = join(workDir, 'resolv.conf');
      await mkdir(workDir, { recursive: true });
      await writeNetworkFiles(hostsFile, resolvFile);
      try {
        exitCode = await runStepProcess(step, { kind: 'chroot', root, workDir, hostsFile, resolvFile, hostname: STEP_HOSTNAME, touched });
      } finally {
        await removeMountPoints(root, made);
      }
    }
    const started = performance.now();
    const after = await indexTree(root, ignored);
    this.index = after;
    if (exitCode !== 0) return { exitCode };
    const snapshot = diffTrees(root, before, after, snapshotMode, (p) => isIgnored(p, ignored), new Set([...relaxed, ...touched]));
    return { exitCode, snapshot, snapshotMs: performance.now() - started };
  }

  committed(): void {
    // Nothing to keep: the tree itself is the state.
  }

  async dispose(): Promise<void> {
    // In container isolation "/" is the image being built: its rm is never run.
    const how = this.options.isolation === 'chroot' ? 'rm-program' : 'fs';
    if (this.options.isolation === 'chroot') await removeTree(this.options.path, how);
    await removeTree(this.options.workDir, how);
  }
}

/** Creates the mount points the image lacks, returning them (deepest last) to remove after the step. */
interface MadeMountPoints {
  /** What kiln created, in creation order. */
  created: string[];
  /** Existing directories a mount point was created in, with their mtimes, to put back afterwards. */
  parents: Map<string, Date>;
}

async function makeMountPoints(root: string, image: ImageLookup): Promise<MadeMountPoints> {
  const created: string[] = [];
  const parents = new Map<string, Date>();
  for (const { path, type } of MOUNT_POINTS) {
    if (image(path)) continue;
    const parts = path.split('/');
    for (let i = 1; i <= parts.length; i++) {
      const sub = parts.slice(0, i).join('/');
      const abs = join(root, sub);
      if (await exists(abs)) continue;
      const parent = parts.slice(0, i - 1).join('/');
      if (parent !== '' && !created.includes(parent) && !parents.has(parent)) parents.set(parent, (await lstat(join(root, parent))).mtime);
      if (i < parts.length || type === 'dir') await mkdir(abs);
      else await writeFile(abs, '');
      created.push(sub);
    }
  }
  return { created, parents };
}

async function removeMountPoints(root: string, { created, parents }: MadeMountPoints): Promise<void> {
  for (const sub of [...created].reverse()) {
    const abs = join(root, sub);
    const st = await lstat(abs).catch(() => undefined);
    if (!st) continue;
    // Only what is still the empty placeholder: a step may have put something real there.
    if (st.isDirectory()) await rmdir(abs).catch(() => undefined);
    else if (st.isFile() && st.size === 0) await unlink(abs);
  }
  // Put the time back for the image's sake; the walk compares these directories without times.
  for (const [parent, mtime] of parents) await utimes(join(root, parent), mtime, mtime).catch(() => undefined);
}

async function exists(abs: string): Promise<boolean> {
  return (await lstat(abs).catch(() => undefined)) !== undefined;
}
