// Where COPY --from reads: an earlier stage's or another image's files, unpacked once per build into
// a directory of kiln's own (under the temporary directory, which container isolation keeps out of
// the build root) and then read like a build context without ignore rules.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BuildContext } from '../context/build-context.js';
import type { BlobStore } from '../image/blob-store.js';
import type { Descriptor } from '../image/types.js';
import type { LayerListing } from '../cache/layer-listing.js';
import { log } from '../log/logger.js';
import { hasGlobMeta } from '../context/go-glob.js';
import { relative, type FsView } from './fs-view.js';
import { removeTree, type RemoveWith } from '../util/remove-tree.js';

/** Which of a source's paths one COPY --from needs; `id` tells unpackings apart. */
export interface SourceSubset {
  id: string;
  keep: (path: string) => boolean;
  /** Whether a layer with this listing writes or deletes anything kept: a layer that does not is never read. */
  touches: (listing: LayerListing) => boolean;
}

/** A stage's or image's layers, in order; `ensure` makes one present in the blob store (a download, perhaps). */
export interface SourceLayers {
  layers: () => Promise<readonly Descriptor[]>;
  ensure?: (layer: Descriptor) => Promise<void>;
}

export class CopySources {
  private readonly unpacked = new Map<string, Promise<BuildContext>>();
  private readonly dirs: string[] = [];

  /**
   * `listing` gives a layer's listing when the build has read one (base layers, cache hits);
   * `removeWith` is how the unpacked directories go (never the build root's rm in container isolation).
   */
  constructor(
    private readonly store: BlobStore,
    private readonly listing: (layer: Descriptor) => LayerListing | undefined = () => undefined,
    private readonly removeWith: RemoveWith = 'fs',
  ) {}

  /**
   * The files of `key` (a stage or an image). With `subset`, only the paths it keeps are written,
   * and a layer whose listing shows nothing kept is neither downloaded nor read.
   */
  files(key: string, source: SourceLayers, subset?: SourceSubset): Promise<BuildContext> {
    const id = subset ? `${key}\0${subset.id}` : key;
    let files = this.unpacked.get(id);
    if (!files) {
      files = this.unpack(key, source, subset);
      this.unpacked.set(id, files);
    }
    return files;
  }

  private async unpack(key: string, source: SourceLayers, subset?: SourceSubset): Promise<BuildContext> {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-from-'));
    this.dirs.push(dir);
    const layers = await source.layers();
    const needed = subset ? layers.filter((layer) => { const l = this.listing(layer); return !l || subset.touches(l); }) : layers;
    if (needed.length < layers.length) log.debug(`COPY --from ${key}: reading ${needed.length} of ${layers.length} layers; the others hold nothing it copies`);
    for (const layer of needed) {
      await source.ensure?.(layer);
      const { extractLayer } = await import('../rootfs/extract-layer.js'); // only builds with COPY --from need it
      await extractLayer(this.store.openVerified(layer.digest), dir, {
        whiteouts: 'apply', layerName: layer.digest, ...(subset ? { ignore: (p: string) => !subset.keep(p) } : {}),
      });
    }
    return BuildContext.plain(dir);
  }

  async dispose(): Promise<void> {
    await Promise.all(this.dirs.map((d) => removeTree(d, this.removeWith)));
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
  const list = [...roots];
  const under = (path: string): boolean => list.some((r) => path === r || path.startsWith(r + '/'));
  /** A strict parent of a source: kept (extraction needs the directories), but only a non-directory there changes what is copied. */
  const above = (path: string): boolean => path === '' || list.some((r) => r.startsWith(path + '/'));
  const keep = (path: string): boolean => under(path) || above(path);
  for (const e of view.entries()) {
    if (e.type === 'hardlink' && e.linkname !== undefined && under(relative(e.path)) && !under(relative(e.linkname))) return undefined;
  }
  const touches = (listing: LayerListing): boolean =>
    listing.entries.some((e) => under(e.path) || (e.type !== 'dir' && above(e.path))) ||
    listing.whiteouts.some((p) => under(p) || above(p)) || listing.opaque.some((p) => under(p) || above(p));
  return { id: list.sort().join('\0'), keep, touches };
}
