// The snapshot of a step on a plain directory root (container isolation, or chroot where overlayfs
// is unavailable): the tree is indexed by lstat before the step and compared after it. Metadata
// decides: a file whose change time, modification time, size, mode, owner or inode moved changed.
import { lstatSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { entryFromDisk, type Snapshot } from './snapshot.js';
import { FIELDS, walkTree, type WalkResult } from './tree-walk.js';

/** kaniko's --snapshot-mode: which metadata says "changed" (kiln adds ctime in full mode). */
export type SnapshotMode = 'full' | 'redo' | 'time';

/** Where each field of a path sits among its FIELDS numbers (see tree-walk.ts). */
const KIND = 0, MODE = 1, UID = 2, GID = 3, SIZE = 4, MTIME = 5, CTIME = 6, INO = 7, NLINK = 8;
const DIRECTORY = 0o040000;
const REGULAR = 0o100000;

/**
 * lstat results of a tree: one number array and a slot per path, not an object per path (a root of
 * 100k files would otherwise spend more time allocating than walking).
 */
export class TreeIndex {
  private constructor(private readonly slots: Map<string, number>, private readonly numbers: Float64Array) {}

  static from(parts: readonly WalkResult[]): TreeIndex {
    const total = parts.reduce((n, p) => n + p.paths.length, 0);
    const numbers = new Float64Array(total * FIELDS);
    const slots = new Map<string, number>();
    let next = 0;
    for (const part of parts) {
      numbers.set(part.numbers, next * FIELDS);
      for (const path of part.paths) slots.set(path, next++);
    }
    return new TreeIndex(slots, numbers);
  }

  get size(): number {
    return this.slots.size;
  }

  has(path: string): boolean {
    return this.slots.has(path);
  }

  paths(): IterableIterator<string> {
    return this.slots.keys();
  }

  /** The field of a path, or undefined when the path is not in the index. */
  field(path: string, field: number): number | undefined {
    const slot = this.slots.get(path);
    return slot === undefined ? undefined : this.numbers[slot * FIELDS + field];
  }

  /** Whether `path` differs between this (the earlier) index and `now`, for the snapshot mode. */
  changedIn(now: TreeIndex, path: string, mode: SnapshotMode | 'owner-mode'): boolean {
    const a = this.slots.get(path);
    const b = now.slots.get(path);
    if (a === undefined || b === undefined) return true;
    const x = this.numbers, y = now.numbers, i = a * FIELDS, j = b * FIELDS;
    const differs = (f: number): boolean => x[i + f] !== y[j + f];
    if (differs(KIND)) return true;
    if (mode === 'time') return differs(MTIME);
    if (mode === 'owner-mode') return differs(MODE) || differs(UID) || differs(GID);
    const redo = differs(MTIME) || differs(SIZE) || differs(MODE) || differs(UID) || differs(GID);
    if (mode === 'redo') return redo;
    return redo || differs(CTIME) || differs(INO);
  }
}

/** Every path under root (relative, "a/b"), but ignored ones (and what is below them). */
export async function indexTree(root: string, ignored: readonly string[]): Promise<TreeIndex> {
  return TreeIndex.from(await walkTree(root, ignored));
}

/** What changed between two indexes of the same root; `after` is the state on disk now. */
export function diffTrees(
  root: string, before: TreeIndex, after: TreeIndex, mode: SnapshotMode,
  ignore: (path: string) => boolean = () => false,
  /** Directories whose times moved for reasons of kiln's own (mount points made in them). */
  relaxed: ReadonlySet<string> = new Set(),
): Snapshot {
  const snapshot: Snapshot = { entries: [], whiteouts: [], opaque: [] };
  const firstOfInode = new Map<number, string>();
  // Only what changed is sorted (hard links are paired in path order): sorting every path costs more
  // than the comparison itself on a large root.
  const changedPaths: string[] = [];
  for (const path of after.paths()) {
    if (before.changedIn(after, path, relaxed.has(path) ? 'owner-mode' : mode)) changedPaths.push(path);
  }
  for (const path of changedPaths.sort()) {
    const abs = join(root, path);
    const at = (f: number): number => after.field(path, f)!;
    if (at(KIND) === REGULAR && at(NLINK) > 1) {
      const first = firstOfInode.get(at(INO));
      if (first !== undefined) {
        snapshot.entries.push({ path, type: 'hardlink', linkname: first, mode: at(MODE), uid: at(UID), gid: at(GID), mtime: new Date(at(MTIME)) });
        continue;
      }
      firstOfInode.set(at(INO), path);
    }
    let st: Stats;
    try {
      st = lstatSync(abs);
    } catch {
      continue;
    }
    snapshot.entries.push(entryFromDisk(abs, path, st));
  }
  // A deletion needs a whiteout unless its parent went too, or became something other than a directory.
  const deleted: string[] = [];
  for (const path of before.paths()) if (!after.has(path)) deleted.push(path);
  for (const path of deleted.sort()) {
    // Paths ignored since `before` was taken (a VOLUME) are not deletions.
    if (ignore(path)) continue;
    const slash = path.lastIndexOf('/');
    const parent = slash < 0 ? '' : path.slice(0, slash);
    if (parent !== '') {
      if (after.field(parent, KIND) !== DIRECTORY || before.field(parent, KIND) !== DIRECTORY) continue;
    }
    snapshot.whiteouts.push(path);
  }
  return snapshot;
}
