// A blob's bytes as the consecutive ranges of a chunked upload.
import { Readable } from 'node:stream';

/** The bytes of a blob to upload, for each attempt: a stream, or the promise of one (another registry's getBlob). */
export type OpenBlob = () => NodeJS.ReadableStream | Promise<NodeJS.ReadableStream>;

/**
 * Reads a blob's stream as consecutive byte ranges (the chunks of an upload) without copying or
 * re-streaming it, reopening it when a range must be sent again. The last range ends only when the
 * stream does, so a check the stream makes at its end (a digest) fails that range's request.
 */
export class RangeReader {
  private source: Readable | undefined;
  /** Bytes of the source handed to ranges so far; `leftover` (read, not yet handed out) starts there. */
  private position = 0;
  private leftover: Buffer | undefined;
  /** How the source finished, whether or not a range was reading it then. */
  private ended = false;
  private failure: Error | undefined;
  /** The range being read, told when the source finishes. */
  private active: { end(): void; fail(error: Error): void; detach(): void } | undefined;

  constructor(private readonly open: OpenBlob, private readonly size: number) {}

  /** Bytes [start, start + length) as a stream. */
  async range(start: number, length: number): Promise<Readable> {
    this.active?.detach();
    if (!this.source || start < this.position) await this.reopen();
    if (this.failure) throw this.failure;
    const source = this.source!;
    const end = start + length;
    const last = end >= this.size;
    const out = new Readable({
      highWaterMark: 256 * 1024, // a few socket reads, as for the download itself
      read: () => { source.resume(); },
      destroy: (error, callback) => { detach(); callback(error); },
    });
    const onData = (chunk: Buffer | string): void => {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
      const chunkStart = this.position;
      const take = Math.min(buf.length, end - chunkStart);
      if (take < buf.length) {
        if (last) {
          out.destroy(new Error(`the blob is longer than its ${this.size} bytes`));
          return;
        }
        this.leftover = buf.subarray(take);
        source.pause();
      }
      this.position += take;
      const from = Math.max(0, start - chunkStart);
      if (take > from && !out.push(from === 0 && take === buf.length ? buf : buf.subarray(from, take))) source.pause();
      // The last range ends with the source, after its own checks.
      if (this.position >= end && (!last || this.ended)) finish();
    };
    const finish = (): void => {
      detach();
      source.pause();
      out.push(null);
    };
    const detach = (): void => {
      source.off('data', onData);
      if (this.active === range) this.active = undefined;
    };
    const range = {
      end: () => {
        if (this.position >= end) finish();
        else out.destroy(new Error(`the blob ended after ${this.position} bytes, before byte ${end}`));
      },
      fail: (error: Error) => { out.destroy(error); },
      detach,
    };
    this.active = range;
    if (this.leftover) {
      const held = this.leftover;
      this.leftover = undefined;
      onData(held);
    }
    if (this.active === range && this.ended) range.end();
    if (this.active === range) source.on('data', onData);
    return out;
  }

  close(): void {
    this.active?.detach();
    this.source?.destroy();
    this.source = undefined;
  }

  private async reopen(): Promise<void> {
    this.close();
    const opened = await this.open();
    const source = opened instanceof Readable ? opened : Readable.from(opened as AsyncIterable<Buffer>);
    this.source = source;
    this.position = 0;
    this.leftover = undefined;
    this.ended = false;
    this.failure = undefined;
    // Listened to for good: the source may end, or fail its checks, between two ranges.
    source.on('end', () => {
      if (this.source !== source) return;
      this.ended = true;
      this.active?.end();
    });
    source.on('error', (e: Error) => {
      if (this.source !== source) return;
      this.failure = e;
      this.active?.fail(e);
    });
  }
}

/**
 * `open` started now rather than when first called, for a caller that knows it will need the bytes
 * and has a round trip to make first; discard() closes a stream opened ahead but never used.
 */
export function openAhead(open: OpenBlob): { open: OpenBlob; discard(): void } {
  let ahead: Promise<NodeJS.ReadableStream> | undefined = Promise.resolve().then(open);
  ahead.catch(() => undefined); // observed when used; never an unhandled rejection meanwhile
  return {
    open: () => {
      const first = ahead;
      ahead = undefined;
      return first ?? open();
    },
    discard: () => {
      void ahead?.then((stream) => (stream as Partial<Readable>).destroy?.(), () => undefined);
      ahead = undefined;
    },
  };
}
