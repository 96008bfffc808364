// Where layer-cache entries live: a registry repository (--cache-repo host/repo, kaniko's default)
// or a local OCI image layout (--cache-repo oci:/path). Both store an entry as a tagged manifest with
// its config and at most one layer; LayerCache (layer-cache.ts) decides what the entries mean.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BlobStore } from '../image/blob-store.js';
import { MediaType, type Descriptor, type Index } from '../image/types.js';
import type { RepositoryLocation } from '../reference/reference.js';
import type { RegistrySession } from '../remote/session.js';
import { RegistryError } from '../registry/types.js';

export type CacheLocation = RepositoryLocation;

export interface CacheStorage {
  readonly description: string;
  /** The registry repository the entries' layers can be fetched or mounted from; none for a local layout. */
  readonly location?: CacheLocation;
  /** Blobs readable in place (a local layout), for the build's store to read from. */
  readonly localBlobs?: BlobStore;
  /** The manifest tagged `tag`, or undefined. */
  manifest(tag: string): Promise<Buffer | undefined>;
  /** A small blob (a config) whole, verified. */
  blob(digest: string): Promise<Buffer>;
  putBlob(blob: Descriptor, open: () => Readable): Promise<void>;
  /** Stores the manifest under every tag, the first one last-written never before its blobs. */
  putManifest(tags: readonly string[], bytes: Buffer): Promise<void>;
}

export class RegistryCacheStorage implements CacheStorage {
  constructor(private readonly session: RegistrySession, readonly location: CacheLocation, private readonly push: boolean) {}

  get description(): string {
    return `${this.location.registry}/${this.location.repository}`;
  }

  private client() {
    return this.session.client(this.location.registry, this.location.repository, this.push ? 'push' : 'pull');
  }

  async manifest(tag: string): Promise<Buffer | undefined> {
    try {
      return (await this.client().getManifest(tag)).bytes;
    } catch (e) {
      if (e instanceof RegistryError && e.status === 404) return undefined;
      throw e;
    }
  }

  async blob(digest: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    for await (const c of await this.client().getBlob(digest)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  async putBlob(blob: Descriptor, open: () => Readable): Promise<void> {
    await this.client().pushBlob(blob, open);
  }

  async putManifest(tags: readonly string[], bytes: Buffer): Promise<void> {
    for (const tag of tags) await this.client().putManifest(tag, bytes, MediaType.ociManifest);
  }
}

const REF_NAME = 'org.opencontainers.image.ref.name';

/** kaniko's `oci:/path`: the cache as an OCI layout on disk (a volume shared between jobs). */
export class LayoutCacheStorage implements CacheStorage {
  readonly localBlobs: BlobStore;
  /** index.json updates of this process, one at a time (read, change, rename). */
  private indexUpdate: Promise<void> = Promise.resolve();

  constructor(private readonly dir: string) {
    this.localBlobs = new BlobStore(join(dir, 'blobs'));
  }

  get description(): string {
    return `oci:${this.dir}`;
  }

  async manifest(tag: string): Promise<Buffer | undefined> {
    const entry = (await this.index()).manifests.find((m) => m.annotations?.[REF_NAME] === tag);
    return entry && (await this.localBlobs.has(entry.digest)) ? this.blob(entry.digest) : undefined;
  }

  blob(digest: string): Promise<Buffer> {
    return this.localBlobs.readVerified(digest);
  }

  async putBlob(blob: Descriptor, open: () => Readable): Promise<void> {
    if (await this.localBlobs.has(blob.digest)) return;
    const writer = await this.localBlobs.createWriter();
    try {
      await pipeline(open(), writer.stream);
      const { digest } = await writer.commit();
      if (digest !== blob.digest) throw new Error(`cache blob ${blob.digest} was written as ${digest}`);
    } catch (e) {
      await writer.abort();
      throw e;
    }
  }

  async putManifest(tags: readonly string[], bytes: Buffer): Promise<void> {
    const manifest = await this.localBlobs.putBytes(bytes, MediaType.ociManifest);
    const update = this.indexUpdate.then(async () => {
      const index = await this.index();
      index.manifests = index.manifests.filter((m) => !tags.includes(m.annotations?.[REF_NAME] ?? ''));
      for (const tag of tags) index.manifests.push({ mediaType: manifest.mediaType, size: manifest.size, digest: manifest.digest, annotations: { [REF_NAME]: tag } });
      await mkdir(this.dir, { recursive: true });
      await writeFile(join(this.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
      const tmp = join(this.dir, `.index-${randomBytes(6).toString('hex')}.tmp`);
      await writeFile(tmp, JSON.stringify(index));
      await rename(tmp, join(this.dir, 'index.json'));
    });
    this.indexUpdate = update.catch(() => undefined);
    await update;
  }

  private async index(): Promise<Index> {
    const text = await readFile(join(this.dir, 'index.json'), 'utf8').catch(() => undefined);
    const index = text ? (JSON.parse(text) as Index) : undefined;
    return index && Array.isArray(index.manifests) ? index : { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] };
  }
}
