// Everything a build needs, validated once by the CLI (kaniko's flags mapped to kiln's terms).
import type { Compression } from '../layer/layer-writer.js';
import type { Platform } from '../image/types.js';
import type { RegistryMaps } from '../registry/mirrors.js';
import type { RegistryOptions } from '../registry/types.js';
import type { SecretSource } from './run-mounts.js';

export interface BuildOptions {
  /** Absolute path of the build context directory. */
  contextDir: string;
  /** Absolute path of the Dockerfile. */
  dockerfilePath: string;
  /** Image references to name (and later push) the result as; may be empty with --no-push. */
  destinations: string[];
  noPush: boolean;
  tarPath?: string;
  ociLayoutPath?: string;
  digestFile?: string;
  imageNameWithDigestFile?: string;
  imageNameTagWithDigestFile?: string;
  /** --build-arg values, in the order given (a bare KEY already resolved from the environment). */
  buildArgs: Map<string, string>;
  /** --label values, applied to the final image. */
  labels: Map<string, string>;
  target?: string;
  skipUnusedStages: boolean;
  /** RUN isolation: chroot unless told (kiln's own image sets KILN_ISOLATION=container). */
  isolation: 'chroot' | 'container';
  /** kaniko's --force: container isolation outside a container. */
  force: boolean;
  /** kiln's own directory, never touched by container isolation (kaniko's --kaniko-dir). */
  kanikoDir: string;
  ignorePaths: string[];
  ignoreVarRun: boolean;
  snapshotMode: 'full' | 'redo' | 'time';
  /** One layer per stage, written when the stage ends (kaniko's --single-snapshot). */
  singleSnapshot: boolean;
  /** kaniko's --force-build-metadata: an empty layer for every instruction that changes no files. */
  forceBuildMetadata: boolean;
  /** Container isolation: empty "/" (but for ignored paths) when the build ends (kaniko's --cleanup). */
  cleanup: boolean;
  /** Extra attempts at extracting a layer (kaniko's --image-fs-extract-retry). */
  extractRetries: number;
  reproducible: boolean;
  platform: Platform;
  /** Layer compression (--compression; zstd applies to OCI images, Docker-format ones keep gzip, as in kaniko). */
  compression: Compression;
  /** Level for layer compression (kaniko's -1 means the library default: gzip 1, zstd 3). */
  compressionLevel: number;
  registry: RegistryOptions;
  /** --registry-map and --registry-mirror, merged as kaniko merges them. */
  registryMaps: RegistryMaps;
  skipDefaultRegistryFallback: boolean;
  skipPushPermissionCheck: boolean;
  /** The base-image cache the warmer fills (--cache-dir, read when it holds an index.json; --cache-ttl). */
  baseImageCache: { dir: string; ttlMs: number };
  /** The layer cache (--cache and its flags); undefined when off. */
  cache?: CacheOptions;
  pushIgnoreImmutableTagErrors: boolean;
  /** --secret id=X,src=PATH | id=X,env=VAR: what RUN --mount=type=secret reads, by id. */
  secrets?: Map<string, SecretSource>;
}

export interface CacheOptions {
  /** Registry repository of cache entries (--cache-repo, default <first destination>/cache). */
  repo: string;
  /** --cache-ttl in milliseconds. */
  ttlMs: number;
  runLayers: boolean;
  copyLayers: boolean;
  /** false with --no-push-cache. */
  push: boolean;
}
