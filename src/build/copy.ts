// COPY and ADD of local files into layer entries, with Docker's destination rules: a trailing "/"
// or several sources make the destination a directory; a directory source copies its contents; an
// existing directory at the destination receives a single file; missing parents are created.
import { open, readlink } from 'node:fs/promises';
import { posix } from 'node:path';
import type { BuildContext, ContextFile } from '../context/build-context.js';
import type { LayerEntry } from '../layer/layer-writer.js';
import type { FsView } from './fs-view.js';
import type { Identity } from './users.js';

export class CopyError extends Error {}

export interface CopyPlan {
  instruction: 'COPY' | 'ADD';
  /** Sources after expansion, as written (context-relative paths or globs). */
  sources: string[];
  /** Heredoc sources: file name and (already expanded) content. */
  inline: { name: string; content: string }[];
  /** Destination after expansion, absolute (already joined with WORKDIR), trailing "/" kept. */
  dest: string;
  /** --chown; without it files keep their source's owner (COPY --from) — context files come as 0:0. */
  owner?: Identity;
  /** Permission bits from --chmod, applied to every copied file and directory. */
  mode?: number;
  /** When set, every timestamp in the layer is this (reproducible builds). */
  fixedMtime?: Date;
  /** Where sources are looked up, for messages ("the build context", "stage build"). */
  sourceName?: string;
}

/** Directories kiln creates itself (missing parents) get a fixed time so layers stay deterministic. */
const CREATED_DIR_MTIME = new Date(0);
const CREATED_DIR_MODE = 0o755;

export async function planCopy(plan: CopyPlan, context: BuildContext, image: FsView): Promise<LayerEntry[]> {
  const matched: ContextFile[] = [];
  for (const source of plan.sources) {
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(source) || source.startsWith('git@')) {
      throw new CopyError(`${plan.instruction} from a URL or git repository (${source}) is not supported yet (issue #5)`);
    }
    const found = await context.match(source);
    if (found.length === 0) {
      throw new CopyError(`${plan.instruction} failed: "${source}" not found in ${plan.sourceName ?? 'the build context'}${context.ignoreFile ? ' or excluded by ' + posix.basename(context.ignoreFile) : ''}`);
    }
    matched.push(...found);
  }
  const total = matched.length + plan.inline.length;
  const destIsDir = plan.dest.endsWith('/') || total > 1 || image.isDirectory(plan.dest);
  if (total > 1 && !plan.dest.endsWith('/')) {
    throw new CopyError(`When using ${plan.instruction} with more than one source file, the destination must be a directory and end with a /`);
  }
  // Symlinked directories on the way are followed inside the image, as Docker does (usrmerge's lib -> usr/lib).
  const dest = image.resolveParents(plan.dest, destIsDir || matched.some((f) => f.stat.isDirectory()));
  const out = new Map<string, LayerEntry>();
  const links = new Map<string, string>(); // dev:ino → first in-image path, to keep hardlinks
  const time = (t: Date): Date => plan.fixedMtime ?? t;

  const addParents = (path: string): void => {
    const parts = image.resolveParents(path).split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      if (out.has(parent) || image.isDirectory(parent)) continue;
      out.set(parent, { path: parent, type: 'dir', mode: CREATED_DIR_MODE, uid: plan.owner?.uid ?? 0, gid: plan.owner?.gid ?? 0, mtime: time(CREATED_DIR_MTIME) });
    }
  };

  /** `isDest`: the destination directory of a directory copy, which Docker makes root's, not the source's. */
  const addFile = async (file: ContextFile, unresolved: string, isDest = false): Promise<void> => {
    const target = image.resolveParents(unresolved);
    const st = file.stat;
    const base = { path: target, uid: plan.owner?.uid ?? (isDest ? 0 : st.uid), gid: plan.owner?.gid ?? (isDest ? 0 : st.gid), mtime: time(st.mtime) };
    const mode = plan.mode ?? st.mode & 0o7777;
    if (st.isDirectory()) out.set(target, { ...base, type: 'dir', mode });
    else if (st.isSymbolicLink()) out.set(target, { ...base, type: 'symlink', mode: 0o777, linkname: await readlink(file.abs) });
    else if (st.isFile()) {
      const key = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1 ? links.get(key) : undefined;
      if (first !== undefined) out.set(target, { ...base, type: 'hardlink', mode, linkname: first });
      else {
        if (st.nlink > 1) links.set(key, target);
        out.set(target, { ...base, type: 'file', mode, size: st.size, source: file.abs });
      }
    }
    // Sockets, fifos and devices in a context are not copied, as with Docker.
  };

  for (const file of matched) {
    if (plan.instruction === 'ADD' && file.stat.isFile() && (await isArchive(file.abs))) {
      throw new CopyError(`ADD of a local archive (${file.rel}) extracts it, which is not supported yet (issue #5); use COPY to copy it as a file`);
    }
    if (file.stat.isDirectory()) {
      if (dest !== '') {
        addParents(dest);
        await addFile(file, dest, true);
      }
      for (const child of await context.walk(file)) {
        const target = joinRel(dest, child.rel.slice(file.rel === '' ? 0 : file.rel.length + 1));
        await addFile(child, target);
      }
    } else {
      const target = destIsDir ? joinRel(dest, posix.basename(file.rel)) : dest;
      if (target === '') throw new CopyError(`${plan.instruction}: cannot copy the file ${file.rel} over the root directory`);
      addParents(target);
      await addFile(file, target);
    }
  }
  for (const doc of plan.inline) {
    const target = image.resolveParents(destIsDir ? joinRel(dest, doc.name) : dest);
    addParents(target);
    const content = Buffer.from(doc.content, 'utf8');
    out.set(target, {
      path: target, type: 'file', mode: plan.mode ?? 0o644, uid: plan.owner?.uid ?? 0, gid: plan.owner?.gid ?? 0,
      mtime: time(CREATED_DIR_MTIME), size: content.length, content,
    });
  }
  return [...out.values()];
}

function joinRel(dir: string, name: string): string {
  return dir === '' ? name : name === '' ? dir : `${dir}/${name}`;
}

/** Whether ADD would unpack this file: tar, optionally gzip/bzip2/xz/zstd-compressed, by magic bytes. */
async function isArchive(path: string): Promise<boolean> {
  const handle = await open(path, 'r');
  try {
    const head = Buffer.alloc(262);
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    const b = head.subarray(0, bytesRead);
    if (b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b) return true;
    if (b.length >= 3 && b.subarray(0, 3).toString('latin1') === 'BZh') return true;
    if (b.length >= 6 && b.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return true;
    if (b.length >= 4 && b.readUInt32LE(0) === 0xfd2fb528) return true;
    return b.length >= 262 && b.subarray(257, 262).toString('latin1') === 'ustar';
  } finally {
    await handle.close();
  }
}

/** `--chmod` in octal ("755", "0644"); symbolic modes come with issue #5. */
export function parseChmod(text: string): number {
  if (/^[0-7]{3,4}$/.test(text)) return parseInt(text, 8);
  if (/^[ugoa]*[+=-]/.test(text)) throw new CopyError(`symbolic --chmod "${text}" is not supported yet (issue #5); use octal, e.g. --chmod=755`);
  throw new CopyError(`invalid --chmod value "${text}": use an octal mode such as 755 or 0644`);
}
