// lstat of every path under a root, the cost of a walk snapshot, in Node.js: the fallback of
// `kiln-sandbox scan` (native-scan.ts), which walk-snapshot.ts tries first. Node.js makes one
// blocking call per path, so a large tree is split between worker threads: the first levels are
// read here until there are enough directories to share, and each worker walks its share of them.
import { lstatSync, readdirSync, type Stats } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';

/** Numbers kept per path, flattened: S_IFMT bits, permission bits, uid, gid, size, mtime and ctime (ms), inode, links. */
export const FIELDS = 9;
/** Where each of those sits among a path's FIELDS numbers. */
export const KIND = 0, MODE = 1, UID = 2, GID = 3, SIZE = 4, MTIME = 5, CTIME = 6, INO = 7, NLINK = 8;

export interface WalkResult {
  paths: string[];
  /** FIELDS numbers per path, in the order of `paths`. */
  numbers: Float64Array | number[];
  /** Names left out because they are not UTF-8 (kiln's paths are strings, which cannot name them). */
  skipped: number;
}

/** Ignored paths as a list (workers cannot receive functions): a path and everything under it. */
export function isIgnored(path: string, ignored: readonly string[]): boolean {
  for (const p of ignored) if (path === p || (path.length > p.length && path.startsWith(p) && path[p.length] === '/')) return true;
  return false;
}

function push(out: WalkResult, path: string, st: Stats): void {
  out.paths.push(path);
  (out.numbers as number[]).push(st.mode & 0o170000, st.mode & 0o7777, st.uid, st.gid, st.size, st.mtimeMs, st.ctimeMs, st.ino, st.nlink);
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
    throw e;
  }
}

function stat(abs: string): Stats | undefined {
  try {
    return lstatSync(abs);
  } catch {
    return undefined; // gone while walking, or a name readdirSync could not decode
  }
}

/** Records the entries of one directory (relative to root), calling `onDirectory` for each subdirectory. */
function readDirectory(root: string, rel: string, ignored: readonly string[], out: WalkResult, onDirectory: (path: string) => void): void {
  const dir = rel === '' ? root : join(root, rel);
  for (const name of list(dir)) {
    const path = rel === '' ? name : `${rel}/${name}`;
    if (isIgnored(path, ignored)) continue;
    const st = stat(join(dir, name));
    if (!st) {
      // readdirSync decodes a name that is not UTF-8 with U+FFFD, which then names nothing.
      if (name.includes('\uFFFD')) out.skipped++;
      continue;
    }
    push(out, path, st);
    if (st.isDirectory()) onDirectory(path);
  }
}

/** Walks the given directories (relative to root) completely, in this thread. */
export function walkDirectories(root: string, dirs: readonly string[], ignored: readonly string[]): WalkResult {
  const out: WalkResult = { paths: [], numbers: [], skipped: 0 };
  const visit = (rel: string): void => readDirectory(root, rel, ignored, out, visit);
  for (const d of dirs) visit(d);
  return out;
}

/** Directories to share before splitting the walk; below this much work, one thread is faster. */
const SPLIT_AT = 64;
const MAX_LEVELS = 4;

/** Every path under root but ignored ones, walked by up to `availableParallelism()` threads. */
export async function walkTree(root: string, ignored: readonly string[]): Promise<WalkResult[]> {
  const top: WalkResult = { paths: [], numbers: [], skipped: 0 };
  let frontier = [''];
  for (let level = 0; level < MAX_LEVELS && frontier.length > 0 && frontier.length < SPLIT_AT; level++) {
    const next: string[] = [];
    for (const rel of frontier) readDirectory(root, rel, ignored, top, (path) => next.push(path));
    frontier = next;
  }
  const threads = Math.min(4, availableParallelism());
  if (frontier.length < SPLIT_AT || threads < 2) return [top, walkDirectories(root, frontier, ignored)];
  const shares: string[][] = Array.from({ length: threads }, () => []);
  frontier.forEach((d, i) => shares[i % threads]!.push(d));
  const parts = await Promise.all(shares.map((dirs) => new Promise<WalkResult>((resolve, reject) => {
    // The path names its directory: it must hold from kiln's bundle (dist/src/cli/kiln.cjs) too.
    const worker = new Worker(new URL('../snapshot/tree-walk-worker.js', import.meta.url), { workerData: { root, dirs, ignored } });
    worker.once('message', (r: WalkResult) => resolve(r));
    worker.once('error', reject);
    worker.once('exit', (code) => { if (code !== 0) reject(new Error(`tree walk worker exited with ${code}`)); });
  })));
  return [top, ...parts];
}
