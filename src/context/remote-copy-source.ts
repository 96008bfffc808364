// ADD's remote sources as COPY/ADD planning sees local ones: a URL becomes one file (downloaded,
// 0600, Last-Modified as mtime, --checksum verified), a git source a directory tree (the checkout or
// its subdir, .git left out unless --keep-git-dir). The same fetch serves the layer cache key
// (source-digest.ts) and the copy.
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { BuildContext, ContextError, type ContextFile } from './build-context.js';
import { caFileForGit } from './context-source.js';
import { gitCheckout } from './git-source.js';
import { downloadFile, verifyChecksum } from './remote-file.js';
import { GitRefError, parseGitRef, redactUrl } from './remote-source.js';

/** A URL source as a file named as BuildKit names it (the last segment of the URL path). */
export async function urlSource(url: string, checksum?: string): Promise<{ file: ContextFile; digest: string }> {
  const downloaded = await downloadFile(url);
  if (checksum) await verifyChecksum(downloaded, checksum, url);
  return { file: { rel: downloaded.name, abs: downloaded.path, stat: await lstat(downloaded.path) }, digest: downloaded.digest };
}

export interface GitTree {
  /** The checkout seen as a context (no .dockerignore). */
  context: BuildContext;
  /** The directory to copy the contents of: the checkout's root or its subdir. */
  root: ContextFile;
  /** Whether root's ".git" is copied. */
  keepGitDir: boolean;
  commit: string;
  subdir: string;
}

/** A git source checked out; `keepGitDir` and `checksum` are ADD's flags (the source's query may set them too). */
export async function gitSource(source: string, flags: { keepGitDir?: boolean; checksum?: string } = {}): Promise<GitTree> {
  let ref;
  try {
    ref = parseGitRef(source);
  } catch (e) {
    if (e instanceof GitRefError) throw new ContextError(e.message);
    throw e;
  }
  if (flags.keepGitDir !== undefined && ref.keepGitDir !== undefined && flags.keepGitDir !== ref.keepGitDir) {
    throw new ContextError('inconsistent keep-git-dir configuration');
  }
  if (flags.checksum && ref.checksum && flags.checksum !== ref.checksum) throw new ContextError(`checksum mismatch "${flags.checksum}" != "${ref.checksum}"`);
  const checksum = flags.checksum || ref.checksum;
  const checkout = await gitCheckout({ remote: ref.remote, ref: ref.ref, submodules: ref.submodules ?? true, caFile: await caFileForGit() });
  if (checksum && !(checksum.length >= 7 && checkout.commit.startsWith(checksum.toLowerCase()))) {
    throw new ContextError(`expected checksum to match ${checksum}, got ${checkout.commit} (${redactUrl(ref.remote)}${ref.ref ? '#' + ref.ref : ''})`);
  }
  const context = BuildContext.plain(checkout.dir);
  const abs = ref.subdir === '' ? checkout.dir : join(checkout.dir, ref.subdir);
  const stat = await lstat(abs).catch(() => undefined);
  if (!stat?.isDirectory()) throw new ContextError(`subdir "${ref.subdir}" of ${redactUrl(ref.remote)} is not a directory`);
  return {
    context, root: { rel: ref.subdir, abs, stat }, commit: checkout.commit, subdir: ref.subdir,
    // BuildKit keeps .git only for a whole repository.
    keepGitDir: (flags.keepGitDir ?? ref.keepGitDir ?? false) && ref.subdir === '',
  };
}
