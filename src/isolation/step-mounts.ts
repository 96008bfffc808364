// RUN --mount inside a step's sandbox. Mount targets the image lacks are created as BuildKit's
// "mount stubs" are, where no snapshot records them: on overlayfs in a lower layer of their own (so
// nothing is copied up), on a plain tree in place and removed afterwards (the parents' times put
// back, and reported as touched so the walk compares them without times). kiln-sandbox then mounts
// them in the step's private mount namespace. Container isolation where mount(2) is not allowed
// emulates the mounts: the contents are put at the target before the step and taken away after it,
// what they covered is set aside and put back, so the walks before and after never see them.
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { chmod, chown, copyFile, lstat, lutimes, mkdir, readdir, readlink, rename, rm, rmdir, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import type { Stats } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { sandboxBinary } from './sandbox-binary.js';

/** One mount of a RUN step; `target` is absolute in the image, with the image's symlinks resolved. */
export type StepMount =
  | {
    type: 'bind';
    /** Host path of a directory or a file. */
    source: string;
    target: string;
    readOnly: boolean;
    /** The source is the mount's storage (a cache mount): emulation must carry the step's writes back. */
    persist?: boolean;
  }
  | { type: 'tmpfs'; target: string; sizeBytes?: number };

export class MountSetupError extends Error {}

/** What the sandbox is told, and how the root is put back after the step. */
export interface MountSetup {
  /** kiln-sandbox run arguments (--mount ...). */
  args: string[];
  /** In-image directories ("a/b") whose times kiln moved: a walk compares them without times. */
  touched: string[];
  undo(): Promise<void>;
}

const rel = (target: string): string => target.replace(/^\/+/, '').replace(/\/+$/, '');

/** kiln-sandbox run's --mount arguments. */
export function sandboxArgs(mounts: readonly StepMount[]): string[] {
  return mounts.flatMap((m) => m.type === 'tmpfs'
    ? ['--mount', 'tmpfs', String(m.sizeBytes ?? 0), rel(m.target), '-']
    : ['--mount', 'bind', m.readOnly ? 'ro' : 'rw', rel(m.target), m.source]);
}

async function isDirectory(path: string): Promise<boolean> {
  return (await lstat(path)).isDirectory();
}

/**
 * Overlayfs: a new topmost lower layer holding the missing targets and, above them, copies of the
 * existing parents' metadata (the topmost layer decides what a merged directory looks like).
 * Returns the overlay mount data with that layer added; paths in it are relative to `workDir`.
 */
export async function stubLayer(mounts: readonly StepMount[], overlay: string, workDir: string): Promise<{ overlay: string; dir: string }> {
  const match = /(^|,)lowerdir=([^,]*)/.exec(overlay);
  if (!match) throw new Error('internal error: overlay data without lowerdir');
  const lowers = match[2]!.split(':').map((l) => join(workDir, l));
  // Loaded here, not with the module: builds without RUN --mount never load the native addon.
  const { getAttributeSync } = await import('fs-xattr');
  const opaque = (abs: string): boolean => {
    try {
      return getAttributeSync(abs, 'trusted.overlay.opaque').toString() === 'y';
    } catch {
      return false;
    }
  };
  const name = `s${randomBytes(4).toString('hex')}`;
  const dir = join(workDir, name);
  await mkdir(dir);
  for (const m of mounts) {
    const parts = rel(m.target).split('/');
    const leaf = await layeredStat(lowers, parts.join('/'), opaque);
    if (leaf) continue;
    for (let i = 1; i < parts.length; i++) {
      const path = parts.slice(0, i).join('/');
      const stub = join(dir, path);
      if (await lstat(stub).catch(() => undefined)) continue;
      const existing = await layeredStat(lowers, path, opaque);
      if (existing && !existing.isDirectory()) throw new MountSetupError(`mount target ${m.target}: /${path} is not a directory`);
      await mkdir(stub, { mode: 0o755 });
      if (existing) await copyMetadata(stub, existing);
    }
    const abs = join(dir, ...parts);
    if (m.type === 'bind' && !(await isDirectory(m.source))) await writeFile(abs, '');
    else await mkdir(abs, { recursive: true });
  }
  const lowerdir = [name, ...match[2]!.split(':')].join(':');
  return { overlay: overlay.replace(match[0], `${match[1]}lowerdir=${lowerdir}`), dir };
}

/** lstat of a path in a stack of overlayfs layers (topmost first), as the merged tree shows it. */
async function layeredStat(layers: readonly string[], path: string, opaque: (abs: string) => boolean): Promise<Stats | undefined> {
  const parts = path.split('/');
  for (const layer of layers) {
    const st = await lstat(join(layer, path)).catch(() => undefined);
    if (st) return st.isCharacterDevice() && st.rdev === 0 ? undefined : st; // a whiteout deletes it
    // An opaque directory on the way hides every layer below it.
    for (let i = 1; i < parts.length; i++) {
      const parent = join(layer, ...parts.slice(0, i));
      if (opaque(parent)) return undefined;
      const pst = await lstat(parent).catch(() => undefined);
      if (pst?.isCharacterDevice() && pst.rdev === 0) return undefined;
    }
  }
  return undefined;
}

async function copyMetadata(abs: string, st: Stats): Promise<void> {
  await chown(abs, st.uid, st.gid);
  await chmod(abs, st.mode & 0o7777);
  await utimes(abs, st.atime, st.mtime);
}

/** What kiln created in a plain tree for the step, to take away afterwards. */
interface Stubs {
  /** Host paths kiln created, in creation order. */
  created: string[];
  /** Existing directories something was created in, with their times. */
  parents: Map<string, { atime: Date; mtime: Date }>;
}

/**
 * Creates what is missing of `target` under `root` (the leaf too when `leaf`), refusing to go
 * through a symlink: the image's symlinks were resolved before, so one here is not the image's.
 */
async function makeStubs(root: string, target: string, leafKind: 'dir' | 'file' | undefined, stubs: Stubs): Promise<void> {
  const parts = rel(target).split('/');
  const last = leafKind ? parts.length : parts.length - 1;
  for (let i = 1; i <= last; i++) {
    const abs = join(root, ...parts.slice(0, i));
    const st = await lstat(abs).catch(() => undefined);
    if (st?.isSymbolicLink()) throw new MountSetupError(`mount target ${target}: /${parts.slice(0, i).join('/')} is a symlink`);
    if (st) {
      if (i < parts.length && !st.isDirectory()) throw new MountSetupError(`mount target ${target}: /${parts.slice(0, i).join('/')} is not a directory`);
      continue;
    }
    const parent = dirname(abs);
    if (!stubs.created.includes(parent) && !stubs.parents.has(parent)) {
      const pst = await lstat(parent);
      stubs.parents.set(parent, { atime: pst.atime, mtime: pst.mtime });
    }
    if (i < parts.length || leafKind === 'dir') await mkdir(abs, { mode: 0o755 });
    else await writeFile(abs, '');
    stubs.created.push(abs);
  }
}

/** Takes away the stubs that are still empty (BuildKit's rule) and puts the parents' times back. */
async function removeStubs(stubs: Stubs): Promise<void> {
  for (const abs of [...stubs.created].reverse()) {
    const st = await lstat(abs).catch(() => undefined);
    if (st?.isDirectory()) await rmdir(abs).catch(() => undefined);
    else if (st?.isFile() && st.size === 0) await unlink(abs);
  }
  for (const [abs, t] of stubs.parents) await utimes(abs, t.atime, t.mtime).catch(() => undefined);
}

function touchedOf(root: string, stubs: Stubs, more: readonly string[] = []): string[] {
  const prefix = root.endsWith('/') ? root : root + '/';
  return [...stubs.parents.keys(), ...more].filter((p) => p.startsWith(prefix)).map((p) => p.slice(prefix.length));
}

/** A plain tree with real mounts (chroot isolation without overlayfs, container isolation that may mount). */
export async function mountsInPlace(mounts: readonly StepMount[], root: string): Promise<MountSetup> {
  const stubs: Stubs = { created: [], parents: new Map() };
  try {
    for (const m of mounts) await makeStubs(root, m.target, m.type === 'bind' && !(await isDirectory(m.source)) ? 'file' : 'dir', stubs);
  } catch (e) {
    await removeStubs(stubs);
    throw e;
  }
  return { args: sandboxArgs(mounts), touched: touchedOf(root, stubs), undo: () => removeStubs(stubs) };
}

let mountsAllowed: Promise<boolean> | undefined;

/** Whether kiln-sandbox may make a private mount namespace here (probed once). */
export function canMount(): Promise<boolean> {
  return mountsAllowed ??= new Promise<boolean>((resolve) => {
    const probe = join(tmpdir(), `kiln-probe-mounts-${randomBytes(4).toString('hex')}`);
    const child = spawn(sandboxBinary(), ['probe-mounts', probe], { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('close', (code) => resolve(code === 0));
  });
}

/**
 * Container isolation without mount(2): each mount's contents are put at its target ("/" is the
 * build root) and taken away after the step; a cache's are carried back to its storage. Read-only
 * is not enforced (what the step writes there is discarded all the same).
 */
export async function emulateMounts(mounts: readonly StepMount[]): Promise<MountSetup> {
  const stubs: Stubs = { created: [], parents: new Map() };
  const placed: { mount: StepMount; host: string; moved: boolean; covered?: string }[] = [];
  const undo = async (): Promise<void> => {
    for (const p of [...placed].reverse()) {
      const { mount: m, host } = p;
      if (m.type === 'bind' && m.persist) {
        const present = await lstat(host).catch(() => undefined);
        if (p.moved && present) await rename(host, m.source);
        else {
          await rm(m.source, { recursive: true, force: true });
          if (present) await copyTree(host, m.source);
          else await mkdir(m.source, { mode: 0o755 });
        }
      }
      await rm(host, { recursive: true, force: true });
      if (p.covered) await rename(p.covered, host);
    }
    await removeStubs(stubs);
  };
  try {
    for (const m of mounts) {
      const host = '/' + rel(m.target);
      const file = m.type === 'bind' && !(await isDirectory(m.source));
      await makeStubs('/', m.target, undefined, stubs);
      const parent = dirname(host);
      if (!stubs.parents.has(parent) && !stubs.created.includes(parent)) {
        const pst = await lstat(parent);
        stubs.parents.set(parent, { atime: pst.atime, mtime: pst.mtime });
      }
      const entry: (typeof placed)[number] = { mount: m, host, moved: false };
      if (await lstat(host).catch(() => undefined)) {
        entry.covered = join(parent, `.kiln-covered-${randomBytes(6).toString('hex')}`);
        await rename(host, entry.covered);
      }
      placed.push(entry);
      if (m.type === 'tmpfs') {
        await mkdir(host);
        await chmod(host, 0o1777);
      } else if (file) {
        await copyEntry(m.source, host);
      } else if (m.persist) {
        entry.moved = await rename(m.source, host).then(() => true, (e: NodeJS.ErrnoException) => {
          if (e.code !== 'EXDEV') throw e;
          return false;
        });
        if (!entry.moved) await copyTree(m.source, host);
      } else {
        await copyTree(m.source, host);
      }
    }
  } catch (e) {
    await undo();
    throw e;
  }
  const targets = placed.filter((p) => p.covered).map((p) => p.host);
  return { args: [], touched: touchedOf('/', stubs, targets), undo };
}

/** Copies one entry keeping its type, owner, mode and times (directories: the entry only). */
async function copyEntry(from: string, to: string): Promise<Stats> {
  const st = await lstat(from);
  if (st.isSymbolicLink()) {
    await symlink(await readlink(from), to);
    await lutimes(to, st.atime, st.mtime).catch(() => undefined);
    return st;
  }
  if (st.isDirectory()) await mkdir(to);
  else if (st.isFile()) await copyFile(from, to);
  else return st; // sockets, fifos, devices are not carried into a mount
  await chown(to, st.uid, st.gid);
  await chmod(to, st.mode & 0o7777);
  if (!st.isDirectory()) await utimes(to, st.atime, st.mtime);
  return st;
}

/** A directory tree copied with owners, modes, symlinks and times (Node.js's fs.cp keeps no owners). */
export async function copyTree(from: string, to: string): Promise<void> {
  const st = await copyEntry(from, to);
  if (!st.isDirectory()) return;
  for (const name of await readdir(from)) await copyTree(join(from, name), join(to, name));
  await utimes(to, st.atime, st.mtime);
}
