// What a pulled base image holds, read from its layer tar headers (contents are not extracted), with
// whiteouts applied as a runtime would stack the layers. COPY needs it to know which destinations are
// directories and which parents exist, and --chown names need the base's /etc/passwd and /etc/group.
import type { Readable } from 'node:stream';
import { extract } from 'tar-stream';
import type { Descriptor } from '../image/types.js';
import { decompressLayer } from '../layer/decompress.js';
import type { LayerEntry } from '../layer/layer-writer.js';
import { FsView, relative } from './fs-view.js';
import { KEPT_CONTENT, MAX_KEPT_BYTES, type LayerListing } from '../cache/layer-listing.js';

/** Collects each layer's listing (in any order, as layers download), then stacks them in image order. */
export class BaseFileLister {
  private readonly listings = new Map<string, LayerListing>();

  /** Reads one layer's (compressed) bytes to the end. */
  readonly listLayer = async (layer: Descriptor, bytes: Readable): Promise<void> => {
    this.listings.set(layer.digest, await readLayerEntries(layer, bytes));
  };

  /** Whether a layer was listed already (stages on bases that share layers read each once). */
  has(layer: Descriptor): boolean {
    return this.listings.has(layer.digest);
  }

  /** One layer's listing, once listLayer has read it. */
  listing(layer: Descriptor): LayerListing {
    const listing = this.listings.get(layer.digest);
    if (!listing) throw new Error(`no listing of layer ${layer.digest}`);
    return listing;
  }

  view(layers: readonly Descriptor[]): FsView {
    const view = new FsView();
    for (const layer of layers) {
      const listing = this.listings.get(layer.digest);
      if (!listing) throw new Error(`no listing of base layer ${layer.digest}`);
      view.applyLayer(listing.entries, listing.whiteouts, listing.opaque);
    }
    return view;
  }
}


/** tar-stream's entry types as LayerEntry types; anything else (regular, contiguous) is a file. */
const ENTRY_TYPES: Partial<Record<string, LayerEntry['type']>> = {
  directory: 'dir', symlink: 'symlink', link: 'hardlink', 'character-device': 'char', 'block-device': 'block', fifo: 'fifo',
};

async function readLayerEntries(layer: Descriptor, bytes: Readable): Promise<LayerListing> {
  const listing: LayerListing = { entries: [], whiteouts: [], opaque: [] };
  const tar = extract();
  const done = new Promise<void>((resolve, reject) => {
    tar.on('entry', (header, stream, next) => {
      const path = relative(header.name);
      const base = path.slice(path.lastIndexOf('/') + 1);
      const dir = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
      const chunks: Buffer[] = [];
      let kept = 0;
      const keep = KEPT_CONTENT.has(path) && header.type === 'file' && (header.size ?? 0) <= MAX_KEPT_BYTES;
      stream.on('data', (c: unknown) => {
        if (keep) { chunks.push(c as Buffer); kept += (c as Buffer).length; }
      });
      stream.on('error', reject);
      stream.on('end', () => {
        if (base === '.wh..wh..opq') listing.opaque.push(dir);
        else if (base.startsWith('.wh.')) listing.whiteouts.push(dir === '' ? base.slice(4) : `${dir}/${base.slice(4)}`);
        else if (path !== '') {
          const type = ENTRY_TYPES[header.type] ?? 'file';
          listing.entries.push({
            path, type, mode: (header.mode ?? 0) & 0o7777, uid: header.uid ?? 0, gid: header.gid ?? 0,
            mtime: header.mtime ?? new Date(0), size: header.size ?? 0,
            ...(header.linkname ? { linkname: type === 'hardlink' ? relative(header.linkname) : header.linkname } : {}),
            ...(type === 'char' || type === 'block' ? { devmajor: header.devmajor ?? 0, devminor: header.devminor ?? 0 } : {}),
            ...(keep && kept === (header.size ?? 0) ? { content: Buffer.concat(chunks) } : {}),
          });
        }
        next();
      });
    });
    tar.on('finish', resolve);
    tar.on('error', reject);
  });
  (await decompressLayer(bytes, layer.digest)).pipe(tar);
  await done;
  return listing;
}
