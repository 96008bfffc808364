// ADD of a local tar archive: which files are archives, and their members as entries of the layer.
//
// As Docker and BuildKit decide it: a regular file is an archive when its first bytes are a gzip,
// bzip2, xz or zstd signature (or none) and what that decompresses to starts with a tar header that
// Go's archive/tar accepts (the name of the file plays no part; an empty tar is not an archive). gzip
// is Node's own; bzip2, xz and zstd stream through Debian's `bzip2 -dc`, `xz -dc` and `zstd -dc`
// (BuildKit also runs `xz`), which kiln needs only when such an archive is added.
//
// Extraction follows Docker's (moby/go-archive's Unpack, which BuildKit runs chrooted into the
// destination): member names are cleaned and taken relative to the destination, so "/etc/x" and
// "../../x" land inside it; symlinks met on the way, of the archive or already in the image, are
// followed with the destination as their root, so nothing is written outside it; missing parents are
// made 0755 and owned by root; an existing directory merges with a directory member and takes its
// metadata, anything else is replaced; owners are the members' numeric ids, or --chown's for every
// member when it is given; --chmod does not apply to members; ".wh." names are ordinary files (they
// do become whiteouts for whoever applies the layer, as with BuildKit's own layers).
import { createReadStream, createWriteStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { GUNZIP_CHUNK_BYTES } from '../layer/decompress.js';
import { extract, type Header } from 'tar-stream';
import type { LayerEntry } from '../layer/layer-writer.js';
import { MissingProgramError, ProgramFilter } from '../layer/program-filter.js';
import { zstdProgram } from '../layer/zstd.js';
import { log } from '../log/logger.js';
import { entryMeta, PaxTap } from '../rootfs/tar-headers.js';
import { CopyError } from './copy-error.js';
import { baseName, joinPath, parentOf, type LayerPlan } from './copy-tree.js';
import type { Identity } from './users.js';

export type Compression = 'none' | 'gzip' | 'bzip2' | 'xz' | 'zstd';

const BLOCK = 512;
/** How much decompressed data the archive check looks at (a first header and, after a long name or PAX header, the next). */
const SNIFF_BYTES = 64 << 10;
/** The programs (named like the compressions) that decompress what Node.js cannot, by Debian package. */
const DEBIAN_PACKAGES: Record<'bzip2' | 'xz' | 'zstd', string> = { bzip2: 'bzip2', xz: 'xz-utils', zstd: 'zstd' };

/** The compression its first bytes say a file has, as go-archive's compression.Detect reads them. */
export function compressionOf(head: Buffer): Compression {
  const starts = (bytes: number[]): boolean => head.length >= bytes.length && bytes.every((b, i) => head[i] === b);
  if (starts([0x42, 0x5a, 0x68])) return 'bzip2';
  if (starts([0x1f, 0x8b, 0x08])) return 'gzip';
  if (starts([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) return 'xz';
  if (starts([0x28, 0xb5, 0x2f, 0xfd])) return 'zstd';
  // A zstd skippable frame (magic 0x184D2A50 to 0x184D2A5F) also starts a zstd stream.
  if (head.length >= 8 && (head.readUInt32LE(0) & 0xfffffff0) === 0x184d2a50) return 'zstd';
  return 'none';
}

/** The file's compression when ADD would extract it, undefined when it is copied as a file. */
export async function detectArchive(path: string): Promise<Compression | undefined> {
  const handle = await open(path, 'r');
  let head: Buffer;
  try {
    const buffer = Buffer.alloc(10);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    head = buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
  const compression = compressionOf(head);
  const data = await readPrefix(decompressed(path, compression), SNIFF_BYTES);
  return data !== undefined && startsWithTarHeader(data) ? compression : undefined;
}

/** Whether Go's tar.Reader.Next() would return a first header for this start of a stream. */
export function startsWithTarHeader(data: Buffer): boolean {
  for (let at = 0; ; ) {
    const block = data.subarray(at, at + BLOCK);
    if (block.length < BLOCK) return false; // a short read is an error, and no data at all is EOF
    if (block.every((b) => b === 0)) return false; // end of archive, or a header missing
    const size = headerSize(block);
    if (size === undefined) return false;
    const type = String.fromCharCode(block[156]!);
    // PAX records and GNU long names belong to the next header, which must be valid too.
    if (type !== 'x' && type !== 'L' && type !== 'K') return true;
    at += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    if (at + BLOCK > data.length) return data.length >= SNIFF_BYTES; // beyond what was read: give it the benefit of the doubt
  }
}

/** The header's size field when its checksum and numeric fields are valid (Go's reader checks), else undefined. */
function headerSize(block: Buffer): number | undefined {
  const checksum = goOctal(block.subarray(148, 156));
  if (checksum === undefined) return undefined;
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  if (checksum !== unsigned && checksum !== signed) return undefined;
  const magic = block.subarray(257, 263).toString('latin1');
  const fields: [number, number][] = [[100, 8], [108, 8], [116, 8], [124, 12], [136, 12]];
  if (magic === 'ustar\0' || magic === 'ustar ') fields.push([329, 8], [337, 8]);
  let size = 0;
  for (const [offset, length] of fields) {
    const value = goNumeric(block.subarray(offset, offset + length));
    if (value === undefined) return undefined;
    if (offset === 124) size = value;
  }
  return size >= 0 ? size : undefined;
}

/** A numeric header field: base-256 when the high bit is set, else octal (Go's parseNumeric); negative is -1. */
function goNumeric(field: Buffer): number | undefined {
  if ((field[0]! & 0x80) !== 0) {
    const negative = (field[0]! & 0x40) !== 0;
    let value = 0n;
    for (const [i, byte] of field.entries()) {
      let c = negative ? byte ^ 0xff : byte;
      if (i === 0) c &= 0x7f;
      if (value >> 56n > 0n) return undefined; // overflows Go's int64
      value = (value << 8n) | BigInt(c);
    }
    if (value >> 63n > 0n) return undefined;
    return negative ? -1 : Number(value);
  }
  return goOctal(field);
}

/** Go's parseOctal: NULs and spaces trimmed from both ends, the rest up to a NUL must be octal ("" is 0). */
function goOctal(field: Buffer): number | undefined {
  let text = field.toString('latin1').replace(/^[ \0]+|[ \0]+$/g, '');
  const nul = text.indexOf('\0');
  if (nul >= 0) text = text.slice(0, nul);
  if (text === '') return 0;
  return /^[0-7]+$/.test(text) ? parseInt(text, 8) : undefined;
}

/** Up to `limit` bytes of a stream (fewer when it ends), then the stream is closed; undefined when it fails first. */
async function readPrefix(stream: Readable, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      length += chunk.length;
      if (length >= limit) break;
    }
  } catch (e) {
    if (e instanceof MissingProgramError) throw new CopyError(e.message);
    return undefined; // not valid compressed data: copied as a file, as Docker does
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks);
}

/** The file's content, decompressed. Errors (of the decompressor included) come out of the stream. */
function decompressed(path: string, compression: Compression): Readable {
  const file = createReadStream(path);
  if (compression === 'none') return file;
  if (compression === 'gzip') {
    const gunzip = createGunzip({ chunkSize: GUNZIP_CHUNK_BYTES });
    file.on('error', (e) => gunzip.destroy(e));
    gunzip.on('close', () => file.destroy()); // a reader that stops early closes the file too
    return file.pipe(gunzip);
  }
  // zstd as layers use it: in kiln's image, the copy under /kaniko (src/layer/zstd.ts).
  const program = compression === 'zstd' ? zstdProgram() : { file: compression, prefix: [] };
  const filter = new ProgramFilter(program, ['-d', '-c', '-q'], `ADD of a ${compression}-compressed archive`, { name: compression, debianPackage: DEBIAN_PACKAGES[compression] });
  file.on('error', (e) => filter.destroy(e));
  // A consumer that has read enough (the archive check) stops the decompressor and closes the file.
  filter.on('close', () => file.destroy());
  return file.pipe(filter);
}

export interface ExtractOptions {
  /** The archive on disk. */
  path: string;
  compression: Compression;
  /** Where the members go: the destination directory (in-image path, symlinks resolved, already planned). */
  root: string;
  plan: LayerPlan;
  /** --chown: every member's owner. */
  owner?: Identity;
  /** --reproducible: every timestamp. */
  fixedMtime?: Date;
  /** Mtime of the directories extraction creates. */
  createdDirMtime: Date;
  /** A directory of kiln's own where member contents are kept until the layer is written. */
  scratch: () => Promise<string>;
  /** "ADD app.tar.gz", for messages. */
  what: string;
}

/** Adds the archive's members to the layer plan. */
export async function extractArchive(options: ExtractOptions): Promise<void> {
  const tap = new PaxTap();
  // Go reads pre-POSIX (v7) headers too; tar-stream does with this option, which its typings lack.
  const tar = extract({ allowUnknownFormat: true } as Parameters<typeof extract>[0]);
  const source = decompressed(options.path, options.compression);
  source.on('error', (e) => tap.destroy(e));
  tap.on('error', (e) => tar.destroy(e));
  source.pipe(tap).pipe(tar);
  const extractor = new ArchiveExtractor(options);
  try {
    for await (const entry of tar) {
      await extractor.entry(entry.header, entry, tap.recordsFor(entry.header, entry.offset));
      for await (const _ of entry) { /* what the member did not read */ }
    }
  } catch (e) {
    for (const stream of [tar, tap, source]) stream.destroy();
    if (e instanceof CopyError) throw e;
    if (e instanceof MissingProgramError) throw new CopyError(e.message);
    throw new CopyError(`${options.what}: the archive cannot be read: ${(e as Error).message}`);
  }
}

/** Numbers the member files of every archive of the process: several archives share one directory. */
let memberFiles = 0;

class ArchiveExtractor {
  private whiteoutWarned = false;

  constructor(private readonly options: ExtractOptions) {}

  async entry(header: Header, content: AsyncIterable<unknown>, pax: Map<string, Buffer>): Promise<void> {
    const { plan, root, what } = this.options;
    const meta = entryMeta(header, pax);
    if (typeof meta === 'string') throw new CopyError(`${what}: member "${header.name}": ${meta}`);
    // Go's filepath.Clean, then joined to the destination as the chroot's "/": ".." stops there.
    const name = cleanMemberName(header.name);
    const base = {
      uid: this.options.owner?.uid ?? meta.uid,
      gid: this.options.owner?.gid ?? meta.gid,
      mtime: this.options.fixedMtime ?? meta.mtime,
      ...(meta.xattrs.size > 0 ? { xattrs: Object.fromEntries(meta.xattrs) } : {}),
    };
    if (name === undefined) return; // "." and "./": the destination itself is left as it is
    if (name === '') {
      // "/" or "..": Docker applies a directory member's metadata to the destination itself.
      if (header.type === 'directory' && root !== '') plan.put({ path: root, type: 'dir', mode: meta.mode, ...base });
      else if (header.type !== 'directory') throw new CopyError(`${what}: member "${header.name}" would replace the destination directory`);
      return;
    }
    const parent = plan.resolve(root, parentOf(name), {
      followLast: true,
      mkdirLast: true,
      danglingLinks: 'error',
      what,
      mkdir: (path) => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: this.options.fixedMtime ?? this.options.createdDirMtime }),
    });
    const path = joinPath(parent, baseName(name));
    if (baseName(name).startsWith('.wh.') && !this.whiteoutWarned) {
      this.whiteoutWarned = true;
      log.warn(`${what}: member ${header.name} has a whiteout name; it is added as a file, and whoever applies the layer will read it as deleting ${baseName(name).slice(4) || 'a path'}`);
    }
    switch (header.type) {
      case 'directory':
        plan.put({ path, type: 'dir', mode: meta.mode, ...base });
        return;
      case 'file': {
        const file = join(await this.options.scratch(), `member-${memberFiles++}`);
        await pipeline(content as AsyncIterable<Buffer>, createWriteStream(file, { mode: 0o600 }));
        plan.put({ path, type: 'file', mode: meta.mode, ...base, size: header.size, source: file });
        return;
      }
      case 'symlink':
        if (!header.linkname) throw new CopyError(`${what}: member "${header.name}" is a symlink without a target`);
        plan.put({ path, type: 'symlink', mode: 0o777, ...base, linkname: header.linkname });
        return;
      case 'link':
        return this.hardlink(header, path, meta.mode, base);
      case 'character-device':
      case 'block-device':
      case 'fifo':
        plan.put({
          path, type: header.type === 'fifo' ? 'fifo' : header.type === 'block-device' ? 'block' : 'char', mode: meta.mode, ...base,
          ...(header.type === 'fifo' ? {} : { devmajor: header.devmajor ?? 0, devminor: header.devminor ?? 0 }),
        });
        return;
      default:
        // GNU sparse files, contiguous files, volume labels...: Docker refuses them too.
        throw new CopyError(`${what}: member "${header.name}" has a tar entry type that cannot be extracted (${String(header.type)})`);
    }
  }

  /** A hard link to an earlier member: the link's metadata goes to the shared inode, as on disk. */
  private hardlink(header: Header, path: string, mode: number, base: Omit<LayerEntry, 'path' | 'type' | 'mode'>): void {
    const { plan, root, what } = this.options;
    const targetName = cleanMemberName(header.linkname ?? '');
    if (!targetName) throw new CopyError(`${what}: member "${header.name}" is a hard link to the destination directory`);
    const targetParent = plan.resolve(root, parentOf(targetName), { followLast: true, danglingLinks: 'error', what });
    let targetPath = joinPath(targetParent, baseName(targetName));
    let target = plan.ownEntry(targetPath);
    if (!target) {
      const inImage = plan.get(targetPath) !== undefined;
      throw new CopyError(`${what}: member "${header.name}" is a hard link to "${header.linkname}", which ${inImage ? 'is a file of the image, not of the archive (not supported)' : 'does not exist'}`);
    }
    if (target.type === 'dir') throw new CopyError(`${what}: member "${header.name}" is a hard link to the directory "${header.linkname}"`);
    if (targetPath === path) throw new CopyError(`${what}: member "${header.name}" is a hard link to itself`);
    while (target.type === 'hardlink' && target.linkname !== undefined && plan.ownEntry(target.linkname)) {
      targetPath = target.linkname;
      target = plan.ownEntry(targetPath)!;
    }
    // chown, chmod and utimes through the new name change the inode both names share (not a symlink's mode).
    const shared = { ...base, mode: target.type === 'symlink' ? target.mode : mode };
    plan.put({ ...target, ...shared });
    plan.put({ path, type: 'hardlink', linkname: targetPath, ...shared });
  }
}

/**
 * A member name as Docker places it: Go's filepath.Clean, then joined to "/" (the destination):
 * undefined for "." (skipped), "" for names that reach the destination itself ("/", ".."), else a
 * clean relative path.
 */
export function cleanMemberName(name: string): string | undefined {
  const parts: string[] = [];
  let dot = true; // Clean gives "." only for names without a real component nor a leading "/" or ".."
  if (name.startsWith('/')) dot = false;
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    dot = false;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  return dot ? undefined : parts.join('/');
}
