// zstd for layers (issue #8), through Debian's `zstd` program: Node.js 20's zlib has no zstd, and the
// program compresses on every core (-T0) at the speed the benchmark's peer sets. The data streams
// through the child's stdin and stdout; nothing is held whole in memory.
//
// In kiln's own image (image/build-images.ts) the program and its libraries live under /kaniko next
// to Node.js, which is started through the image's own loader (so a build in container isolation
// that replaces /lib cannot break it); zstd is started the same way there.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Duplex } from 'node:stream';

/** zstd's own default level, which kaniko's -1 (go-containerregistry's SpeedDefault) also gives. */
export const DEFAULT_ZSTD_LEVEL = 3;
export const MAX_ZSTD_LEVEL = 19;

const STDERR_KEPT = 4096;

/** How to start the zstd program: argv[0] and the arguments that come before zstd's own. */
export interface ZstdProgram { file: string; prefix: string[]; }

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
  return new ProgramFilter(program, ['-q', '-c', '-T0', `-${level}`], 'zstd compression');
}

/** A stream that decompresses the zstd data written to it. */
export function createZstdDecompressor(what: string, program = zstdProgram()): Duplex {
  return new ProgramFilter(program, ['-q', '-d', '-c'], `zstd decompression of ${what}`);
}

/**
 * A child process as a Duplex: writes go to its stdin, its stdout is read, and it fails with the
 * program's stderr when the program exits with an error (or before reading all its input).
 */
class ProgramFilter extends Duplex {
  private readonly child: ChildProcess;
  private stderr = '';
  private exited = false;

  constructor(program: ZstdProgram, args: string[], private readonly what: string) {
    super();
    this.child = spawn(program.file, [...program.prefix, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const { stdin, stdout, stderr } = this.child;
    stdout!.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) stdout!.pause();
    });
    stderr!.on('data', (chunk: Buffer) => {
      if (this.stderr.length < STDERR_KEPT) this.stderr += chunk.toString();
    });
    // EPIPE when the program died: its exit status, reported on 'close', says why.
    stdin!.on('error', () => undefined);
    this.child.on('error', (e: NodeJS.ErrnoException) => {
      this.exited = true;
      this.destroy(e.code === 'ENOENT'
        ? new Error(`${this.what} needs the "zstd" program, which is not installed (Debian package zstd)`)
        : new Error(`${this.what}: cannot start ${program.file}: ${e.message}`));
    });
    this.child.on('close', (code, signal) => {
      this.exited = true;
      if (this.destroyed) return;
      if (code !== 0) this.destroy(new Error(`${this.what} failed (zstd exited ${code ?? signal}): ${this.stderr.trim() || 'no message'}`));
      else if (!this.writableFinished) this.destroy(new Error(`${this.what}: zstd exited before reading all its input`));
      else this.push(null);
    });
  }

  override _read(): void {
    this.child.stdout!.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.child.stdin!.write(chunk)) callback();
    else this.child.stdin!.once('drain', () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.child.stdin!.end(() => callback());
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.exited) this.child.kill('SIGKILL');
    callback(error);
  }
}
