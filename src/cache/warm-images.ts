// `kiln warmer`: downloads base images into the base-image cache (--cache-dir) so later builds read
// them from disk. Each image is resolved through mirrors and registry maps as a pull would be; its
// index (if any), platform manifest, config and layers are stored verified, and index.json names it.
// An image already warmed within --cache-ttl is left alone unless --force.
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { MediaType, type Index, type Manifest, type Platform } from '../image/types.js';
import { log } from '../log/logger.js';
import { parseReference, referenceString } from '../reference/reference.js';
import { pullSources, type RegistryMaps } from '../registry/mirrors.js';
import { RegistryError } from '../registry/types.js';
import { choosePlatform, fetchLayers } from '../remote/pull-image.js';
import { withRetries } from '../remote/retry.js';
import type { RegistrySession } from '../remote/session.js';
import type { BaseImageCache } from './base-image-cache.js';

export interface WarmOptions {
  platform: Platform;
  maps: RegistryMaps;
  skipDefaultFallback: boolean;
  retries: number;
  /** Download again even when the image is in the cache and fresh. */
  force: boolean;
}

export async function warmImage(name: string, session: RegistrySession, cache: BaseImageCache, options: WarmOptions): Promise<'cached' | 'warmed'> {
  const ref = parseReference(name);
  const reference = referenceString(ref);
  let lastError: unknown;
  for (const source of pullSources(ref, options.maps, options.skipDefaultFallback)) {
    try {
      return await withRetries(options.retries, async () => {
        const client = session.client(source.registry, source.repository, 'pull');
        log.info(`Retrieving image manifest ${name}${source.mapped ? ` from ${source.registry}` : ''}`);
        const top = await client.getManifest(ref.digest ?? ref.tag ?? 'latest');
        const choose = (index: Index) => choosePlatform(index, options.platform, `${source.registry}/${source.repository}`);
        if (!options.force && (await cache.fresh(top.digest)) && (await cache.image(top.digest, choose))) {
          log.info(`Image ${reference} (${top.digest}) already in cache ${cache.dir}`);
          return 'cached';
        }
        await cache.blobs.putBytes(top.bytes, top.mediaType);
        let manifestBytes = top.bytes;
        if (top.mediaType === MediaType.ociIndex || top.mediaType === MediaType.dockerManifestList) {
          const chosen = await client.getManifest(choose(JSON.parse(top.bytes.toString('utf8')) as Index).digest);
          await cache.blobs.putBytes(chosen.bytes, chosen.mediaType);
          manifestBytes = chosen.bytes;
        }
        const manifest = JSON.parse(manifestBytes.toString('utf8')) as Manifest;
        if (!manifest.config || !Array.isArray(manifest.layers)) {
          throw new RegistryError(`${source.registry}/${source.repository}: unsupported manifest type ${top.mediaType}`, source.registry);
        }
        if (!(await cache.blobs.has(manifest.config.digest))) {
          const writer = await cache.blobs.createWriter();
          try {
            await pipeline((await client.getBlob(manifest.config.digest)) as Readable, writer.stream);
            await writer.commit();
          } catch (e) {
            await writer.abort();
            throw e;
          }
        }
        await fetchLayers(manifest.layers, source, session, cache.blobs, 0);
        await cache.record(reference, { mediaType: top.mediaType, size: top.bytes.length, digest: top.digest });
        log.info(`Cached ${reference} (${top.digest}) in ${cache.dir}`);
        return 'warmed';
      });
    } catch (e) {
      lastError = e;
      if (source.mapped) log.warn(`Failed to retrieve image ${name} from mapped registry ${source.registry}: ${(e as Error).message}. Trying the next registry.`);
    }
  }
  throw lastError;
}
