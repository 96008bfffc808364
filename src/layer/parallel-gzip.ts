// Parallel gzip for big layers (issue #8), built like pigz: the input is cut into fixed-size blocks
// that are deflated concurrently in libuv's thread pool, each primed with the last 32 KiB of the
// block before it (so matches still reach back across the cut and the ratio stays close to one
// stream), each but the last ended with a sync flush (byte-aligned, not final) so that the blocks
// concatenate into one deflate stream; the last one ends with Z_FINISH. The gzip header and the
// CRC-32/ISIZE trailer are written here. Blocks are cut at fixed offsets of the input, never where
// the writes happen to end, so the bytes depend only on the input and the settings (--reproducible).
//
// Inputs up to `threshold` bytes are compressed as one zlib stream instead, byte for byte what
// createGzip writes: parallelism does not pay there, and small layers keep their digests.
import { availableParallelism } from 'node:os';
import { Transform, type TransformCallback } from 'node:stream';
import { constants, crc32, deflateRaw, gzip } from 'node:zlib';

export interface ParallelGzipOptions {
  /** zlib level 0-9 (default 6, as zlib's). */
  level?: number;
  /** Bytes of input per block (at least 32 KiB, the dictionary's size). */
  blockSize?: number;
  /** Blocks submitted and not yet written out, at most; bounds memory and thread-pool use. */
  maxInFlight?: number;
  /** Inputs of at most this many bytes are compressed as one zlib stream. */
  threshold?: number;
}

/** deflate's window: the most a match can reach back, so all of a dictionary that can be used. */
const WINDOW = 32 << 10;
/**
 * 1 MiB: each block costs a new deflate state (Node cannot reset one with a new dictionary), which
 * is ~20% more CPU at 128 KiB (pigz's size) and lost in the noise at 512 KiB and above.
 */
export const DEFAULT_BLOCK_SIZE = 1 << 20;
export const DEFAULT_THRESHOLD = 2 << 20;

/**
 * Blocks in flight by default: one per core plus one queued, so a core that finishes a block finds
 * the next one without waiting for the main thread; never more than libuv's pool has threads
 * (UV_THREADPOOL_SIZE, 4 by default), since queued blocks would hold file reads and writes back.
 */
export function defaultMaxInFlight(): number {
  const pool = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  return Math.max(2, Math.min(availableParallelism() + 1, pool));
}

/** The header zlib writes for a gzip stream with no name or mtime: XFL as zlib sets it, OS = Unix. */
function gzipHeader(level: number): Buffer {
  const xfl = level === 9 ? 2 : level < 2 ? 4 : 0;
  return Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3]);
}

interface Job { out?: Buffer; }

export class ParallelGzip extends Transform {
  private readonly level: number;
  private readonly blockSize: number;
  readonly maxInFlight: number;
  private readonly threshold: number;
  /** Deflate's output for a block is at most a little over its input; one buffer that size means one trip to the pool. */
  private readonly outChunk: number;

  /** Input not yet in a block. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private total = 0;
  private crc = 0;
  /** Set once the input outgrows the threshold; from then on blocks are cut and deflated in parallel. */
  private parallel = false;
  /** The tail of the last block submitted, the dictionary of the next. */
  private dictionary: Buffer | undefined;
  /** Submitted blocks in input order, oldest first; the head is written out as soon as it is done. */
  private readonly jobs: Job[] = [];
  private wake: (() => void) | undefined;
  /** The most blocks that were in flight at once (for tests and tuning). */
  peakInFlight = 0;
  /** Blocks deflated so far. */
  blocks = 0;

  constructor(options: ParallelGzipOptions = {}) {
    super();
    this.level = options.level ?? 6;
    this.blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
    this.maxInFlight = options.maxInFlight ?? defaultMaxInFlight();
    this.threshold = options.threshold ?? DEFAULT_THRESHOLD;
    if (!Number.isInteger(this.level) || this.level < 0 || this.level > 9) throw new RangeError(`gzip level must be 0-9, got ${this.level}`);
    if (!Number.isInteger(this.blockSize) || this.blockSize < WINDOW) throw new RangeError(`block size must be at least ${WINDOW}, got ${this.blockSize}`);
    if (!Number.isInteger(this.maxInFlight) || this.maxInFlight < 1) throw new RangeError(`maxInFlight must be at least 1, got ${this.maxInFlight}`);
    this.outChunk = this.blockSize + (this.blockSize >> 3) + 1024;
  }

  /** Blocks submitted and not yet written out. */
  get inFlight(): number {
    return this.jobs.length;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.crc = crc32(chunk, this.crc);
    this.total += chunk.length;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (!this.parallel) {
      if (this.total <= this.threshold) return callback();
      this.parallel = true;
      this.push(gzipHeader(this.level));
    }
    // The callback waits until every full block has a slot: a writer cannot run ahead of the pool.
    this.submitFullBlocks().then(() => callback(), callback);
  }

  override _flush(callback: TransformCallback): void {
    if (!this.parallel) {
      const all = Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [];
      gzip(all, { level: this.level, chunkSize: this.outChunk }, (err, out) => {
        if (err) return callback(err);
        callback(null, out);
      });
      return;
    }
    void (async () => {
      await this.submitFullBlocks();
      await this.slot();
      this.submit(this.cut(this.pendingBytes), true);
      while (this.jobs.length > 0) await this.changed();
      const trailer = Buffer.alloc(8);
      trailer.writeUInt32LE(this.crc >>> 0, 0);
      trailer.writeUInt32LE(this.total % 2 ** 32, 4);
      return trailer;
    })().then((trailer) => callback(null, trailer), callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    // In-flight blocks finish in the pool; their callbacks see `destroyed` and drop the output.
    this.jobs.length = 0;
    this.pending = [];
    this.dictionary = undefined;
    callback(error);
  }

  private async submitFullBlocks(): Promise<void> {
    while (this.pendingBytes >= this.blockSize && !this.destroyed) {
      await this.slot();
      if (this.destroyed) return;
      this.submit(this.cut(this.blockSize), false);
    }
  }

  /** Resolves when a block may be submitted. */
  private async slot(): Promise<void> {
    while (this.jobs.length >= this.maxInFlight) await this.changed();
  }

  /** Resolves at the next block written out (the only event that frees a slot). */
  private changed(): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
    });
  }

  /** The first `n` pending bytes as one fresh buffer (a copy: the pool reads it while the writer goes on). */
  private cut(n: number): Buffer {
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const head = this.pending[0]!;
      if (head.length <= need) {
        parts.push(head);
        this.pending.shift();
        need -= head.length;
      } else {
        parts.push(head.subarray(0, need));
        this.pending[0] = head.subarray(need);
        need = 0;
      }
    }
    this.pendingBytes -= n;
    return Buffer.concat(parts, n);
  }

  private submit(block: Buffer, last: boolean): void {
    const job: Job = {};
    this.jobs.push(job);
    this.peakInFlight = Math.max(this.peakInFlight, this.jobs.length);
    this.blocks++;
    const options = {
      level: this.level,
      chunkSize: this.outChunk,
      // A sync flush ends the block byte-aligned and not final, so the next block's output follows it.
      finishFlush: last ? constants.Z_FINISH : constants.Z_SYNC_FLUSH,
      ...(this.dictionary ? { dictionary: this.dictionary } : {}),
    };
    // Every block but the last is at least WINDOW long; the last needs no successor's dictionary.
    this.dictionary = last ? undefined : block.subarray(block.length - WINDOW);
    deflateRaw(block, options, (err, out) => {
      if (this.destroyed) return;
      if (err) {
        this.destroy(err);
        return;
      }
      job.out = out;
      this.writeOut();
    });
  }

  /** Pushes the finished blocks at the head, in input order, and wakes a waiting writer. */
  private writeOut(): void {
    let any = false;
    while (this.jobs[0]?.out) {
      this.push(this.jobs.shift()!.out);
      any = true;
    }
    if (any && this.wake) {
      const wake = this.wake;
      this.wake = undefined;
      wake();
    }
  }
}

export function createParallelGzip(options: ParallelGzipOptions = {}): ParallelGzip {
  return new ParallelGzip(options);
}
