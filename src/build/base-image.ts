// Where a build's base images come from: the warmer's cache (--cache-dir) when it holds them, else
// their registry through mirrors and registry maps, with the platform and retries of the flags.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BaseImageCache } from '../cache/base-image-cache.js';
import type { BlobStore } from '../image/blob-store.js';
import { platformString } from '../image/platform.js';
import type { Platform } from '../image/types.js';
import { log } from '../log/logger.js';
import { parseReference, referenceString } from '../reference/reference.js';
import { choosePlatform, pullImage, type PulledImage } from '../remote/pull-image.js';
import type { RegistrySession } from '../remote/session.js';
import type { BuildOptions } from './options.js';

/** How base images (FROM, COPY --from) are pulled: platform, mirrors and retries from the flags. */
function pullOptions(options: BuildOptions): Parameters<typeof pullImage>[2] {
  return {
    platform: options.platform, maps: options.registryMaps,
    skipDefaultFallback: options.skipDefaultRegistryFallback, retries: options.registry.imageDownloadRetry,
  };
}

/**
 * A base image from the warmer's cache (--cache-dir) when it is there and fresh, else from its
 * registry. A tag is resolved by the registry first (one HEAD), as kaniko does, so a moved tag is
 * never served stale; when the registry cannot be reached, the digest the warmer recorded is used.
 */
export async function pullBase(name: string, store: BlobStore, options: BuildOptions, session: RegistrySession): Promise<PulledImage> {
  const { dir, ttlMs } = options.baseImageCache;
  if (!existsSync(join(dir, 'index.json'))) return pullImage(name, session, pullOptions(options));
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
    return pullImage(name, session, pullOptions(options));
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

  start(name: string, platform: Platform): void {
    const key = `${name} ${platformString(platform)}`;
    if (this.pending.has(key)) return;
    const pull = pullBase(name, this.store, { ...this.options, platform }, this.session);
    pull.catch(() => undefined); // handled by take()
    this.pending.set(key, pull);
  }

  /** The stage's own copy: stages on the same base change their config and layer list apart. */
  async take(name: string, platform: Platform): Promise<PulledImage> {
    const pulled = await (this.pending.get(`${name} ${platformString(platform)}`) ?? pullBase(name, this.store, { ...this.options, platform }, this.session));
    return { ...pulled, config: structuredClone(pulled.config), layers: [...pulled.layers] };
  }
}
