// The base-image cache (--cache-dir, default /cache): an OCI image layout that `kiln warmer` fills
// with base images (index, platform manifest, config and layers, each verified by digest) and the
// executor reads before going to the registry. index.json names each warmed image by its reference,
// so skopeo and umoci can read the directory too. An entry older than --cache-ttl (by when it was
// last warmed) is not used.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BlobStore } from '../image/blob-store.js';
import type { MediaTypeFamily } from '../image/image.js';
import { MediaType, type Descriptor, type ImageConfig, type Index, type Manifest } from '../image/types.js';

const REF_NAME = 'org.opencontainers.image.ref.name';

/** A base image found in the cache, ready to build on. */
export interface CachedBaseImage {
  manifestDigest: string;
  family: MediaTypeFamily;
  config: ImageConfig;
  layers: Descriptor[];
}

export class BaseImageCache {
  readonly blobs: BlobStore;

  constructor(readonly dir: string, private readonly ttlMs: number) {
    this.blobs = new BlobStore(join(dir, 'blobs'));
  }

  /**
   * The image whose manifest (or index) has this digest, if every blob it needs is here and it was
   * warmed within the TTL. An index resolves to the manifest `choose` picks for the platform.
   */
  async image(digest: string, choose: (index: Index) => Descriptor): Promise<CachedBaseImage | undefined> {
    const top = await this.readJson<Manifest & Index>(digest);
    if (!top) return undefined;
    const warmed = (await stat(this.blobs.path(digest))).mtimeMs;
    if (warmed < Date.now() - this.ttlMs) return undefined;
    let manifestDigest = digest;
    let manifest: Manifest | undefined = top;
    if (top.mediaType === MediaType.ociIndex || top.mediaType === MediaType.dockerManifestList || (Array.isArray(top.manifests) && !top.config)) {
      manifestDigest = choose(top).digest;
      manifest = await this.readJson<Manifest>(manifestDigest);
    }
    if (!manifest?.config || !Array.isArray(manifest.layers)) return undefined;
    const config = await this.readJson<ImageConfig>(manifest.config.digest);
    if (!config) return undefined;
    for (const layer of manifest.layers) if (!(await this.blobs.has(layer.digest))) return undefined;
    config.config ??= {};
    config.history ??= [];
    return { manifestDigest, family: manifest.mediaType === MediaType.dockerManifest ? 'docker' : 'oci', config, layers: manifest.layers };
  }

  /** The digest index.json records for a reference (when the registry cannot be asked). */
  async digestOf(reference: string): Promise<string | undefined> {
    const index = await this.index();
    return index.manifests.find((m) => m.annotations?.[REF_NAME] === reference)?.digest;
  }

  /** Records a warmed image under its reference, and marks it warmed now. */
  async record(reference: string, manifest: Descriptor): Promise<void> {
    const now = new Date();
    await utimes(this.blobs.path(manifest.digest), now, now);
    const index = await this.index();
    index.manifests = index.manifests.filter((m) => m.annotations?.[REF_NAME] !== reference);
    index.manifests.push({ mediaType: manifest.mediaType, size: manifest.size, digest: manifest.digest, annotations: { [REF_NAME]: reference } });
    await mkdir(this.dir, { recursive: true });
    await writeFile(join(this.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    // Written last and atomically: the index never names a blob that is not there.
    const tmp = join(this.dir, `.index-${randomBytes(6).toString('hex')}.tmp`);
    await writeFile(tmp, JSON.stringify(index));
    await rename(tmp, join(this.dir, 'index.json'));
  }

  /** Whether an image was warmed within the TTL (the warmer skips it unless --force). */
  async fresh(digest: string): Promise<boolean> {
    const st = await stat(this.blobs.path(digest)).catch(() => undefined);
    return st !== undefined && st.mtimeMs >= Date.now() - this.ttlMs;
  }

  private async index(): Promise<Index> {
    const text = await readFile(join(this.dir, 'index.json'), 'utf8').catch(() => undefined);
    const index = text ? (JSON.parse(text) as Index) : undefined;
    return index && Array.isArray(index.manifests) ? index : { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] };
  }

  /** A small JSON blob, verified against its digest; undefined when absent. */
  private async readJson<T>(digest: string): Promise<T | undefined> {
    if (!(await this.blobs.has(digest))) return undefined;
    return JSON.parse((await this.blobs.readVerified(digest)).toString('utf8')) as T;
  }
}
