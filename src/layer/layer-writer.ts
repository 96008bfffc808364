// Writes a layer: a deterministic tar (entries sorted bytewise by path, fixed header fields, no
// user or group names, mtimes from the entries) piped through gzip into the blob store, with the
// diff_id (sha256 of the tar) and the digest (sha256 of the gzip) computed in the same pass.
// File contents are streamed from disk: memory does not grow with the layer.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { pack as createPack } from 'tar-stream';

type TarHeader = Parameters<ReturnType<typeof createPack>['entry']>[0];
import type { BlobStore } from '../image/blob-store.js';
import type { Descriptor } from '../image/types.js';

export interface LayerEntry {
  /** In-image path, relative, no leading or trailing "/": "app/bin/tool". */
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink';
  /** Permission bits including setuid/setgid/sticky. */
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  /** Files: number of bytes of `source` or `content`. */
  size?: number;
  /** Files: host path to stream the content from. */
  source?: string;
  /** Files: inline content (heredocs, generated files). */
  content?: Buffer;
  /** Symlink target as written, or the in-image path a hardlink points to. */
  linkname?: string;
  /** Extended attributes, written as PAX SCHILY.xattr records. */
  xattrs?: Record<string, Buffer>;
}

export type Compression = 'gzip';

export interface WrittenLayer {
  descriptor: Descriptor;
  diffId: string;
  uncompressedSize: number;
}

/** The largest id a ustar header holds (7 octal digits); larger ones go into PAX records. */
const MAX_USTAR_ID = 0o7777777;

export async function writeLayer(
  entries: readonly LayerEntry[],
  store: BlobStore,
  options: { mediaType: string; compression?: Compression; compressionLevel?: number },
): Promise<WrittenLayer> {
  const sorted = [...entries].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
  const tar = createPack();
  const diffHash = createHash('sha256');
  let uncompressedSize = 0;
  const measure = new Transform({
    transform(chunk: Buffer, _enc, done: TransformCallback) {
      diffHash.update(chunk);
      uncompressedSize += chunk.length;
      done(null, chunk);
    },
  });
  const writer = await store.createWriter();
  const piped = pipeline(tar, measure, createGzip({ level: options.compressionLevel ?? 1 }), writer.stream);
  try {
    for (const entry of sorted) await addEntry(tar, entry);
    tar.finalize();
    await piped;
  } catch (e) {
    tar.destroy();
    await piped.catch(() => undefined);
    await writer.abort();
    throw e;
  }
  const { digest, size } = await writer.commit();
  return {
    descriptor: { mediaType: options.mediaType, digest, size },
    diffId: 'sha256:' + diffHash.digest('hex'),
    uncompressedSize,
  };
}

function headerFor(entry: LayerEntry): TarHeader {
  const pax: Record<string, string> = {};
  if (entry.uid > MAX_USTAR_ID) pax.uid = String(entry.uid);
  if (entry.gid > MAX_USTAR_ID) pax.gid = String(entry.gid);
  for (const [name, value] of Object.entries(entry.xattrs ?? {})) {
    const text = value.toString('utf8');
    // tar-stream writes PAX values as UTF-8 text; binary values (e.g. security.capability) need issue #4's writer.
    if (!Buffer.from(text, 'utf8').equals(value)) throw new Error(`xattr ${name} on ${entry.path} is binary, which kiln cannot write yet (issue #4)`);
    pax[`SCHILY.xattr.${name}`] = text;
  }
  const type = entry.type === 'dir' ? 'directory' : entry.type === 'hardlink' ? 'link' : entry.type;
  return {
    // Directories end in "/" as Docker writes them, in the ustar name and in a PAX path alike.
    name: entry.type === 'dir' ? entry.path + '/' : entry.path,
    type,
    mode: entry.mode & 0o7777,
    uid: Math.min(entry.uid, MAX_USTAR_ID),
    gid: Math.min(entry.gid, MAX_USTAR_ID),
    uname: '',
    gname: '',
    devmajor: 0,
    devminor: 0,
    mtime: new Date(Math.floor(entry.mtime.getTime() / 1000) * 1000),
    size: entry.type === 'file' ? (entry.content?.length ?? entry.size ?? 0) : 0,
    ...(entry.linkname !== undefined ? { linkname: entry.linkname } : {}),
    ...(Object.keys(pax).length ? { pax } : {}),
  };
}

async function addEntry(tar: ReturnType<typeof createPack>, entry: LayerEntry): Promise<void> {
  const header = headerFor(entry);
  if (entry.type !== 'file' || entry.content) {
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (entry.type === 'file' && entry.content) tar.entry(header, entry.content, done);
      else tar.entry(header, done);
    });
    return;
  }
  if (entry.source === undefined) throw new Error(`layer entry ${entry.path} has neither content nor a source file`);
  let finished!: Promise<void>;
  const sink = new Promise<ReturnType<typeof tar.entry>>((resolve) => {
    finished = new Promise<void>((done, fail) => {
      resolve(tar.entry(header, (err) => (err ? fail(err) : done())));
    });
  });
  await pipeline(createReadStream(entry.source), await sink);
  await finished;
}
