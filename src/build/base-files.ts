// What a pulled base image holds, read from its layer tar headers (contents are not extracted), with
// whiteouts applied as a runtime would stack the layers. COPY needs it to know which destinations are
// directories and which parents exist, and --chown names need the base's /etc/passwd and /etc/group.
import { createGunzip } from 'node:zlib';
import { PassThrough, type Readable } from 'node:stream';
import { extract } from 'tar-stream';
import type { Descriptor } from '../image/types.js';
import type { LayerEntry } from '../layer/layer-writer.js';
import { FsView, relative } from './fs-view.js';

/** Small files kept whole because builds read them. */
const KEEP_CONTENT = new Set(['etc/passwd', 'etc/group']);
const MAX_KEPT_BYTES = 1 << 20;

/** Collects each layer's listing (in any order, as layers download), then stacks them in image order. */
export class BaseFileLister {
  private readonly listings = new Map<string, LayerListing>();

  /** Reads one layer's (compressed) bytes to the end. */
  readonly listLayer = async (layer: Descriptor, bytes: Readable): Promise<void> => {
    this.listings.set(layer.digest, await readLayerEntries(layer, bytes));
  };

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

interface LayerListing {
  entries: LayerEntry[];
  /** Paths deleted by `.wh.<name>` files. */
  whiteouts: string[];
  /** Directories whose lower contents `.wh..wh..opq` hides. */
  opaque: string[];
}

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
      const keep = KEEP_CONTENT.has(path) && header.type === 'file' && (header.size ?? 0) <= MAX_KEPT_BYTES;
      stream.on('data', (c: unknown) => {
        if (keep) { chunks.push(c as Buffer); kept += (c as Buffer).length; }
      });
      stream.on('error', reject);
      stream.on('end', () => {
        if (base === '.wh..wh..opq') listing.opaque.push(dir);
        else if (base.startsWith('.wh.')) listing.whiteouts.push(dir === '' ? base.slice(4) : `${dir}/${base.slice(4)}`);
        else if (path !== '') {
          const type = header.type === 'directory' ? 'dir' : header.type === 'symlink' ? 'symlink' : header.type === 'link' ? 'hardlink' : 'file';
          listing.entries.push({
            path, type, mode: (header.mode ?? 0) & 0o7777, uid: header.uid ?? 0, gid: header.gid ?? 0,
            mtime: header.mtime ?? new Date(0), size: header.size ?? 0,
            ...(header.linkname ? { linkname: type === 'hardlink' ? relative(header.linkname) : header.linkname } : {}),
            ...(keep && kept === (header.size ?? 0) ? { content: Buffer.concat(chunks) } : {}),
          });
        }
        next();
      });
    });
    tar.on('finish', resolve);
    tar.on('error', reject);
  });
  (await decompressed(bytes, layer)).pipe(tar);
  await done;
  return listing;
}

/** The layer's tar stream: gzip by its magic bytes, plain tar otherwise; zstd comes with issue #8. */
async function decompressed(source: Readable, layer: Descriptor): Promise<Readable> {
  const first: Buffer = await new Promise((resolve, reject) => {
    source.once('readable', () => resolve((source.read(4) as Buffer | null) ?? Buffer.alloc(0)));
    source.once('error', reject);
  });
  const out = new PassThrough();
  out.write(first);
  source.pipe(out);
  if (first.length >= 2 && first[0] === 0x1f && first[1] === 0x8b) {
    const gunzip = createGunzip();
    out.pipe(gunzip);
    source.on('error', (e) => gunzip.destroy(e));
    return gunzip;
  }
  if (first.length === 4 && first.readUInt32LE(0) === 0xfd2fb528) {
    throw new Error(`layer ${layer.digest} is zstd-compressed, which kiln cannot read yet (issue #8)`);
  }
  return out;
}
