// File trees of built images, read back through real tools, for comparing kiln with its peers:
// path, type, mode, owner, size, content hash and link target of every entry (mtimes left out).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { extract } from 'tar-stream';
import { docker } from './exec.js';

export interface TreeEntry {
  type: string;
  mode: string;
  uid: number;
  gid: number;
  size: number;
  sha256?: string;
  link?: string;
}

export type Tree = Record<string, TreeEntry>;

/** Files a container runtime adds to every container; they are not part of the image. */
const RUNTIME_PATHS = new Set(['.dockerenv', 'dev', 'proc', 'sys', 'etc', 'etc/hosts', 'etc/hostname', 'etc/resolv.conf', 'etc/mtab']);

export async function treeFromTar(path: string, options: { dropRuntimePaths?: boolean } = {}): Promise<Tree> {
  const tree: Tree = {};
  const ex = extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (header, stream, next) => {
      const name = header.name.replace(/^\.?\/+/, '').replace(/\/+$/, '');
      const hash = createHash('sha256');
      let size = 0;
      stream.on('data', (d: unknown) => { const chunk = d as Buffer; hash.update(chunk); size += chunk.length; });
      stream.on('end', () => {
        const keep = name !== '' && !(options.dropRuntimePaths && (RUNTIME_PATHS.has(name) || /^(dev|proc|sys)\//.test(name)));
        if (keep) {
          tree[name] = {
            type: header.type ?? 'file',
            mode: ((header.mode ?? 0) & 0o7777).toString(8),
            uid: header.uid ?? 0,
            gid: header.gid ?? 0,
            size,
            ...(header.type === 'file' ? { sha256: hash.digest('hex') } : {}),
            ...(header.linkname ? { link: header.linkname } : {}),
          };
        }
        next();
      });
      stream.on('error', reject);
    });
    ex.on('finish', resolve);
    ex.on('error', reject);
  });
  createReadStream(path).pipe(ex);
  await done;
  return tree;
}

/** The merged file system of an image in the test dockerd, through `docker create` + `docker export`. */
export async function dockerImageTree(image: string): Promise<Tree> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-export-'));
  try {
    const id = (await docker(['create', image, 'unused-command'])).trim();
    try {
      await docker(['export', '-o', join(dir, 'fs.tar'), id]);
    } finally {
      await docker(['rm', id]);
    }
    return await treeFromTar(join(dir, 'fs.tar'), { dropRuntimePaths: true });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
