// Writes a layer: a deterministic tar (entries sorted bytewise by path, fixed header fields, no user
// or group names, mtimes from the entries) compressed into the blob store, with the diff_id (sha256
// of the tar) and the digest (sha256 of the compressed blob) computed in the same streaming pass.
// File contents are streamed from disk, so memory does not grow with the layer.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BlobStore } from '../image/blob-store.js';
import type { Descriptor } from '../image/types.js';
import { orderEntries } from './layer-entries.js';
import { createParallelGzip } from './parallel-gzip.js';
import { END_OF_ARCHIVE, encodeHeader, padding, type TarHeader } from './tar-format.js';

export interface LayerEntry {
  /** In-image path, relative, no leading or trailing "/": "app/bin/tool". */
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';
  /** Permission bits including setuid/setgid/sticky (masked with 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  mtime: Date;
  /** Files: number of bytes of `source` or `content` (a source is stat-ed when absent). */
  size?: number;
  /** Files: absolute host path to stream the content from. */
  source?: string;
  /** Files: inline content (heredocs, generated files). */
  content?: Buffer;
  /** Symlink target as written, or the in-image path of the entry a hardlink shares its content with. */
  linkname?: string;
  /** Char and block devices: device numbers. */
  devmajor?: number;
  devminor?: number;
  /** Extended attributes, written as PAX SCHILY.xattr records; values may be binary. */
  xattrs?: Record<string, Buffer>;
}

/** Layer compression; zstd (issue 8) adds a member here and a case in createCompressor. */
export type Compression = 'gzip';

export interface WrittenLayer {
  descriptor: Descriptor;
  /** sha256 of the uncompressed tar. */
  diffId: string;
  /** Bytes in the uncompressed tar. */
  uncompressedSize: number;
}

export interface WriteLayerOptions {
  /** Media type for the descriptor (see layerMediaType). */
  mediaType: string;
  compression?: Compression;
  /** As kaniko's --compression-level: used when above 0, otherwise the default. */
  compressionLevel?: number;
}

/** go-containerregistry compresses layers at gzip.BestSpeed unless told otherwise; kaniko keeps that. */
const DEFAULT_GZIP_LEVEL = 1;

export async function writeLayer(entries: readonly LayerEntry[], store: BlobStore, options: WriteLayerOptions): Promise<WrittenLayer> {
  const ordered = orderEntries(entries);
  const compressor = createCompressor(options.compression ?? 'gzip', options.compressionLevel);
  const diffHash = createHash('sha256');
  let uncompressedSize = 0;
  const writer = await store.createWriter();
  try {
    await pipeline(
      Readable.from(tarStream(ordered), { objectMode: false }),
      async function* measure(tar: AsyncIterable<Buffer>) {
        for await (const chunk of tar) {
          diffHash.update(chunk);
          uncompressedSize += chunk.length;
          yield chunk;
        }
      },
      compressor,
      writer.stream,
    );
  } catch (e) {
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

function createCompressor(compression: Compression, level: number | undefined): Transform {
  switch (compression) {
    case 'gzip':
      // Up to a few MiB this is zlib's single stream (the same bytes as before); above, blocks are
      // deflated on every core, pigz-style (parallel-gzip.ts).
      return createParallelGzip({ level: level !== undefined && level > 0 ? level : DEFAULT_GZIP_LEVEL });
  }
}

async function* tarStream(entries: readonly LayerEntry[]): AsyncGenerator<Buffer> {
  for (const entry of entries) {
    const size = entry.type === 'file' ? await contentSize(entry) : 0;
    yield encodeHeader(headerFor(entry, size));
    if (entry.type !== 'file' || size === 0) continue;
    if (entry.content) yield entry.content;
    else yield* fileContent(entry, size);
    const pad = padding(size);
    if (pad.length) yield pad;
  }
  yield END_OF_ARCHIVE;
}

async function contentSize(entry: LayerEntry): Promise<number> {
  if (entry.content) return entry.content.length;
  return entry.size ?? (await stat(entry.source!)).size;
}

/** The source file's bytes, which must number exactly `size`: the header announcing them is already written. */
async function* fileContent(entry: LayerEntry, size: number): AsyncGenerator<Buffer> {
  let seen = 0;
  for await (const chunk of createReadStream(entry.source!, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    seen += chunk.length;
    if (seen > size) break;
    yield chunk;
  }
  if (seen !== size) {
    throw new Error(`${entry.source} (${entry.path} in the layer) changed while being written: expected ${size} bytes, found ${seen > size ? 'more' : seen}`);
  }
}

function headerFor(entry: LayerEntry, size: number): TarHeader {
  return {
    // Directories end in "/" as Docker writes them.
    name: entry.type === 'dir' ? entry.path + '/' : entry.path,
    type: entry.type,
    mode: entry.mode & 0o7777,
    uid: entry.uid,
    gid: entry.gid,
    size,
    mtime: Math.floor(entry.mtime.getTime() / 1000),
    ...(entry.type === 'symlink' || entry.type === 'hardlink' ? { linkname: entry.linkname! } : {}),
    ...(entry.type === 'char' || entry.type === 'block' ? { devmajor: entry.devmajor ?? 0, devminor: entry.devminor ?? 0 } : {}),
    ...(entry.xattrs ? { xattrs: entry.xattrs } : {}),
  };
}
