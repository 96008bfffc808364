// A GET body that survives a connection dropped mid-transfer (it asks again for the remaining bytes)
// and checks what it delivers on the way, in one stream: every extra stream between the socket and
// the consumer costs CPU per chunk, and a blob copied between registries is all chunks.
import { Readable } from 'node:stream';
import type { RegistryError } from './types.js';

/** Sees every byte a body delivers, in order, and judges the whole at its end (a digest check). */
export interface BodyCheck {
  update(chunk: Buffer): void;
  /** An error when the bytes were wrong: the body fails with it instead of ending. */
  final(): Error | undefined;
}

export interface ResumeOptions {
  /** A new response for the bytes from `received` on; `skip` is how many of its first bytes are already delivered. */
  resume(received: number, attempt: number): Promise<{ body: Readable; skip: number }>;
  /** What a failure of the body is, and whether resuming may help. */
  failure(error: unknown): RegistryError;
  maxRetries: number;
  check?: BodyCheck;
}

const noop = (): void => undefined;

export class ResumableBody extends Readable {
  private source: Readable | undefined;
  private started = false;
  private received = 0;
  private skip = 0;
  private attempt = 0;

  constructor(first: Readable, private readonly options: ResumeOptions) {
    // Room for a few socket reads, so the source is not paused and resumed for every chunk.
    super({ highWaterMark: 256 * 1024 });
    this.source = first;
    first.on('error', this.onError);
  }

  override _read(): void {
    if (!this.source) return; // resuming: the next source starts flowing when it arrives
    if (this.started) {
      this.source.resume();
      return;
    }
    this.started = true;
    this.source.on('data', this.onData);
    this.source.once('end', this.onEnd);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    const source = this.detach();
    source?.destroy();
    callback(error);
  }

  private readonly onData = (chunk: Buffer): void => {
    let buf = chunk;
    if (this.skip > 0) {
      const dropped = Math.min(this.skip, buf.length);
      this.skip -= dropped;
      buf = buf.subarray(dropped);
      if (buf.length === 0) return;
    }
    this.received += buf.length;
    this.options.check?.update(buf);
    if (!this.push(buf)) this.source?.pause();
  };

  private readonly onEnd = (): void => {
    this.detach();
    const wrong = this.options.check?.final();
    if (wrong) this.destroy(wrong);
    else this.push(null);
  };

  private readonly onError = (e: unknown): void => {
    this.detach();
    if (this.destroyed) return;
    const error = this.options.failure(e);
    if (!error.retryable || this.attempt >= this.options.maxRetries) {
      this.destroy(error);
      return;
    }
    this.options.resume(this.received, this.attempt++).then(({ body, skip }) => {
      if (this.destroyed) {
        body.destroy();
        return;
      }
      this.skip = skip;
      this.source = body;
      body.on('error', this.onError);
      if (this.started) {
        body.on('data', this.onData);
        body.once('end', this.onEnd);
      }
    }, (e2: unknown) => this.destroy(e2 as Error));
  };

  /** Stops listening to the current source; a late error from it is ignored. */
  private detach(): Readable | undefined {
    const source = this.source;
    this.source = undefined;
    if (source) {
      source.off('data', this.onData).off('end', this.onEnd).off('error', this.onError);
      source.on('error', noop);
    }
    return source;
  }
}
