// Content-addressed blobs on disk (<dir>/sha256/<hex>, the OCI layout's own shape), written through
// streams and verified against their digest whenever they are read back.
import { createHash, randomBytes } from 'node:crypto';
import { close, createReadStream, createWriteStream, open, statSync, write, writev } from 'node:fs';
import { mkdir, mkdtemp, open as openFile_, readFile, rename, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Transform, type TransformCallback, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Descriptor } from './types.js';

/** A blob's bytes do not hash to the digest it was stored or fetched under. */
export class DigestMismatchError extends Error {
  override name = 'DigestMismatchError';
}

export interface BlobWriter {
  /** Write the blob's bytes here, then call commit(). */
  stream: Writable;
  /** Ends the stream if still open, waits for the bytes to reach disk, then moves the blob into place under its digest. */
  commit(): Promise<{ digest: string; size: number }>;
  /** Discards what was written. */
  abort(): Promise<void>;
  /** With createWriter({ growing: true }): the file as it grows, for a reader on another thread. */
  growth?: BlobGrowth;
}

/**
 * A blob file still being written, followed from another thread (a layer extracted while it
 * downloads): `shared` holds, as a BigInt64Array, the bytes in the file so far, the state (GROWING,
 * then COMPLETE or FAILED) and a change count that Atomics.notify announces. The file keeps its
 * temporary name `path` until the commit renames it; openGrowingVerified reads either.
 */
export interface BlobGrowth {
  path: string;
  shared: SharedArrayBuffer;
  opened: Promise<void>;
  /** Where the file is once committed (set before the rename), for readers on this thread that open it late. */
  committedPath?: string;
}

const GROWTH_WRITTEN = 0;
const GROWTH_STATE = 1;
const GROWTH_CHANGES = 2;
const COMPLETE = 1n;
const FAILED = 2n;
/** Node 20 has Atomics.waitAsync (ES2024); TypeScript's lib for ES2022 does not declare it. */
const waitAsync = (Atomics as unknown as {
  waitAsync(view: BigInt64Array, index: number, value: bigint, timeoutMs: number): { async: boolean; value: Promise<string> | string };
}).waitAsync;
/** How long a reader sleeps at most between looks at a growing file (a missed wake-up costs no more). */
const GROWTH_POLL_MS = 500;

type WriteCallback = (err: NodeJS.ErrnoException | null, written: number, buffer: unknown) => void;
type WriteStreamFs = NonNullable<Exclude<Parameters<typeof createWriteStream>[1], string | undefined>['fs']>;

const digestPattern = /^sha256:([0-9a-f]{64})$/;

export class BlobStore {
  /** Read-only stores consulted for blobs this one lacks (the base-image cache of --cache-dir). */
  private readonly fallbacks: BlobStore[] = [];

  constructor(readonly dir: string) {}

  /** Reads blobs missing here from `other` too; nothing is ever written there. */
  readFrom(other: BlobStore): void {
    this.fallbacks.push(other);
  }

  static async createTemp(prefix = 'kiln-blobs-'): Promise<BlobStore> {
    return new BlobStore(await mkdtemp(join(tmpdir(), prefix)));
  }

  /** Where the blob is (here, or in a fallback store that has it); where it would be written otherwise. */
  path(digest: string): string {
    const own = this.ownPath(digest);
    for (const other of this.fallbacks) {
      if (isFileSync(own)) return own;
      const theirs = other.path(digest);
      if (isFileSync(theirs)) return theirs;
    }
    return own;
  }

  private ownPath(digest: string): string {
    const m = digestPattern.exec(digest);
    if (!m) throw new Error(`unsupported digest "${digest}": kiln stores sha256 blobs`);
    return join(this.dir, 'sha256', m[1]!);
  }

  async has(digest: string): Promise<boolean> {
    return stat(this.path(digest)).then((s) => s.isFile(), () => false);
  }

  async putBytes(data: Buffer, mediaType: string): Promise<Descriptor> {
    const digest = sha256Digest(data);
    if (!(await this.has(digest))) {
      const tmp = await this.tempPath();
      await writeFile(tmp, data);
      await rename(tmp, this.ownPath(digest));
    }
    return { mediaType, digest, size: data.length };
  }

  async createWriter(options: { growing?: boolean } = {}): Promise<BlobWriter> {
    const tmp = await this.tempPath();
    const hash = createHash('sha256');
    let size = 0;
    const hashing = new Transform({
      transform(chunk: Buffer, _enc, done: TransformCallback) {
        hash.update(chunk);
        size += chunk.length;
        done(null, chunk);
      },
    });
    const growth = options.growing ? followedWrites() : undefined;
    const file = createWriteStream(tmp, { flags: 'wx', ...(growth ? { fs: growth.fs } : {}) });
    const written = pipeline(hashing, file);
    written.catch(() => undefined); // observed by commit() or abort(); never an unhandled rejection
    const settle = (state: bigint): void => {
      if (!growth || Atomics.load(growth.view, GROWTH_STATE) !== 0n) return;
      Atomics.store(growth.view, GROWTH_STATE, state);
      Atomics.add(growth.view, GROWTH_CHANGES, 1n);
      Atomics.notify(growth.view, GROWTH_CHANGES);
    };
    const growthInfo: BlobGrowth | undefined = growth
      ? { path: tmp, shared: growth.shared, opened: new Promise<void>((resolve, reject) => { file.once('open', () => resolve()); file.once('error', reject); }) }
      : undefined;
    return {
      stream: hashing,
      commit: async () => {
        if (!hashing.writableEnded) hashing.end();
        try {
          await written;
          settle(COMPLETE);
          const digest = 'sha256:' + hash.digest('hex');
          if (growthInfo) growthInfo.committedPath = this.ownPath(digest);
          await rename(tmp, this.ownPath(digest));
          return { digest, size };
        } catch (e) {
          settle(FAILED);
          await unlink(tmp).catch(() => undefined);
          throw e;
        }
      },
      abort: async () => {
        settle(FAILED);
        hashing.destroy();
        await written.catch(() => undefined);
        await unlink(tmp).catch(() => undefined);
      },
      ...(growthInfo ? { growth: growthInfo } : {}),
    };
  }

  /** A read stream that errors with DigestMismatchError if the bytes do not hash to `digest`. */
  openVerified(digest: string): Readable {
    return openVerifiedFile(this.path(digest), digest, `the blob store ${this.dir}`);
  }

  /** A small blob (a manifest, a config) whole, verified; a corrupt one rejects with DigestMismatchError. */
  async readVerified(digest: string): Promise<Buffer> {
    const bytes = await readFile(this.path(digest)).catch((e: NodeJS.ErrnoException) => {
      throw e.code === 'ENOENT' ? new Error(`blob ${digest} is not in the blob store ${this.dir}`, { cause: e }) : e;
    });
    const actual = sha256Digest(bytes);
    if (actual !== digest) throw new DigestMismatchError(`blob ${digest} is corrupt: its content hashes to ${actual}`);
    return bytes;
  }

  async dispose(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  /** A fresh name beside the blobs, so the final rename stays on one file system. */
  private async tempPath(): Promise<string> {
    const dir = join(this.dir, 'sha256');
    await mkdir(dir, { recursive: true });
    return join(dir, `.tmp-${randomBytes(8).toString('hex')}`);
  }
}

/** createWriteStream's `fs` calls, counting in shared memory what each write put in the file. */
function followedWrites(): { fs: WriteStreamFs; shared: SharedArrayBuffer; view: BigInt64Array } {
  const shared = new SharedArrayBuffer(24);
  const view = new BigInt64Array(shared);
  const wrote = (err: NodeJS.ErrnoException | null, n: number): void => {
    if (err || n <= 0) return;
    Atomics.add(view, GROWTH_WRITTEN, BigInt(n));
    Atomics.add(view, GROWTH_CHANGES, 1n);
    Atomics.notify(view, GROWTH_CHANGES);
  };
  const fs = {
    open, close,
    write: (fd: number, buffer: Buffer, offset: number, length: number, position: number | null, callback: WriteCallback) =>
      write(fd, buffer, offset, length, position, (err, n, b) => { wrote(err, n); callback(err, n, b); }),
    writev: (fd: number, buffers: NodeJS.ArrayBufferView[], position: number | null, callback: WriteCallback) =>
      writev(fd, buffers, position, (err, n, b) => { wrote(err, n); callback(err, n, b); }),
  };
  return { fs, shared, view };
}

/** A blob's file as a read stream that errors with DigestMismatchError if the bytes do not hash to `digest` (`where` names the store in errors). */
export function openVerifiedFile(path: string, digest: string, where: string): Readable {
  const hash = createHash('sha256');
  const check = new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      hash.update(chunk);
      done(null, chunk);
    },
    flush(done: TransformCallback) {
      const actual = 'sha256:' + hash.digest('hex');
      done(actual === digest ? null : new DigestMismatchError(`blob ${digest} is corrupt: its content hashes to ${actual}`));
    },
  });
  const source = createReadStream(path);
  source.on('error', (e: NodeJS.ErrnoException) => {
    check.destroy(e.code === 'ENOENT' ? new Error(`blob ${digest} is not in ${where}`, { cause: e }) : e);
  });
  check.on('close', () => source.destroy()); // a reader that stops early must not leak the file descriptor
  return source.pipe(check);
}

/**
 * A blob file that a writer on another thread is still filling (BlobGrowth), read as it grows and
 * verified against `digest` at its end; under `finalPath` once the commit has renamed it. A writer
 * that gives up fails the stream.
 */
export function openGrowingVerified(path: string, finalPath: string, digest: string, shared: SharedArrayBuffer): Readable {
  return openGrowingFile(path, shared, { finalPath, digest });
}

/**
 * A blob file this process is still writing, read as it grows and not verified: for an upload that
 * begins before the blob's digest is known (the registry checks it when the upload is finished).
 * A writer that gives up, or a file already moved under its digest, fails the stream.
 */
export function openGrowing(growth: BlobGrowth): Readable {
  return openGrowingFile(growth.path, growth.shared, { committedPath: () => growth.committedPath });
}

/** Whether the growing blob reaches `bytes` (true as soon as it does); false once it is complete, or failed, short of them. */
export async function growsTo(growth: BlobGrowth, bytes: number): Promise<boolean> {
  const view = new BigInt64Array(growth.shared);
  for (;;) {
    const changes = Atomics.load(view, GROWTH_CHANGES);
    const state = Atomics.load(view, GROWTH_STATE);
    if (Number(Atomics.load(view, GROWTH_WRITTEN)) >= bytes) return true;
    if (state !== 0n) return false;
    await growthChange(view, changes);
  }
}

function openGrowingFile(path: string, shared: SharedArrayBuffer, verify: { finalPath?: string; digest?: string; committedPath?: () => string | undefined }): Readable {
  const { digest } = verify;
  const view = new BigInt64Array(shared);
  const hash = createHash('sha256');
  let file: FileHandle | undefined;
  let position = 0;
  let pumping = false;
  const stream = new Readable({
    highWaterMark: 1 << 20,
    read() {
      if (pumping) return;
      pumping = true;
      pump().then(() => { pumping = false; }, (e: unknown) => stream.destroy(e as Error));
    },
    destroy(error, callback) {
      const opened = file;
      file = undefined;
      if (!opened) return callback(error);
      opened.close().then(() => callback(error), () => callback(error));
    },
  });
  const failed = (): Error => new Error(digest ? `the download of blob ${digest} failed` : `the writing of blob file ${path} failed`);
  const openFile = async (): Promise<FileHandle> => {
    try {
      return await openFile_(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      // Committed (and renamed) before this reader began, or abandoned (and removed).
      const finalPath = verify.finalPath ?? verify.committedPath?.();
      if (Atomics.load(view, GROWTH_STATE) === FAILED || finalPath === undefined) throw failed();
      return openFile_(finalPath);
    }
  };
  // Reads while the stream wants more; resolves when it is full (read() comes again) or done.
  async function pump(): Promise<void> {
    file ??= await openFile();
    for (;;) {
      if (stream.destroyed) return;
      // The state before the count: the writer counts every write before it settles, so a complete
      // state read first means the count read after it is final.
      const changes = Atomics.load(view, GROWTH_CHANGES);
      const state = Atomics.load(view, GROWTH_STATE);
      const written = Number(Atomics.load(view, GROWTH_WRITTEN));
      if (state === FAILED) throw failed();
      if (position < written || state === COMPLETE) {
        const wanted = Math.min(Math.max(written - position, 0), 1 << 20);
        const buffer = Buffer.allocUnsafe(Math.max(wanted, 1));
        const { bytesRead } = wanted > 0 ? await file.read(buffer, 0, wanted, position) : { bytesRead: 0 };
        if (bytesRead === 0) {
          if (state !== COMPLETE) throw new Error(`blob file ${path} is shorter than its writer says`);
          const actual = 'sha256:' + hash.digest('hex');
          if (digest !== undefined && actual !== digest) throw new DigestMismatchError(`blob ${digest} is corrupt: its content hashes to ${actual}`);
          stream.push(null);
          return;
        }
        position += bytesRead;
        const chunk = buffer.subarray(0, bytesRead);
        hash.update(chunk);
        if (!stream.push(chunk)) return;
        continue;
      }
      await growthChange(view, changes);
    }
  }
  return stream;
}

/** Resolves once the growth's change count moves past `changes` (or GROWTH_POLL_MS pass: a missed wake-up costs no more). */
async function growthChange(view: BigInt64Array, changes: bigint): Promise<void> {
  const waited = waitAsync(view, GROWTH_CHANGES, changes, GROWTH_POLL_MS);
  if (!waited.async) return;
  // A pending waitAsync does not keep Node's event loop alive (a worker would exit): a timer does.
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([waited.value, new Promise((resolve) => { timer = setTimeout(resolve, GROWTH_POLL_MS); })]);
  clearTimeout(timer);
}

export function sha256Digest(data: Buffer): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

function isFileSync(path: string): boolean {
  return statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
}
