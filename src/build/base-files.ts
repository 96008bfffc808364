// What a pulled base image holds, read from its layer tar headers (contents are not extracted), with
// whiteouts applied as a runtime would stack the layers. COPY needs it to know which destinations are
// directories and which parents exist, and --chown names need the base's /etc/passwd and /etc/group.
import type { Readable } from 'node:stream';
import { extract } from 'tar-stream';
import type { Descriptor } from '../image/types.js';
import { decompressLayer } from '../layer/decompress.js';
import { FsView } from './fs-view.js';
import { ListingCollector, type LayerListing } from '../cache/layer-listing.js';

/** Collects each layer's listing (in any order, as layers download), then stacks them in image order. */
export class BaseFileLister {
  private readonly listings = new Map<string, LayerListing>();

  /** Reads one layer's (compressed) bytes to the end. */
  readonly listLayer = async (layer: Descriptor, bytes: Readable): Promise<void> => {
    this.listings.set(layer.digest, await readLayerEntries(layer, bytes));
  };

  /** A listing read by someone else (an extraction that listed the layer as it unpacked it). */
  add(layer: Descriptor, listing: LayerListing): void {
    this.listings.set(layer.digest, listing);
  }

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


async function readLayerEntries(layer: Descriptor, bytes: Readable): Promise<LayerListing> {
  const collector = new ListingCollector();
  const tar = extract();
  const done = new Promise<void>((resolve, reject) => {
    tar.on('entry', (header, stream, next) => {
      const keep = collector.wantsContent(header);
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => {
        if (keep) chunks.push(c as Buffer);
      });
      stream.on('error', reject);
      stream.on('end', () => {
        collector.add(header, keep ? Buffer.concat(chunks) : undefined);
        next();
      });
    });
    tar.on('finish', resolve);
    tar.on('error', reject);
  });
  (await decompressLayer(bytes, layer.digest)).pipe(tar);
  await done;
  return collector.listing;
}
