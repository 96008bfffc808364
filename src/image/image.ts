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
  /** Holds the config and every layer blob. */
  store: BlobStore;
}

export function layerMediaType(family: MediaTypeFamily, compression: Compression = 'gzip'): string {
  void compression; // gzip is the only compression until zstd arrives (issue #8)
  return family === 'oci' ? MediaType.ociLayerGzip : MediaType.dockerLayerGzip;
}

export async function assembleImage(config: ImageConfig, layers: Descriptor[], store: BlobStore, family: MediaTypeFamily): Promise<BuiltImage> {
  if (layers.length !== config.rootfs.diff_ids.length) {
    throw new Error(`image has ${layers.length} layers but ${config.rootfs.diff_ids.length} diff_ids`);
  }
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDescriptor = await store.putBytes(configBytes, family === 'oci' ? MediaType.ociConfig : MediaType.dockerConfig);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: family === 'oci' ? MediaType.ociManifest : MediaType.dockerManifest,
    config: configDescriptor,
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestDescriptor = await store.putBytes(manifestBytes, manifest.mediaType);
  return { manifest, manifestBytes, manifestDescriptor, config, configBytes, configDescriptor, store };
}
