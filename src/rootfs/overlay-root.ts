// Chroot isolation on overlayfs, the way Docker's overlay2 driver stacks an image: every layer is a
// directory of its own (whiteouts as overlayfs writes them), a step gets a fresh upper directory on
// top, and that upper directory is exactly the step's change set. It then becomes one more layer.
// Layer directories are shared by every stage of a build, so a stage FROM an earlier one reuses them.
import { chmod, chown, mkdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import type { LayerListing } from '../cache/layer-listing.js';
import { OncePerKey } from '../util/once-per-key.js';
import { extractListed, WORKER_MIN_BYTES, type ExtractJob } from './extract-in-worker.js';
import { withExtractRetries } from './extract-retries.js';
import { runStepProcess, type StepProcess } from '../isolation/step-process.js';
import { snapshotUpperDir } from '../snapshot/upper-snapshot.js';
import { MOUNT_POINTS, writeNetworkFiles, STEP_HOSTNAME, type BuildRoot, type ImageLookup, type LayerSource, type StepOutcome } from './build-root.js';
import { removeTree } from '../util/remove-tree.js';
import { Slots } from '../util/slots.js';

/** A layer's directory (relative to the work dir) and, until unpack() hands it over, the listing its extraction read. */
interface Extracted {
  dir: string;
  listing?: LayerListing;
}

/** The per-build store of extracted layers: <work>/l/<n>, one per layer digest. */
export class LayerDirectories {
  private readonly byDigest = new OncePerKey<Extracted>();
  private next = 0;
  /** Layers extracted at once: one per core (each is bound by file creation in the kernel). */
  private readonly slots = new Slots(Math.max(1, Math.min(4, availableParallelism())));

  constructor(readonly workDir: string, private readonly extractRetries = 0) {}

  /** A fresh directory name relative to the work dir (short: overlay mount data has a page-size limit). */
  allocate(prefix: string): string {
    return `${prefix}/${this.next++}`;
  }

  /**
   * Extracts a layer a root will soon need (a base layer just downloaded), listing it in the same
   * pass: the listing, or undefined when the layer was not extracted here (a step's own upper dir).
   */
  async unpack(layer: LayerSource): Promise<LayerListing | undefined> {
    const entry = await this.entry(layer);
    // Handed over once: the build's lister keeps it from here on, not this cache as well.
    const listing = entry.listing;
    delete entry.listing;
    return listing;
  }

  async get(layer: LayerSource): Promise<string> {
    return (await this.entry(layer)).dir;
  }

  private entry(layer: LayerSource): Promise<Extracted> {
    return this.byDigest.get(layer.digest, () => this.extract(layer));
  }

  /** Registers a directory kiln made (a step's upper dir) as the content of a layer digest. */
  adopt(digest: string, dir: string): void {
    this.byDigest.set(digest, { dir });
  }

  /**
   * Starts unpacking a big layer while it still downloads (its blob file growing under a temporary
   * name, see BlobGrowth), rather than after its last byte. A failure is forgotten: unpack() of the
   * stored blob then extracts it again.
   */
  unpackGrowing(layer: { digest: string; size: number }, path: string, growing: NonNullable<ExtractJob['growing']>): void {
    if (layer.size < WORKER_MIN_BYTES) return;
    const source: LayerSource = { digest: layer.digest, path, open: () => Promise.reject(new Error('internal error: a growing layer is read by its worker')) };
    this.byDigest.get(layer.digest, () => this.extract(source, growing)).catch(() => undefined);
  }

  private async extract(layer: LayerSource, growing?: ExtractJob['growing']): Promise<Extracted> {
    const rel = this.allocate('l');
    const abs = join(this.workDir, rel);
    let listing: LayerListing | undefined;
    await this.slots.run(() => withExtractRetries(this.extractRetries, layer.digest, async () => {
      await rm(abs, { recursive: true, force: true });
      await mkdir(abs, { recursive: true });
      try {
        // A large blob file is unpacked on a worker thread: the main thread goes on downloading and building.
        const size = !growing && layer.path ? (await stat(layer.path)).size : 0;
        listing = await extractListed(layer, abs, { whiteouts: 'overlay', size, ...(growing ? { growing } : {}) });
      } catch (e) {
        await rm(abs, { recursive: true, force: true });
        throw e;
      }
    }));
    return { dir: rel, ...(listing ? { listing } : {}) };
  }

  async dispose(): Promise<void> {
    await removeTree(this.workDir, 'rm-program'); // overlay roots are chroot isolation's: the host's rm
  }
}

export class OverlayRoot implements BuildRoot {
  /** Layer directories, relative to the work dir, bottom first. */
  private readonly layers: string[] = [];
  private lastUpper?: string;

  constructor(private readonly dirs: LayerDirectories) {}

  async addLayer(layer: LayerSource): Promise<void> {
    this.layers.push(await this.dirs.get(layer));
    this.lastUpper = undefined;
  }

  async run(step: StepProcess, image: ImageLookup): Promise<StepOutcome> {
    const work = this.dirs.workDir;
    const init = this.dirs.allocate('i');
    const upper = this.dirs.allocate('u');
    const scratch = this.dirs.allocate('w');
    const merged = this.dirs.allocate('m');
    for (const d of [init, upper, scratch, merged]) await mkdir(join(work, d), { recursive: true });
    await makeMountPoints(join(work, init), image);
    const hostsFile = join(work, init + '.hosts');
    const resolvFile = join(work, init + '.resolv');
    await writeNetworkFiles(hostsFile, resolvFile);
    // overlayfs refuses a directory named twice (ELOOP); a layer that repeats (empty layers, identical
    // COPYs) is kept at its topmost place only, which stacks to the same tree.
    const lower = [init, ...new Set([...this.layers].reverse())].join(':');
    const overlay = `lowerdir=${lower},upperdir=${upper},workdir=${scratch},redirect_dir=off,metacopy=off,index=off`;
    try {
      const exitCode = await runStepProcess(step, {
        kind: 'chroot', root: join(work, merged), overlay, workDir: work, hostsFile, resolvFile, hostname: STEP_HOSTNAME,
      });
      if (exitCode !== 0) {
        await rm(join(work, upper), { recursive: true, force: true });
        return { exitCode };
      }
      const started = performance.now();
      const snapshot = await snapshotUpperDir(join(work, upper));
      const snapshotMs = performance.now() - started;
      this.layers.push(upper);
      this.lastUpper = upper;
      return { exitCode, snapshot, snapshotMs };
    } finally {
      await Promise.all([init, scratch, merged, init + '.hosts', init + '.resolv'].map((d) => rm(join(work, d), { recursive: true, force: true })));
    }
  }

  ignoreVolume(): void {
    // Chroot isolation keeps what steps write under a VOLUME, as BuildKit does.
  }

  committed(digest: string): void {
    if (this.lastUpper) this.dirs.adopt(digest, this.lastUpper);
    this.lastUpper = undefined;
  }

  async dispose(): Promise<void> {
    // Layer directories belong to the build (LayerDirectories), not to one stage's root.
  }
}

/**
 * Docker's "init layer": mount points the image lacks, in a lower layer of their own so they never
 * show up in a step's changes. Existing parents are recreated with the image's metadata, as the
 * topmost layer decides what a merged directory looks like.
 */
async function makeMountPoints(initDir: string, image: ImageLookup): Promise<void> {
  const parents = new Set<string>();
  for (const { path, type } of MOUNT_POINTS) {
    if (image(path)) continue;
    const abs = join(initDir, path);
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) parents.add(parts.slice(0, i).join('/'));
    if (type === 'dir') await mkdir(abs, { recursive: true });
    else {
      await mkdir(join(abs, '..'), { recursive: true });
      await writeFile(abs, '');
    }
  }
  for (const parent of [...parents].sort().reverse()) {
    const existing = image(parent);
    if (existing?.type !== 'dir') continue;
    const abs = join(initDir, parent);
    await chown(abs, existing.uid, existing.gid);
    await chmod(abs, existing.mode);
    await utimes(abs, existing.mtime, existing.mtime);
  }
}

