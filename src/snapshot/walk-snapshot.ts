// The snapshot of a step on a plain directory root (container isolation, or chroot where overlayfs
// is unavailable): the tree is indexed by lstat before the step and compared after it. Metadata
// decides: a file whose change time, modification time, size, mode, owner or inode moved changed.
import { lstatSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { log } from '../log/logger.js';
import { EntriesBuilder, hashBytes, nativeScan, scanOrWalk, type WalkEntries } from './native-scan.js';
import { entryFromDisk, laterLink, S_IFDIR, S_IFREG, type Snapshot } from './snapshot.js';
import { CTIME, FIELDS, GID, INO, KIND, MODE, MTIME, NLINK, SIZE, UID, walkTree, type WalkResult } from './tree-walk.js';

/** kaniko's --snapshot-mode: which metadata says "changed" (kiln adds ctime in full mode). */
export type SnapshotMode = 'full' | 'redo' | 'time';

/** Where each field of a path sits among its FIELDS numbers (see tree-walk.ts). */

/**
 * lstat results of a tree: flat arrays and a hash table over the paths' bytes, not an object, a
 * string or a Map entry per path (a root of 100k files would spend more time on those than walking).
 */
export class TreeIndex {
  /** Open addressing: slot + 1 of the path whose hash starts the probe there, 0 when free. */
  private readonly table: Int32Array;
  private readonly mask: number;
  /** Slots that repeat an earlier path (a name the Node.js walk decoded lossily), if any. */
  private readonly repeats: Uint8Array | undefined;
  /** Distinct paths. */
  readonly size: number;

  private constructor(private readonly entries: WalkEntries) {
    let capacity = 1024;
    while (capacity < entries.count * 2) capacity *= 2;
    const table = new Int32Array(capacity);
    const mask = capacity - 1;
    const { bytes, starts, hashes } = entries;
    let size = 0;
    let repeats: Uint8Array | undefined;
    for (let i = 0; i < entries.count; i++) {
      let at = hashes[i]! & mask;
      let repeat = false;
      for (let other = table[at]!; other !== 0; at = (at + 1) & mask, other = table[at]!) {
        if (hashes[other - 1] === hashes[i] && sameBytes(bytes, starts[other - 1]!, starts[other]!, bytes, starts[i]!, starts[i + 1]!)) {
          repeat = true;
          break;
        }
      }
      if (repeat) (repeats ??= new Uint8Array(entries.count))[i] = 1;
      else {
        table[at] = i + 1;
        size++;
      }
    }
    this.table = table;
    this.mask = mask;
    this.repeats = repeats;
    this.size = size;
  }

  /** From the parts of the Node.js walk. */
  static from(parts: readonly WalkResult[]): TreeIndex {
    const builder = new EntriesBuilder();
    for (const part of parts) {
      part.paths.forEach((path, i) => {
        const slot = builder.add(Buffer.from(path, 'utf8')) * FIELDS;
        for (let f = 0; f < FIELDS; f++) builder.numbers[slot + f] = part.numbers[i * FIELDS + f]!;
      });
    }
    return new TreeIndex(builder.finish(parts.reduce((n, p) => n + p.skipped, 0)));
  }

  /** From kiln-sandbox scan. */
  static fromEntries(entries: WalkEntries): TreeIndex {
    if (entries.fields !== FIELDS) throw new Error(`internal error: a tree index takes ${FIELDS} numbers per path, not ${entries.fields}`);
    return new TreeIndex(entries);
  }

  /** Names the walk left out for not being UTF-8. */
  get skipped(): number {
    return this.entries.skipped;
  }

  /** The slot of the path src[start..end), or -1. */
  private find(src: Uint8Array, start: number, end: number, hash: number): number {
    const { bytes, starts, hashes } = this.entries;
    for (let at = hash & this.mask, other = this.table[at]!; other !== 0; at = (at + 1) & this.mask, other = this.table[at]!) {
      if (hashes[other - 1] === hash && sameBytes(bytes, starts[other - 1]!, starts[other]!, src, start, end)) return other - 1;
    }
    return -1;
  }

  /** The slot of a path, or -1 when it is not in the index. */
  slot(path: string): number {
    const b = Buffer.from(path, 'utf8');
    return this.find(b, 0, b.length, hashBytes(b, 0, b.length));
  }

  private pathAt(slot: number): string {
    return this.entries.bytes.toString('utf8', this.entries.starts[slot], this.entries.starts[slot + 1]);
  }

  has(path: string): boolean {
    return this.slot(path) >= 0;
  }

  *paths(): IterableIterator<string> {
    for (let i = 0; i < this.entries.count; i++) if (!this.repeats?.[i]) yield this.pathAt(i);
  }

  /** The field of a slot (see slot()). */
  fieldAt(slot: number, field: number): number {
    return this.entries.numbers[slot * FIELDS + field]!;
  }

  /** The field of a path, or undefined when the path is not in the index. */
  field(path: string, field: number): number | undefined {
    const slot = this.slot(path);
    return slot < 0 ? undefined : this.fieldAt(slot, field);
  }

  /**
   * What changed since `before` (this is the later index): added or changed paths, and deleted ones.
   * One table lookup per path; deletions are the slots of `before` that no path of this one matched.
   */
  changesSince(before: TreeIndex, mode: SnapshotMode, relaxed: ReadonlySet<string>): { changed: string[]; deleted: string[] } {
    const { count, bytes, starts, hashes, numbers: y } = this.entries;
    const x = before.entries.numbers;
    const relaxedSlots = new Set([...relaxed].map((p) => this.slot(p)));
    const seen = new Uint8Array(before.entries.count);
    const changed: string[] = [];
    for (let b = 0; b < count; b++) {
      if (this.repeats?.[b]) continue;
      const a = before.find(bytes, starts[b]!, starts[b + 1]!, hashes[b]!);
      if (a >= 0) seen[a] = 1;
      if (a < 0 || differs(x, a * FIELDS, y, b * FIELDS, relaxedSlots.has(b) ? 'owner-mode' : mode)) changed.push(this.pathAt(b));
    }
    const deleted: string[] = [];
    for (let a = 0; a < before.entries.count; a++) if (seen[a] === 0 && !before.repeats?.[a]) deleted.push(before.pathAt(a));
    return { changed, deleted };
  }
}

function sameBytes(a: Uint8Array, aStart: number, aEnd: number, b: Uint8Array, bStart: number, bEnd: number): boolean {
  if (aEnd - aStart !== bEnd - bStart) return false;
  for (let i = aStart, j = bStart; i < aEnd; i++, j++) if (a[i] !== b[j]) return false;
  return true;
}

/** Whether the numbers at x[i..] and y[j..] differ for the snapshot mode. */
function differs(x: Float64Array, i: number, y: Float64Array, j: number, mode: SnapshotMode | 'owner-mode'): boolean {
  if (x[i + KIND] !== y[j + KIND]) return true;
  if (mode === 'time') return x[i + MTIME] !== y[j + MTIME];
  const owner = x[i + MODE] !== y[j + MODE] || x[i + UID] !== y[j + UID] || x[i + GID] !== y[j + GID];
  if (mode === 'owner-mode') return owner;
  const redo = owner || x[i + MTIME] !== y[j + MTIME] || x[i + SIZE] !== y[j + SIZE];
  if (mode === 'redo') return redo;
  return redo || x[i + CTIME] !== y[j + CTIME] || x[i + INO] !== y[j + INO];
}

/**
 * Every path under root (relative, "a/b"), but ignored ones (and what is below them). kiln-sandbox
 * scan walks; the Node.js walk is the fallback (KILN_NATIVE_SCAN=0 forces it). Both give the same
 * numbers, so an index from one compares exactly with an index from the other.
 */
export async function indexTree(root: string, ignored: readonly string[]): Promise<TreeIndex> {
  return scanOrWalk(
    async (binary) => TreeIndex.fromEntries(await nativeScan(root, ignored, { binary })),
    async () => TreeIndex.from(await walkTree(root, ignored)),
  );
}

/** What changed between two indexes of the same root; `after` is the state on disk now. */
export function diffTrees(
  root: string, before: TreeIndex, after: TreeIndex, mode: SnapshotMode,
  ignore: (path: string) => boolean = () => false,
  /** Directories whose times moved for reasons of kiln's own (mount points made in them). */
  relaxed: ReadonlySet<string> = new Set(),
): Snapshot {
  const snapshot: Snapshot = { entries: [], whiteouts: [], opaque: [] };
  if (after.skipped > before.skipped) {
    log.warn(`${after.skipped - before.skipped} new file name(s) under ${root} are not valid UTF-8: kiln cannot store them, they are left out of the layer`);
  }
  const firstOfInode = new Map<number, string>();
  // Only what changed is sorted (hard links are paired in path order): sorting every path costs more
  // than the comparison itself on a large root.
  const { changed, deleted } = after.changesSince(before, mode, relaxed);
  for (const path of changed.sort()) {
    const abs = join(root, path);
    const slot = after.slot(path);
    const at = (f: number): number => after.fieldAt(slot, f);
    if (at(KIND) === S_IFREG && at(NLINK) > 1) {
      const link = laterLink(firstOfInode, at(INO), path, { mode: at(MODE), uid: at(UID), gid: at(GID), mtimeMs: at(MTIME) });
      if (link) {
        snapshot.entries.push(link);
        continue;
      }
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
  for (const path of deleted.sort()) {
    // Paths ignored since `before` was taken (a VOLUME) are not deletions.
    if (ignore(path)) continue;
    const slash = path.lastIndexOf('/');
    const parent = slash < 0 ? '' : path.slice(0, slash);
    if (parent !== '') {
      if (after.field(parent, KIND) !== S_IFDIR || before.field(parent, KIND) !== S_IFDIR) continue;
    }
    snapshot.whiteouts.push(path);
  }
  return snapshot;
}
