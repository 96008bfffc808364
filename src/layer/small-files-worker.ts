// The worker of SmallFilesAhead: reads the files in order into batches of at most BATCH_BYTES or
// BATCH_FILES and posts each, at most WINDOW of them ahead of what the layer writer has taken.
import { parentPort, workerData } from 'node:worker_threads';
import { readSmallFileInto } from './small-file.js';
import type { SmallFilesBatch, SmallFilesJob } from './small-files-ahead.js';

const BATCH_BYTES = 1 << 20;
/** Tiny files fill no megabyte: a batch also ends at this many, so the writer starts early. */
const BATCH_FILES = 512;
const WINDOW = 8;

const { paths, sizes } = workerData as SmallFilesJob;
let credit = WINDOW;
let wake: (() => void) | undefined;
parentPort!.on('message', () => {
  credit++;
  wake?.();
});

for (let i = 0; i < paths.length;) {
  while (credit === 0) await new Promise<void>((resolve) => (wake = resolve));
  let end = i;
  let bytes = 0;
  while (end < paths.length && end - i < BATCH_FILES && (end === i || bytes + sizes[end]! + 1 <= BATCH_BYTES)) bytes += sizes[end++]! + 1;
  const data = new Uint8Array(bytes);
  const found = new Float64Array(end - i);
  const errors: SmallFilesBatch['errors'] = [];
  for (let k = i, at = 0; k < end; at += sizes[k]! + 1, k++) {
    try {
      found[k - i] = readSmallFileInto(paths[k]!, sizes[k]!, data, at);
    } catch (e) {
      found[k - i] = -1;
      errors.push({ index: k - i, message: (e as Error).message, code: (e as NodeJS.ErrnoException).code });
    }
  }
  credit--;
  const batch: SmallFilesBatch = { data, found, errors };
  parentPort!.postMessage(batch, [data.buffer, found.buffer]);
  i = end;
}
// Nothing left to send: credits need no listener now, and the worker may end.
parentPort!.removeAllListeners('message');
parentPort!.unref();
