// Content-addressed blobs on disk (<dir>/sha256/<hex>, the OCI layout's own shape), written through
// streams and verified against their digest whenever they are read back.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform, type Readable, type TransformCallback, type Writable } from 'node:stream';
import type { Descriptor } from './types.js';

export class DigestMismatchError extends Error {}

export interface BlobWriter {
  /** Write the blob's bytes here, then call commit(). */
  stream: Writable;
  /** Waits for the stream to finish, then moves the blob into place under its digest. */
  commit(): Promise<{ digest: string; size: number }>;
  abort(): Promise<void>;
}

const digestPattern = /^sha256:([0-9a-f]{64})$/;

export class BlobStore {
  constructor(readonly dir: string) {}

  static async createTemp(prefix = 'kiln-blobs-'): Promise<BlobStore> {
    return new BlobStore(await mkdtemp(join(tmpdir(), prefix)));
  }

  path(digest: string): string {
    const m = digestPattern.exec(digest);
    if (!m) throw new Error(`unsupported digest "${digest}": kiln stores sha256 blobs`);
    return join(this.dir, 'sha256', m[1]!);
  }

  async has(digest: string): Promise<boolean> {
    return stat(this.path(digest)).then(() => true, () => false);
  }

  async putBytes(data: Buffer, mediaType: string): Promise<Descriptor> {
    const digest = 'sha256:' + createHash('sha256').update(data).digest('hex');
    const path = this.path(digest);
    if (!(await this.has(digest))) {
      await mkdir(join(this.dir, 'sha256'), { recursive: true });
      const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
      await writeFile(tmp, data);
      await rename(tmp, path);
    }
    return { mediaType, digest, size: data.length };
  }

  async createWriter(): Promise<BlobWriter> {
    await mkdir(join(this.dir, 'sha256'), { recursive: true });
    const tmp = join(this.dir, 'sha256', `upload-${randomBytes(8).toString('hex')}.tmp`);
    const hash = createHash('sha256');
    let size = 0;
    const file = createWriteStream(tmp);
    const hashing = new Transform({
      transform(chunk: Buffer, _enc, done: TransformCallback) {
        hash.update(chunk);
        size += chunk.length;
        done(null, chunk);
      },
    });
    hashing.pipe(file);
    const finished = new Promise<void>((resolve, reject) => {
      file.on('finish', resolve);
      file.on('error', reject);
      hashing.on('error', reject);
    });
    return {
      stream: hashing,
      commit: async () => {
        await finished;
        const digest = 'sha256:' + hash.digest('hex');
        await rename(tmp, this.path(digest));
        return { digest, size };
      },
      abort: async () => {
        hashing.destroy();
        file.destroy();
        await unlink(tmp).catch(() => undefined);
      },
    };
  }

  /** A read stream that errors with DigestMismatchError if the bytes do not hash to `digest`. */
  openVerified(digest: string): Readable {
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
    const source = createReadStream(this.path(digest));
    source.on('error', (e) => check.destroy(e));
    return source.pipe(check);
  }

  async dispose(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
