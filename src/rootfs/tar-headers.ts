// What a layer's tar headers say about an entry: checked metadata, and PAX records as raw bytes.
// tar-stream decodes PAX records as UTF-8 text, which mangles binary xattr values (security.capability
// holds bytes such as 0x80 and 0xff), and it drops the uid, gid and mtime records. So PaxTap sits in
// front of tar-stream and keeps the bytes between the end of one entry and the header of the next
// (where PAX and GNU long-name headers are); those headers are read again here, at the offsets
// tar-stream reports. Entry contents are never kept. And how that metadata goes onto disk.
import { chmodSync, lchownSync, lutimesSync } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';
import { setAttributeSync } from 'fs-xattr';
import type { Header } from 'tar-stream';

const BLOCK = 512;
/** Largest uid/gid (2^32-1 means "no id"). */
const MAX_ID = 0xfffffffe;
const XATTR_PREFIX = 'SCHILY.xattr.';

/** An entry's metadata, checked. */
export interface Meta {
  /** Permission bits, setuid/setgid/sticky included. */
  mode: number;
  uid: number;
  gid: number;
  /** A Date, not seconds: Node's utimes turns negative numbers (before 1970) into "now". */
  mtime: Date;
  xattrs: Map<string, Buffer>;
}

/** The header's metadata with the PAX uid, gid and mtime records (which tar-stream drops) applied; a string says what is wrong. */
export function entryMeta(header: Header, pax: ReadonlyMap<string, Buffer>): Meta | string {
  const paxNumber = (key: string): number | undefined => {
    const value = pax.get(key)?.toString('latin1');
    return value === undefined ? undefined : /^-?\d+(\.\d+)?$/.test(value) ? Number(value) : NaN;
  };
  const uid = paxNumber('uid') ?? header.uid;
  const gid = paxNumber('gid') ?? header.gid;
  const paxMtime = paxNumber('mtime');
  const mtime = paxMtime === undefined ? header.mtime : new Date(paxMtime * 1000);
  if (!Number.isSafeInteger(header.mode) || header.mode < 0) return `invalid mode ${header.mode}`;
  if (!isId(uid) || !isId(gid)) return `invalid owner ${uid}:${gid}`;
  if (!Number.isFinite(mtime.getTime())) return 'invalid modification time';
  const xattrs = new Map<string, Buffer>();
  for (const [key, value] of pax) {
    // trusted.overlay.* would steer overlayfs (redirects, opaqueness): a layer does not get to set them.
    if (key.startsWith(XATTR_PREFIX) && !key.startsWith(XATTR_PREFIX + 'trusted.overlay.')) xattrs.set(key.slice(XATTR_PREFIX.length), value);
  }
  return { mode: header.mode & 0o7777, uid, gid, mtime, xattrs };
}

/**
 * Ownership, mode, xattrs and (but for directories, whose time is set last) mtime of what `host`
 * names, which is never a symlink unless `kind` says so. chown comes first: it clears setuid bits
 * and file capabilities. Xattrs the filesystem refuses are added to `refused`.
 */
export function applyMeta(host: string, meta: Meta, kind: 'dir' | 'symlink' | 'other', refused: string[]): void {
  lchownSync(host, meta.uid, meta.gid);
  if (kind !== 'symlink') {
    chmodSync(host, meta.mode); // chmod follows symlinks, and Linux cannot chmod a symlink itself
    setXattrs(host, meta.xattrs, refused); // setxattr follows symlinks too
  }
  if (kind !== 'dir') lutimesSync(host, meta.mtime, meta.mtime);
}

/** Sets xattrs on a path that is not a symlink; those the filesystem does not support go to `refused`, as Docker skips them. */
export function setXattrs(host: string, xattrs: ReadonlyMap<string, Buffer>, refused: string[]): void {
  for (const [name, value] of xattrs) {
    try {
      setAttributeSync(host, name, value);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EPERM') throw e;
      refused.push(`${name} (${code})`);
    }
  }
}

export function isId(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0 && n <= MAX_ID;
}

export class PaxTap extends Transform {
  /** Bytes that have passed through. */
  private position = 0;
  /** Where the bytes not yet accounted for by an entry start: the window is [keepFrom, position). */
  private keepFrom = 0;
  private window: Buffer[] = [];
  private windowStart = 0;
  private readonly global = new Map<string, Buffer>();

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const end = this.position + chunk.length;
    if (end > this.keepFrom) {
      const skip = Math.max(this.keepFrom - this.position, 0);
      if (this.window.length === 0) this.windowStart = this.position + skip;
      this.window.push(skip > 0 ? chunk.subarray(skip) : chunk);
    }
    this.position = end;
    callback(null, chunk);
  }

  /**
   * The PAX records (global ones included) of the entry whose header block starts at `headerOffset`;
   * then forgets everything up to the end of its content. Called for each entry, in order, as
   * tar-stream emits them.
   */
  recordsFor(header: Header, headerOffset: number): Map<string, Buffer> {
    // tar-stream reads no content for directories, whatever their size says.
    const size = header.type === 'directory' ? 0 : header.size;
    const nextOffset = headerOffset + BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    const gap = this.gapBytes(headerOffset);
    const local = new Map<string, Buffer>();
    for (let at = 0; at < gap.length;) {
      if (gap.length - at < BLOCK) throw new Error('extended header is cut short');
      const block = gap.subarray(at, at + BLOCK);
      if (block.every((b) => b === 0)) { at += BLOCK; continue; } // a stray end-of-archive block
      const dataSize = parseOctal(block.subarray(124, 136));
      if (dataSize === undefined) throw new Error('extended header has an invalid size');
      const data = gap.subarray(at + BLOCK, at + BLOCK + dataSize);
      if (data.length !== dataSize) throw new Error('extended header is cut short');
      const typeflag = String.fromCharCode(block[156] ?? 0);
      if (typeflag === 'x') parseRecords(data, local);
      else if (typeflag === 'g') parseRecords(data, this.global);
      at += BLOCK + Math.ceil(dataSize / BLOCK) * BLOCK;
    }
    this.skipTo(nextOffset);
    const merged = this.global.size === 0 ? local : new Map([...this.global, ...local]);
    // An empty value unsets the key (POSIX), a global one included.
    for (const [key, value] of merged) if (value.length === 0) merged.delete(key);
    return merged;
  }

  /** A copy of the bytes in [keepFrom, end). */
  private gapBytes(end: number): Buffer {
    const length = end - this.keepFrom;
    if (length <= 0) return Buffer.alloc(0);
    if (this.windowStart !== this.keepFrom || this.windowLength() < length) {
      throw new Error('tar headers are not where the parser reported them');
    }
    const out = Buffer.allocUnsafe(length);
    let copied = 0;
    for (const chunk of this.window) {
      if (copied >= length) break;
      copied += chunk.copy(out, copied, 0, Math.min(chunk.length, length - copied));
    }
    return out;
  }

  private skipTo(offset: number): void {
    this.keepFrom = offset;
    let drop = offset - this.windowStart;
    while (drop > 0 && this.window.length > 0) {
      const first = this.window[0]!;
      if (first.length <= drop) {
        this.window.shift();
        drop -= first.length;
        this.windowStart += first.length;
      } else {
        this.window[0] = first.subarray(drop);
        this.windowStart += drop;
        drop = 0;
      }
    }
    if (this.window.length === 0) this.windowStart = offset;
  }

  private windowLength(): number {
    let length = 0;
    for (const chunk of this.window) length += chunk.length;
    return length;
  }
}

/** "<len> <key>=<value>\n" records, values as bytes (empty ones kept: they unset a global value). */
function parseRecords(data: Buffer, into: Map<string, Buffer>): void {
  let rest = data;
  while (rest.length > 0) {
    if (rest.every((b) => b === 0)) return; // some writers pad the records with NULs
    const space = rest.indexOf(0x20);
    const length = space > 0 && space < 20 ? Number(rest.subarray(0, space).toString('latin1')) : NaN;
    if (!Number.isSafeInteger(length) || length <= space + 1 || length > rest.length || rest[length - 1] !== 0x0a) {
      throw new Error('malformed PAX record');
    }
    const record = rest.subarray(space + 1, length - 1);
    const equals = record.indexOf(0x3d);
    if (equals <= 0) throw new Error('malformed PAX record');
    const key = record.subarray(0, equals).toString('utf8');
    into.set(key, Buffer.from(record.subarray(equals + 1))); // a copy, not a view into the stream's chunks
    rest = rest.subarray(length);
  }
}

/** A ustar numeric field: octal digits (space/NUL terminated) or GNU base-256; undefined when invalid. */
function parseOctal(field: Buffer): number | undefined {
  if ((field[0] ?? 0) & 0x80) {
    if (field[0] !== 0x80) return undefined; // negative
    let value = 0;
    for (const byte of field.subarray(1)) value = value * 256 + byte;
    return Number.isSafeInteger(value) ? value : undefined;
  }
  const text = field.toString('latin1').replace(/[\0 ]+$/, '').replace(/^[ 0]+/, '');
  if (text === '') return 0;
  return /^[0-7]+$/.test(text) ? parseInt(text, 8) : undefined;
}
