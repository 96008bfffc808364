// The lstat walk of a tree by `kiln-sandbox scan` (native/sandbox-scan.c), and the flat form both
// walks end in. The scanner is a few times faster than Node.js, whose per-call overhead dominates on
// a 100k-file root. Its output is copied in blocks, while it still walks, and paths stay UTF-8
// bytes: a string and a Map entry per path would cost more than the walk itself.
import { spawn } from 'node:child_process';
import { endianness } from 'node:os';
import { sandboxBinary } from '../isolation/sandbox-binary.js';
import { log } from '../log/logger.js';
import { FIELDS } from './tree-walk.js';

/** `scan --details` adds two numbers per path after FIELDS: the device number, and 1 when it has xattrs. */
export const DETAIL_FIELDS = FIELDS + 2;
export const RDEV_FIELD = FIELDS;
export const XATTRS_FIELD = FIELDS + 1;

/** The entries of a walk: paths as UTF-8 bytes back to back, and `fields` numbers per path. */
export interface WalkEntries {
  count: number;
  /** Numbers per path: FIELDS, or DETAIL_FIELDS for a scan with details. */
  fields: number;
  /** Path i is bytes[starts[i] .. starts[i + 1]). */
  bytes: Buffer;
  starts: Uint32Array;
  /** FNV-1a of each path's bytes (hashBytes), for TreeIndex's table. */
  hashes: Uint32Array;
  numbers: Float64Array;
  /** Names left out because they are not UTF-8 (kiln's paths are strings, which cannot name them). */
  skipped: number;
}

/** 32-bit FNV-1a of src[start..end), as kiln-sandbox scan computes it for each path. */
export function hashBytes(src: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let k = start; k < end; k++) h = Math.imul(h ^ src[k]!, 0x01000193);
  return h >>> 0;
}

/** Collects entries into growing typed arrays, one at a time or a block at a time. */
export class EntriesBuilder {
  private count = 0;
  private used = 0;
  private bytes = Buffer.allocUnsafe(1 << 16);
  private starts = new Uint32Array(4097);
  private hashes = new Uint32Array(4096);
  numbers: Float64Array;

  constructor(private readonly fields = FIELDS) {
    this.numbers = new Float64Array(4096 * fields);
  }

  /** Room for `entries` more entries and `pathBytes` more path bytes. */
  private reserve(entries: number, pathBytes: number): void {
    if (this.used + pathBytes > this.bytes.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.bytes.length * 2, this.used + pathBytes));
      this.bytes.copy(grown, 0, 0, this.used);
      this.bytes = grown;
    }
    if (this.count + entries > this.hashes.length) {
      const length = Math.max(this.hashes.length * 2, this.count + entries);
      this.starts = grow(this.starts, length + 1);
      this.hashes = grow(this.hashes, length);
      this.numbers = grow(this.numbers, length * this.fields);
    }
  }

  /** Adds a path (UTF-8) and returns its slot; the caller writes numbers[slot * fields ..]. */
  add(path: Buffer): number {
    this.reserve(1, path.length);
    path.copy(this.bytes, this.used);
    this.hashes[this.count] = hashBytes(path, 0, path.length);
    this.used += path.length;
    this.starts[this.count + 1] = this.used;
    return this.count++;
  }

  /** Adds a block of kiln-sandbox scan's output (see native/sandbox-scan.c): whole arrays at once. */
  addBlock(block: Buffer, count: number, pathBytes: number): void {
    this.reserve(count, pathBytes);
    let at = 8;
    at = copyInto(block, at, count * this.fields * 8, this.numbers, this.count * this.fields);
    at = copyInto(block, at, count * 4, this.hashes, this.count);
    at = copyInto(block, at, count * 4, this.starts, this.count + 1);
    block.copy(this.bytes, this.used, at, at + pathBytes);
    this.count += count;
    this.used += pathBytes;
    // The scanner counts path ends over its whole output: they must meet ours.
    if (this.starts[this.count] !== this.used) throw new Error('kiln-sandbox scan: inconsistent path offsets in its output');
  }

  finish(skipped: number): WalkEntries {
    const { count } = this;
    return {
      count, fields: this.fields, bytes: this.bytes.subarray(0, this.used), starts: this.starts.subarray(0, count + 1),
      hashes: this.hashes.subarray(0, count), numbers: this.numbers.subarray(0, count * this.fields), skipped,
    };
  }
}

function grow<T extends Uint32Array | Float64Array>(a: T, length: number): T {
  const b = new (a.constructor as new (n: number) => T)(length);
  b.set(a);
  return b;
}

/** Copies `length` bytes of src at `at` into the typed array from element `index`; returns the next offset. */
function copyInto(src: Buffer, at: number, length: number, to: Uint32Array | Float64Array, index: number): number {
  new Uint8Array(to.buffer, to.byteOffset + index * to.BYTES_PER_ELEMENT, length).set(src.subarray(at, at + length));
  return at + length;
}

/** The scanner writes in host byte order, as typed arrays read. */
const LITTLE = endianness() === 'LE';

const u32 = (buf: Buffer, at: number): number => (LITTLE ? buf.readUInt32LE(at) : buf.readUInt32BE(at));

/** Turns the scanner's output into entries block by block as chunks arrive. */
export class ScanParser {
  private readonly entries: EntriesBuilder;
  /** Bytes of a block's entry besides the block's header and path bytes. */
  private readonly perEntry: number;
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Set by the end block: output that lacks it was cut short. */
  private skipped: number | undefined;

  constructor(fields = FIELDS) {
    this.entries = new EntriesBuilder(fields);
    this.perEntry = fields * 8 + 4 + 4;
  }

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= 8) {
      if (this.skipped !== undefined) throw new Error('kiln-sandbox scan: output after its end');
      if (this.chunks[0]!.length < 8) this.chunks = [Buffer.concat(this.chunks, this.buffered)];
      const head = this.chunks[0]!;
      const count = u32(head, 0);
      const pathBytes = u32(head, 4);
      const size = count === 0 ? 12 : 8 + count * this.perEntry + pathBytes;
      // Chunks are joined once the block is whole, not as each arrives.
      if (this.buffered < size) return;
      const buf = this.chunks.length === 1 ? head : Buffer.concat(this.chunks, this.buffered);
      if (count === 0) this.skipped = u32(buf, 8);
      else this.entries.addBlock(buf, count, pathBytes);
      const rest = buf.subarray(size);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.buffered = rest.length;
    }
  }

  /** The walk, once the whole output was pushed. */
  result(): WalkEntries {
    if (this.skipped === undefined || this.buffered > 0) throw new Error('kiln-sandbox scan: its output was cut short');
    return this.entries.finish(this.skipped);
  }
}

/** kiln-sandbox could not run a scan at all (missing, not executable, or built before `scan` existed). */
export class ScannerUnavailable extends Error {}

/** kiln-sandbox binaries that cannot scan: not tried again in this process. */
const unavailable = new Set<string>();

/**
 * `scan(binary)` by kiln-sandbox, or `fallback()` (the Node.js walk) when it is not built, cannot
 * scan, fails, or KILN_NATIVE_SCAN=0 asks for the fallback.
 */
export async function scanOrWalk<T>(scan: (binary: string) => Promise<T>, fallback: () => T | Promise<T>): Promise<T> {
  let binary: string | undefined;
  try {
    if (process.env['KILN_NATIVE_SCAN'] !== '0') binary = sandboxBinary();
  } catch {
    // Not built (a checkout without a C compiler): nothing to warn about twice.
  }
  if (binary !== undefined && !unavailable.has(binary)) {
    try {
      return await scan(binary);
    } catch (e) {
      if (e instanceof ScannerUnavailable) unavailable.add(binary);
      log.warn(`kiln-sandbox scan failed (${(e as Error).message}): this snapshot uses the slower Node.js walk`);
    }
  }
  return fallback();
}

export interface ScanOptions {
  binary?: string;
  /** Threads of the walk (default: one per CPU, at most 4). */
  threads?: number;
  /** DETAIL_FIELDS numbers per path instead of FIELDS (the device number, whether it has xattrs). */
  details?: boolean;
}

/** Every path under root but ignored ones (root-relative, see isIgnored), by kiln-sandbox. */
export function nativeScan(root: string, ignored: readonly string[], options: ScanOptions = {}): Promise<WalkEntries> {
  return new Promise((resolve, reject) => {
    const args = ['scan', root, ...ignored.flatMap((p) => ['--ignore', p])];
    if (options.threads) args.push('--threads', String(options.threads));
    if (options.details) args.push('--details');
    const child = spawn(options.binary ?? sandboxBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const parser = new ScanParser(options.details ? DETAIL_FIELDS : FIELDS);
    let failure: Error | undefined;
    let stderr = '';
    // Not started: 'close' may never come.
    child.on('error', (e) => {
      failure ??= new ScannerUnavailable(e.message);
      reject(failure);
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
    child.stdout.on('data', (chunk: Buffer) => {
      if (failure) return;
      try {
        parser.push(chunk);
      } catch (e) {
        failure = e as Error;
        child.kill('SIGKILL');
      }
    });
    child.on('close', (code, signal) => {
      if (failure) return reject(failure);
      if (code !== 0) {
        const message = stderr.trim().split('\n').pop()?.replace(/^kiln-sandbox: /, '') || `kiln-sandbox scan ended with ${signal ?? `exit code ${code}`}`;
        // Exit code 2 is kiln-sandbox's usage message: a binary older than `scan`.
        return reject(code === 2 ? new ScannerUnavailable(message) : new Error(message));
      }
      try {
        resolve(parser.result());
      } catch (e) {
        reject(e as Error);
      }
    });
  });
}
