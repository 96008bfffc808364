// What the image being built holds, path by path, as far as this build wrote it. Builds without a
// root filesystem (FROM scratch, no RUN) use it to answer "is the destination a directory?", "which
// parents are missing?" and "what does /etc/passwd say?" without unpacking anything.
import { readFile } from 'node:fs/promises';
import { posix } from 'node:path';
import type { LayerEntry } from '../layer/layer-writer.js';
import { inImagePath } from '../util/image-path.js';
import { Slots } from '../util/slots.js';

/** Cached layers' listings read at once when a step needs the files (each a request, or a download). */
const LISTING_READS_AT_ONCE = 4;

export class FsView {
  private readonly entryMap = new Map<string, LayerEntry>();
  /** Paths directly under each directory path ("" is the root): subtrees go in time proportional to their size. */
  private readonly children = new Map<string, Set<string>>();
  /** Work left before the view is complete: a base image's listing, cached layers' listings (in order). */
  private loader?: () => Promise<void>;
  private loading?: Promise<void>;
  /** Deferred layers' listings being read at once. */
  private readonly listingReads = new Slots(LISTING_READS_AT_ONCE);

  /** A view filled by `load` on the first ready(): metadata-only builds never read the base layers. */
  static lazy(load: () => Promise<FsView>): FsView {
    const view = new FsView();
    view.loader = async () => {
      for (const v of (await load()).entryMap.values()) view.set(v);
    };
    return view;
  }

  /** A view holding exactly these entries. */
  static of(entries: readonly LayerEntry[]): FsView {
    const view = new FsView();
    view.stack(entries, [], []);
    return view;
  }

  /** Every entry, parents before children (what a listing of the whole view stores). */
  entries(): LayerEntry[] {
    this.assertReady();
    return [...this.entryMap.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  }

  /**
   * Stacks a layer whose listing is read only when something needs the files (a layer the cache
   * supplied): a build whose steps all hit the cache never downloads it.
   */
  deferLayer(listing: () => Promise<{ entries: readonly LayerEntry[]; whiteouts: readonly string[]; opaque: readonly string[] }>): void {
    const before = this.loader;
    this.loader = () => {
      // Each listing may cost a round trip: they are read a few at a time, in order, ahead of the
      // one being stacked (the earlier ones are asked for first: the slots serve in order).
      const earlier = before?.();
      const read = this.listingReads.run(listing);
      read.catch(() => undefined); // reported in order, below
      return (async () => {
        await earlier;
        const l = await read;
        this.stack(l.entries, l.whiteouts, l.opaque);
      })();
    };
  }

  /** Loads what is deferred; every other method needs it to have been awaited once since the last deferral. */
  async ready(): Promise<void> {
    if (this.loader) {
      const load = this.loader;
      this.loader = undefined;
      const previous = this.loading;
      this.loading = (async () => {
        await previous;
        await load();
      })();
    }
    await this.loading;
  }

  clone(): FsView {
    const copy = new FsView();
    if (this.loader || this.loading) {
      copy.loader = async () => {
        await this.ready();
        for (const v of this.entryMap.values()) copy.set(v);
      };
    } else for (const v of this.entryMap.values()) copy.set(v);
    return copy;
  }

  /** Records a layer's entries (later layers override earlier ones, as when layers are stacked). */
  apply(layer: readonly LayerEntry[]): void {
    this.assertReady();
    // A non-directory replaces whatever tree was at that path.
    this.stack(layer, [], []);
  }

  /** Stacks a base-image layer: opaque directories and whiteouts hide lower entries first. */
  applyLayer(entries: readonly LayerEntry[], whiteouts: readonly string[], opaque: readonly string[]): void {
    this.assertReady();
    this.stack(entries, whiteouts, opaque);
  }

  private stack(entries: readonly LayerEntry[], whiteouts: readonly string[], opaque: readonly string[]): void {
    for (const dir of opaque) this.removeBelow(dir);
    for (const path of whiteouts) this.remove(path);
    for (const e of entries) {
      if (e.type !== 'dir') this.removeBelow(e.path);
      this.set(e);
    }
  }

  private set(e: LayerEntry): void {
    this.entryMap.set(e.path, e);
    if (e.path === '') return;
    const parent = parentOf(e.path);
    let siblings = this.children.get(parent);
    if (!siblings) this.children.set(parent, (siblings = new Set()));
    siblings.add(e.path);
  }

  private remove(path: string): void {
    this.removeBelow(path);
    this.entryMap.delete(path);
    this.children.get(parentOf(path))?.delete(path);
  }

  private removeBelow(dir: string): void {
    const below = this.children.get(dir);
    if (!below) return;
    this.children.delete(dir);
    for (const child of below) {
      this.removeBelow(child);
      this.entryMap.delete(child);
    }
  }

  get(path: string): LayerEntry | undefined {
    this.assertReady();
    return this.entryMap.get(relative(path));
  }

  isDirectory(path: string): boolean {
    const rel = relative(path);
    return rel === '' || this.resolve(rel)?.type === 'dir';
  }

  /** Follows symlinks (inside the image) to the entry a path finally names. */
  resolve(path: string): LayerEntry | undefined {
    this.assertReady();
    let rel = relative(path);
    for (let hops = 0; hops < 40; hops++) {
      const e = this.entryMap.get(rel);
      if (e?.type !== 'symlink' || e.linkname === undefined) return e;
      const target = e.linkname.startsWith('/') ? e.linkname : posix.join(posix.dirname('/' + rel), e.linkname);
      rel = relative(target);
    }
    return undefined;
  }

  /**
   * The path with every existing symlinked parent replaced by what it points to (inside the image),
   * as Docker resolves a COPY destination: `lib/x` becomes `usr/lib/x` when `lib -> usr/lib`.
   * With `followLast`, a last component that is a symlink to a directory is followed too.
   */
  resolveParents(path: string, followLast = false): string {
    this.assertReady();
    const parts = relative(path).split('/').filter((p) => p !== '');
    let current = '';
    for (const [i, part] of parts.entries()) {
      current = current === '' ? part : `${current}/${part}`;
      if (i < parts.length - 1 || (followLast && this.isDirectory(current))) current = this.followLinks(current);
    }
    return current;
  }

  private followLinks(rel: string, hops = 0): string {
    const e = this.entryMap.get(rel);
    if (e?.type !== 'symlink' || e.linkname === undefined || hops > 40) return rel;
    const target = e.linkname.startsWith('/') ? e.linkname : posix.join(posix.dirname('/' + rel), e.linkname);
    return this.followLinks(this.resolveParents(target), hops + 1);
  }

  private assertReady(): void {
    if (this.loader) throw new Error('internal error: the image file view was used before ready()');
  }

  /** The text of a regular file this build put in the image (e.g. /etc/passwd), undefined if absent. */
  async readText(path: string): Promise<string | undefined> {
    const e = this.resolve(path);
    if (e?.type !== 'file') return undefined;
    if (e.content) return e.content.toString('utf8');
    if (e.source) return readFile(e.source, 'utf8');
    return undefined;
  }
}

function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

/** "/a/b/" → "a/b"; "/" → "" (the name build/ has long used for inImagePath). */
export const relative = inImagePath;
