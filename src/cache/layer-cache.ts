// The layer cache (--cache-repo: a registry repository, default <first destination>/cache, or an OCI
// layout with oci:/path; see cache-storage.ts). Each cached step is a small image tagged with its
// key: one layer (or none, for a step that changed no files) and a config that records the key's
// inputs and the layer's file listing. A second tag per Dockerfile step ("step-...")
// names the entry the last build stored for that step, so a miss can say what changed since.
// Lookups that fail for any reason are misses, and failed saves are warnings: the cache can make a
// build faster, never break it.
import { MediaType, type Descriptor, type ImageConfig, type Manifest, type Platform } from '../image/types.js';
import type { BlobStore } from '../image/blob-store.js';
import { stableJson } from '../image/image.js';
import { log } from '../log/logger.js';
import type { CacheLocation, CacheStorage } from './cache-storage.js';
import { CACHE_FORMAT, type ChainItem } from './cache-key.js';
import { packListing, unpackListing, type LayerListing } from './layer-listing.js';
import { Slots } from '../util/slots.js';

export type { CacheLocation } from './cache-storage.js';

/** What a cache entry holds. */
export interface CachedStep {
  key: string;
  /** The layer the step made, or undefined when it changed no files. */
  layer?: { descriptor: Descriptor; diffId: string };
  createdBy: string;
  /** Where the layer blob can be fetched or mounted from; none when the cache's blobs are local (a layout). */
  source?: CacheLocation;
  /**
   * The layer's files as the entry records them (so the layer need not be downloaded to know them),
   * read only when a later step needs them; undefined when the entry has none.
   */
  listing?: () => Promise<LayerListing | undefined>;
}

/** What a save stores. */
export interface StepResult {
  key: string;
  position: string;
  inputs: StepInputs;
  createdBy: string;
  created: string;
  layer?: { descriptor: Descriptor; diffId: string };
  listing?: LayerListing;
}

/** The inputs an entry was stored with (see CacheChain). */
export interface StepInputs {
  parent: string;
  items: ChainItem[];
}

interface CacheRecord extends StepInputs {
  format: string;
  key: string;
  /** packListing() of the layer's files. */
  listing?: string;
}

/** Config field holding the record; any other consumer of the image ignores unknown fields. */
const RECORD_FIELD = 'kiln.cache';
/**
 * Manifest annotation repeating what a lookup decides on (no inputs, no listing): a hit then costs
 * one request, the manifest, and the config is read only if a later step needs the layer's files.
 * Entries without it (older kiln) are read through their config.
 */
const SUMMARY_ANNOTATION = 'dev.kiln.cache.entry';

/** The annotation's content. */
interface EntrySummary {
  format: string;
  key: string;
  created: string;
  createdBy: string;
  diffId?: string;
}
const MAX_CACHE_CONFIG = 8 << 20;
/** A listing larger than this (packed) is left out: reading the layer itself is then as cheap. */
const MAX_PACKED_LISTING = 2 << 20;

export interface LayerCacheOptions {
  /** Entries older than this are misses (--cache-ttl). */
  ttlMs: number;
  /** --no-push-cache turns saving off; lookups still happen. */
  push: boolean;
  platform: Platform;
}

/** Entries asked for ahead of their lookups at once (each on a connection of its own). */
const PREFETCHES_AT_ONCE = 4;

export class LayerCache {
  private readonly saves: Promise<void>[] = [];
  private failedLookups = 0;
  /** Manifests the last build stored at Dockerfile steps (by position), asked for ahead (prefetch()). */
  private readonly prefetched = new Map<string, Promise<Manifest | undefined>>();
  private readonly prefetchSlots = new Slots(PREFETCHES_AT_ONCE);

  constructor(
    private readonly storage: CacheStorage,
    /** The build's blob store, where the layers to save are. */
    private readonly store: BlobStore,
    private readonly options: LayerCacheOptions,
  ) {}

  get description(): string {
    return this.storage.description;
  }

  get location(): CacheLocation | undefined {
    return this.storage.location;
  }

  /**
   * Asks, ahead of their lookups, for the entries the last build stored at these Dockerfile steps.
   * On a rebuild they are the entries the lookups will find: a lookup whose key matches the one
   * asked for ahead at its step then takes it, and the lookups of a stage cost about one round trip
   * in all rather than one each, one after another. A failure here only costs the lookup its request.
   */
  prefetch(positions: readonly string[]): void {
    for (const position of positions) {
      if (this.prefetched.has(position)) continue;
      this.prefetched.set(position, this.prefetchSlots.run(() => this.readManifest(positionTag(position))).catch(() => undefined));
    }
  }

  /** The entry stored under `key`, unless absent, expired or unreadable; `position`: the step's, if it was prefetched. */
  async lookup(key: string, position?: string): Promise<CachedStep | { miss: string }> {
    let manifest: Manifest | undefined;
    let summary: EntrySummary | undefined;
    let record: CacheRecord | undefined;
    try {
      const ahead = position === undefined ? undefined : await this.prefetched.get(position);
      manifest = ahead && entrySummary(ahead)?.key === key ? ahead : await this.readManifest(key);
      if (!manifest) return { miss: 'no entry' };
      summary = entrySummary(manifest);
      if (!summary) {
        const config = await this.readConfig(manifest);
        record = config[RECORD_FIELD];
        const history = config.history.find((h) => !h.empty_layer) ?? config.history[0];
        summary = record && { format: record.format, key: record.key, created: config.created ?? '', createdBy: history?.created_by ?? '', diffId: config.rootfs.diff_ids[0] };
      }
    } catch (e) {
      if (this.failedLookups++ === 0) log.warn(`Layer cache ${this.description} could not be read, building without it: ${(e as Error).message}`);
      return { miss: 'the cache could not be read' };
    }
    if (summary?.format !== CACHE_FORMAT || summary.key !== key) return { miss: 'the entry under this key was not written by this kiln' };
    const created = Date.parse(summary.created);
    if (!(created > Date.now() - this.options.ttlMs)) return { miss: `the entry expired (created ${summary.created}, --cache-ttl ${Math.round(this.options.ttlMs / 3_600_000)}h)` };
    const layer = manifest.layers[0];
    const diffId = summary.diffId;
    if (manifest.layers.length > 1 || (layer && !diffId)) return { miss: 'the entry is malformed' };
    const entry = manifest;
    const listing = record
      ? async () => (record.listing ? unpackListing(record.listing) : undefined)
      : async () => {
        const packed = (await this.readConfig(entry))[RECORD_FIELD]?.listing;
        return packed ? unpackListing(packed) : undefined;
      };
    return {
      key,
      createdBy: summary.createdBy,
      ...(layer && diffId ? { layer: { descriptor: { mediaType: layer.mediaType, size: layer.size, digest: layer.digest }, diffId } } : {}),
      ...(this.storage.location ? { source: this.storage.location } : {}),
      listing,
    };
  }

  /** What the last build stored for this Dockerfile step, to explain a miss. */
  async previous(position: string): Promise<StepInputs | undefined> {
    try {
      const manifest = await (this.prefetched.get(position) ?? this.readManifest(positionTag(position)));
      const record = manifest && (await this.readConfig(manifest))[RECORD_FIELD];
      return record?.format === CACHE_FORMAT ? record : undefined;
    } catch {
      return undefined;
    }
  }

  /** The files of a base image (by manifest digest) as an earlier build listed them, if it stored them. */
  async baseListing(manifestDigest: string): Promise<LayerListing | undefined> {
    try {
      const record = (await this.read(baseListingTag(manifestDigest)))?.config[RECORD_FIELD];
      return record?.format === CACHE_FORMAT && record.key === baseListingTag(manifestDigest) && record.listing ? unpackListing(record.listing) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Stores a base image's files in the background, for later builds' baseListing(). */
  saveBaseListing(manifestDigest: string, listing: LayerListing, created: string): void {
    const tag = baseListingTag(manifestDigest);
    this.save({ key: tag, position: '', inputs: { parent: '', items: [] }, createdBy: `kiln: the files of ${manifestDigest}`, created, listing });
  }

  /** Stores a step's result in the background; flush() waits for every save. */
  save(step: StepResult): void {
    if (!this.options.push) return;
    const saving = this.write(step).then(
      () => log.debug(`Pushed cache entry ${this.description}:${step.key}`),
      (e: Error) => log.warn(`Failed to push cache layer for "${clip(step.createdBy)}" to ${this.description}: ${e.message}`),
    );
    this.saves.push(saving);
  }

  async flush(): Promise<void> {
    await Promise.all(this.saves);
  }

  private async read(tag: string): Promise<{ config: ImageConfig & { [RECORD_FIELD]?: CacheRecord }; manifest: Manifest } | undefined> {
    const manifest = await this.readManifest(tag);
    return manifest && { manifest, config: await this.readConfig(manifest) };
  }

  /** The entry's manifest, or undefined when there is none or it is not one of a cache entry's shape. */
  private async readManifest(tag: string): Promise<Manifest | undefined> {
    const bytes = await this.storage.manifest(tag);
    if (!bytes) return undefined;
    const manifest = JSON.parse(bytes.toString('utf8')) as Manifest;
    if (!manifest.config || !Array.isArray(manifest.layers) || manifest.config.size > MAX_CACHE_CONFIG) return undefined;
    return manifest;
  }

  private async readConfig(manifest: Manifest): Promise<ImageConfig & { [RECORD_FIELD]?: CacheRecord }> {
    return JSON.parse((await this.storage.blob(manifest.config.digest)).toString('utf8')) as ImageConfig & { [RECORD_FIELD]?: CacheRecord };
  }

  private async write(step: StepResult): Promise<void> {
    const p = this.options.platform;
    const packed = step.listing ? packListing(step.listing) : undefined;
    const record: CacheRecord = { format: CACHE_FORMAT, key: step.key, ...step.inputs, ...(packed && packed.length <= MAX_PACKED_LISTING ? { listing: packed } : {}) };
    const config = {
      architecture: p.architecture, os: p.os, ...(p.variant ? { variant: p.variant } : {}),
      created: step.created,
      config: {},
      rootfs: { type: 'layers', diff_ids: step.layer ? [step.layer.diffId] : [] },
      history: [{ created: step.created, created_by: step.createdBy, ...(step.layer ? {} : { empty_layer: true }) }],
      [RECORD_FIELD]: record,
    };
    const configBytes = Buffer.from(stableJson(config));
    const configDescriptor = await this.store.putBytes(configBytes, MediaType.ociConfig);
    const layers = step.layer ? [step.layer.descriptor] : [];
    for (const blob of [...layers, configDescriptor]) await this.storage.putBlob(blob, () => this.store.openVerified(blob.digest));
    const summary: EntrySummary = { format: CACHE_FORMAT, key: step.key, created: step.created, createdBy: step.createdBy, ...(step.layer ? { diffId: step.layer.diffId } : {}) };
    const manifest: Manifest = {
      schemaVersion: 2, mediaType: MediaType.ociManifest,
      config: { mediaType: configDescriptor.mediaType, size: configDescriptor.size, digest: configDescriptor.digest },
      layers: layers.map((l) => ({ mediaType: l.mediaType, size: l.size, digest: l.digest })),
      annotations: { [SUMMARY_ANNOTATION]: JSON.stringify(summary) },
    };
    await this.storage.putManifest(step.position ? [step.key, positionTag(step.position)] : [step.key], Buffer.from(JSON.stringify(manifest)));
  }
}

/** The manifest's summary annotation, when it has a well-formed one. */
function entrySummary(manifest: Manifest): EntrySummary | undefined {
  const text = manifest.annotations?.[SUMMARY_ANNOTATION];
  if (text === undefined) return undefined;
  try {
    const s = JSON.parse(text) as Partial<EntrySummary>;
    const strings = [s.format, s.key, s.created, s.createdBy].every((v) => typeof v === 'string');
    return strings && (s.diffId === undefined || typeof s.diffId === 'string') ? s as EntrySummary : undefined;
  } catch {
    return undefined;
  }
}

/** Tags are at most 128 characters of [A-Za-z0-9_.-]: keys are 64 hex digits, positions get a prefix. */
function positionTag(position: string): string {
  return `step-${position.slice(0, 40)}`;
}

function clip(text: string): string {
  return text.length > 80 ? text.slice(0, 77) + '...' : text;
}

function baseListingTag(manifestDigest: string): string {
  return `files-${manifestDigest.replace(/^sha256:/, '')}`;
}
