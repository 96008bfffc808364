// An OCI image layout (oci-layout, index.json, blobs/sha256/...). Like kaniko (go-containerregistry's
// layout.Write with an empty index, then AppendImage), the index is written anew holding just this
// image, while blobs already in the directory are kept: they are content-addressed.
import { randomBytes } from 'node:crypto';
import { copyFile, link, mkdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BuiltImage } from '../image/image.js';
import { MediaType, type Descriptor, type Index } from '../image/types.js';

/** The annotation that names a manifest in an index (what `umoci --image DIR:TAG` and `skopeo oci:DIR:TAG` look up). */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';

export async function writeOciLayout(image: BuiltImage, dir: string, options: { refName?: string } = {}): Promise<void> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const digests = new Set([image.configDescriptor.digest, ...image.manifest.layers.map((l) => l.digest), image.manifestDescriptor.digest]);
  for (const digest of digests) {
    const target = join(blobs, digest.slice('sha256:'.length));
    if (await isFile(target)) continue;
    const source = image.store.path(digest);
    if (!(await isFile(source))) throw new Error(`blob ${digest} is not in the blob store ${image.store.dir}`);
    await placeBlob(source, target);
  }
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const manifest: Descriptor = {
    mediaType: image.manifestDescriptor.mediaType,
    size: image.manifestDescriptor.size,
    digest: image.manifestDescriptor.digest,
    ...(options.refName ? { annotations: { [REF_NAME_ANNOTATION]: options.refName } } : {}),
  };
  const index: Index = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [manifest] };
  // Written last and atomically: the index never names a blob that is not there.
  await writeAtomically(join(dir, 'index.json'), Buffer.from(JSON.stringify(index)));
}

/** A hardlink when store and layout share a file system (blobs are immutable, so sharing is safe), else a copy. */
async function placeBlob(source: string, target: string): Promise<void> {
  try {
    await link(source, target);
    return;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return; // written meanwhile: same digest, same bytes
  }
  const tmp = `${target}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await copyFile(source, tmp);
    await rename(tmp, target);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

async function writeAtomically(path: string, data: Buffer): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

function isFile(path: string): Promise<boolean> {
  return stat(path).then((s) => s.isFile(), () => false);
}
