// The files a layer carries beyond what a step wrote (the parent directories a runtime would
// otherwise invent), and the listing of a layer a cache entry keeps.
import { readFileSync } from 'node:fs';
import { KEPT_CONTENT, type LayerListing } from '../cache/layer-listing.js';
import type { LayerEntry } from '../layer/layer-writer.js';
import type { FsView } from './fs-view.js';

/**
 * Adds every existing ancestor directory of the entries, with its current metadata. Runtimes apply a
 * layer into a directory of its own, creating missing parents as root:root 0755, and that copy would
 * hide the real owner and mode from lower layers; Docker's and BuildKit's diffs carry the parents too.
 */
export function withAncestors(entries: LayerEntry[], files: FsView): LayerEntry[] {
  const present = new Set(entries.map((e) => e.path));
  const out = [...entries];
  for (const entry of entries) {
    const parts = entry.path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (present.has(dir)) continue;
      present.add(dir);
      const existing = files.get(dir);
      if (existing?.type === 'dir') out.push(existing);
    }
  }
  return out;
}

/** A layer's files as a cache entry keeps them: the passwd and group files with their content, read now (a step's upper directory goes away). */
export function listingOf(entries: readonly LayerEntry[], whiteouts: readonly string[], opaque: readonly string[]): LayerListing {
  return {
    entries: entries.map((e) => (KEPT_CONTENT.has(e.path) && e.type === 'file' && !e.content && e.source ? { ...e, content: readFileSync(e.source) } : e)),
    whiteouts: [...whiteouts], opaque: [...opaque],
  };
}
