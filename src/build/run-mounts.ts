// RUN --mount's sources on the host, made ready for one step: cache directories that persist under
// --cache-dir (keyed by id), secrets from --secret written to a private file (or handed over as an
// environment variable), binds from the context or from a stage or image, tmpfs. None of it is ever
// part of the step's layer, config, history or cache key (the key takes bind sources' content, see
// runMountKey). What a step gets is the isolation module's StepMount list.
import { createHash } from 'node:crypto';
import { chmod, chown, copyFile, lstat, mkdir, mkdtemp, readFile, readlink, realpath, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative } from 'node:path';
import type { BuildContext } from '../context/build-context.js';
import { sourceFiles } from '../context/source-digest.js';
import { copyTree, type StepMount } from '../isolation/step-mounts.js';
import { log } from '../log/logger.js';
import type { MountSpec, RunFlags } from './run-mount-spec.js';

/** Where a --secret's value comes from. */
export type SecretSource = { file: string } | { env: string };

export class RunMountError extends Error {}

export interface RunMountEnvironment {
  context: BuildContext;
  /** The files of an earlier stage (name or index) or of an image. */
  source: (from: string) => Promise<{ files: BuildContext; name: string }>;
  /** Persistent cache mounts live under here (kiln's --cache-dir). */
  cacheRoot: string;
  secrets: ReadonlyMap<string, SecretSource>;
  /** The working directory relative targets join. */
  workdir: string;
  /** An in-image path with the image's symlinks resolved ("/var/run/x" → "run/x"). */
  resolve: (path: string) => string;
}

/** What the step gets: its mounts, extra environment (env secrets), locks; dispose() cleans up. */
export interface PreparedMounts {
  mounts: StepMount[];
  env: string[];
  locks: string[];
  noNetwork: boolean;
  dispose(): Promise<void>;
}

/** The directory cache mounts persist in: <--cache-dir>/kiln-run-cache. */
export function runCacheRoot(cacheDir: string): string {
  return join(cacheDir, 'kiln-run-cache');
}

/** A target as BuildKit places it: relative ones join WORKDIR. */
function absoluteTarget(target: string, workdir: string): string {
  const abs = posix.normalize(posix.isAbsolute(target) ? target : posix.join('/', workdir, target));
  if (abs === '/') throw new RunMountError('invalid mount target "/"');
  return abs.replace(/\/+$/, '');
}

export async function prepareRunMounts(flags: RunFlags, env: RunMountEnvironment): Promise<PreparedMounts> {
  const scratch: string[] = [];
  const temp = async (): Promise<string> => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-mount-'));
    scratch.push(dir);
    return dir;
  };
  const out: PreparedMounts = {
    mounts: [], env: [], locks: [], noNetwork: flags.network === 'none',
    dispose: async () => {
      await Promise.all(scratch.map((d) => rm(d, { recursive: true, force: true })));
    },
  };
  try {
    for (const spec of flags.mounts) await prepareOne(spec, env, out, temp);
  } catch (e) {
    await out.dispose();
    throw e;
  }
  return out;
}

async function prepareOne(spec: MountSpec, env: RunMountEnvironment, out: PreparedMounts, temp: () => Promise<string>): Promise<void> {
  const target = spec.target !== undefined ? '/' + env.resolve(absoluteTarget(spec.target, env.workdir)) : undefined;
  switch (spec.type) {
    case 'tmpfs':
      out.mounts.push({ type: 'tmpfs', target: target!, ...(spec.sizeBytes ? { sizeBytes: spec.sizeBytes } : {}) });
      return;
    case 'secret': {
      const value = await secretValue(spec, env.secrets);
      if (value === undefined) return;
      log.addSecret(value.toString('utf8'));
      if (spec.env !== undefined) out.env.push(`${spec.env}=${value.toString('utf8')}`);
      if (target === undefined) return;
      const file = join(await temp(), 'secret');
      await writeFile(file, value, { mode: 0o600 });
      await chown(file, spec.uid ?? 0, spec.gid ?? 0);
      await chmod(file, spec.mode ?? 0o400);
      out.mounts.push({ type: 'bind', source: file, target, readOnly: true });
      return;
    }
    case 'cache': {
      const dir = await cacheDirectory(spec, env);
      if (spec.sharing !== 'shared') out.locks.push(dir + '.lock');
      out.mounts.push({ type: 'bind', source: dir, target: target!, readOnly: spec.readOnly, persist: true });
      return;
    }
    case 'bind': {
      const source = await bindSource(spec, env, temp);
      out.mounts.push({ type: 'bind', source, target: target!, readOnly: spec.readOnly });
      return;
    }
    case 'ssh':
      throw new RunMountError('RUN --mount=type=ssh is not built yet in kiln');
  }
}

async function secretValue(spec: MountSpec, secrets: ReadonlyMap<string, SecretSource>): Promise<Buffer | undefined> {
  const id = spec.id!;
  const source = secrets.get(id);
  if (!source) {
    if (spec.required) throw new RunMountError(`secret ${id} is required but was not given: pass --secret id=${id},src=PATH or --secret id=${id},env=VARIABLE`);
    log.debug(`Secret ${id} was not given: the step runs without it`);
    return undefined;
  }
  if ('env' in source) {
    const value = process.env[source.env];
    if (value === undefined) throw new RunMountError(`secret ${id}: the environment variable ${source.env} is not set`);
    return Buffer.from(value);
  }
  return readFile(source.file).catch((e: NodeJS.ErrnoException) => {
    throw new RunMountError(`secret ${id}: cannot read ${source.file}: ${e.code ?? e.message}`);
  });
}

/** A cache mount's directory, made with its mode and owner the first time (seeded from `from` if given). */
async function cacheDirectory(spec: MountSpec, env: RunMountEnvironment): Promise<string> {
  const id = spec.id ?? absoluteTarget(spec.target!, env.workdir);
  const name = createHash('sha256').update(id).update('\0').update(spec.from ?? '').update('\0').update(spec.from !== undefined ? spec.source ?? '/' : '').digest('hex').slice(0, 32);
  const dir = join(env.cacheRoot, name);
  if (await lstat(dir).then((st) => st.isDirectory(), () => false)) return dir;
  await mkdir(env.cacheRoot, { recursive: true });
  const fresh = `${dir}.new-${process.pid}`;
  await rm(fresh, { recursive: true, force: true });
  if (spec.from !== undefined) {
    const seed = await fromSource(spec, env);
    await copyTree(seed, fresh);
  } else {
    await mkdir(fresh);
  }
  await chown(fresh, spec.uid ?? 0, spec.gid ?? 0);
  await chmod(fresh, spec.mode ?? 0o755);
  await rename(fresh, dir).catch(async () => {
    await rm(fresh, { recursive: true, force: true }); // another build made it meanwhile
  });
  log.debug(`Cache mount ${id}: new, at ${dir}`);
  return dir;
}

/** The host path a `from=` mount reads: the stage's or image's files at `source` (symlinks kept inside). */
async function fromSource(spec: MountSpec, env: RunMountEnvironment): Promise<string> {
  const from = await env.source(spec.from!).catch((e: Error) => {
    throw new RunMountError(`RUN --mount from=${spec.from}: ${e.message.replace(/^COPY --from=[^:]*: /, '')}`);
  });
  return inside(from.files.root, spec.source ?? '/', `${from.name}`);
}

async function inside(root: string, source: string, name: string): Promise<string> {
  const rel = posix.normalize('/' + source).slice(1);
  const real = await realpath(join(root, rel)).catch(() => undefined);
  const realRoot = await realpath(root);
  if (!real) throw new RunMountError(`RUN --mount source ${source} is not in ${name}`);
  const back = relative(realRoot, real);
  if (back.startsWith('..') || posix.isAbsolute(back)) throw new RunMountError(`RUN --mount source ${source} leaves ${name}`);
  return real;
}

/** A bind's source: read-only ones are bound in place; writable ones are a copy, whose writes are discarded. */
async function bindSource(spec: MountSpec, env: RunMountEnvironment, temp: () => Promise<string>): Promise<string> {
  if (spec.from !== undefined) {
    const source = await fromSource(spec, env);
    if (spec.readOnly) return source;
    const copy = join(await temp(), 'src');
    await copyTree(source, copy);
    return copy;
  }
  const context = env.context;
  const source = spec.source ?? '.';
  const matched = await context.match(source);
  if (matched.length !== 1) throw new RunMountError(`RUN --mount source ${source} is not in the build context`);
  const top = matched[0]!;
  const whole = await inside(context.root, top.rel, 'the build context');
  // With .dockerignore rules the step must see what the context shows, not what the disk holds.
  if (spec.readOnly && context.ignoreFile === undefined) return whole;
  const copy = join(await temp(), 'src');
  if (!(await stat(whole)).isDirectory()) {
    await copyFile(whole, copy);
    return copy;
  }
  await mkdir(copy);
  for (const file of await context.walk({ ...top, abs: whole, stat: await stat(whole) })) {
    const to = join(copy, relative(top.rel === '' ? '' : top.rel, file.rel));
    if (file.stat.isDirectory()) await mkdir(to, { recursive: true });
    else if (file.stat.isSymbolicLink()) await symlink(await readlink(file.abs), to);
    else if (file.stat.isFile()) {
      await mkdir(dirname(to), { recursive: true });
      await copyFile(file.abs, to);
      await chmod(to, file.stat.mode & 0o7777);
    }
  }
  return copy;
}

/**
 * What a RUN's mounts add to its cache key: each mount as written (never a secret's value, never a
 * cache's contents), the content of context files a bind reads (as COPY's key has them), and the key
 * of a stage a bind reads. `cacheable` is false when a bind reads an image by tag (known only once read).
 */
export async function runMountKey(
  flags: RunFlags, context: BuildContext, stageKey: (from: string) => string | undefined,
): Promise<{ extra: Record<string, string>; files: Record<string, string>; cacheable: boolean }> {
  const extra: Record<string, string> = {};
  const files: Record<string, string> = {};
  let cacheable = true;
  if (flags.network !== 'default') extra['network'] = flags.network;
  for (const [i, m] of flags.mounts.entries()) {
    const { type, from, source, target, readOnly, id, sharing, mode, uid, gid, required, sizeBytes, env } = m;
    extra[`mount${i}`] = JSON.stringify({ type, from, source, target, readOnly, id, sharing, mode, uid, gid, required, sizeBytes, env });
    if (type !== 'bind') continue;
    if (from === undefined) {
      for (const [path, description] of Object.entries(await sourceFiles(context, [source ?? '.'], false))) files[`mount${i}:${path}`] = description;
    } else {
      const key = stageKey(from);
      if (key !== undefined) extra[`mount${i}:from-stage`] = key;
      else if (!/@sha256:[0-9a-f]{64}$/.test(from)) cacheable = false;
    }
  }
  return { extra, files, cacheable };
}
