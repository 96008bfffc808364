// Unpacks one image layer onto a directory, as a runtime would: onto the merged lower layers with
// whiteouts applied ('apply', kaniko style), or into an empty overlayfs lower directory with
// whiteouts turned into overlay's own markers ('overlay'). Layers come from registries, so every
// name is checked and every parent resolved inside the root: nothing outside it is ever touched.
// Syscalls are synchronous on purpose: each is short, and a layer may hold 100k small files, for
// which a thread-pool round trip per call would dominate.
import {
  closeSync, constants, fchmodSync, fchownSync, futimesSync, linkSync, lstatSync, lutimesSync, mkdirSync,
  openSync, readdirSync, rmdirSync, rmSync, symlinkSync, unlinkSync, writeSync, type Stats,
} from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { setAttributeSync } from 'fs-xattr';
import { extract, type Header } from 'tar-stream';
import { makeNodes, MknodError, type NodeRecord } from '../isolation/sandbox-binary.js';
import { decompressLayer } from '../layer/decompress.js';
import { log } from '../log/logger.js';
import type { ListingCollector } from '../cache/layer-listing.js';
import { applyMeta, entryMeta, isId, PaxTap, setXattrs, type Meta } from './tar-headers.js';
import { cleanPath, joinPath, ScopedResolver, ScopeError, splitPath } from './scoped-path.js';

export interface ExtractOptions {
  whiteouts: 'apply' | 'overlay';
  /** Names the layer in errors, e.g. "sha256:abcd… (layer 2 of ubuntu:22.04)". */
  layerName: string;
  /** In-image paths (relative, no leading "/", e.g. "proc", "kaniko/x") never written nor deleted; entries at or below them are skipped silently. */
  ignore?: (path: string) => boolean;
  /** Where warnings go (left-out xattrs and device nodes); the log by default. */
  warn?: (message: string) => void;
  /** Also lists the layer, in the same pass (what a base's listing would read separately). */
  list?: ListingCollector;
}

export interface ExtractStats {
  /** Entries written, of any type (whiteouts not counted). */
  files: number;
  /** Bytes of regular file content written. */
  bytes: number;
  /** Entries left out: ignored paths, whiteouts of ignored paths, device nodes without permission. */
  skipped: number;
}

/** A layer that names a path outside the root, or otherwise unsafe; the message names the layer and the entry. */
export class UnsafeLayerError extends Error {}

/** An error already described for the caller ("layer X: …"). */
class LayerError extends Error {}

/** Files smaller than this are written with one write call; larger ones in pieces of this size. */
const WRITE_BUFFER = 1 << 20;
const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';
/** tar-stream's types kiln extracts; GNU sparse files and other rarities are refused, as Docker does. */
const KNOWN_TYPES = new Set<Header['type'] | null>(['file', 'contiguous-file', 'directory', 'symlink', 'link', 'character-device', 'block-device', 'fifo']);

/** An entry's content as tar-stream hands it out. */
type Content = AsyncIterable<unknown>;

interface PendingNode {
  record: NodeRecord;
  meta: Meta;
  whiteout: boolean;
}

/** `layer` is the layer blob as stored: gzip, zstd or plain tar. */
export async function extractLayer(layer: Readable, root: string, options: ExtractOptions): Promise<ExtractStats> {
  const tap = new PaxTap();
  const tar = extract();
  let readError: Error | undefined;
  layer.on('error', (e) => { readError = e; });
  let source: Readable;
  try {
    source = await decompressLayer(layer, options.layerName);
  } catch (e) {
    layer.destroy();
    throw readError ? new Error(`layer ${options.layerName}: cannot read it: ${readError.message}`, { cause: readError }) : e;
  }
  try {
    source.on('error', (e) => tap.destroy(e));
    tap.on('error', (e) => tar.destroy(e));
    source.pipe(tap).pipe(tar);
    const extractor = new Extractor(root, options);
    for await (const entry of tar) await extractor.entry(entry.header, entry, entry.offset, tap);
    await extractor.finish();
    return extractor.stats;
  } catch (e) {
    // Nothing is left reading or waiting: the caller's stream included.
    for (const stream of [tar, tap, source, layer]) stream.destroy();
    // A read error surfaces downstream as a truncated tar: the cause is the read.
    if (readError) throw new Error(`layer ${options.layerName}: cannot read it: ${readError.message}`, { cause: readError });
    if (e instanceof UnsafeLayerError || e instanceof LayerError) throw e;
    // What is left came from gunzip or tar-stream: the bytes are not a valid layer.
    throw new Error(`layer ${options.layerName} is corrupt: ${(e as Error).message}`, { cause: e });
  }
}

class Extractor {
  readonly stats: ExtractStats = { files: 0, bytes: 0, skipped: 0 };
  private readonly resolver: ScopedResolver;
  /** In-image paths (resolved) this layer wrote, with their parents: an opaque directory keeps them. */
  private readonly written = new Set<string>();
  /** Device nodes and fifos, made in one batch at the end (host path → node). */
  private readonly pending = new Map<string, PendingNode>();
  /** Hard links to pending nodes, made after them. */
  private deferredLinks: { target: string; host: string; meta: Meta }[] = [];
  /** Directory mtimes, set last: writing children changes them. */
  private readonly dirTimes = new Map<string, Date>();
  private readonly xattrFailures: string[] = [];
  private readonly ignore: (path: string) => boolean;
  private readonly warn: (message: string) => void;
  /** The content of the entry being written, when the listing keeps it. */
  private captured?: Buffer[];

  constructor(root: string, private readonly options: ExtractOptions) {
    this.ignore = options.ignore ?? (() => false);
    this.warn = options.warn ?? ((message) => log.warn(message));
    this.resolver = new ScopedResolver(root, this.ignore, (host, path) => {
      this.pending.delete(host);
      this.markWritten(path);
    });
  }

  async entry(header: Header, stream: Content, offset: number, tap: PaxTap): Promise<void> {
    let pax: Map<string, Buffer>;
    try {
      pax = tap.recordsFor(header, offset);
    } catch (e) {
      throw this.corrupt(header.name, (e as Error).message);
    }
    const list = this.options.list;
    this.captured = list?.wantsContent(header) ? [] : undefined;
    try {
      const written = await this.place(header, stream, pax);
      if (!written) this.stats.skipped++;
    } catch (e) {
      if (e instanceof ScopeError) throw new UnsafeLayerError(`layer ${this.options.layerName}: entry "${header.name}": ${e.message}`);
      if (e instanceof UnsafeLayerError || e instanceof LayerError) throw e;
      throw new LayerError(`layer ${this.options.layerName}: cannot extract "${header.name}": ${(e as Error).message}`, { cause: e });
    }
    // Whatever place() did not read (content of a skipped file, of a symlink…) is read past here.
    await drain(stream).catch((e: Error) => { throw this.corrupt(header.name, e.message); });
    list?.add(header, this.captured && Buffer.concat(this.captured));
  }

  /** Writes one entry (or applies a whiteout); false when it is left out. */
  private async place(header: Header, stream: Content, pax: Map<string, Buffer>): Promise<boolean> {
    const path = cleanPath(header.name);
    const [dir, base] = splitPath(path);
    if (path === '') return true; // "./": the root's own metadata is not the layer's to change
    if (base.startsWith(WHITEOUT)) return this.whiteout(dir, base);
    if (!KNOWN_TYPES.has(header.type)) throw this.corrupt(header.name, `unsupported entry type ${String(header.type)}`);
    if (this.ignored(path)) return false;
    const meta = entryMeta(header, pax);
    if (typeof meta === 'string') throw this.corrupt(header.name, meta);
    const parent = this.resolver.resolveDir(dir, true)!;
    const real = joinPath(parent.path, base);
    if (parent.ignored || this.ignore(real)) return false;
    const host = join(parent.host, base);

    switch (header.type) {
      case 'directory':
        if (this.replace(host, real, () => mkdirSync(host, 0o700), true) === 'kept') return false;
        applyMeta(host, meta, 'dir', this.xattrFailures);
        this.made(real);
        this.dirTimes.set(host, meta.mtime);
        return true;
      case 'file':
      case 'contiguous-file': {
        // O_EXCL|O_NOFOLLOW: never written through whatever is there, which is replaced instead.
        let fd = -1;
        const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
        if (this.replace(host, real, () => { fd = openSync(host, flags, 0o600); }) === 'kept') return false;
        await this.writeFile(header, stream, fd, host, meta);
        this.stats.bytes += header.size;
        this.made(real);
        return true;
      }
      case 'symlink': {
        const target = header.linkname;
        if (!target || target.includes('\0')) throw this.corrupt(header.name, 'symlink without a valid target');
        if (this.replace(host, real, () => symlinkSync(target, host)) === 'kept') return false;
        applyMeta(host, meta, 'symlink', this.xattrFailures);
        this.made(real);
        return true;
      }
      case 'link':
        return this.hardlink(header, host, real, meta);
      default: { // a device or a fifo (KNOWN_TYPES)
        if (this.clear(host, real) === 'kept') return false;
        const type = header.type === 'fifo' ? 'fifo' : header.type === 'block-device' ? 'block' : 'char';
        const [major, minor] = type === 'fifo' ? [0, 0] : [header.devmajor, header.devminor];
        if (!isId(major) || !isId(minor)) throw this.corrupt(header.name, 'invalid device numbers');
        this.pending.set(host, { record: { type, mode: meta.mode, major, minor, path: host }, meta, whiteout: false });
        this.markWritten(real);
        return true;
      }
    }
  }

  private made(real: string): void {
    this.markWritten(real);
    this.stats.files++;
  }

  /** Writes the content to `fd` (closing it), then the metadata. */
  private async writeFile(header: Header, stream: Content, fd: number, host: string, meta: Meta): Promise<void> {
    try {
      let buffered: Buffer[] = [];
      let bufferedBytes = 0;
      let total = 0;
      const flush = (): void => {
        const data = buffered.length === 1 ? buffered[0]! : Buffer.concat(buffered);
        for (let at = 0; at < data.length;) at += writeSync(fd, data, at);
        total += data.length;
        buffered = [];
        bufferedBytes = 0;
      };
      try {
        for await (const chunk of stream as AsyncIterable<Buffer>) {
          buffered.push(chunk);
          this.captured?.push(chunk);
          if ((bufferedBytes += chunk.length) >= WRITE_BUFFER) flush();
        }
      } catch (e) {
        throw this.corrupt(header.name, (e as Error).message);
      }
      flush();
      if (total !== header.size) throw this.corrupt(header.name, `${total} bytes of content where the header says ${header.size}`);
      fchownSync(fd, meta.uid, meta.gid);
      fchmodSync(fd, meta.mode);
      setXattrs(host, meta.xattrs, this.xattrFailures); // after chown, which drops security.capability
      futimesSync(fd, meta.mtime, meta.mtime);
    } finally {
      closeSync(fd);
    }
  }

  /** The target is resolved like any path, inside the root: in 'overlay' mode, this layer's own directory. */
  private hardlink(header: Header, host: string, real: string, meta: Meta): boolean {
    const targetPath = cleanPath(header.linkname ?? '');
    if (targetPath === '') throw new ScopeError('hard link to the root');
    if (this.ignored(targetPath)) return false;
    const [dir, base] = splitPath(targetPath);
    const parent = this.resolver.resolveDir(dir, false);
    if (parent?.ignored || (parent && this.ignore(joinPath(parent.path, base)))) return false;
    const target = parent && join(parent.host, base);
    const node = target === undefined ? undefined : this.pending.get(target);
    const stats = target === undefined || node ? undefined : lstatSync(target, { throwIfNoEntry: false });
    if (target === undefined || (!node && !stats)) throw this.corrupt(header.name, `hard link to "${header.linkname}", which does not exist`);
    if (stats?.isDirectory()) throw new ScopeError(`hard link to the directory "${header.linkname}"`);
    if (target === host) return true; // a link to itself: already there
    if (node) {
      if (this.clear(host, real) === 'kept') return false;
      this.deferredLinks.push({ target, host, meta });
    } else {
      if (this.replace(host, real, () => linkSync(target, host)) === 'kept') return false;
      // As Docker does, the link's header metadata goes to the shared inode (but a symlink's mode).
      applyMeta(host, meta, stats!.isSymbolicLink() ? 'symlink' : 'other', this.xattrFailures);
    }
    this.made(real);
    return true;
  }

  private whiteout(dir: string, base: string): boolean {
    const overlay = this.options.whiteouts === 'overlay';
    if (base === OPAQUE) {
      if (this.ignored(dir)) return false;
      const parent = this.resolver.resolveDir(dir, overlay);
      if (parent?.ignored) return false;
      if (!parent) return true; // nothing below to hide
      if (overlay) setAttributeSync(parent.host, 'trusted.overlay.opaque', 'y');
      else this.prune(parent.host, parent.path);
      return true;
    }
    if (base.startsWith(WHITEOUT + WHITEOUT)) return false; // aufs bookkeeping (.wh..wh.plnk), meaningless here
    const target = base.slice(WHITEOUT.length);
    if (target === '' || target === '.' || target === '..') throw new ScopeError(`whiteout of "${target}"`);
    const path = joinPath(dir, target);
    if (this.ignored(path)) return false;
    const parent = this.resolver.resolveDir(dir, overlay);
    if (parent?.ignored) return false;
    if (!parent) return true;
    const real = joinPath(parent.path, target);
    if (this.ignore(real)) return false;
    const host = join(parent.host, target);
    if (this.clear(host, real) === 'kept') return false;
    if (overlay) {
      const meta: Meta = { mode: 0, uid: 0, gid: 0, mtime: new Date(0), xattrs: new Map() };
      this.pending.set(host, { record: { type: 'char', mode: 0, major: 0, minor: 0, path: host }, meta, whiteout: true });
      this.markWritten(real);
    }
    return true;
  }

  /**
   * Runs `make`, which creates `host` and fails with EEXIST when something is there; that is then
   * replaced (as Docker does), or kept when it is a directory and `keepDir` (directories merge).
   * 'kept' when ignored paths below it stay, so nothing was made. Trying first saves an lstat per entry.
   */
  private replace(host: string, real: string, make: () => void, keepDir = false): 'made' | 'dir' | 'kept' {
    this.forgetPendingAt(host);
    try {
      make();
      return 'made';
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const stats = lstatSync(host);
    if (keepDir && stats.isDirectory()) return 'dir';
    if (!this.remove(host, real, stats)) return 'kept';
    make();
    return 'made';
  }

  /** Removes what is at `host`, for what is made later (device nodes, links to them, whiteouts). */
  private clear(host: string, real: string): 'gone' | 'kept' {
    this.forgetPendingAt(host);
    const stats = lstatSync(host, { throwIfNoEntry: false });
    return !stats || this.remove(host, real, stats) ? 'gone' : 'kept';
  }

  /** A later entry at the same path wins over a node or link of this layer not made yet. */
  private forgetPendingAt(host: string): void {
    this.pending.delete(host);
    if (this.deferredLinks.length > 0) this.deferredLinks = this.deferredLinks.filter((l) => l.host !== host);
  }

  /** Removes a path, recursively but for ignored paths below it; false when some of it stays. */
  private remove(host: string, real: string, stats: Stats): boolean {
    if (!stats.isDirectory()) {
      if (stats.isSymbolicLink()) this.resolver.forget();
      unlinkSync(host);
      return true;
    }
    this.resolver.forget();
    // What is still to be done below it must not happen: the path may become a symlink to anywhere.
    const below = host + '/';
    for (const path of this.pending.keys()) if (path.startsWith(below)) this.pending.delete(path);
    for (const path of this.dirTimes.keys()) if (path.startsWith(below)) this.dirTimes.delete(path);
    this.deferredLinks = this.deferredLinks.filter((l) => !l.host.startsWith(below) && !l.target.startsWith(below));
    if (!this.options.ignore) {
      rmSync(host, { recursive: true, force: true }); // rm never follows symlinks inside the tree
      return true;
    }
    return this.removeTree(host, real);
  }

  /** Removes a directory but for ignored paths below it; false when some of it stays. */
  private removeTree(host: string, real: string): boolean {
    let kept = false;
    for (const name of readdirSync(host)) {
      const childReal = joinPath(real, name);
      const childHost = join(host, name);
      if (this.ignore(childReal)) kept = true;
      else if (lstatSync(childHost).isDirectory()) kept = !this.removeTree(childHost, childReal) || kept;
      else unlinkSync(childHost);
    }
    if (!kept) rmdirSync(host);
    return !kept;
  }

  /** An opaque directory: what lower layers put there goes, what this layer wrote (in any order) stays. */
  private prune(host: string, real: string): void {
    for (const name of readdirSync(host)) {
      const childReal = joinPath(real, name);
      if (this.ignore(childReal)) continue;
      const childHost = join(host, name);
      const stats = lstatSync(childHost);
      if (!this.written.has(childReal)) this.remove(childHost, childReal, stats);
      else if (stats.isDirectory()) this.prune(childHost, childReal);
    }
  }

  async finish(): Promise<void> {
    try {
      await this.finishLayer();
    } catch (e) {
      if (e instanceof LayerError) throw e;
      throw new LayerError(`layer ${this.options.layerName}: ${(e as Error).message}`, { cause: e });
    }
  }

  private async finishLayer(): Promise<void> {
    for (const node of await this.makePendingNodes()) {
      if (node.whiteout) continue; // mknod made it as overlay wants it: 0:0, mode 0, owned by root
      applyMeta(node.record.path, node.meta, 'other', this.xattrFailures);
      this.stats.files++;
    }
    for (const { target, host, meta } of this.deferredLinks) {
      if (!lstatSync(target, { throwIfNoEntry: false })) continue;
      linkSync(target, host);
      applyMeta(host, meta, 'other', this.xattrFailures);
    }
    // Deepest first: setting a directory's time never disturbs its parent's, but creating in it did.
    const dirs = [...this.dirTimes].sort(([a], [b]) => depth(b) - depth(a));
    for (const [host, mtime] of dirs) {
      if (lstatSync(host, { throwIfNoEntry: false })?.isDirectory()) lutimesSync(host, mtime, mtime);
    }
    if (this.xattrFailures.length > 0) {
      this.warn(`layer ${this.options.layerName}: ${this.xattrFailures.length} extended attribute(s) not supported here and left out, e.g. ${this.xattrFailures[0]}`);
    }
  }

  /**
   * One mknod batch. Without the privilege (a user namespace), devices are skipped with a warning;
   * fifos and overlay whiteouts need none, so they must still be made.
   */
  private async makePendingNodes(): Promise<PendingNode[]> {
    const nodes = [...this.pending.values()];
    try {
      await makeNodes(nodes.map((n) => n.record));
      return nodes;
    } catch (e) {
      if (!(e instanceof MknodError && e.notPermitted)) throw e;
      // The batch stops at the first refusal: keep what it made, retry what needs no privilege.
      const made = nodes.filter((n) => lstatSync(n.record.path, { throwIfNoEntry: false }) !== undefined);
      const retry = nodes.filter((n) => !made.includes(n) && (n.whiteout || n.record.type === 'fifo'));
      await makeNodes(retry.map((n) => n.record));
      const skipped = nodes.length - made.length - retry.length;
      this.stats.skipped += skipped;
      this.warn(`layer ${this.options.layerName}: no permission to create device nodes, ${skipped} left out (${e.message})`);
      return [...made, ...retry];
    }
  }

  /** The path or one of its parents is ignored. */
  private ignored(path: string): boolean {
    if (!this.options.ignore || path === '') return false;
    for (let i = path.indexOf('/'); i >= 0; i = path.indexOf('/', i + 1)) if (this.ignore(path.slice(0, i))) return true;
    return this.ignore(path);
  }

  private markWritten(path: string): void {
    if (this.options.whiteouts !== 'apply') return;
    for (let p = path; p !== '' && !this.written.has(p); p = splitPath(p)[0]) this.written.add(p);
  }

  private corrupt(name: string, reason: string): LayerError {
    return new LayerError(`layer ${this.options.layerName} is corrupt: entry "${name}": ${reason}`);
  }
}

const depth = (path: string): number => path.split('/').length;

/** Reads what is left of an entry's content, so tar-stream moves on to the next header. */
async function drain(stream: Content): Promise<void> {
  for await (const _ of stream) { /* discarded */ }
}

