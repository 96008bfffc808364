// What a layer holds, path by path (no contents, but the passwd and group files that builds read),
// packed small enough to ride along in a cache entry: a build whose steps hit the cache learns the
// image's files from these instead of downloading and reading every layer.
import { gunzipSync, gzipSync } from 'node:zlib';
import type { LayerEntry } from '../layer/layer-writer.js';

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
