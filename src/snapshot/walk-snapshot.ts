// The snapshot of a step on a plain directory root (container isolation, or chroot where overlayfs
// is unavailable): the tree is indexed by lstat before the step and compared after it. Metadata
// decides: a file whose change time, modification time, size, mode, owner or inode moved changed.
import { lstatSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { entryFromDisk, type Snapshot } from './snapshot.js';
import { FIELDS, walkTree } from './tree-walk.js';

/** kaniko's --snapshot-mode: which metadata says "changed" (kiln adds ctime in full mode). */
export type SnapshotMode = 'full' | 'redo' | 'time';

interface Indexed {
  /** S_IFMT bits. */
  kind: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  ino: number;
  nlink: number;
}

export type TreeIndex = Map<string, Indexed>;

/** Every path under root (relative, "a/b"), but ignored ones (and what is below them). */
export async function indexTree(root: string, ignored: readonly string[]): Promise<TreeIndex> {
  const index: TreeIndex = new Map();
  for (const part of await walkTree(root, ignored)) {
    const n = part.numbers;
    part.paths.forEach((path, i) => {
      const at = i * FIELDS;
      index.set(path, {
        kind: n[at]!, mode: n[at + 1]!, uid: n[at + 2]!, gid: n[at + 3]!, size: n[at + 4]!,
        mtimeMs: n[at + 5]!, ctimeMs: n[at + 6]!, ino: n[at + 7]!, nlink: n[at + 8]!,
      });
    });
  }
  return index;
}

function changed(a: Indexed, b: Indexed, mode: SnapshotMode): boolean {
  if (a.kind !== b.kind) return true;
  if (mode === 'time') return a.mtimeMs !== b.mtimeMs;
  const redo = a.mtimeMs !== b.mtimeMs || a.size !== b.size || a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid;
  if (mode === 'redo') return redo;
  return redo || a.ctimeMs !== b.ctimeMs || a.ino !== b.ino;
}

/** For a directory kiln itself wrote into and cleaned up: only its type, mode and owner count. */
function ownerOrModeChanged(a: Indexed, b: Indexed): boolean {
  return a.kind !== b.kind || a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid;
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
  for (const [path, now] of after) {
    const was = before.get(path);
    if (!was || (relaxed.has(path) ? ownerOrModeChanged(was, now) : changed(was, now, mode))) changedPaths.push(path);
  }
  for (const path of changedPaths.sort()) {
    const now = after.get(path)!;
    const abs = join(root, path);
    if (now.kind === 0o100000 && now.nlink > 1) {
      const first = firstOfInode.get(now.ino);
      if (first !== undefined) {
        snapshot.entries.push({ path, type: 'hardlink', linkname: first, mode: now.mode, uid: now.uid, gid: now.gid, mtime: new Date(now.mtimeMs) });
        continue;
      }
      firstOfInode.set(now.ino, path);
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
  for (const path of before.keys()) if (!after.has(path)) deleted.push(path);
  for (const path of deleted.sort()) {
    // Paths ignored since `before` was taken (a VOLUME) are not deletions.
    if (ignore(path)) continue;
    const slash = path.lastIndexOf('/');
    const parent = slash < 0 ? '' : path.slice(0, slash);
    if (parent !== '') {
      const parentNow = after.get(parent);
      if (!parentNow || parentNow.kind !== 0o040000) continue;
      if (before.get(parent)?.kind !== 0o040000) continue;
    }
    snapshot.whiteouts.push(path);
  }
  return snapshot;
}
