// A filter program (zstd, xz, bzip2) as a Node stream: what is written goes to the child's stdin, its
// stdout is read, and it fails with the program's own stderr. Layers (zstd) and ADD's archives use it.
import { spawn, type ChildProcess } from 'node:child_process';
import { Duplex } from 'node:stream';

/** How to start a program: argv[0] and the arguments that come before its own. */
export interface Program { file: string; prefix: string[]; }

/** The program is not installed; the message names the Debian package. */
export class MissingProgramError extends Error {}

const STDERR_KEPT = 4096;

/**
 * A child process as a Duplex: writes go to its stdin, its stdout is read, and it fails with the
 * program's stderr when the program exits with an error (or before reading all its input).
 */
export class ProgramFilter extends Duplex {
  private readonly child: ChildProcess;
  private stderr = '';
  private exited = false;

  /** `tool` names the program as users know it (zstd, xz, bzip2) and the Debian package that has it. */
  constructor(program: Program, args: string[], private readonly what: string, private readonly tool: { name: string; debianPackage: string }) {
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
        ? new MissingProgramError(`${this.what} needs the "${this.tool.name}" program, which is not installed (Debian package ${this.tool.debianPackage})`)
        : new Error(`${this.what}: cannot start ${program.file}: ${e.message}`));
    });
    this.child.on('close', (code, signal) => {
      this.exited = true;
      if (this.destroyed) return;
      const { name } = this.tool;
      if (code !== 0) this.destroy(new Error(`${this.what} failed (${name} exited ${code ?? signal}): ${this.stderr.trim() || 'no message'}`));
      else if (!this.writableFinished) this.destroy(new Error(`${this.what}: ${name} exited before reading all its input`));
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
