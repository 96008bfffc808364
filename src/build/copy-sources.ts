// Where COPY --from reads: an earlier stage's or another image's files, unpacked once per build into
// a directory of kiln's own (under the temporary directory, which container isolation keeps out of
// the build root) and then read like a build context without ignore rules.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BuildContext } from '../context/build-context.js';
import type { BlobStore } from '../image/blob-store.js';
import type { Descriptor } from '../image/types.js';
import { hasGlobMeta } from '../context/go-glob.js';
import { relative, type FsView } from './fs-view.js';

/** Which of a source's paths one COPY --from needs; `id` tells unpackings apart. */
export interface SourceSubset {
  id: string;
  keep: (path: string) => boolean;
}

export class CopySources {
  private readonly unpacked = new Map<string, Promise<BuildContext>>();
  private readonly dirs: string[] = [];

  constructor(private readonly store: BlobStore) {}

  /**
   * The files of `key` (a stage or an image), whose layers `layers()` makes present in the blob store;
   * with `subset`, only the paths it keeps are written (every layer is still read, in order).
   */
  files(key: string, layers: () => Promise<readonly Descriptor[]>, subset?: SourceSubset): Promise<BuildContext> {
    const id = subset ? `${key}\0${subset.id}` : key;
    let files = this.unpacked.get(id);
    if (!files) {
      files = this.unpack(layers, subset?.keep);
      this.unpacked.set(id, files);
    }
    return files;
  }

  private async unpack(layers: () => Promise<readonly Descriptor[]>, keep?: (path: string) => boolean): Promise<BuildContext> {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-from-'));
    this.dirs.push(dir);
    for (const layer of await layers()) {
      const { extractLayer } = await import('../rootfs/extract-layer.js'); // only builds with COPY --from need it
      await extractLayer(this.store.openVerified(layer.digest), dir, {
        whiteouts: 'apply', layerName: layer.digest, ...(keep ? { ignore: (p: string) => !keep(p) } : {}),
      });
    }
    return BuildContext.plain(dir);
  }

  async dispose(): Promise<void> {
    await Promise.all(this.dirs.map((d) => rm(d, { recursive: true, force: true })));
  }
}

/**
 * What a COPY --from of `sources` reads from a stage whose files `view` lists: each source's literal
 * part (up to its first glob), as named and with its symlinks followed, with their parents and all
 * below. Writing only those saves creating the whole stage's files (a base's thousands) to copy one
 * directory. Undefined (unpack everything) when a source starts with a glob or names the root, or a
 * hard link inside reaches outside (its target would be missing).
 */
export function sourceSubset(sources: readonly string[], view: FsView): SourceSubset | undefined {
  const roots = new Set<string>();
  for (const source of sources) {
    const segments = relative(source).split('/').filter((s) => s !== '' && s !== '.');
    const firstGlob = segments.findIndex((s) => hasGlobMeta(s));
    const literal = (firstGlob < 0 ? segments : segments.slice(0, firstGlob)).join('/');
    if (literal === '') return undefined;
    roots.add(literal);
    const resolved = view.resolve(literal)?.path ?? view.resolveParents(literal, true);
    roots.add(relative(resolved));
  }
  const under = (path: string): boolean => [...roots].some((r) => path === r || path.startsWith(r + '/'));
  const keep = (path: string): boolean => path === '' || under(path) || [...roots].some((r) => r.startsWith(path + '/'));
  for (const e of view.entries()) {
    if (e.type === 'hardlink' && e.linkname !== undefined && under(relative(e.path)) && !under(relative(e.linkname))) return undefined;
  }
  return { id: [...roots].sort().join('\0'), keep };
}
