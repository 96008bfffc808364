// A worker thread of extractInWorker: unpacks one layer blob, verified against its digest, into a
// directory. The thousands of file-creating system calls (about a millisecond each on slow disks)
// then run beside the main thread's downloads and listings instead of in their place.
import { parentPort, workerData } from 'node:worker_threads';
import { ListingCollector } from '../cache/layer-listing.js';
import { openGrowingVerified, openVerifiedFile } from '../image/blob-store.js';
import { isIgnored } from '../snapshot/tree-walk.js';
import { extractLayer, UnsafeLayerError } from './extract-layer.js';
import type { ExtractJob, ExtractReply } from './extract-in-worker.js';

const job = workerData as ExtractJob;
const warnings: string[] = [];
let reply: ExtractReply;
const list = new ListingCollector();
try {
  const blob = job.growing
    ? openGrowingVerified(job.growing.tempPath, job.path, job.digest, job.growing.shared)
    : openVerifiedFile(job.path, job.digest, 'the blob store');
  const stats = await extractLayer(blob, job.root, {
    whiteouts: job.whiteouts, layerName: job.layerName, warn: (m) => warnings.push(m), list,
    ...(job.ignored ? { ignore: (p: string) => isIgnored(p, job.ignored!) } : {}),
  });
  reply = { stats, listing: list.listing, warnings };
} catch (e) {
  reply = { error: (e as Error).message, unsafe: e instanceof UnsafeLayerError, warnings };
}
parentPort!.postMessage(reply);
