// zstd for layers (issue #8). Compression runs in-process through zstd-napi (libzstd's streaming API,
// with libzstd's own worker threads on every core): Node.js 20's zlib has no zstd, and piping the tar
// through the `zstd` program cost Node as much CPU as the compression (0.69x of `zstd -T0` against
// 0.95x in-process, bench/compression.ts). libzstd's multithreaded output does not depend on the
// worker count, so every machine writes the same bytes (--reproducible).
//
// Decompression (zstd base layers, ADD of .zst archives) still runs Debian's `zstd` program: a child
// process decompresses on another core while Node verifies and extracts. In kiln's own image
// (image/build-images.ts) the program and its libraries live under /kaniko next to Node.js, which is
// started through the image's own loader (so a build in container isolation that replaces /lib
// cannot break it); zstd is started the same way there.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { ProgramFilter, type Program } from './program-filter.js';

/** zstd's own default level, which kaniko's -1 (go-containerregistry's SpeedDefault) also gives. */
export const DEFAULT_ZSTD_LEVEL = 3;
export const MAX_ZSTD_LEVEL = 19;

export type ZstdProgram = Program;

const ZSTD = { name: 'zstd', debianPackage: 'zstd' };

/** zstd-napi, loaded on first use: its native binding costs ~30 ms that gzip builds need not pay. */
let zstdNapi: typeof import('zstd-napi') | undefined;
function loadZstdNapi(): typeof import('zstd-napi') {
  zstdNapi ??= createRequire(import.meta.url)('zstd-napi') as typeof import('zstd-napi');
  return zstdNapi;
}

/** `zstd` on PATH; in kiln's image, /kaniko/zstd through /kaniko's loader (see the file comment). */
export function zstdProgram(): ZstdProgram {
  const exe = process.execPath;
  if (basename(exe) === 'ld.so') {
    const libs = dirname(exe);
    const bundled = join(dirname(libs), 'zstd');
    if (existsSync(bundled)) return { file: exe, prefix: ['--library-path', libs, bundled] };
  }
  return { file: 'zstd', prefix: [] };
}

/**
 * A stream that compresses what is written to it into one zstd frame with a content checksum, as
 * `zstd -T0 -<level>` does. `workers` (libzstd threads; default one per core) changes the speed only.
 */
export function createZstdCompressor(level = DEFAULT_ZSTD_LEVEL, workers = availableParallelism()): Duplex {
  if (!Number.isInteger(level) || level < 1 || level > MAX_ZSTD_LEVEL) throw new RangeError(`zstd level ${level}: use 1-${MAX_ZSTD_LEVEL}`);
  const { CompressStream } = loadZstdNapi();
  return new CompressStream({ compressionLevel: level, nbWorkers: Math.max(1, workers), checksumFlag: true });
}

/** A stream that decompresses the zstd data written to it. */
export function createZstdDecompressor(what: string, program = zstdProgram()): Duplex {
  return new ProgramFilter(program, ['-q', '-d', '-c'], `zstd decompression of ${what}`, ZSTD);
}
