// A layer's small files read ahead on a worker thread, in the order the tar takes them. Each file
// is an open, a read or two and a close, ~5-10 us of the main thread; a RUN that wrote 100k files
// spent ~0.95 s there while the compressor's threads waited. The worker reads while the main
// thread encodes headers, hashes the tar and hands it on.
import { Worker } from 'node:worker_threads';
import { log } from '../log/logger.js';
import { changedError, readSmallFile } from './small-file.js';

/** Below this many files the worker's start (a few ms of another thread) is not worth it. */
export const AHEAD_MIN_FILES = 4096;

export interface SmallFilesJob { paths: string[]; sizes: number[]; }

export interface SmallFilesBatch {
  /** Each file's bytes at the sum of (size + 1) of the files before it in the batch. */
  data: Uint8Array;
  /** Bytes found per file (size + 1: it grew), -1 when it could not be read (see errors). */
  found: Float64Array;
  errors: { index: number; message: string; code?: string }[];
}

interface SmallFile { source: string; path: string; size: number; }

export class SmallFilesAhead {
  private readonly worker: Worker;
  private readonly ready: SmallFilesBatch[] = [];
  private batch: SmallFilesBatch | undefined;
  private inBatch = 0;
  private at = 0;
  private taken = 0;
  /** Set once a file was read on this thread: from then on every file is, and late batches are dropped. */
  private readingHere = false;
  /** Why the worker stopped before delivering every file (the rest are then read on this thread). */
  private failure: Error | undefined;
  private closed = false;
  private wake: (() => void) | undefined;

  constructor(private readonly files: readonly SmallFile[]) {
    const job: SmallFilesJob = { paths: files.map((f) => f.source), sizes: files.map((f) => f.size) };
    // The path names its directory: it must hold from kiln's bundle (dist/src/cli/kiln.cjs) too.
    this.worker = new Worker(new URL('../layer/small-files-worker.js', import.meta.url), { workerData: job });
    this.worker.on('message', (batch: SmallFilesBatch) => {
      if (this.readingHere) return;
      this.ready.push(batch);
      this.poke();
    });
    this.worker.once('error', (e) => this.fail(e));
    this.worker.once('exit', (code) => this.fail(new Error(`the worker reading a layer's small files exited (code ${code}) before reading them all`)));
  }

  /** The next file's bytes, exactly `size` of them (an error for a file that changed or went away). */
  async next(): Promise<Buffer> {
    if (this.readingHere) return this.readHere();
    while (!this.batch || this.inBatch === this.batch.found.length) {
      if (this.batch) {
        this.batch = undefined;
        this.worker.postMessage(0); // room for one more batch
      }
      const batch = this.ready.shift();
      if (batch) {
        this.batch = batch;
        this.inBatch = 0;
        this.at = 0;
        continue;
      }
      if (this.closed) throw new Error('the small files of this layer are no longer read');
      if (this.failure) {
        log.debug(`reading a layer's small files on the main thread from file ${this.taken + 1} of ${this.files.length}: ${this.failure.message}`);
        this.readingHere = true;
        return this.readHere();
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    const file = this.files[this.taken++]!;
    const found = this.batch.found[this.inBatch]!;
    const start = this.at;
    this.at += file.size + 1;
    if (found === -1) {
      const error = this.batch.errors.find((e) => e.index === this.inBatch)!;
      this.inBatch++;
      throw Object.assign(new Error(error.message), error.code ? { code: error.code } : {});
    }
    this.inBatch++;
    if (found !== file.size) throw changedError(file.source, file.path, file.size, found);
    return Buffer.from(this.batch.data.buffer, this.batch.data.byteOffset + start, file.size);
  }

  /** Stops the worker (all read, or the layer abandoned). */
  close(): void {
    this.closed = true;
    this.poke();
    void this.worker.terminate();
  }

  /** Kept for next(), which meets it only when it needs a batch that never came. */
  private fail(e: Error): void {
    this.failure ??= e;
    this.poke();
  }

  /** The worker is gone (it could not start, or died): the files it did not deliver are read here, as without it. */
  private readHere(): Buffer {
    if (this.closed) throw new Error('the small files of this layer are no longer read');
    const file = this.files[this.taken++]!;
    return readSmallFile(file.source, file.path, file.size);
  }

  private poke(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
