// Tar headers for image layers: POSIX ustar blocks, with a PAX extended header in front when a
// value does not fit (long or non-ASCII names, large ids/sizes/times, xattrs). Every field is
// written the same way every time: layers are content-addressed, so a varying byte changes a digest.
//
// tar-stream's encoder is not used for layers because it cannot carry binary xattr values
// (security.capability), writes uid/gid with 6 octal digits (so ids from 262144 silently clamp),
// and names the real entry "PaxHeader" whenever PAX records are present.

export const BLOCK_SIZE = 512;
/** Two zero blocks end an archive. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK_SIZE);

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'dir' | 'char' | 'block' | 'fifo';

export interface TarHeader {
  /** Path as it goes into the archive; directories end in "/". */
  name: string;
  type: TarEntryType;
  /** Permission bits only (0o7777): the typeflag carries the file type. */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of content that follow the header (files only). */
  size: number;
  /** Whole seconds since the epoch. */
  mtime: number;
  linkname?: string;
  /** Device numbers of char and block devices. */
  devmajor?: number;
  devminor?: number;
  xattrs?: Readonly<Record<string, Buffer>>;
}

const TYPEFLAG: Record<TarEntryType, string> = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

/** Field widths of the ustar header, and the largest number each octal field holds. */
const NAME_LEN = 100;
const MAX_OCTAL_7 = 0o7777777;
const MAX_OCTAL_11 = 0o77777777777;

/** The header block(s) for one entry: 512 bytes, or a PAX header and its records first when needed. */
export function encodeHeader(header: TarHeader): Buffer {
  const pax = new Map<string, Buffer>();
  if (!fitsUstarString(header.name)) pax.set('path', Buffer.from(header.name, 'utf8'));
  if (header.linkname !== undefined && !fitsUstarString(header.linkname)) pax.set('linkpath', Buffer.from(header.linkname, 'utf8'));
  const numeric = (key: string, value: number, max: number): number => {
    if (value >= 0 && value <= max) return value;
    pax.set(key, Buffer.from(String(value)));
    return 0; // as Go's archive/tar does: the PAX record is authoritative
  };
  const uid = numeric('uid', header.uid, MAX_OCTAL_7);
  const gid = numeric('gid', header.gid, MAX_OCTAL_7);
  const size = numeric('size', header.size, MAX_OCTAL_11);
  const mtime = numeric('mtime', header.mtime, MAX_OCTAL_11);
  for (const [name, value] of Object.entries(header.xattrs ?? {})) {
    if (name === '' || name.includes('=') || name.includes('\0')) throw new Error(`invalid xattr name ${JSON.stringify(name)} on ${header.name}`);
    pax.set(`SCHILY.xattr.${name}`, value);
  }

  const block = ustarBlock({
    name: header.name, typeflag: TYPEFLAG[header.type], mode: header.mode & 0o7777,
    uid, gid, size, mtime, linkname: header.linkname ?? '', devmajor: header.devmajor ?? 0, devminor: header.devminor ?? 0,
  });
  if (pax.size === 0) return block;

  const records = encodePaxRecords(pax);
  const paxBlock = ustarBlock({
    name: paxHeaderName(header.name), typeflag: 'x', mode: 0o644, uid: 0, gid: 0, size: records.length, mtime: 0, linkname: '', devmajor: 0, devminor: 0,
  });
  return Buffer.concat([paxBlock, records, padding(records.length), block]);
}

/** One block of zeros that every padding is a view of: a layer of 100k files made as many buffers. */
const ZEROS = Buffer.alloc(BLOCK_SIZE);

/** Zero bytes that round `size` bytes of content up to a whole block (read-only: a shared view). */
export function padding(size: number): Buffer {
  const rest = size % BLOCK_SIZE;
  return ZEROS.subarray(0, rest === 0 ? 0 : BLOCK_SIZE - rest);
}

/** PAX records ("<len> <key>=<value>\n", len counting itself), sorted by key; values are raw bytes. */
export function encodePaxRecords(records: ReadonlyMap<string, Buffer>): Buffer {
  const keys = [...records.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return Buffer.concat(keys.map((key) => {
    const value = records.get(key)!;
    const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
    let length = body.length + String(body.length).length;
    while (String(length).length + body.length !== length) length = body.length + String(length).length;
    return Buffer.concat([Buffer.from(String(length)), body]);
  }));
}

interface UstarFields {
  name: string;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
}

function ustarBlock(f: UstarFields): Buffer {
  // From Node's shared pool, zeroed: Buffer.alloc would make an ArrayBuffer per header.
  const block = Buffer.allocUnsafe(BLOCK_SIZE).fill(0);
  block.write(ustarString(f.name), 0, NAME_LEN, 'latin1');
  writeOctal(block, 100, 8, f.mode);
  writeOctal(block, 108, 8, f.uid);
  writeOctal(block, 116, 8, f.gid);
  writeOctal(block, 124, 12, f.size);
  writeOctal(block, 136, 12, f.mtime);
  block.write(f.typeflag, 156, 1, 'latin1');
  block.write(ustarString(f.linkname), 157, NAME_LEN, 'latin1');
  block.write('ustar\0' + '00', 257, 8, 'latin1');
  // uname and gname stay empty: ownership is numeric only.
  writeOctal(block, 329, 8, f.devmajor);
  writeOctal(block, 337, 8, f.devminor);
  block.fill(0x20, 148, 156); // the checksum is computed with its own field as spaces
  let sum = 0;
  // Indexed: a for-of over the block's iterator cost more than the rest of the header.
  for (let i = 0; i < BLOCK_SIZE; i++) sum += block[i]!;
  block.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return block;
}

/** A zero-padded octal number filling the field but for its NUL terminator (the value fits: see encodeHeader). */
function writeOctal(block: Buffer, offset: number, width: number, value: number): void {
  // Digit by digit, not through a string: seven fields in each of a layer's headers. Division, not
  // shifts: sizes and times use 11 digits, more than 32 bits.
  let rest = value;
  for (let at = offset + width - 2; at >= offset; at--) {
    block[at] = 0x30 + (rest % 8);
    rest = Math.floor(rest / 8);
  }
  block[offset + width - 1] = 0;
}

function fitsUstarString(s: string): boolean {
  return s.length <= NAME_LEN && isAscii(s);
}

function isAscii(s: string): boolean {
  return /^[\x01-\x7f]*$/.test(s);
}

/** What fits of a string in a ustar field when the full value is in a PAX record: ASCII only, truncated. */
function ustarString(s: string): string {
  return s.replace(/[^\x01-\x7f]/g, '').slice(0, NAME_LEN);
}

/** "dir/PaxHeaders.0/base", the name Go's archive/tar gives a PAX header (readers ignore it). */
function paxHeaderName(name: string): string {
  const trimmed = name.endsWith('/') ? name.slice(0, -1) : name;
  const slash = trimmed.lastIndexOf('/');
  const dir = slash < 0 ? '' : trimmed.slice(0, slash + 1);
  return `${dir}PaxHeaders.0/${trimmed.slice(slash + 1)}`;
}
