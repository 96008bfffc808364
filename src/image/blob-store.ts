// Content-addressed blobs on disk (<dir>/sha256/<hex>, the OCI layout's own shape), written through
// streams and verified against their digest whenever they are read back.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform, type Readable, type TransformCallback, type Writable } from 'node:stream';
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
}

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

  async createWriter(): Promise<BlobWriter> {
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
    const written = pipeline(hashing, createWriteStream(tmp, { flags: 'wx' }));
    written.catch(() => undefined); // observed by commit() or abort(); never an unhandled rejection
    return {
      stream: hashing,
      commit: async () => {
        if (!hashing.writableEnded) hashing.end();
        try {
          await written;
          const digest = 'sha256:' + hash.digest('hex');
          await rename(tmp, this.ownPath(digest));
          return { digest, size };
        } catch (e) {
          await unlink(tmp).catch(() => undefined);
          throw e;
        }
      },
      abort: async () => {
        hashing.destroy();
        await written.catch(() => undefined);
        await unlink(tmp).catch(() => undefined);
      },
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

export function sha256Digest(data: Buffer): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

function isFileSync(path: string): boolean {
  return statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
}
