// An image assembled from a config and layer blobs: the config document and the manifest are
// serialised once, stored in the blob store, and addressed by the sha256 of those exact bytes.
import type { BlobStore } from './blob-store.js';
import type { Compression } from '../layer/layer-writer.js';
import { MediaType, type Descriptor, type ImageConfig, type Manifest } from './types.js';

export type MediaTypeFamily = 'oci' | 'docker';

export interface BuiltImage {
  manifest: Manifest;
  manifestBytes: Buffer;
  /** Digest of manifestBytes: the image digest. */
  manifestDescriptor: Descriptor;
  config: ImageConfig;
  configBytes: Buffer;
  configDescriptor: Descriptor;
  /** Holds the config, the manifest and every layer blob. */
  store: BlobStore;
}

/**
 * A new layer's media type. zstd applies to OCI images only: Docker's schema 2 has no zstd layer type,
 * and kaniko too writes gzip layers into Docker-format images whatever --compression says.
 */
export function layerMediaType(family: MediaTypeFamily, compression: Compression = 'gzip'): string {
  if (family === 'docker') return MediaType.dockerLayerGzip;
  return compression === 'zstd' ? MediaType.ociLayerZstd : MediaType.ociLayerGzip;
}

/** Layer media types that name the same bytes in the other family (image-spec's compatibility matrix). */
const layerTypePairs: ReadonlyArray<readonly [oci: string, docker: string]> = [
  [MediaType.ociLayerGzip, MediaType.dockerLayerGzip],
  [MediaType.ociLayer, 'application/vnd.docker.image.rootfs.diff.tar'],
  ['application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip'],
];

/** A layer's media type in the manifest's family: kaniko relabels layers whose vendor differs from the image's. */
function layerTypeIn(family: MediaTypeFamily, mediaType: string): string {
  for (const [oci, docker] of layerTypePairs) {
    if (mediaType === oci || mediaType === docker) return family === 'oci' ? oci : docker;
  }
  return mediaType;
}

/**
 * Serialises the config (keys sorted at every level, no whitespace: the same config always gives the
 * same digest) and the manifest of the family's media types, and puts both into the store.
 */
export async function assembleImage(config: ImageConfig, layers: Descriptor[], store: BlobStore, family: MediaTypeFamily): Promise<BuiltImage> {
  if (layers.length !== config.rootfs.diff_ids.length) {
    throw new Error(`image has ${layers.length} layers but ${config.rootfs.diff_ids.length} diff_ids`);
  }
  const configBytes = Buffer.from(stableJson(config));
  const configDescriptor = await store.putBytes(configBytes, family === 'oci' ? MediaType.ociConfig : MediaType.dockerConfig);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: family === 'oci' ? MediaType.ociManifest : MediaType.dockerManifest,
    config: descriptorOf(configDescriptor),
    layers: layers.map((l) => descriptorOf({ ...l, mediaType: layerTypeIn(family, l.mediaType) })),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestDescriptor = await store.putBytes(manifestBytes, manifest.mediaType);
  return { manifest, manifestBytes, manifestDescriptor, config, configBytes, configDescriptor, store };
}

/** A descriptor with its keys in one order (mediaType, size, digest, annotations), as registries show them. */
function descriptorOf(d: Descriptor): Descriptor {
  return {
    mediaType: d.mediaType,
    size: d.size,
    digest: d.digest,
    ...(d.annotations && Object.keys(d.annotations).length ? { annotations: sortedKeys(d.annotations) } : {}),
  };
}

/** JSON with object keys sorted at every level; undefined members are left out as JSON.stringify does. */
export function stableJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? sortedKeys(v as Record<string, unknown>) : v));
}

function sortedKeys<T>(record: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
