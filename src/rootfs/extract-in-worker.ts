// Layer extraction on a worker thread, for layers that are files in a blob store: a base layer can
// then be unpacked for RUN while the next one downloads and the stage's listing is read.
import { Worker } from 'node:worker_threads';
import { ListingCollector, type LayerListing } from '../cache/layer-listing.js';
import { log } from '../log/logger.js';
import { isIgnored } from '../snapshot/tree-walk.js';
import type { LayerSource } from './build-root.js';
import { extractLayer, UnsafeLayerError, type ExtractStats } from './extract-layer.js';

/**
 * Blobs smaller than this are unpacked on the main thread: a worker costs ~100 ms of CPU to start
 * (Node's bootstrap, then the extractor's modules), a busybox base or a COPY's layer a few ms.
 */
export const WORKER_MIN_BYTES = 2 << 20;

export interface ExtractJob {
  /** The blob's file and digest: the worker verifies the bytes as it reads them. */
  path: string;
  digest: string;
  /** The blob is still downloading (BlobGrowth): its file under its temporary name, followed as it grows. */
  growing?: { tempPath: string; shared: SharedArrayBuffer };
  root: string;
  whiteouts: 'apply' | 'overlay';
  layerName: string;
  /** In-image paths never extracted over, nor anything below them (container isolation's ignore list). */
  ignored?: string[];
}

export type ExtractReply =
  | { stats: ExtractStats; listing: LayerListing; warnings: string[] }
  | { error: string; unsafe: boolean; warnings: string[] };

/**
 * Extracts a layer into `root` and resolves with its listing, read in the same pass: a growing blob
 * or a blob file of WORKER_MIN_BYTES or more on a worker thread, anything else here. A layer that is
 * not a blob file (no path) is extracted here and not listed.
 */
export async function extractListed(
  layer: LayerSource, root: string,
  options: { whiteouts: ExtractJob['whiteouts']; size: number; growing?: ExtractJob['growing']; ignored?: string[] },
): Promise<LayerListing | undefined> {
  const { whiteouts, growing, ignored } = options;
  if (growing || (layer.path && options.size >= WORKER_MIN_BYTES)) {
    return extractInWorker({ path: layer.path!, digest: layer.digest, root, whiteouts, layerName: layer.digest, ...(growing ? { growing } : {}), ...(ignored ? { ignored } : {}) });
  }
  const list = layer.path ? new ListingCollector() : undefined;
  await extractLayer(await layer.open(), root, {
    whiteouts, layerName: layer.digest, ...(list ? { list } : {}), ...(ignored ? { ignore: (p: string) => isIgnored(p, ignored) } : {}),
  });
  return list?.listing;
}

/** Extracts the layer; resolves with its listing, read in the same pass. */
export function extractInWorker(job: ExtractJob): Promise<LayerListing> {
  return new Promise((resolve, reject) => {
    // The path names its directory: it must hold from kiln's bundle (dist/src/cli/kiln.cjs) too.
    const worker = new Worker(new URL('../rootfs/extract-worker.js', import.meta.url), { workerData: job });
    let replied = false;
    worker.once('message', (reply: ExtractReply) => {
      replied = true;
      for (const w of reply.warnings) log.warn(w);
      if ('stats' in reply) resolve(withBuffers(reply.listing));
      else reject(reply.unsafe ? new UnsafeLayerError(reply.error) : new Error(reply.error));
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (!replied) reject(new Error(`layer ${job.layerName}: the extraction worker exited with code ${code} before finishing`));
    });
  });
}

/** Kept file contents cross threads as plain Uint8Arrays: Buffers again, as listings hold them. */
function withBuffers(listing: LayerListing): LayerListing {
  for (const e of listing.entries) if (e.content) e.content = Buffer.from(e.content.buffer, e.content.byteOffset, e.content.byteLength);
  return listing;
}
