// The build context: a directory on disk seen through .dockerignore, as Docker's client would send it.
// COPY/ADD look sources up here; nothing outside the context root can be reached.
import { lstat, readdir, readFile, readlink, stat } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { join, posix } from 'node:path';
import dockerignore, { type Ignore } from '@balena/dockerignore';
import { hasGlobMeta, segmentRegExp, BadPatternError } from './go-glob.js';

export class ContextError extends Error {}

// The package is CommonJS (`module.exports = factory`) while its typings declare an ES default export.
// Its matching ignores case unless told: Docker's and BuildKit's patterns are case-sensitive.
const ignoreFactory = dockerignore as unknown as typeof dockerignore.default;
const ignore = (): Ignore => ignoreFactory({ ignorecase: false });

export interface ContextFile {
  /** Path relative to the context root, "/"-separated, "" for the root itself. */
  rel: string;
  /** Absolute path on disk. */
  abs: string;
  /** lstat of the file (symlinks are not followed). */
  stat: Stats;
  /** For a match() result reached through a symlink: the path the source named, whose base name a copy takes. */
  named?: string;
}

export class BuildContext {
  private constructor(
    readonly root: string,
    private readonly rules: Ignore,
    /** With `!` exceptions an excluded directory may still hold included files, so walks cannot prune it. */
    private readonly hasExceptions: boolean,
    /** Where the ignore rules came from, for messages. */
    readonly ignoreFile: string | undefined,
  ) {}

  /** Opens a context directory; `<dockerfile>.dockerignore` beats `<root>/.dockerignore`, as in BuildKit and kaniko. */
  static async open(root: string, dockerfilePath?: string): Promise<BuildContext> {
    const rootStat = await stat(root).catch(() => undefined);
    if (!rootStat?.isDirectory()) throw new ContextError(`build context ${root} is not a directory; pass an existing directory with --context`);
    const candidates = [dockerfilePath ? dockerfilePath + '.dockerignore' : undefined, join(root, '.dockerignore')];
    for (const file of candidates) {
      if (!file) continue;
      const text = await readFile(file, 'utf8').catch(() => undefined);
      if (text === undefined) continue;
      const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
      checkIgnorePatterns(text, file);
      return new BuildContext(root, ignore().add(lines), lines.some((l) => l.startsWith('!')), file);
    }
    return new BuildContext(root, ignore(), false, undefined);
  }

  /** A directory seen whole, with no ignore rules: an earlier stage's or an image's files (COPY --from). */
  static plain(root: string): BuildContext {
    return new BuildContext(root, ignore(), false, undefined);
  }

  excluded(rel: string): boolean {
    return rel !== '' && this.rules.ignores(rel);
  }

  /**
   * The context entries a COPY/ADD source names: a path or a Go glob, relative to the context root.
   * A source that is itself a symlink is followed, but never out of the context.
   */
  async match(source: string): Promise<ContextFile[]> {
    const rel = cleanContextPath(source);
    if (!hasGlobMeta(rel)) {
      const file = await this.lookup(rel, true);
      return file ? [{ ...file, named: rel }] : [];
    }
    const segments = rel.split('/');
    let matches: string[] = [''];
    for (const segment of segments) {
      let re: RegExp;
      try {
        re = segmentRegExp(segment);
      } catch (e) {
        if (e instanceof BadPatternError) throw new ContextError(`${e.message} in source "${source}"`);
        throw e;
      }
      const next: string[] = [];
      for (const unresolved of matches) {
        const dir = await this.resolveParents(unresolved, true);
        if (dir === undefined) continue;
        const names = await readdir(dir === '' ? this.root : join(this.root, dir)).catch(() => [] as string[]);
        for (const name of names.sort()) if (re.test(name)) next.push(dir === '' ? name : `${dir}/${name}`);
      }
      matches = next;
    }
    const out: ContextFile[] = [];
    for (const m of matches) {
      if (this.excluded(m)) continue;
      const file = await this.lookup(m, true);
      if (file) out.push({ ...file, named: m });
    }
    return out;
  }

  /**
   * Every entry under a directory (not the directory itself), parents before children, sorted, excluded ones left out.
   * `enter`, when given, is asked about each directory (by context-relative path): false leaves it out with
   * everything below it (COPY --exclude and --parents use it to skip what cannot be copied).
   */
  async walk(dir: ContextFile, enter?: (rel: string) => boolean): Promise<ContextFile[]> {
    const out: ContextFile[] = [];
    const visit = async (abs: string, rel: string): Promise<boolean> => {
      let kept = false;
      for (const name of (await readdir(abs)).sort()) {
        const childRel = rel === '' ? name : `${rel}/${name}`;
        const childAbs = join(abs, name);
        const st = await lstat(childAbs);
        const isExcluded = this.excluded(childRel);
        if (st.isDirectory()) {
          if (isExcluded && !this.hasExceptions) continue;
          if (enter && !enter(childRel)) continue;
          const at = out.length;
          out.push({ rel: childRel, abs: childAbs, stat: st });
          const childKept = await visit(childAbs, childRel);
          // An excluded directory stays only as the parent of a re-included file.
          if (isExcluded && !childKept) out.splice(at, 1);
          else kept = true;
        } else if (!isExcluded) {
          out.push({ rel: childRel, abs: childAbs, stat: st });
          kept = true;
        }
      }
      return kept;
    };
    await visit(dir.abs, dir.rel);
    return out;
  }

  /** Reads a context file whole (small files only: the Dockerfile, passwd files). */
  async readText(rel: string): Promise<string> {
    return readFile(join(this.root, cleanContextPath(rel)), 'utf8');
  }

  /**
   * The path with symlinked parents resolved inside the context, as if its root were "/" (a parent
   * joined onto the host path would follow an absolute link to the host's own files).
   */
  private async resolveParents(rel: string, followLast: boolean, hops = 0): Promise<string | undefined> {
    if (hops > 40) throw new ContextError(`too many levels of symbolic links resolving "${rel}" in the build context`);
    const parts = rel.split('/').filter((p) => p !== '');
    let resolved = '';
    for (const [i, part] of parts.entries()) {
      const candidate = resolved === '' ? part : `${resolved}/${part}`;
      if (i === parts.length - 1 && !followLast) return candidate;
      const abs = join(this.root, candidate);
      const st = await lstat(abs).catch(() => undefined);
      if (!st) return i === parts.length - 1 ? candidate : undefined;
      if (!st.isSymbolicLink()) {
        resolved = candidate;
        continue;
      }
      const target = await readlink(abs);
      const base = target.startsWith('/') ? target : posix.join(posix.dirname('/' + candidate), target);
      const next = await this.resolveParents(posix.normalize('/' + base).replace(/^\/+/, '').replace(/\/$/, ''), true, hops + 1);
      if (next === undefined) return undefined;
      resolved = next;
    }
    return resolved;
  }

  private async lookup(unresolved: string, followSymlinks: boolean): Promise<ContextFile | undefined> {
    if (unresolved !== '' && this.excluded(unresolved)) return undefined;
    const rel = await this.resolveParents(unresolved, false);
    if (rel === undefined) return undefined;
    let current = rel;
    for (let hops = 0; hops < 40; hops++) {
      const abs = current === '' ? this.root : join(this.root, current);
      const st = await lstat(abs).catch(() => undefined);
      if (!st) return undefined;
      if (!st.isSymbolicLink() || !followSymlinks) return { rel: current, abs, stat: st };
      // Resolve the link inside the context, as if the context root were "/".
      const target = await readlink(abs);
      const base = target.startsWith('/') ? target : posix.join(posix.dirname('/' + current), target);
      const resolved = await this.resolveParents(posix.normalize('/' + base).replace(/^\/+/, '').replace(/\/$/, ''), false);
      if (resolved === undefined) return undefined;
      current = resolved;
      if (current !== '' && this.excluded(current)) return undefined;
    }
    throw new ContextError(`too many levels of symbolic links resolving "${rel}" in the build context`);
  }
}

/** Each pattern compiled alone, so a bad one is named with its line (the matcher would fail later, mid-build). */
function checkIgnorePatterns(text: string, file: string): void {
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    try {
      ignore().add([line]).ignores('probe');
    } catch (e) {
      throw new ContextError(`${file}:${i + 1}: invalid pattern "${line}" (${(e as Error).message}); fix or remove it`);
    }
  }
}

/**
 * Normalises a source path to a context-relative one. As BuildKit does, the path is cleaned against
 * the context root, so ".." cannot climb out of it: "../x" is "x", "a/../../b" is "b".
 */
export function cleanContextPath(source: string): string {
  return posix.normalize('/' + source).replace(/^\/+/, '').replace(/\/+$/, '');
}
