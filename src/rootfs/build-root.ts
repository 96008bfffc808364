// A build root: the file system RUN steps execute in. Layers go on top of it (base layers, layers
// kiln wrote for COPY), a step runs in it, and what the step changed comes back as a snapshot.
// OverlayRoot (chroot isolation, overlayfs) and DirectoryRoot (a plain tree: chroot isolation
// without overlayfs, or "/" itself in container isolation) implement it.
import { readFile, writeFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { BlobGrowth, BlobStore } from '../image/blob-store.js';
import type { Descriptor } from '../image/types.js';
import type { RootFactory } from './create-root.js';
import type { StepProcess } from '../isolation/step-process.js';
import type { LayerEntry } from '../layer/layer-writer.js';
import type { Snapshot } from '../snapshot/snapshot.js';
import type { AheadLayer, LayersAhead } from './layers-ahead.js';

/** Looks an in-image path ("etc/hosts") up in the image as it stands (kiln's model of it). */
export type ImageLookup = (path: string) => LayerEntry | undefined;

export interface LayerSource {
  /** Content digest of the (compressed) layer blob; names it in errors and caches. */
  digest: string;
  open(): Promise<Readable>;
  /** The blob's file, when it is one: overlay roots then extract it on a worker thread. */
  path?: string;
}

/** A layer blob in the build's blob store, as a root takes it. */
export function storedLayer(store: BlobStore, digest: string): LayerSource {
  return { digest, path: store.path(digest), open: async () => store.openVerified(digest) };
}

/** fetchLayers' hook that starts unpacking each big layer while it downloads, for roots that unpack ahead (overlayfs). */
export function unpackWhileDownloading(roots: Pick<RootFactory, 'unpackGrowing'>, store: BlobStore): ((layer: Descriptor, growth: BlobGrowth) => void) | undefined {
  const unpack = roots.unpackGrowing;
  return unpack && ((layer, growth) => unpack(layer, store.path(layer.digest), { tempPath: growth.path, shared: growth.shared }));
}

/** fetchLayers' hook that has a root applying layers ahead (LayersAhead) follow each as it downloads. */
export function applyWhileDownloading(ahead: LayersAhead): (layer: Descriptor, growth: BlobGrowth) => void {
  return (layer, growth) => ahead.growing(layer.digest, { tempPath: growth.path, shared: growth.shared });
}

export interface StepOutcome {
  exitCode: number;
  /** What the step changed; only when it succeeded. */
  snapshot?: Snapshot;
  /** Milliseconds spent finding the changes (the snapshot's own cost, for logs and benchmarks). */
  snapshotMs?: number;
}

export interface BuildRoot {
  /** Puts a layer on top of the root. */
  addLayer(layer: LayerSource): Promise<void>;
  /**
   * Roots that apply layers in place (DirectoryRoot): starts applying the layers addLayer() will be
   * given first, each as it becomes readable; undefined when layers given before are still to be taken.
   */
  applyAhead?(layers: readonly AheadLayer[], stored: (digest: string) => LayerSource): LayersAhead | undefined;
  /** Runs a step; on success its changes become part of the root and are returned. */
  run(step: StepProcess, image: ImageLookup): Promise<StepOutcome>;
  /** A VOLUME path: container isolation leaves it out of later snapshots, as kaniko does. */
  ignoreVolume(path: string): void;
  /** Tells the root the digest of the layer kiln wrote from the last snapshot (for reuse). */
  committed(digest: string): void;
  dispose(): Promise<void>;
}

/** Paths a step needs to exist as mount points: /proc, /dev, /sys and the two network files. */
export const MOUNT_POINTS: readonly { path: string; type: 'dir' | 'file' }[] = [
  { path: 'proc', type: 'dir' }, { path: 'dev', type: 'dir' }, { path: 'sys', type: 'dir' },
  { path: 'etc/hosts', type: 'file' }, { path: 'etc/resolv.conf', type: 'file' },
];

/** /etc/hosts for steps, as Docker writes it for a container on the host network. */
export function hostsFileText(hostname: string): string {
  return `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t${hostname}\n`;
}

export const STEP_HOSTNAME = 'kiln';

/** Writes the files a step sees as /etc/hosts and /etc/resolv.conf (the host's resolvers). */
export async function writeNetworkFiles(hostsFile: string, resolvFile: string): Promise<void> {
  await writeFile(hostsFile, hostsFileText(STEP_HOSTNAME));
  await writeFile(resolvFile, await readFile('/etc/resolv.conf').catch(() => Buffer.alloc(0)));
}
