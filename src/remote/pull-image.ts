// Fetches a base image: the manifest (picking the platform from an index), the config, and the
// layer blobs into the build's blob store, each verified against its digest. Mirrors and registry
// maps are tried first, as kaniko does, with --image-download-retry attempts per source.
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BlobGrowth, BlobStore } from '../image/blob-store.js';
import type { MediaTypeFamily } from '../image/image.js';
import { MediaType, type Descriptor, type ImageConfig, type Index, type Manifest, type Platform } from '../image/types.js';
import { log } from '../log/logger.js';
import { parseReference, type ImageReference, type RepositoryLocation } from '../reference/reference.js';
import { pullSources, type PullSource, type RegistryMaps } from '../registry/mirrors.js';
import { RegistryError } from '../registry/types.js';
import { forEachLimited, withRetries } from './retry.js';
import type { RegistrySession } from './session.js';

export interface PulledImage {
  ref: ImageReference;
  /** Where it was actually pulled from (a mirror, or the registry itself). */
  source: PullSource;
  manifestDigest: string;
  family: MediaTypeFamily;
  config: ImageConfig;
  layers: Descriptor[];
}

export interface PullOptions {
  platform: Platform;
  maps: RegistryMaps;
  skipDefaultFallback: boolean;
  retries: number;
  /** Told the image's layers and where they are as soon as its manifest is read, before its config is fetched. */
  layersKnown?: LayersKnown;
}

export type LayersKnown = (layers: readonly Descriptor[], source: RepositoryLocation) => void;

const MAX_CONFIG_BYTES = 16 << 20;

export async function pullImage(name: string, session: RegistrySession, options: PullOptions): Promise<PulledImage> {
  const ref = parseReference(name);
  log.info(`Retrieving image manifest ${name}`);
  const sources = pullSources(ref, options.maps, options.skipDefaultFallback);
  let lastError: unknown;
  for (const source of sources) {
    try {
      return await withRetries(options.retries, () => pullFrom(ref, source, session, options.platform, options.layersKnown));
    } catch (e) {
      lastError = e;
      if (source.mapped) log.warn(`Failed to retrieve image ${name} from mapped registry ${source.registry}: ${(e as Error).message}. Trying the next registry.`);
    }
  }
  if (sources.every((s) => s.mapped)) {
    throw new RegistryError(`image ${name} not found on any configured mirror or mapped registry (--skip-default-registry-fallback is set)`, ref.registry);
  }
  throw lastError;
}

async function pullFrom(ref: ImageReference, source: PullSource, session: RegistrySession, platform: Platform, layersKnown?: LayersKnown): Promise<PulledImage> {
  const client = session.client(source.registry, source.repository, 'pull');
  let fetched = await client.getManifest(ref.digest ?? ref.tag ?? 'latest');
  if (ref.digest && fetched.digest !== ref.digest) {
    throw new RegistryError(`registry ${source.registry} returned manifest ${fetched.digest} for ${ref.digest}`, source.registry);
  }
  if (isIndex(fetched.mediaType)) {
    const index = JSON.parse(fetched.bytes.toString('utf8')) as Index;
    const chosen = choosePlatform(index, platform, `${source.registry}/${source.repository}`);
    fetched = await client.getManifest(chosen.digest);
  }
  const manifest = JSON.parse(fetched.bytes.toString('utf8')) as Manifest;
  if (!manifest.config || !Array.isArray(manifest.layers)) {
    throw new RegistryError(`${source.registry}/${source.repository}: unsupported manifest type ${fetched.mediaType} (kiln reads OCI and Docker v2 schema 2 images)`, source.registry);
  }
  if (manifest.config.size > MAX_CONFIG_BYTES) throw new RegistryError(`image config of ${ref.repository} is ${manifest.config.size} bytes, over kiln's limit`, source.registry);
  layersKnown?.(manifest.layers, { registry: source.registry, repository: source.repository });
  const configText = await readAll(await client.getBlob(manifest.config.digest));
  const config = JSON.parse(configText) as ImageConfig;
  config.config ??= {};
  config.history ??= [];
  config.rootfs ??= { type: 'layers', diff_ids: [] };
  if (config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw new RegistryError(`image ${ref.repository}: ${manifest.layers.length} layers but ${config.rootfs.diff_ids.length} diff_ids in its config`, source.registry);
  }
  const family: MediaTypeFamily = (manifest.mediaType ?? fetched.mediaType) === MediaType.dockerManifest ? 'docker' : 'oci';
  log.info(`Retrieved ${ref.registry}/${ref.repository}@${fetched.digest}${source.mapped ? ` from ${source.registry}` : ''}`);
  return { ref, source, manifestDigest: fetched.digest, family, config, layers: manifest.layers };
}

function isIndex(mediaType: string): boolean {
  return mediaType === MediaType.ociIndex || mediaType === MediaType.dockerManifestList;
}

/** containerd's matching for the common cases: os and architecture equal, variant equal when asked (arm64's v8 = none). */
export function choosePlatform(index: Index, wanted: Platform, name: string): Descriptor {
  const variant = (p: Platform): string => (p.architecture === 'arm64' && (p.variant ?? '') === 'v8' ? '' : p.variant ?? '');
  const candidates = index.manifests.filter((m) => m.platform && m.platform.os === wanted.os && m.platform.architecture === wanted.architecture);
  const exact = candidates.find((m) => variant(m.platform!) === variant(wanted));
  const chosen = exact ?? (wanted.variant ? undefined : candidates[0]);
  if (chosen) return chosen;
  const available = index.manifests.filter((m) => m.platform).map((m) => [m.platform!.os, m.platform!.architecture, m.platform!.variant].filter(Boolean).join('/'));
  const wantedText = [wanted.os, wanted.architecture, wanted.variant].filter(Boolean).join('/');
  throw new RegistryError(`${name} has no image for platform ${wantedText}; it has: ${available.join(', ') || 'none'} (choose one with --custom-platform)`, name.split('/')[0]!);
}

/**
 * Downloads the image's layers into the store (several at once), skipping blobs already there.
 * `inspect`, when given, reads each layer's bytes in the same pass as the download (or from the
 * store when the blob was already there), so a layer is not read twice. `stored` hears of each
 * layer as soon as it is in the store (before the others have arrived); `downloading`, of each
 * attempt's blob file as soon as it exists, to be read as it grows.
 */
export async function fetchLayers(
  layers: readonly Descriptor[], source: RepositoryLocation, session: RegistrySession, store: BlobStore, retries: number,
  inspect?: (layer: Descriptor, bytes: Readable) => Promise<void>, stored?: (layer: Descriptor) => void,
  downloading?: (layer: Descriptor, growth: BlobGrowth) => void,
): Promise<void> {
  const client = session.client(source.registry, source.repository, 'pull');
  await forEachLimited(layers, 3, async (layer) => {
    if (await store.has(layer.digest)) {
      stored?.(layer);
      if (inspect) await inspect(layer, store.openVerified(layer.digest));
      return;
    }
    await fetchOne(layer);
    stored?.(layer);
  });

  async function fetchOne(layer: Descriptor): Promise<void> {
    await withRetries(retries, async () => {
      const writer = await store.createWriter({ growing: downloading !== undefined });
      const copy = new PassThrough();
      try {
        const body = await client.getBlob(layer.digest);
        // Followed from its first byte (an extraction on another thread), the file must exist first.
        if (writer.growth) writer.growth.opened.then(() => downloading!(layer, writer.growth!), () => undefined);
        if (inspect) await teeInto(body, writer.stream, copy, inspect(layer, copy));
        else await pipeline(body, writer.stream);
        const { digest } = await writer.commit();
        if (digest !== layer.digest) throw new RegistryError(`layer ${layer.digest} of ${source.repository} arrived as ${digest}`, source.registry, undefined, true);
      } catch (e) {
        copy.destroy();
        await writer.abort();
        throw e;
      }
    });
  }
}

/** Copies `body` into `sink` and into `copy` (read by `reader`) at once; backpressure from either slows the download. */
async function teeInto(body: NodeJS.ReadableStream, sink: NodeJS.WritableStream, copy: PassThrough, reader: Promise<void>): Promise<void> {
  const tee = new Transform({
    transform(chunk: Buffer, _enc, done) {
      if (copy.write(chunk)) done(null, chunk);
      else copy.once('drain', () => done(null, chunk));
    },
    flush(done) {
      copy.end();
      done();
    },
  });
  await Promise.all([pipeline(body, tee, sink), reader]);
}

/** Downloads the layers of a built image that are still only in their source registry (before writing a tarball or layout). */
export async function fetchMissingLayers(layers: readonly Descriptor[], source: RepositoryLocation | undefined, session: RegistrySession, store: BlobStore, retries: number): Promise<void> {
  const missing: Descriptor[] = [];
  for (const layer of layers) if (!(await store.has(layer.digest))) missing.push(layer);
  if (missing.length === 0) return;
  if (!source) throw new Error(`internal error: ${missing.length} layers are neither in the blob store nor in a known registry`);
  await fetchLayers(missing, source, session, store, retries);
}



async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
