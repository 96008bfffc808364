// Pushes a built image to each destination: blobs first (several at once, HEAD-skipped, mounted
// from the base image's repository when it lives on the same registry), the manifest last, so no
// tag ever points at an image whose blobs are not all there.
import type { BuiltImage } from '../image/image.js';
import { log } from '../log/logger.js';
import { referenceString, type ImageReference } from '../reference/reference.js';
import { RegistryError } from '../registry/types.js';
import { forEachLimited, withRetries } from './retry.js';
import type { RegistrySession } from './session.js';

export interface PushOptions {
  /** Where blobs of the base image came from: candidates for cross-repository mounts. */
  blobSources: { registry: string; repository: string }[];
  /** Layers that live in another repository than blobSources[0] (layer cache hits), by digest. */
  remoteLayers?: ReadonlyMap<string, { registry: string; repository: string }>;
  /** --push-retry: extra attempts of a whole push. */
  retries: number;
  ignoreImmutableTagErrors: boolean;
}

/** Registry messages that mean "this tag may not be overwritten" (Artifact Registry, ECR), as kaniko knows them. */
const IMMUTABLE_TAG_ERRORS = ['The repository has enabled tag immutability', 'cannot be overwritten because the repository is immutable'];

export async function pushImage(image: BuiltImage, destinations: readonly ImageReference[], session: RegistrySession, options: PushOptions): Promise<void> {
  for (const dest of destinations) {
    log.info(`Pushing image to ${referenceString(dest)}`);
    await withRetries(options.retries, async () => {
      try {
        await pushOnce(image, dest, session, options);
      } catch (e) {
        if (!(options.ignoreImmutableTagErrors && IMMUTABLE_TAG_ERRORS.some((m) => (e as Error).message.includes(m)))) throw e;
        log.info(`Immutable tag error ignored for ${dest.registry}/${dest.repository}@${image.manifestDescriptor.digest}`);
      }
    }, `push to ${referenceString(dest)}`);
    log.info(`Pushed ${dest.registry}/${dest.repository}@${image.manifestDescriptor.digest}`);
  }
}

async function pushOnce(image: BuiltImage, dest: ImageReference, session: RegistrySession, options: PushOptions): Promise<void> {
  const client = session.client(dest.registry, dest.repository, 'push');
  const mountFrom = options.blobSources
    .filter((s) => s.registry === dest.registry && s.repository !== dest.repository)
    .map((s) => s.repository);
  const blobs = [...image.manifest.layers, image.configDescriptor];
  await forEachLimited(blobs, 4, async (blob) => {
    // A base layer never downloaded streams from its source registry straight to this one, the
    // download's own stream (which verifies the digest) being the upload's body.
    const source = options.remoteLayers?.get(blob.digest) ?? options.blobSources[0];
    const local = await image.store.has(blob.digest);
    if (!local && !source) throw new Error(`internal error: blob ${blob.digest} is neither local nor in a known registry`);
    const open = local
      ? () => image.store.openVerified(blob.digest)
      : () => session.client(source!.registry, source!.repository, 'pull').getBlob(blob.digest);
    const how = await client.pushBlob(blob, open, { mountFrom });
    log.debug(`blob ${blob.digest}: ${how}`);
  });
  const reference = dest.tag ?? dest.digest ?? 'latest';
  const digest = await client.putManifest(reference, image.manifestBytes, image.manifest.mediaType);
  if (digest !== image.manifestDescriptor.digest) {
    throw new RegistryError(`${dest.registry} stored the manifest as ${digest}, expected ${image.manifestDescriptor.digest}`, dest.registry);
  }
}

/** kaniko's check before building: every destination repository must accept an upload. */
export async function checkPushPermissions(destinations: readonly ImageReference[], session: RegistrySession): Promise<void> {
  const seen = new Set<string>();
  for (const dest of destinations) {
    const key = `${dest.registry}/${dest.repository}`;
    if (seen.has(key)) continue;
    seen.add(key);
    await session.client(dest.registry, dest.repository, 'push').checkPushPermission();
  }
}
