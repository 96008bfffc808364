// zstd for layers (issue #8), through Debian's `zstd` program: Node.js 20's zlib has no zstd, and the
// program compresses on every core (-T0) at the speed the benchmark's peer sets. The data streams
// through the child's stdin and stdout; nothing is held whole in memory.
//
// In kiln's own image (image/build-images.ts) the program and its libraries live under /kaniko next
// to Node.js, which is started through the image's own loader (so a build in container isolation
// that replaces /lib cannot break it); zstd is started the same way there.
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { ProgramFilter, type Program } from './program-filter.js';

/** zstd's own default level, which kaniko's -1 (go-containerregistry's SpeedDefault) also gives. */
export const DEFAULT_ZSTD_LEVEL = 3;
export const MAX_ZSTD_LEVEL = 19;

export type ZstdProgram = Program;

const ZSTD = { name: 'zstd', debianPackage: 'zstd' };

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

/** A stream that compresses what is written to it, as `zstd -T0 -<level>`. */
export function createZstdCompressor(level = DEFAULT_ZSTD_LEVEL, program = zstdProgram()): Duplex {
  if (!Number.isInteger(level) || level < 1 || level > MAX_ZSTD_LEVEL) throw new RangeError(`zstd level ${level}: use 1-${MAX_ZSTD_LEVEL}`);
  return new ProgramFilter(program, ['-q', '-c', '-T0', `-${level}`], 'zstd compression', ZSTD);
}

/** A stream that decompresses the zstd data written to it. */
export function createZstdDecompressor(what: string, program = zstdProgram()): Duplex {
  return new ProgramFilter(program, ['-q', '-d', '-c'], `zstd decompression of ${what}`, ZSTD);
}
