// An OCI image layout (oci-layout, index.json, blobs/sha256/...). Like kaniko, the index is written
// anew holding just this image; blobs already in the directory are kept.
import { copyFile, link, mkdir, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BuiltImage } from '../image/image.js';
import { MediaType, type Index } from '../image/types.js';

export async function writeOciLayout(image: BuiltImage, dir: string, options: { refName?: string } = {}): Promise<void> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const digests = [image.configDescriptor.digest, ...image.manifest.layers.map((l) => l.digest), image.manifestDescriptor.digest];
  for (const digest of digests) {
    const target = join(blobs, digest.slice('sha256:'.length));
    if (await stat(target).then(() => true, () => false)) continue;
    // Content-addressed and immutable, so a hardlink is as good as a copy, and free.
    await link(image.store.path(digest), target).catch(() => copyFile(image.store.path(digest), target));
  }
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const index: Index = {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [{
      ...image.manifestDescriptor,
      ...(options.refName ? { annotations: { 'org.opencontainers.image.ref.name': options.refName } } : {}),
    }],
  };
  // Written last and atomically: the index never names a blob that is not there.
  const tmp = join(dir, 'index.json.tmp');
  await writeFile(tmp, JSON.stringify(index));
  await rename(tmp, join(dir, 'index.json'));
}
