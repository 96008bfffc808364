// The snapshot of an overlayfs step: the upper directory holds exactly what the step changed
// (copied-up or new entries, whiteout devices for deletions, an opaque xattr for replaced
// directories), so reading it costs what changed, not the size of the root.
import { lstatSync, readdirSync } from 'node:fs';
import { getAttributeSync } from 'fs-xattr';
import { join } from 'node:path';
import { entryFromDisk, type Snapshot } from './snapshot.js';

export function snapshotUpperDir(upper: string): Snapshot {
  const snapshot: Snapshot = { entries: [], whiteouts: [], opaque: [] };
  const firstOfInode = new Map<string, string>();
  const walk = (dir: string, rel: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const abs = join(dir, name);
      const path = rel === '' ? name : `${rel}/${name}`;
      const st = lstatSync(abs);
      if (st.isCharacterDevice() && st.rdev === 0) {
        snapshot.whiteouts.push(path);
        continue;
      }
      if (st.isDirectory()) {
        snapshot.entries.push(entryFromDisk(abs, path, st));
        if (isOpaque(abs)) snapshot.opaque.push(path);
        walk(abs, path);
        continue;
      }
      if (st.isFile() && st.nlink > 1) {
        const key = `${st.dev}:${st.ino}`;
        const first = firstOfInode.get(key);
        if (first !== undefined) {
          snapshot.entries.push({ path, type: 'hardlink', linkname: first, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: st.mtime });
          continue;
        }
        firstOfInode.set(key, path);
      }
      snapshot.entries.push(entryFromDisk(abs, path, st));
    }
  };
  walk(upper, '');
  return snapshot;
}

function isOpaque(abs: string): boolean {
  try {
    return getAttributeSync(abs, 'trusted.overlay.opaque').toString() === 'y';
  } catch {
    return false;
  }
}
