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
//
// Blocks of already-compressed bytes (archives, media, packed binaries, random data) are stored, not
// deflated: deflate gains nothing on them (zlib itself ends up emitting stored blocks), yet level 1
// spends ~30 ms of CPU per MiB finding that out, pigz and gzip alike. A block is stored when its
// sampled byte entropy is near 8 bits and a level-1 trial on its first 64 KiB (with the same
// dictionary) saves under 2%; the trial catches high-entropy bytes that repeat, which deflate does
// shrink. Both tests read only the block and its dictionary, so the output stays a function of the input.
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

/** The first 64 bytes (one cache line) of every 4 KiB: 16,384 samples per MiB from 1/64 of its memory. */
const SAMPLE_RUN = 64;
const SAMPLE_EVERY = 4096;
/** Below this sampled entropy a block is deflated without a trial (text, code and binaries sit at 4-6.5 bits). */
const TRIAL_ENTROPY_BITS = 7.9;
const TRIAL_BYTES = 64 << 10;
/** A trial that keeps more than this share of its input means the block is not worth deflating. */
const STORE_ABOVE_RATIO = 0.98;
/** The most bytes one stored deflate block holds (LEN is 16 bits). */
const STORED_MAX = 0xffff;

/** Order-0 entropy, in bits per byte, of a sample of `block` (random bytes: ~7.99 for 1 MiB). */
export function sampledByteEntropy(block: Uint8Array): number {
  const counts = new Int32Array(256);
  let n = 0;
  for (let page = 0; page < block.length; page += SAMPLE_EVERY) {
    const end = Math.min(page + SAMPLE_RUN, block.length);
    for (let i = page; i < end; i++) counts[block[i]!]!++;
    n += end - page;
  }
  let bits = 0;
  for (let b = 0; b < 256; b++) {
    const c = counts[b]!;
    if (c) bits -= (c / n) * Math.log2(c / n);
  }
  return bits;
}

/**
 * `block` as stored deflate blocks (each a byte-aligned header, LEN, NLEN, then the bytes), the
 * last marked final when `last`: zlib's level 0 writes the same kind of blocks, at some 2 ms per MiB.
 */
export function storedDeflate(block: Buffer, last: boolean): Buffer {
  const pieces = Math.max(1, Math.ceil(block.length / STORED_MAX));
  const out = Buffer.allocUnsafe(block.length + 5 * pieces);
  let at = 0;
  for (let i = 0, from = 0; i < pieces; i++, from += STORED_MAX) {
    const n = Math.min(STORED_MAX, block.length - from);
    out[at] = last && i === pieces - 1 ? 1 : 0; // BFINAL, BTYPE 00 (stored), padding to the byte
    out.writeUInt16LE(n, at + 1);
    out.writeUInt16LE(n ^ 0xffff, at + 3);
    block.copy(out, at + 5, from, from + n);
    at += 5 + n;
  }
  return out;
}

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
  /** Of those, the ones stored as they are (incompressible). */
  storedBlocks = 0;

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
    const dictionary = this.dictionary;
    // Every block but the last is at least WINDOW long; the last needs no successor's dictionary.
    this.dictionary = last ? undefined : block.subarray(block.length - WINDOW);
    const failed = (err: Error | null): boolean => {
      if (this.destroyed) return true;
      if (err) this.destroy(err);
      return err !== null;
    };
    const deflate = (level: number): void => {
      if (level === 0) {
        this.storedBlocks++;
        job.out = storedDeflate(block, last);
        return this.writeOut();
      }
      const options = {
        level,
        chunkSize: this.outChunk,
        // A sync flush ends the block byte-aligned and not final, so the next block's output follows it.
        finishFlush: last ? constants.Z_FINISH : constants.Z_SYNC_FLUSH,
        ...(dictionary ? { dictionary } : {}),
      };
      deflateRaw(block, options, (err, out) => {
        if (failed(err)) return;
        job.out = out;
        this.writeOut();
      });
    };
    if (this.level === 0 || sampledByteEntropy(block) < TRIAL_ENTROPY_BITS) return deflate(this.level);
    const trial = block.subarray(0, TRIAL_BYTES);
    deflateRaw(trial, { level: 1, finishFlush: constants.Z_SYNC_FLUSH, ...(dictionary ? { dictionary } : {}) }, (err, out) => {
      if (failed(err)) return;
      deflate(out.length > trial.length * STORE_ABOVE_RATIO ? 0 : this.level);
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
