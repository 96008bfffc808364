// What a layer holds, path by path (no contents, but the passwd and group files that builds read),
// packed small enough to ride along in a cache entry: a build whose steps hit the cache learns the
// image's files from these instead of downloading and reading every layer.
import { gunzipSync, gzipSync } from 'node:zlib';
import type { Header } from 'tar-stream';
import type { LayerEntry } from '../layer/layer-writer.js';
import { inImagePath } from '../util/image-path.js';

export interface LayerListing {
  entries: LayerEntry[];
  /** Paths deleted by `.wh.<name>` files. */
  whiteouts: string[];
  /** Directories whose lower contents `.wh..wh..opq` hides. */
  opaque: string[];
}

/** Files whose content a listing keeps (USER and --chown names are resolved from them). */
export const KEPT_CONTENT = new Set(['etc/passwd', 'etc/group']);
export const MAX_KEPT_BYTES = 1 << 20;

/** Modification times are kept: a later layer repeats its parent directories' metadata (see withAncestors). */
type Packed = [path: string, type: LayerEntry['type'], mode: number, uid: number, gid: number, size: number, mtimeMs: number, link?: string, content?: string];

/** gzip + base64 of the listing; a source file's content is not kept (it may be gone when the listing is read). */
export function packListing(listing: LayerListing): string {
  const entries: Packed[] = listing.entries.map((e) => {
    const packed: Packed = [e.path, e.type, e.mode, e.uid, e.gid, e.size ?? 0, e.mtime.getTime()];
    if (e.linkname !== undefined || e.content) packed.push(e.linkname ?? '');
    if (e.content && KEPT_CONTENT.has(e.path)) packed.push(e.content.toString('base64'));
    return packed;
  });
  return gzipSync(JSON.stringify({ entries, whiteouts: listing.whiteouts, opaque: listing.opaque })).toString('base64');
}

export function unpackListing(text: string): LayerListing {
  const raw = JSON.parse(gunzipSync(Buffer.from(text, 'base64')).toString('utf8')) as { entries: Packed[]; whiteouts: string[]; opaque: string[] };
  return {
    whiteouts: raw.whiteouts,
    opaque: raw.opaque,
    entries: raw.entries.map(([path, type, mode, uid, gid, size, mtimeMs, link, content]) => ({
      path, type, mode, uid, gid, size, mtime: new Date(mtimeMs),
      ...(link ? { linkname: link } : {}),
      ...(content !== undefined ? { content: Buffer.from(content, 'base64') } : {}),
    })),
  };
}

/** tar-stream's entry types as LayerEntry types; anything else (regular, contiguous) is a file. */
const ENTRY_TYPES: Partial<Record<string, LayerEntry['type']>> = {
  directory: 'dir', symlink: 'symlink', link: 'hardlink', 'character-device': 'char', 'block-device': 'block', fifo: 'fifo',
};

/** Builds a layer's listing from its tar headers, in order (whoever reads the tar: a lister or an extractor). */
export class ListingCollector {
  readonly listing: LayerListing = { entries: [], whiteouts: [], opaque: [] };

  /** Whether `add` wants this entry's content (the passwd and group files, when small). */
  wantsContent(header: Header): boolean {
    return KEPT_CONTENT.has(inImagePath(header.name)) && header.type === 'file' && (header.size ?? 0) <= MAX_KEPT_BYTES;
  }

  /** Records one entry; `content` when wantsContent said so and all of it was read. */
  add(header: Header, content?: Buffer): void {
    const path = inImagePath(header.name);
    const base = path.slice(path.lastIndexOf('/') + 1);
    const dir = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '';
    if (base === '.wh..wh..opq') this.listing.opaque.push(dir);
    else if (base.startsWith('.wh.')) this.listing.whiteouts.push(dir === '' ? base.slice(4) : `${dir}/${base.slice(4)}`);
    else if (path !== '') {
      const type = ENTRY_TYPES[header.type ?? 'file'] ?? 'file';
      this.listing.entries.push({
        path, type, mode: (header.mode ?? 0) & 0o7777, uid: header.uid ?? 0, gid: header.gid ?? 0,
        mtime: header.mtime ?? new Date(0), size: header.size ?? 0,
        ...(header.linkname ? { linkname: type === 'hardlink' ? inImagePath(header.linkname) : header.linkname } : {}),
        ...(type === 'char' || type === 'block' ? { devmajor: header.devmajor ?? 0, devminor: header.devminor ?? 0 } : {}),
        ...(content && content.length === (header.size ?? 0) ? { content } : {}),
      });
    }
  }
}
