// In-image paths resolved to host paths without ever leaving the root: names from a layer are
// cleaned lexically, and every parent directory is looked up component by component with lstat,
// following symlinks as the image would see them (an absolute target starts at the root). Only the
// parents are resolved; the final component is never followed, so callers replace a symlink there.
import { chmodSync, lchownSync, lstatSync, mkdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

/** A path problem; the extractor turns it into an UnsafeLayerError naming the layer and the entry. */
export class ScopeError extends Error {}

/** A name with an empty, "." or ".." component (a trailing "/" included), which cleaning changes. */
const UNCLEAN = /(^|\/)\.{0,2}(\/.|$)|^$/;

/** Linux gives up after 40 symlinks in one lookup (ELOOP); so does kiln. */
const MAX_SYMLINK_HOPS = 40;

/**
 * "./a//b/" → "a/b"; "" for the root itself. Refuses absolute names, NUL bytes and names whose ".."
 * climbs above the root: a layer naming such a path is malicious or broken, not something to repair.
 */
export function cleanPath(name: string): string {
  if (name.includes('\0')) throw new ScopeError('the name contains a NUL byte');
  if (name.startsWith('/')) throw new ScopeError('the name is absolute');
  if (!UNCLEAN.test(name)) return name; // already clean: the usual case, kept fast
  const parts: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (parts.length === 0) throw new ScopeError('the name climbs above the root with ".."');
      parts.pop();
    } else parts.push(part);
  }
  return parts.join('/');
}

/** "a/b/c" → ["a/b", "c"]; "c" → ["", "c"]. */
export function splitPath(path: string): [dir: string, base: string] {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? ['', path] : [path.slice(0, slash), path.slice(slash + 1)];
}

export function joinPath(dir: string, base: string): string {
  return dir === '' ? base : `${dir}/${base}`;
}

export interface ResolvedDir {
  /** Absolute host path of the directory. */
  host: string;
  /** Its in-image path after following symlinks ("" for the root). */
  path: string;
  /** The walk stopped at an ignored path (`path`), which is neither looked into nor created. */
  ignored?: true;
}

/** Resolves directories under one root, remembering answers until something that could change them is removed. */
export class ScopedResolver {
  private readonly cache = new Map<string, ResolvedDir>();

  /**
   * `ignore` says which in-image paths are never entered nor created; `onCreate` hears of each
   * directory created as a missing parent.
   */
  constructor(
    readonly root: string,
    private readonly ignore: (path: string) => boolean = () => false,
    private readonly onCreate: (host: string, path: string) => void = () => {},
  ) {}

  /** After removing a directory or a symlink, cached resolutions through it may be wrong. */
  forget(): void {
    this.cache.clear();
  }

  /**
   * The real directory an in-image directory path names. Missing components are created as root:root
   * 0755 when `create` is set, otherwise the answer is undefined. A component that exists but is not a
   * directory (nor a symlink to one) is an error, as it is for the kernel.
   */
  resolveDir(path: string, create: boolean): ResolvedDir | undefined {
    const cached = this.cache.get(path);
    if (cached) return cached;
    const resolved = this.walk(path, create);
    if (resolved) this.cache.set(path, resolved);
    return resolved;
  }

  private walk(path: string, create: boolean): ResolvedDir | undefined {
    // Components still to look at, last one first, so a symlink's target can be pushed in front.
    const todo = path === '' ? [] : path.split('/').reverse();
    const done: string[] = [];
    let hops = 0;
    for (let part = todo.pop(); part !== undefined; part = todo.pop()) {
      if (part === '' || part === '.') continue;
      if (part === '..') {
        done.pop(); // at the root ".." stays there, as in the kernel's view from a chroot
        continue;
      }
      const host = join(this.root, ...done, part);
      const inImage = done.length === 0 ? part : `${done.join('/')}/${part}`;
      if (this.ignore(inImage)) return { host, path: inImage, ignored: true };
      const stats = lstatSync(host, { throwIfNoEntry: false });
      if (!stats) {
        if (!create) return undefined;
        mkdirSync(host, 0o755);
        // mkdir honours the umask and a setgid parent's group; missing parents are root:root 0755.
        lchownSync(host, 0, 0);
        chmodSync(host, 0o755);
        done.push(part);
        this.onCreate(host, inImage);
      } else if (stats.isDirectory()) {
        done.push(part);
      } else if (stats.isSymbolicLink()) {
        if (++hops > MAX_SYMLINK_HOPS) throw new ScopeError(`too many levels of symlinks at "${inImage}"`);
        const target = readlinkSync(host);
        if (target.startsWith('/')) done.length = 0;
        else if (climbsAbove(done.length, target)) {
          throw new ScopeError(`"${inImage}" is a symlink to "${target}", outside the root`);
        }
        todo.push(...target.split('/').reverse());
      } else {
        throw new ScopeError(`"${inImage}" is not a directory`);
      }
    }
    return { host: join(this.root, ...done), path: done.join('/') };
  }
}

/** Whether a relative symlink target read in a directory `depth` levels below the root climbs above it. */
function climbsAbove(depth: number, target: string): boolean {
  for (const part of target.split('/')) {
    if (part === '..') {
      if (--depth < 0) return true;
    } else if (part !== '' && part !== '.') depth++;
  }
  return false;
}
