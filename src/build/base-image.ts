// Where a build's base images come from: the warmer's cache (--cache-dir) when it holds them, else
// their registry through mirrors and registry maps, with the platform and retries of the flags;
// and what a stage downloads of its registry base (the layers, listed or unpacked as they arrive).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BaseImageCache } from '../cache/base-image-cache.js';
import type { Stage } from '../dockerfile/stages.js';
import { DigestMismatchError, type BlobStore } from '../image/blob-store.js';
import { platformString } from '../image/platform.js';
import type { Descriptor, Platform } from '../image/types.js';
import { log } from '../log/logger.js';
import { InvalidReferenceError, parseReference, referenceString, type RepositoryLocation } from '../reference/reference.js';
import { RegistryError } from '../registry/types.js';
import { choosePlatform, fetchLayers, pullImage, type LayersKnown, type PulledImage } from '../remote/pull-image.js';
import type { EarlyUploads } from '../remote/push-image.js';
import type { RegistrySession } from '../remote/session.js';
import { applyWhileDownloading, storedLayer, unpackWhileDownloading } from '../rootfs/build-root.js';
import type { LayersAhead } from '../rootfs/layers-ahead.js';
import { isoSeconds } from '../util/iso-seconds.js';
import type { BaseFileLister } from './base-files.js';
import { BuildError } from './errors.js';
import { FsView } from './fs-view.js';
import type { BuildOptions } from './options.js';
import type { StageEnvironment, StageImage } from './stage-environment.js';
import { stagePlatform } from './stage-graph.js';

/** How base images (FROM, COPY --from) are pulled: platform, mirrors and retries from the flags. */
function pullOptions(options: BuildOptions, layersKnown?: LayersKnown): Parameters<typeof pullImage>[2] {
  return {
    platform: options.platform, maps: options.registryMaps,
    skipDefaultFallback: options.skipDefaultRegistryFallback, retries: options.registry.imageDownloadRetry, layersKnown,
  };
}

/**
 * A base image from the warmer's cache (--cache-dir) when it is there and fresh, else from its
 * registry. A tag is resolved by the registry first (one HEAD), as kaniko does, so a moved tag is
 * never served stale; when the registry cannot be reached, the digest the warmer recorded is used.
 */
export async function pullBase(name: string, store: BlobStore, options: BuildOptions, session: RegistrySession, layersKnown?: LayersKnown): Promise<PulledImage> {
  const { dir, ttlMs } = options.baseImageCache;
  if (!existsSync(join(dir, 'index.json'))) return pullImage(name, session, pullOptions(options, layersKnown));
  const cache = new BaseImageCache(dir, ttlMs);
  const ref = parseReference(name);
  let digest = ref.digest;
  if (!digest) {
    try {
      digest = (await session.client(ref.registry, ref.repository, 'pull').headManifest(ref.tag ?? 'latest'))?.digest;
    } catch (e) {
      digest = await cache.digestOf(referenceString(ref));
      if (digest) log.warn(`Could not resolve ${name} (${(e as Error).message}); using ${digest} from the cache in ${dir}`);
    }
  }
  const cached = digest ? await cache.image(digest, (index) => choosePlatform(index, options.platform, `${ref.registry}/${ref.repository}`)).catch(() => undefined) : undefined;
  if (!cached) {
    log.info(`No cached image for ${name} in ${dir}${digest ? ` (${digest})` : ''}; pulling it`);
    return pullImage(name, session, pullOptions(options, layersKnown));
  }
  log.info(`Found ${name} (${cached.manifestDigest}) in the base-image cache ${dir}`);
  store.readFrom(cache.blobs);
  return { ref, source: { registry: ref.registry, repository: ref.repository, mapped: false }, ...cached };
}

/**
 * Every stage's registry base, pulled (manifest and config) as soon as the build starts and
 * alongside the push-permission check; each stage takes its own when it starts. A failure is
 * reported by the stage that takes it, so a stage that is never built never fails the build.
 */
export class BasePulls {
  private readonly pending = new Map<string, Promise<PulledImage>>();

  constructor(private readonly store: BlobStore, private readonly options: BuildOptions, private readonly session: RegistrySession) {}

  /** `layersKnown`: told the layers once the manifest is read from a registry (not when the warmer's cache has the image). */
  start(name: string, platform: Platform, layersKnown?: LayersKnown): void {
    const key = `${name} ${platformString(platform)}`;
    if (this.pending.has(key)) return;
    const pull = pullBase(name, this.store, { ...this.options, platform }, this.session, layersKnown);
    pull.catch(() => undefined); // handled by take()
    this.pending.set(key, pull);
  }

  /** The stage's own copy: stages on the same base change their config and layer list apart. */
  async take(name: string, platform: Platform): Promise<PulledImage> {
    const pulled = await (this.pending.get(`${name} ${platformString(platform)}`) ?? pullBase(name, this.store, { ...this.options, platform }, this.session));
    return { ...pulled, config: structuredClone(pulled.config), layers: [...pulled.layers] };
  }
}

/** Called with each base layer as it lands in the blob store. */
type LayerStored = (layer: Descriptor) => void;

/**
 * A stage's registry base. A stage that writes files needs the base's listing, read in the same pass
 * as the download (for RUN on overlayfs, the unpacking too). Otherwise nothing is downloaded now:
 * a push streams the layers from the source registry, and a later stage that needs the files (FROM
 * this one) downloads and lists them then. With the layer cache, steps that hit need no files: the
 * download waits for a step that does.
 *
 * For the target stage (`early`), each base layer starts uploading to the destinations as soon as it
 * is in the blob store, while the others still download. A stage that writes no files at all never
 * downloads its base: its layers stream from the source registry to the destinations at once, while
 * the stage builds, rather than at push time. No layer is downloaded twice either way, but for one case:
 * a one-stage build relays its base's layers as soon as the manifest names them (executor.ts), and a
 * config with ONBUILD triggers that write files then has them downloaded here as well.
 */
export async function registryBase(
  baseName: string, stage: Stage, env: StageEnvironment, options: BuildOptions, session: RegistrySession,
  bases: BasePulls, lister: BaseFileLister, early?: EarlyUploads,
): Promise<StageImage> {
  try {
    const pulled = await bases.take(baseName, stagePlatform(stage, env, options));
    const blobSources: RepositoryLocation[] = [{ registry: pulled.source.registry, repository: pulled.source.repository }];
    const stored = early && ((layer: Descriptor) => early.offer(layer, () => env.store.openVerified(layer.digest), blobSources));
    const retries = options.registry.imageDownloadRetry;
    const touchesFiles = writesFiles(stage, pulled);
    const downloadsNow = touchesFiles && !options.cache;
    const runs = stage.instructions.some((i) => i.kind === 'run');
    if (downloadsNow && runs) await fetchUnpacked(pulled, lister, session, env, retries, stored);
    else if (downloadsNow) await fetchListed(pulled, lister, session, env.store, retries, stored);
    else if (early) {
      // Not downloaded now (a download offers each layer as it lands, those already stored included).
      for (const layer of pulled.layers) {
        // Layers already in the store: the warmer's cache, or an earlier stage's download.
        if (await env.store.has(layer.digest)) stored?.(layer);
        else if (!touchesFiles) relayLayers(early, session, [layer], blobSources[0]!);
      }
    }
    const cache = env.cache?.layers;
    // An earlier build may have stored the base's listing with the layer cache: no download then. It
    // is asked for at once (two round trips), since most stages soon need their files (COPY, WORKDIR).
    const knownListing = downloadsNow ? undefined : cache?.baseListing(pulled.manifestDigest);
    const files = downloadsNow
      ? lister.view(pulled.layers)
      : FsView.lazy(async () => {
        const known = await knownListing;
        if (known) return FsView.of(known.entries);
        await fetchListed(pulled, lister, session, env.store, retries);
        const view = lister.view(pulled.layers);
        cache?.saveBaseListing(pulled.manifestDigest, { entries: view.entries(), whiteouts: [], opaque: [] }, isoSeconds(env.now));
        return view;
      });
    return { config: pulled.config, layers: [...pulled.layers], files, family: pulled.family, blobSources, cacheKey: `image@${pulled.manifestDigest}` };
  } catch (e) {
    if (e instanceof RegistryError || e instanceof InvalidReferenceError || e instanceof DigestMismatchError) {
      throw new BuildError(`FROM ${baseName}: ${e.message}`, stage.from.node.startLine);
    }
    throw e;
  }
}

/** Whether the stage changes the base's files (ONBUILD triggers may). */
function writesFiles(stage: Stage, pulled: PulledImage): boolean {
  return instructionsWriteFiles(stage) || (pulled.config.config.OnBuild ?? []).length > 0;
}

/** Whether the stage's own instructions write files (its base's ONBUILD triggers aside). */
export function instructionsWriteFiles(stage: Stage): boolean {
  return stage.instructions.some((i) => i.kind === 'copy' || i.kind === 'add' || i.kind === 'workdir' || i.kind === 'run');
}

/** Each layer streams from `source` to the destinations (EarlyUploads), never stored here. */
export function relayLayers(early: EarlyUploads, session: RegistrySession, layers: readonly Descriptor[], source: RepositoryLocation): void {
  for (const layer of layers) early.offer(layer, () => session.client(source.registry, source.repository, 'pull').getBlob(layer.digest), [source]);
}

/** Downloads a base's layers into the store, listing each as it arrives; layers listed by an earlier stage are not read again. */
async function fetchListed(pulled: PulledImage, lister: BaseFileLister, session: RegistrySession, store: BlobStore, retries: number, stored?: LayerStored): Promise<void> {
  await Promise.all([
    fetchLayers(pulled.layers.filter((l) => !lister.has(l)), pulled.source, session, store, retries, lister.listLayer, stored),
    fetchLayers(pulled.layers.filter((l) => lister.has(l)), pulled.source, session, store, retries, undefined, stored),
  ]);
}

/**
 * For the first stage to RUN in container isolation: each base layer is applied onto "/" in its
 * order as it downloads (a big one from its first bytes), listed in that same pass, rather than
 * listed now and decompressed again onto "/" at the first RUN (LayersAhead).
 */
async function fetchApplied(
  pulled: PulledImage, lister: BaseFileLister, session: RegistrySession, store: BlobStore, ahead: LayersAhead, retries: number, stored?: LayerStored,
): Promise<void> {
  const downloads = fetchLayers(pulled.layers, pulled.source, session, store, retries, undefined, (layer) => {
    stored?.(layer);
    ahead.stored(layer.digest);
  }, applyWhileDownloading(ahead));
  downloads.catch((e: unknown) => ahead.abandon(e));
  // Read from the store when the application failed: the RUN that takes the layer reports it.
  const listStored = (layer: Descriptor): Promise<void> => lister.listLayer(layer, store.openVerified(layer.digest));
  const listings = pulled.layers.filter((layer) => !lister.has(layer))
    .map((layer) => ahead.listing(layer.digest).then((listing) => (listing ? lister.add(layer, listing) : listStored(layer)), () => listStored(layer)));
  const results = await Promise.allSettled([downloads, ...listings]);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * For a stage that will RUN on overlayfs: each base layer is unpacked for the RUN root (on a worker
 * thread) as soon as it is downloaded, and listed in that same pass, rather than listed now and
 * decompressed again at the first RUN. Roots that unpack only when made list the ordinary way.
 */
async function fetchUnpacked(
  pulled: PulledImage, lister: BaseFileLister, session: RegistrySession, env: StageEnvironment, retries: number, stored?: LayerStored,
): Promise<void> {
  const roots = await env.roots();
  const ahead = roots.unpack ? undefined : roots.applyAhead?.(pulled.layers, (digest) => storedLayer(env.store, digest));
  if (ahead) return fetchApplied(pulled, lister, session, env.store, ahead, retries, stored);
  if (!roots.unpack) return fetchListed(pulled, lister, session, env.store, retries, stored);
  const listings: Promise<void>[] = [];
  // Read from the store: an extraction that failed is tried again by the RUN, which reports it.
  const listStored = (layer: Descriptor): Promise<void> => lister.listLayer(layer, env.store.openVerified(layer.digest));
  const downloads = fetchLayers(pulled.layers, pulled.source, session, env.store, retries, undefined, (layer) => {
    stored?.(layer);
    const unpacked = roots.unpack!(storedLayer(env.store, layer.digest));
    if (lister.has(layer)) unpacked.catch(() => undefined);
    else listings.push(unpacked.then((listing) => (listing ? lister.add(layer, listing) : listStored(layer)), () => listStored(layer)));
  }, unpackWhileDownloading(roots, env.store)); // the stored blob's unpack() above then finds it under way
  const [downloaded] = await Promise.allSettled([downloads]);
  const results = [downloaded, ...(await Promise.allSettled(listings))];
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
