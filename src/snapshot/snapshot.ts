// What one step changed in a build root, in layer terms, and how a change is written as tar entries.
import { lstatSync, readlinkSync, type Stats } from 'node:fs';
import { getAttributeSync, listAttributesSync } from 'fs-xattr';
import type { LayerEntry } from '../layer/layer-writer.js';

export interface Snapshot {
  /** Added or changed entries; files name their bytes on disk (`source`). */
  entries: LayerEntry[];
  /** Deleted paths: each becomes a `.wh.NAME` entry. */
  whiteouts: string[];
  /** Directories whose lower contents are gone (`.wh..wh..opq`). */
  opaque: string[];
}

/** The entries of a layer for the snapshot: changes, then the whiteout markers runtimes read. */
export function snapshotLayerEntries(snapshot: Snapshot): LayerEntry[] {
  const marker = (path: string): LayerEntry => ({ path, type: 'file', mode: 0o600, uid: 0, gid: 0, mtime: new Date(0), content: Buffer.alloc(0) });
  const inDir = (dir: string, name: string): string => (dir === '' ? name : `${dir}/${name}`);
  const split = (path: string): [string, string] => {
    const slash = path.lastIndexOf('/');
    return slash < 0 ? ['', path] : [path.slice(0, slash), path.slice(slash + 1)];
  };
  return [
    ...snapshot.entries,
    ...snapshot.whiteouts.map((p) => {
      const [dir, name] = split(p);
      return marker(inDir(dir, '.wh.' + name));
    }),
    ...snapshot.opaque.map((dir) => marker(inDir(dir, '.wh..wh..opq'))),
  ];
}

/** Namespaces of xattrs that describe the host's storage, not the image. */
const HOST_XATTRS = /^(trusted\.overlay\.|security\.selinux$|system\.)/;

/** What entryFromDisk needs of an lstat: Node.js's Stats, or the numbers of kiln-sandbox scan. */
export interface StatFields { mode: number; uid: number; gid: number; size: number; mtimeMs: number; rdev: number; }

const S_IFMT = 0o170000;
export const S_IFLNK = 0o120000, S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFIFO = 0o010000, S_IFCHR = 0o020000, S_IFBLK = 0o060000;

/**
 * Hard links are paired in path order: the first name of a file with several links is its entry,
 * each later one (the same `key`: its inode) an entry linking to it; undefined for the first.
 */
export function laterLink<K>(firstOfInode: Map<K, string>, key: K, path: string, st: { mode: number; uid: number; gid: number; mtimeMs: number }): LayerEntry | undefined {
  const first = firstOfInode.get(key);
  if (first === undefined) {
    firstOfInode.set(key, path);
    return undefined;
  }
  return { path, type: 'hardlink', linkname: first, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: new Date(st.mtimeMs) };
}

/**
 * A layer entry for what is at `abs` now (a file's content is read later, from `abs`). `hasXattrs`
 * false skips listing its extended attributes: the caller knows it has none.
 */
export function entryFromDisk(abs: string, path: string, st: StatFields, hasXattrs = true): LayerEntry {
  // Literals of one shape each, not spreads: a RUN can leave 100k entries to make.
  const mode = st.mode & 0o7777, uid = st.uid, gid = st.gid, mtime = new Date(Math.floor(st.mtimeMs / 1000) * 1000);
  const kind = st.mode & S_IFMT;
  if (kind === S_IFLNK) return { path, mode, uid, gid, mtime, type: 'symlink', linkname: readlinkSync(abs) };
  let entry: LayerEntry;
  if (kind === S_IFREG) entry = { path, mode, uid, gid, mtime, type: 'file', size: st.size, source: abs };
  else if (kind === S_IFDIR) entry = { path, mode, uid, gid, mtime, type: 'dir' };
  else if (kind === S_IFIFO) entry = { path, mode, uid, gid, mtime, type: 'fifo' };
  else if (kind === S_IFCHR || kind === S_IFBLK) {
    entry = { path, mode, uid, gid, mtime, type: kind === S_IFCHR ? 'char' : 'block', devmajor: major(st.rdev), devminor: minor(st.rdev) };
  } else {
    throw new Error(`cannot snapshot ${abs}: sockets cannot be stored in an image layer`);
  }
  const xattrs = hasXattrs ? readXattrs(abs) : undefined;
  if (xattrs) entry.xattrs = xattrs;
  return entry;
}

function readXattrs(abs: string): Record<string, Buffer> | undefined {
  let names: string[];
  try {
    names = listAttributesSync(abs);
  } catch {
    return undefined; // the file system keeps none
  }
  let out: Record<string, Buffer> | undefined;
  for (const name of names) {
    if (HOST_XATTRS.test(name)) continue;
    (out ??= {})[name] = getAttributeSync(abs, name);
  }
  return out;
}

/** glibc's encoding of dev_t. */
export function major(dev: number): number {
  return Number(((BigInt(dev) >> 8n) & 0xfffn) | ((BigInt(dev) >> 32n) & ~0xfffn));
}
export function minor(dev: number): number {
  return Number((BigInt(dev) & 0xffn) | ((BigInt(dev) >> 12n) & ~0xffn));
}

export function lstatOrUndefined(abs: string): Stats | undefined {
  try {
    return lstatSync(abs);
  } catch {
    return undefined;
  }
}
