// A small file read whole, one byte more asked for to see a file that grew: on the main thread
// (layer-writer.ts) and on the worker that reads a big layer's small files ahead. Only node:fs here,
// so that worker starts in a few milliseconds.
import { closeSync, openSync, readSync } from 'node:fs';

/** Reads up to size + 1 bytes of `path` into `into` at `at`; returns the count (size + 1: it grew). */
export function readSmallFileInto(path: string, size: number, into: Uint8Array, at: number): number {
  const fd = openSync(path, 'r');
  let seen = 0;
  try {
    for (;;) {
      const wanted = size + 1 - seen;
      const n = readSync(fd, into, at + seen, wanted, null);
      seen += n;
      // A short read that brings the size's last byte is the end of a regular file: asking again
      // would only read 0 (0.1 s on a layer of 100k files). A short read before it is asked again.
      if (n === 0 || seen > size || (n < wanted && seen === size)) break;
    }
  } finally {
    closeSync(fd);
  }
  return seen;
}

/** The file's bytes, which must number exactly `size` (the header announcing them is written with them). */
export function readSmallFile(source: string, path: string, size: number): Buffer {
  const buffer = Buffer.allocUnsafe(size + 1);
  const seen = readSmallFileInto(source, size, buffer, 0);
  if (seen !== size) throw changedError(source, path, size, seen);
  return buffer.subarray(0, size);
}

/** The header announcing `size` bytes is written (or about to be): any other count is an error. */
export function changedError(source: string, path: string, size: number, seen: number): Error {
  return new Error(`${source} (${path} in the layer) changed while being written: expected ${size} bytes, found ${seen > size ? 'more' : seen}`);
}
