// The layer cache as a stage sees it: the key chain of the stage's instructions, a lookup before a
// cacheable step (RUN; COPY/ADD with --cache-copy-layers; WORKDIR, whose layer would otherwise
// need the image's files), and a save after a step that missed. Logs say hit or miss, and for a
// stage's first miss, why. createLayerCache makes the build's cache from the flags.
import { CacheChain, explainMiss, hashText, type ChainItem } from '../cache/cache-key.js';
import type { CachedStep } from '../cache/layer-cache.js';
import type { Descriptor } from '../image/types.js';
import type { LayerListing } from '../cache/layer-listing.js';
import { log } from '../log/logger.js';
import { relative as relativePath } from 'node:path';
import { LayoutCacheStorage, RegistryCacheStorage } from '../cache/cache-storage.js';
import { LayerCache } from '../cache/layer-cache.js';
import type { BlobStore } from '../image/blob-store.js';
import { parseRepository } from '../reference/reference.js';
import type { RegistrySession } from '../remote/session.js';
import type { BuildOptions } from './options.js';

export interface BuildCache {
  layers: LayerCache;
  /** --cache-run-layers */
  runLayers: boolean;
  /** --cache-copy-layers */
  copyLayers: boolean;
  /** Names the Dockerfile among others that share the cache repository (for "what changed" records). */
  dockerfileId: string;
}

/** The instructions the cache may look up. */
export type CacheableKind = 'run' | 'copy' | 'workdir';

/** A step looked up and missed: what its save needs once it has run. */
export interface PendingStep {
  chain: CacheChain;
  position: string;
  text: string;
}

export class StageCache {
  private chain: CacheChain;
  private ordinal = 0;
  /** Only a stage's first miss is explained: the later ones follow from it. */
  private missed = false;

  constructor(
    private readonly build: BuildCache,
    /** The stage's start: a base image digest, "scratch", or the key an earlier stage ended with. */
    base: string,
    private readonly stageIndex: number,
    settings: Record<string, string>,
  ) {
    this.chain = CacheChain.start(base, settings);
  }

  /** The key of everything so far (what a stage FROM this one, or COPY --from it, starts with). */
  get key(): string {
    return this.chain.key;
  }

  /** Whether a step of this kind is looked up. */
  caches(kind: CacheableKind): boolean {
    return kind === 'run' ? this.build.runLayers : kind === 'copy' ? this.build.copyLayers : true;
  }

  /** An instruction that is not looked up still feeds every later key. */
  note(item: ChainItem): void {
    this.ordinal++;
    this.chain = this.chain.add(item);
  }

  /**
   * The coming steps, in order (the kind each would be looked up as, if any): what the last build
   * stored at those that are looked up is asked for now (LayerCache.prefetch).
   */
  prefetch(kinds: readonly (CacheableKind | undefined)[]): void {
    const positions = kinds.flatMap((kind, i) => (kind && this.caches(kind) ? [this.positionAt(this.ordinal + i)] : []));
    this.build.layers.prefetch(positions);
  }

  /** Names a step of the Dockerfile across builds: the Dockerfile, the stage, the step's place in it. */
  private positionAt(ordinal: number): string {
    return hashText(this.build.dockerfileId, String(this.stageIndex), String(ordinal));
  }

  /** Looks a step up; on a miss, returns what `store` needs after the step has run. */
  async lookup(item: ChainItem): Promise<{ hit: CachedStep } | { miss: PendingStep }> {
    const chain = this.chain.add(item);
    const position = this.positionAt(this.ordinal++);
    log.info(`Checking for cached layer ${this.build.layers.description}:${chain.key}...`);
    const found = await this.build.layers.lookup(chain.key, position);
    if ('key' in found) {
      log.info(`Using caching version of cmd: ${item.text}`);
      this.chain = chain.settle();
      return { hit: found };
    }
    let why = found.miss;
    if (this.missed) why = 'an earlier step missed';
    else if (found.miss === 'no entry') {
      const previous = await this.build.layers.previous(position);
      if (!previous) why = 'no earlier build cached this step';
      else if (previous.parent !== chain.parent) why = 'the last build that cached this step had different earlier steps';
      else why = explainMiss(previous.items, chain.items) ?? 'the entry was removed from the cache';
    }
    this.missed = true;
    log.info(`No cached layer found for cmd ${item.text} (${why})`);
    return { miss: { chain, position, text: item.text } };
  }

  /** After a missed step ran: its result is saved under its key and the chain goes on from there. */
  store(step: PendingStep, result: { createdBy: string; created: string; layer?: { descriptor: Descriptor; diffId: string }; listing?: LayerListing }): void {
    this.build.layers.save({
      key: step.chain.key, position: step.position, inputs: { parent: step.chain.parent, items: [...step.chain.items] },
      ...result,
    });
    this.chain = step.chain.settle();
  }
}

/** The layer cache the flags ask for, if any. */
export function createLayerCache(options: BuildOptions, session: RegistrySession, store: BlobStore): LayerCache | undefined {
  if (!options.cache) return undefined;
  const { repo, push } = options.cache;
  let storage;
  if (repo.startsWith('oci:')) {
    storage = new LayoutCacheStorage(repo.slice('oci:'.length));
    store.readFrom(storage.localBlobs); // hits are read in place, never copied
  } else {
    const ref = parseRepository(repo);
    storage = new RegistryCacheStorage(session, { registry: ref.registry, repository: ref.repository }, push);
  }
  const cache = new LayerCache(storage, store, { ttlMs: options.cache.ttlMs, push, platform: options.platform });
  log.info(`Using layer cache ${cache.description}`);
  return cache;
}

/** Names the Dockerfile in the cache's "last build of this step" records: its path in the context, else its name. */
export function dockerfileId(options: BuildOptions): string {
  const rel = relativePath(options.contextDir, options.dockerfilePath);
  return hashText(rel.startsWith('..') ? options.dockerfilePath.slice(options.dockerfilePath.lastIndexOf('/') + 1) : rel, options.target ?? '');
}
