// What a COPY/ADD reads, as cache-key input: for every file its sources match (directories walked,
// .dockerignore applied, as planCopy sees them), the type, permission bits, owner where it is kept,
// link target and content hash. Modification times are left out on purpose: a fresh checkout in CI
// gives every file a new mtime, and BuildKit's and kaniko's keys ignore them too.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readlink } from 'node:fs/promises';
import type { BuildContext, ContextFile } from './build-context.js';
import { gitSource, urlSource } from './remote-copy-source.js';
import { sourceKind } from './remote-source.js';

/** Content hashes of files already read in this process, by identity and metadata. */
const contentHashes = new Map<string, Promise<string>>();

function contentHash(file: ContextFile): Promise<string> {
  const st = file.stat;
  const id = `${file.abs}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
  let hash = contentHashes.get(id);
  if (!hash) {
    hash = new Promise<string>((resolve, reject) => {
      const h = createHash('sha256');
      createReadStream(file.abs).on('data', (c) => h.update(c)).on('error', reject).on('end', () => resolve(h.digest('hex').slice(0, 32)));
    });
    contentHashes.set(id, hash);
  }
  return hash;
}

async function describe(file: ContextFile, withOwner: boolean): Promise<string> {
  const st = file.stat;
  const mode = (st.mode & 0o7777).toString(8);
  const owner = withOwner ? `${st.uid}:${st.gid}` : '';
  if (st.isDirectory()) return `dir:${mode}:${owner}`;
  if (st.isSymbolicLink()) return `link:${owner}:${await readlink(file.abs)}`;
  if (st.isFile()) return `file:${mode}:${owner}:${await contentHash(file)}`;
  return 'other'; // sockets, fifos, devices: not copied
}

/**
 * path → description of every file the sources name. `withOwner`: whether owners reach the image
 * (COPY --from keeps them; context files become 0:0). A source that matches nothing is recorded as
 * missing, so the build still fails where planCopy would. ADD's remote sources are fetched (once: the
 * copy reuses the fetch): a URL counts by its content digest, name and Last-Modified time (BuildKit's
 * key), a git source by the commit it checks out and the subdir.
 */
export async function sourceFiles(context: BuildContext, sources: readonly string[], withOwner: boolean): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const files: ContextFile[] = [];
  for (const source of sources) {
    const kind = sourceKind(source);
    if (kind === 'url') {
      const { file, digest } = await urlSource(source);
      out[`url:${source}`] = `${digest}:${file.rel}:${file.stat.mtimeMs}`;
      continue;
    }
    if (kind === 'git') {
      const git = await gitSource(source);
      out[`git:${source}`] = `${git.commit}:${git.subdir}`;
      continue;
    }
    const matched = await context.match(source);
    if (matched.length === 0) out[`missing:${source}`] = 'missing';
    for (const file of matched) {
      files.push(file);
      if (file.stat.isDirectory()) files.push(...(await context.walk(file)));
    }
  }
  // A few files at a time: enough to keep the disk busy, few enough never to run out of descriptors.
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < files.length) {
      const file = files[next++]!;
      out[file.rel === '' ? '.' : file.rel] = await describe(file, withOwner);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  return out;
}
