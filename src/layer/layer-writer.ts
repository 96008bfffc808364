// Writes a layer: a deterministic tar (entries sorted bytewise by path, fixed header fields, no user
// or group names, mtimes from the entries) compressed into the blob store, with the diff_id (sha256
// of the tar) and the digest (sha256 of the compressed blob) computed in the same streaming pass.
// File contents are streamed from disk, so memory does not grow with the layer.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { Readable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BlobGrowth, BlobStore } from '../image/blob-store.js';
import { MediaType, type Descriptor } from '../image/types.js';
import { orderEntries } from './layer-entries.js';
import { createParallelGzip } from './parallel-gzip.js';
import { changedError, readSmallFile } from './small-file.js';
import { AHEAD_MIN_FILES, SmallFilesAhead } from './small-files-ahead.js';
import { END_OF_ARCHIVE, encodeHeader, padding, type TarHeader } from './tar-format.js';
import { createZstdCompressor, DEFAULT_ZSTD_LEVEL, MAX_ZSTD_LEVEL } from './zstd.js';

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

/** Layer compression (kaniko's --compression). */
export type Compression = 'gzip' | 'zstd';

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
  /** Default: the one the media type names (zstd for ...tar+zstd, else gzip). */
  compression?: Compression;
  /** As kaniko's --compression-level: used when above 0, otherwise the default (gzip 1, zstd 3). */
  compressionLevel?: number;
  /** Hears of the blob file as soon as it exists, to be read as it grows (an upload begun before the digest is known). */
  growing?: (growth: BlobGrowth) => void;
}

/** go-containerregistry compresses layers at gzip.BestSpeed unless told otherwise; kaniko keeps that. */
const DEFAULT_GZIP_LEVEL = 1;

export async function writeLayer(entries: readonly LayerEntry[], store: BlobStore, options: WriteLayerOptions): Promise<WrittenLayer> {
  const ordered = orderEntries(entries);
  const compressor = createCompressor(options.compression ?? compressionOf(options.mediaType), options.compressionLevel);
  const diffHash = createHash('sha256');
  let uncompressedSize = 0;
  const writer = await store.createWriter({ growing: options.growing !== undefined });
  const growth = writer.growth;
  // Told before the first byte is written, so a reader never finds the file renamed under its digest.
  if (growth && options.growing) await growth.opened.then(() => options.growing!(growth), () => undefined);
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

function compressionOf(mediaType: string): Compression {
  return mediaType === MediaType.ociLayerZstd ? 'zstd' : 'gzip';
}

function createCompressor(compression: Compression, level: number | undefined): Duplex {
  const given = level !== undefined && level > 0;
  switch (compression) {
    case 'gzip':
      // Up to a few MiB this is zlib's single stream (the same bytes as before); above, blocks are
      // deflated on every core, pigz-style (parallel-gzip.ts).
      return createParallelGzip({ level: given ? Math.min(level, 9) : DEFAULT_GZIP_LEVEL });
    case 'zstd':
      // libzstd's threads on every core, one frame whatever their count (same bytes on every machine).
      return createZstdCompressor(given ? Math.min(level, MAX_ZSTD_LEVEL) : DEFAULT_ZSTD_LEVEL);
  }
}

/**
 * Files up to this size are read whole with one synchronous read. Streaming them cost three trips
 * to libuv's thread pool each (open, read, close), queued behind the deflate blocks that occupy it,
 * and a 1 MiB read buffer each, whose slices then held megabytes per kilobyte of layer: a RUN that
 * wrote 100k small files took minutes and hundreds of MB to write its layer.
 */
const SMALL_FILE = 256 << 10;
/** Small pieces (headers, small files, padding) are handed on in batches of about this size. */
const BATCH = 256 << 10;

/** A file read whole from its source, as SmallFilesAhead can read it (its size known, not inline). */
function readWhole(entry: LayerEntry): entry is LayerEntry & { source: string; size: number } {
  return entry.type === 'file' && !entry.content && entry.source !== undefined && entry.size !== undefined && entry.size > 0 && entry.size <= SMALL_FILE;
}

async function* tarStream(entries: readonly LayerEntry[]): AsyncGenerator<Buffer> {
  const small = entries.filter(readWhole);
  const ahead = small.length >= AHEAD_MIN_FILES ? new SmallFilesAhead(small) : undefined;
  try {
    yield* tarPieces(entries, ahead);
  } finally {
    ahead?.close();
  }
}

async function* tarPieces(entries: readonly LayerEntry[], ahead: SmallFilesAhead | undefined): AsyncGenerator<Buffer> {
  let batch: Buffer[] = [];
  let batched = 0;
  const add = (piece: Buffer): void => {
    batch.push(piece);
    batched += piece.length;
  };
  const take = (): Buffer => {
    const out = Buffer.concat(batch, batched);
    batch = [];
    batched = 0;
    return out;
  };
  for (const entry of entries) {
    const size = entry.type === 'file' ? await contentSize(entry) : 0;
    add(encodeHeader(headerFor(entry, size)));
    if (entry.type === 'file' && size > 0) {
      if (entry.content) add(entry.content);
      else if (ahead && readWhole(entry)) add(await ahead.next());
      else if (size <= SMALL_FILE) add(readSmallFile(entry.source!, entry.path, size));
      else {
        yield take();
        yield* fileContent(entry, size);
      }
      add(padding(size));
    }
    if (batched >= BATCH) yield take();
  }
  add(END_OF_ARCHIVE);
  yield take();
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
  if (seen !== size) throw changedError(entry.source!, entry.path, size, seen);
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
