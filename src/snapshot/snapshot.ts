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

/** A layer entry for what is at `abs` now (a file's content is read later, from `abs`). */
export function entryFromDisk(abs: string, path: string, st: Stats): LayerEntry {
  const base = { path, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: new Date(Math.floor(st.mtimeMs / 1000) * 1000) };
  if (st.isSymbolicLink()) return { ...base, type: 'symlink', linkname: readlinkSync(abs) };
  const xattrs = readXattrs(abs);
  const extra = xattrs ? { xattrs } : {};
  if (st.isDirectory()) return { ...base, type: 'dir', ...extra };
  if (st.isFile()) return { ...base, type: 'file', size: st.size, source: abs, ...extra };
  if (st.isFIFO()) return { ...base, type: 'fifo', ...extra };
  if (st.isCharacterDevice() || st.isBlockDevice()) {
    return { ...base, type: st.isCharacterDevice() ? 'char' : 'block', devmajor: major(st.rdev), devminor: minor(st.rdev), ...extra };
  }
  throw new Error(`cannot snapshot ${abs}: sockets cannot be stored in an image layer`);
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
