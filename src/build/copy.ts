// COPY and ADD of local files — the build context, or with --from a stage's or an image's files — into
// the entries of one layer. Destination rules as Docker's: a trailing "/" or several sources make the
// destination a directory; a directory source copies its contents; an existing directory at the
// destination receives a single file; missing parents are created 0755 (owned by --chown's user).
// BuildKit's flags on top:
//   --chmod   octal or symbolic (chmod.ts);
//   --exclude .dockerignore-style patterns, matched below each directory source, relative to it (BuildKit
//             matches them only while walking a source directory: a file named as a source, or matched
//             by a source's wildcard, is copied whatever --exclude says — moby/buildkit#5489);
//   --parents each source is an include pattern under the source's root ("/" of the context or stage),
//             or under what comes before a "/./" pivot; the matched paths keep their directories from
//             there down, which get their source directories' metadata. A source without wildcards
//             must match something; a wildcard may match nothing;
//   --link    see `linkView`;
//   ADD       a local tar archive is extracted (add-archive.ts) unless --unpack=false. A URL source
//             (context/remote-copy-source.ts) is one file, 0600, not extracted unless --unpack=true;
//             a git source copies the checkout's (or its subdir's) contents, .git only with
//             --keep-git-dir. --checksum verifies either (a content digest, or the commit).
import { mkdtemp, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BuildContext, ContextFile } from '../context/build-context.js';
import { BadPatternError, goClean, PathPatterns, type MatchState } from '../context/go-glob.js';
import { gitSource, urlSource } from '../context/remote-copy-source.js';
import { sourceKind } from '../context/remote-source.js';
import type { LayerEntry } from '../layer/layer-writer.js';
import { detectArchive, extractArchive } from './add-archive.js';
import { applyChmod, CREATED_DIR_MODE, parseChmod } from './chmod.js';
import { CopyError } from './copy-error.js';
import { baseName, joinPath, LayerPlan, parentOf, type ResolveOptions } from './copy-tree.js';
import { FsView, relative } from './fs-view.js';
import type { Identity } from './users.js';
import { removeAtExit } from '../util/remove-at-exit.js';

export { CopyError } from './copy-error.js';
export { parseChmod } from './chmod.js';
export { sourceKind } from '../context/remote-source.js';

export interface CopyPlan {
  instruction: 'COPY' | 'ADD';
  /** Sources after expansion, as written (context-relative paths or globs). */
  sources: string[];
  /** Heredoc sources: file name and (already expanded) content. */
  inline: { name: string; content: string }[];
  /** Destination after expansion, absolute (already joined with WORKDIR), trailing "/" kept. */
  dest: string;
  /** --chown as written (after expansion); undefined or "" for none. */
  chown?: string;
  /** Resolves --chown from the image's /etc/passwd and /etc/group; called once the flags are known to be valid. */
  identity?: (spec: string) => Promise<Identity>;
  /** The owner without --chown: 0:0 for the build context; undefined keeps the source's owners (--from). */
  defaultOwner?: Identity;
  /** --chmod as written (after expansion): octal or symbolic; undefined or "" for none. */
  chmod?: string;
  link?: boolean;
  parents?: boolean;
  /** --exclude patterns (not expanded, as BuildKit keeps them). */
  excludes?: string[];
  /** ADD --checksum (after expansion). */
  checksum?: string;
  /** ADD --unpack, when given. */
  unpack?: boolean;
  /** ADD --keep-git-dir, when given (git sources only). */
  keepGitDir?: boolean;
  /** When set, every timestamp in the layer is this (reproducible builds). */
  fixedMtime?: Date;
  /** Where sources are looked up, for messages ("the build context", "stage build"). */
  sourceName?: string;
}

/** Directories kiln creates itself (missing parents) get a fixed time so layers stay deterministic. */
const CREATED_DIR_MTIME = new Date(0);

/**
 * Where extracted archive members are kept. The image's file view (which reads /etc/passwd for a later
 * --chown or USER) and --single-snapshot's stage layer read them after the step's own layer is
 * written, so they stay until kiln exits.
 */
async function memberDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-add-'));
  removeAtExit(dir);
  return dir;
}

/** One source, found: a file copied as such, or a directory whose contents (maybe filtered) are copied. */
type Item =
  | { kind: 'file'; file: ContextFile; remote?: boolean }
  | { kind: 'tree'; root: ContextFile; include?: PathPatterns; required?: string; source: string; context?: BuildContext; skipGitDir?: boolean };

export async function planCopy(plan: CopyPlan, context: BuildContext, image: FsView): Promise<LayerEntry[]> {
  const what = plan.instruction;
  // Checked in BuildKit's order: --chmod, --checksum, then each source.
  const chmod = plan.chmod ? parseChmod(plan.chmod) : undefined;
  if (plan.checksum) {
    if (plan.sources.length !== 1) throw new CopyError('checksum can\'t be specified for multiple sources');
    if (sourceKind(plan.sources[0]!) === 'local') throw new CopyError('checksum requires HTTP(S) or Git sources');
  }
  for (const source of plan.sources) {
    const kind = sourceKind(source);
    if (kind !== 'local' && what === 'COPY') throw new CopyError(kind === 'url' ? 'source can\'t be a URL for COPY' : 'source can\'t be a git ref for COPY');
  }
  let excludes: PathPatterns | undefined;
  try {
    excludes = plan.excludes && plan.excludes.length > 0 ? PathPatterns.compile(plan.excludes) : undefined;
  } catch (e) {
    if (e instanceof BadPatternError) throw new CopyError(`invalid --exclude pattern: ${e.message}`);
    throw e;
  }
  if (excludes?.empty) excludes = undefined;

  // --link, as BuildKit defines it: the sources are copied into an empty directory ("scratch"), which
  // becomes a layer merged on top of the image, so the copy never reads the image. Here that means
  // planning over an empty view: the destination is a directory only by its trailing "/" (or several
  // sources), symlinks of the image on the way are not followed (a layer directory replaces such a
  // symlink when the image is assembled), and every parent directory is in the layer with the metadata
  // of a created directory (0755, --chown's owner), replacing an existing directory's mode and owner.
  // BuildKit does not link when --chmod is given, and neither does kiln. Names in --chown cannot be
  // resolved without the image's /etc/passwd: BuildKit fails on them ("invalid user index"), so does kiln.
  const link = plan.link === true && chmod === undefined;
  let owner = plan.defaultOwner;
  if (plan.chown) {
    if (link) owner = numericOwner(plan.chown);
    else if (plan.identity) owner = await plan.identity(plan.chown);
  }
  const view = link ? new FsView() : image;
  const tree = new LayerPlan(view);

  // Sources, found.
  const items: Item[] = [];
  for (const source of plan.sources) {
    const kind = sourceKind(source);
    if (kind === 'url') items.push({ kind: 'file', file: (await urlSource(source, plan.checksum)).file, remote: true });
    else if (kind === 'git') {
      const git = await gitSource(source, { keepGitDir: plan.keepGitDir, checksum: plan.checksum });
      items.push({ kind: 'tree', root: git.root, source, context: git.context, skipGitDir: !git.keepGitDir });
    } else if (plan.parents) items.push(...(await parentsItems(source, context, plan)));
    else {
      const found = await context.match(source);
      if (found.length === 0) throw notFound(plan, source, context);
      for (const file of found) items.push(file.stat.isDirectory() ? { kind: 'tree', root: file, source } : { kind: 'file', file });
    }
  }
  // With --parents every source is a directory (its root), so the destination always is one.
  const total = items.length + plan.inline.length;
  const destIsDir = plan.parents === true || plan.dest.endsWith('/') || total > 1 || view.isDirectory(plan.dest);
  if (total > 1 && !plan.dest.endsWith('/') && !plan.parents) {
    throw new CopyError(`When using ${what} with more than one source file, the destination must be a directory and end with a /`);
  }

  const createdMtime = plan.fixedMtime ?? CREATED_DIR_MTIME;
  const createdDir = (path: string, mode = CREATED_DIR_MODE, by: Identity | undefined = owner): LayerEntry =>
    ({ path, type: 'dir', mode, uid: by?.uid ?? 0, gid: by?.gid ?? 0, mtime: createdMtime });
  const resolving: ResolveOptions = { followLast: false, mkdir: (path) => createdDir(path), danglingLinks: 'create', what };
  // Symlinked directories on the way are followed inside the image, as Docker does (usrmerge's lib -> usr/lib).
  const destPath = relative(plan.dest);
  // A symlink at the destination is followed even for a single file: the copy writes through it
  // (a dangling one's target is created), as Docker and BuildKit do.
  const dest = tree.resolve('', destPath, { ...resolving, followLast: true });
  /** The destination as a directory (created when missing, with --chmod's mode when octal, as before). */
  const ensureDest = (mode = chmod?.kind === 'octal' ? chmod.mode : CREATED_DIR_MODE): void => {
    const existing = tree.get(dest);
    if (dest === '' || existing?.type === 'dir') return;
    if (existing) throw new CopyError(`${what}: cannot copy into /${dest}: it is not a directory`);
    tree.put(createdDir(dest, mode));
  };

  const links = new Map<string, string>(); // dev:ino → first in-image path, to keep hardlinks
  const time = (t: Date): Date => plan.fixedMtime ?? t;
  const place = async (file: ContextFile, target: string): Promise<void> => {
    const st = file.stat;
    const base = { path: target, uid: owner?.uid ?? st.uid, gid: owner?.gid ?? st.gid, mtime: time(st.mtime) };
    if (st.isDirectory()) tree.put({ ...base, type: 'dir', mode: applyChmod(chmod, st.mode, true) });
    else if (st.isSymbolicLink()) tree.put({ ...base, type: 'symlink', mode: 0o777, linkname: await readlink(file.abs) });
    else if (st.isFile()) {
      const mode = applyChmod(chmod, st.mode, false);
      const key = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1 ? links.get(key) : undefined;
      if (first !== undefined && tree.ownEntry(first)?.type === 'file') tree.put({ ...base, type: 'hardlink', mode, linkname: first });
      else {
        if (st.nlink > 1) links.set(key, target);
        tree.put({ ...base, type: 'file', mode, size: st.size, source: file.abs });
      }
    }
    // Sockets, fifos and devices in a context are not copied, as with Docker.
  };

  let scratch: Promise<string> | undefined;
  const scratchDir = (): Promise<string> => (scratch ??= memberDir());
  try {
    for (const item of items) {
      if (item.kind === 'tree') {
        const entries = await treeEntries(context, item, excludes);
        if (item.required !== undefined && !entries.some((e) => e.rel === item.required || e.rel.startsWith(item.required + '/'))) {
          throw notFound(plan, item.source, context);
        }
        ensureDest();
        for (const { file, rel } of entries) await place(file, tree.resolve('', joinPath(dest, rel), resolving));
        continue;
      }
      const file = item.file;
      // A downloaded file is extracted only with --unpack=true (Docker's rule).
      if (what === 'ADD' && (item.remote ? plan.unpack === true : plan.unpack !== false) && file.stat.isFile()) {
        const compression = await detectArchive(file.abs);
        if (compression !== undefined) {
          await extractArchive({
            // Members keep their own owners unless --chown is given (the build context's 0:0 is not applied).
            path: file.abs, compression, root: archiveRoot(tree, destPath, createdDir, what), plan: tree,
            owner: plan.chown ? owner : undefined, fixedMtime: plan.fixedMtime,
            createdDirMtime: createdMtime, scratch: scratchDir, what: `${what} ${file.rel}`,
          });
          continue;
        }
      }
      // A source reached through a symlink keeps the name it was given, not its target's.
      const target = destIsDir ? joinPath(dest, baseName(file.named ?? file.rel)) : dest;
      if (target === '') throw new CopyError(`${what}: cannot copy the file ${file.rel} over the root directory`);
      await place(file, tree.resolve('', target, resolving));
    }
    for (const doc of plan.inline) {
      const target = tree.resolve('', destIsDir ? joinPath(dest, doc.name) : dest, resolving);
      const content = Buffer.from(doc.content, 'utf8');
      tree.put({
        path: target, type: 'file', mode: applyChmod(chmod, 0o644, false), uid: owner?.uid ?? 0, gid: owner?.gid ?? 0,
        mtime: time(CREATED_DIR_MTIME), size: content.length, content,
      });
    }
  } catch (e) {
    if (scratch) {
      await rm(await scratch, { recursive: true, force: true });
    }
    throw e;
  }
  return tree.entries;
}

/** --chown under --link: only numbers and "root" (BuildKit resolves nothing else without the image). */
function numericOwner(spec: string): Identity {
  const [user = '', group] = spec.split(/:(.*)/s, 2);
  const id = (part: string): number | undefined => (part === 'root' ? 0 : /^\d+$/.test(part) ? Number(part) : undefined);
  const uid = id(user);
  const gid = group === undefined || group === '' ? uid : id(group);
  if (uid === undefined || gid === undefined) {
    throw new CopyError(`--chown=${spec} with --link: a --link copy does not read the image, so user and group names cannot be looked up in its /etc/passwd and /etc/group; use numeric ids`);
  }
  return { uid, gid };
}

function notFound(plan: CopyPlan, source: string, context: BuildContext): CopyError {
  return new CopyError(`${plan.instruction} failed: "${source}" not found in ${plan.sourceName ?? 'the build context'}${context.ignoreFile ? ' or excluded by ' + baseName(context.ignoreFile) : ''}`);
}

/**
 * COPY --parents: `source` is "[root/./]pattern"; the root ("/" without a pivot) may have wildcards and
 * names the directories the pattern is matched under (BuildKit's include patterns).
 */
async function parentsItems(source: string, context: BuildContext, plan: CopyPlan): Promise<Item[]> {
  const pivot = source.indexOf('/./');
  const rootSource = pivot >= 0 ? source.slice(0, pivot) : '/';
  const pattern = goClean('/' + (pivot >= 0 ? source.slice(pivot + 3) : source)).slice(1);
  let include: PathPatterns | undefined;
  try {
    include = pattern === '' ? undefined : PathPatterns.compile([pattern]);
  } catch (e) {
    if (e instanceof BadPatternError) throw new CopyError(`${plan.instruction} --parents: ${e.message}`);
    throw e;
  }
  const exact = !hasWildcards(rootSource) && !hasWildcards(pattern);
  const roots = await context.match(rootSource);
  if (roots.length === 0 && exact) throw notFound(plan, source, context);
  return roots.map((root) => root.stat.isDirectory()
    ? { kind: 'tree' as const, root, include, source, ...(exact && pattern !== '' ? { required: pattern } : {}) }
    : { kind: 'file' as const, file: root });
}

/** BuildKit's containsWildcards: "*", "?" or "[" not escaped by "\". */
function hasWildcards(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\') i++;
    else if (c === '*' || c === '?' || c === '[') return true;
  }
  return false;
}

/**
 * The entries under a directory source to copy, with their paths relative to it: parents before
 * children; --exclude and the --parents pattern applied as BuildKit's copier applies them while it
 * walks (a path matches when it or a parent does; an exception "!" can bring back what is below an
 * excluded directory). A directory that is not copied itself but holds something copied is still
 * created, with its own metadata.
 */
async function treeEntries(context: BuildContext, item: Extract<Item, { kind: 'tree' }>, excludes: PathPatterns | undefined): Promise<{ file: ContextFile; rel: string }[]> {
  const { root, include } = item;
  const source = item.context ?? context;
  const prefix = root.rel === '' ? '' : root.rel + '/';
  const relOf = (contextRel: string): string => contextRel.slice(prefix.length);
  interface Judged { include?: MatchState; exclude?: MatchState; included: boolean; excluded: boolean }
  const states = new Map<string, Judged>(); // directories, by path relative to the root
  const judge = (rel: string): Judged => {
    // A top-level path is matched on its own; below, with what its directory got.
    const parent = rel.includes('/') ? states.get(parentOf(rel)) : undefined;
    const inc = include?.match(rel, parent?.include);
    const exc = excludes?.match(rel, parent?.exclude);
    return { include: inc?.state, exclude: exc?.state, included: inc?.matched ?? true, excluded: exc?.matched ?? false };
  };
  const copied = (j: Judged): boolean => j.included && !j.excluded;
  const walked = await source.walk(root, (contextRel) => {
    const rel = relOf(contextRel);
    if (item.skipGitDir && rel === '.git') return false;
    const j = judge(rel);
    states.set(rel, j);
    if (copied(j)) return true;
    // Skipped when nothing below can be copied: excluded without "!" exceptions, or out of the pattern's reach.
    if (j.excluded && !excludes!.hasExclusions) return false;
    return j.included || include!.couldMatchBelow(rel);
  });
  const out: { file: ContextFile; rel: string }[] = [];
  const ancestors: { file: ContextFile; rel: string; out: boolean }[] = [];
  for (const file of walked) {
    const rel = relOf(file.rel);
    if (item.skipGitDir && rel === '.git') continue; // a file (a submodule's link to its git dir) too
    while (ancestors.length > 0 && !rel.startsWith(ancestors[ancestors.length - 1]!.rel + '/')) ancestors.pop();
    const isDir = file.stat.isDirectory();
    const judged = (isDir ? states.get(rel) : undefined) ?? judge(rel);
    if (copied(judged)) {
      for (const a of ancestors) {
        if (a.out) continue;
        out.push(a);
        a.out = true;
      }
      out.push({ file, rel });
    }
    if (isDir) ancestors.push({ file, rel, out: copied(judged) });
  }
  return out;
}

/**
 * Where an archive is extracted: the destination with every symlink followed, the last one too
 * (BuildKit's fs.RootPath), created when missing: 0755 and --chown's owner, whatever --chmod says.
 */
function archiveRoot(tree: LayerPlan, dest: string, createdDir: (path: string, mode?: number) => LayerEntry, what: string): string {
  const root = tree.resolve('', dest, { followLast: true, mkdir: (path) => createdDir(path), danglingLinks: 'create', what });
  const existing = tree.get(root);
  if (existing && existing.type !== 'dir') throw new CopyError(`${what}: cannot extract an archive into /${root}: it is not a directory`);
  if (!existing && root !== '') tree.put(createdDir(root));
  return root;
}
