// The layer one COPY/ADD writes, built entry by entry over the image as it stands: a lookup sees the
// entries this instruction already placed first, then the image's, so later sources of the same
// instruction (and later members of an archive) land on what earlier ones made, as they would on disk.
import type { LayerEntry } from '../layer/layer-writer.js';
import { CopyError } from './copy-error.js';
import type { FsView } from './fs-view.js';

/** Linux gives up after 40 symlinks in one lookup (ELOOP). */
const MAX_SYMLINK_HOPS = 40;

export interface ResolveOptions {
  /** Follow a symlink in the last component too (a destination directory), not only in its parents. */
  followLast: boolean;
  /** The whole path is a directory to make (mkdir -p), not a place for an entry: a missing last component is made too. */
  mkdirLast?: boolean;
  /** Makes the entry for a missing directory on the way; without it, missing parents are an error. */
  mkdir?: (path: string) => LayerEntry;
  /**
   * A symlink on the way whose target is missing: 'create' creates the target (BuildKit resolves a
   * destination lexically, then creates what is missing); 'error' fails as mkdir(2) does on a dangling
   * link (Docker's archive extraction).
   */
  danglingLinks: 'create' | 'error';
  /** Names the operation in errors, e.g. `ADD app.tar`. */
  what: string;
}

export class LayerPlan {
  private readonly own = new Map<string, LayerEntry>();
  /** Paths where this layer put a non-directory over a directory: the image's entries below are gone. */
  private readonly cleared = new Set<string>();

  constructor(private readonly image: FsView) {}

  /** This layer's entries, in the order they were first placed. */
  get entries(): LayerEntry[] {
    return [...this.own.values()];
  }

  /** What an in-image path ("a/b", "" for the root) holds: this layer's entry, else the image's. */
  get(path: string): LayerEntry | undefined {
    const own = this.own.get(path);
    if (own) return own;
    if (this.cleared.size > 0) {
      for (let p = path; ; p = parentOf(p)) {
        if (this.cleared.has(p)) return undefined;
        if (p === '') break;
      }
    }
    return path === '' ? undefined : this.image.get(path);
  }

  isDirectory(path: string): boolean {
    return path === '' || this.get(path)?.type === 'dir';
  }

  /** Places an entry: a directory merges with a directory; anything else replaces what is there, with all below it. */
  put(entry: LayerEntry): void {
    const old = this.get(entry.path);
    if (old?.type === 'dir' && entry.type !== 'dir') {
      const below = entry.path + '/';
      for (const path of [...this.own.keys()]) if (path.startsWith(below)) this.own.delete(path);
      this.cleared.add(entry.path);
    }
    this.own.set(entry.path, entry);
  }

  /** This layer's own entry at a path (not the image's), for updating it. */
  ownEntry(path: string): LayerEntry | undefined {
    return this.own.get(path);
  }

  /**
   * The in-image path `rel` names when looked up from the directory `root` as if `root` were "/" (a
   * chroot: absolute symlink targets start again at `root`, ".." stops there). Symlinks of the image and
   * of this layer are followed in every parent component (in the last one too with `followLast`);
   * missing directories on the way are made with `options.mkdir`. A parent that is a file is an error.
   */
  resolve(root: string, rel: string, options: ResolveOptions): string {
    const todo: { name: string; viaLink: boolean }[] = [];
    const push = (path: string, viaLink: boolean): void => {
      const parts = path.split('/').filter((p) => p !== '' && p !== '.');
      for (let i = parts.length - 1; i >= 0; i--) todo.push({ name: parts[i]!, viaLink });
    };
    push(rel, false);
    const done: string[] = [];
    let hops = 0;
    while (todo.length > 0) {
      const { name, viaLink } = todo.pop()!;
      if (name === '..') {
        done.pop();
        continue;
      }
      const last = todo.length === 0;
      const path = joinPath(root, [...done, name].join('/'));
      if (last && !options.followLast) {
        done.push(name);
        break;
      }
      const entry = this.get(path);
      if (entry === undefined) {
        done.push(name);
        if (last && !options.mkdirLast) break;
        if (viaLink && options.danglingLinks === 'error') {
          throw new CopyError(`${options.what}: cannot create /${path}: a symbolic link on the way points to a missing directory`);
        }
        if (!options.mkdir) throw new CopyError(`${options.what}: /${path} does not exist`);
        this.put(options.mkdir(path));
        continue;
      }
      if (entry.type === 'symlink' && entry.linkname !== undefined) {
        if (++hops > MAX_SYMLINK_HOPS) throw new CopyError(`${options.what}: too many levels of symbolic links at /${path}`);
        if (entry.linkname.startsWith('/')) done.length = 0;
        push(entry.linkname, true);
        continue;
      }
      if (entry.type !== 'dir' && !last) throw new CopyError(`${options.what}: /${path} is not a directory`);
      done.push(name);
    }
    return joinPath(root, done.join('/'));
  }
}

export function joinPath(dir: string, name: string): string {
  return dir === '' ? name : name === '' ? dir : `${dir}/${name}`;
}

export function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
