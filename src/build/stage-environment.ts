// What a stage is built from and with: the image it starts from (and produces), and the build-wide
// inputs and services every stage shares. The executor makes them; the stage builder uses them.
import type { BuildContext } from '../context/build-context.js';
import type { BlobGrowth, BlobStore } from '../image/blob-store.js';
import type { Descriptor, ImageConfig } from '../image/types.js';
import type { Compression } from '../layer/layer-writer.js';
import type { MediaTypeFamily } from '../image/image.js';
import type { FsView } from './fs-view.js';
import type { RootFactory } from '../rootfs/create-root.js';
import type { BuildCache } from './step-cache.js';
import type { CacheLocation } from '../cache/layer-cache.js';
import type { RepositoryLocation } from '../reference/reference.js';
import type { LayerListing } from '../cache/layer-listing.js';
import type { SecretSource } from './run-mounts.js';
import { isoSeconds } from '../util/iso-seconds.js';

/** The image a stage produces (and a later stage may start FROM). */
export interface StageImage {
  config: ImageConfig;
  layers: Descriptor[];
  files: FsView;
  /** Media types follow the base image's family (Docker v2s2 or OCI), as kaniko does. */
  family: MediaTypeFamily;
  /** Registries and repositories the base layers came from (for cross-repository mounts on push). */
  blobSources: RepositoryLocation[];
  /** What the image's content is keyed by in the layer cache: the base's digest, or the key a stage ended with. */
  cacheKey: string;
}

/** The time history and config say the image was made: SOURCE_DATE_EPOCH, 1970 with --reproducible, else the build's start. */
export function imageTime(env: Pick<StageEnvironment, 'created' | 'reproducible' | 'now'>): string {
  return isoSeconds(env.created ?? (env.reproducible ? new Date(0) : env.now));
}

export interface StageEnvironment {
  context: BuildContext;
  store: BlobStore;
  escapeToken: '\\' | '`';
  /** Values of ARGs declared before the first FROM, after --build-arg overrides. */
  globalArgs: Map<string, string | undefined>;
  buildArgs: Map<string, string>;
  /** Build args some ARG consumed, for the "not consumed" warning. */
  consumedBuildArgs: Set<string>;
  reproducible: boolean;
  compression: Compression;
  compressionLevel: number;
  /** The build's start: cache entries' age. */
  now: Date;
  /** The time history and config say the image was made: SOURCE_DATE_EPOCH when given. */
  created?: Date;
  /** Build roots for RUN, made on first use (so builds without RUN never extract anything). */
  roots: () => Promise<RootFactory>;
  /** --single-snapshot: one layer per stage, written when the stage ends. */
  singleSnapshot: boolean;
  /** kaniko's --force-build-metadata: an (empty) layer for every instruction that would add history only. */
  forceBuildMetadata: boolean;
  /** COPY --from: the files of an earlier stage (name or index) or of an image. */
  copySource: (from: string, sources?: readonly string[]) => Promise<{ files: BuildContext; name: string }>;
  /** COPY --from: the cache key of an earlier stage, undefined when `from` names an image. */
  copySourceKey: (from: string) => string | undefined;
  /** The layer cache (--cache), when on. */
  cache?: BuildCache;
  /** Layers not in the blob store, by digest: where to fetch or mount them from (cache hits). */
  remoteLayers: Map<string, CacheLocation>;
  /** Downloads a layer the cache supplied into the store and lists its files. */
  cachedLayerFiles: (layer: Descriptor, source: CacheLocation | undefined) => Promise<LayerListing>;
  /** RUN --mount: where cache mounts persist (under --cache-dir) and the --secret values. */
  runMounts: { cacheRoot: string; secrets: ReadonlyMap<string, SecretSource> };
  /** A layer a stage wrote joined its image (not a cache hit's): the target stage's may be uploaded at once. */
  layerWritten?: (stageIndex: number, layer: Descriptor) => void;
  /**
   * A stage is writing a layer of its image, into `growth`: the target stage's may stream to the
   * destinations as it is written. Returns what the writer calls with the finished layer (undefined: it failed).
   */
  layerGrowing?: (stageIndex: number, growth: BlobGrowth) => ((layer: Descriptor | undefined) => void) | undefined;
  /** A cache hit's layer, in the registry `source`, joined a stage's image: the target stage's may be mounted into the destinations at once. */
  layerCached?: (stageIndex: number, layer: Descriptor, source: CacheLocation) => void;
  /**
   * Makes a layer's blob present in the store: from where the cache found it, else from `source`.
   * `downloading` hears of a download's blob file as soon as it exists, to be read as it grows (a root unpacking it).
   */
  ensureLocal: (layer: Descriptor, source: RepositoryLocation | undefined, downloading?: (layer: Descriptor, growth: BlobGrowth) => void) => Promise<void>;
}
