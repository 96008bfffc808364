// Pushes a built image to each destination: blobs first (several at once, HEAD-skipped, mounted
// from the base image's repository when it lives on the same registry), the manifest last, so no
// tag ever points at an image whose blobs are not all there. Blobs of the final image known before
// the build ends (its base layers, each layer of the target stage as it is written) may be uploaded
// while the build goes on (EarlyUploads); the push then only waits for them.
import { growsTo, openGrowing, type BlobGrowth } from '../image/blob-store.js';
import type { BuiltImage } from '../image/image.js';
import type { Descriptor } from '../image/types.js';
import { log } from '../log/logger.js';
import { referenceString, type ImageReference, type RepositoryLocation } from '../reference/reference.js';
import type { OpenBlob } from '../registry/range-reader.js';
import { RegistryError } from '../registry/types.js';
import { Slots } from '../util/slots.js';
import { withRetries } from './retry.js';
import type { RegistrySession } from './session.js';

/** Blobs a push sends at once. */
const PUSH_UPLOADS_AT_ONCE = 4;
/** Uploads at once during the build: few, so the build's own downloads keep most of the bandwidth. */
const EARLY_UPLOADS_AT_ONCE = 2;
/** Layers smaller than this go up once written: a streamed upload costs a round trip before its first byte. */
const STREAM_MIN_BYTES = 8 << 20;

export interface PushOptions {
  /** Where blobs of the base image came from: candidates for cross-repository mounts. */
  blobSources: RepositoryLocation[];
  /** Layers that live in another repository than blobSources[0] (layer cache hits), by digest. */
  remoteLayers?: ReadonlyMap<string, RepositoryLocation>;
  /** Uploads begun during the build: a blob one of them put in place is not sent again. */
  early?: EarlyUploads;
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
  const blobs = [...image.manifest.layers, image.configDescriptor];
  options.early?.hurry();
  const slots = new Slots(PUSH_UPLOADS_AT_ONCE);
  /** Blobs not checked because the image the tag named before has them (EarlyUploads.lookAtDestinations). */
  const assumed: Descriptor[] = [];
  // A blob that an early upload is sending is waited for outside the slots, so the config does not
  // queue behind the layers.
  await Promise.all(blobs.map(async (blob) => {
    if (await options.early?.present(dest, blob.digest)) {
      log.debug(`blob ${blob.digest}: in the image ${referenceString(dest)} named before`);
      assumed.push(blob);
      return;
    }
    if (await options.early?.uploaded(dest, blob.digest)) {
      log.debug(`blob ${blob.digest}: uploaded while the image was built`);
      return;
    }
    await slots.run(() => pushBlob(blob));
  }));
  const reference = dest.tag ?? dest.digest ?? 'latest';
  let digest: string;
  try {
    digest = await client.putManifest(reference, image.manifestBytes, image.manifest.mediaType);
  } catch (e) {
    // A registry that lost a blob its tagged image still lists: check and send them after all.
    if (!(e instanceof RegistryError && /BLOB_UNKNOWN/.test(e.message) && assumed.length)) throw e;
    log.warn(`${dest.registry} refused the manifest for a missing blob (${e.message}); checking every blob the earlier image had`);
    await Promise.all(assumed.map((blob) => slots.run(() => pushBlob(blob))));
    digest = await client.putManifest(reference, image.manifestBytes, image.manifest.mediaType);
  }
  if (digest !== image.manifestDescriptor.digest) {
    throw new RegistryError(`${dest.registry} stored the manifest as ${digest}, expected ${image.manifestDescriptor.digest}`, dest.registry);
  }

  async function pushBlob(blob: Descriptor): Promise<void> {
    // A base layer never downloaded streams from its source registry straight to this one, the
    // download's own stream (which verifies the digest) being the upload's body.
    const source = options.remoteLayers?.get(blob.digest) ?? options.blobSources[0];
    const local = await image.store.has(blob.digest);
    if (!local && !source) throw new Error(`internal error: blob ${blob.digest} is neither local nor in a known registry`);
    const open = local
      ? () => image.store.openVerified(blob.digest)
      : () => session.client(source!.registry, source!.repository, 'pull').getBlob(blob.digest);
    const likelyNew = blob.digest === image.configDescriptor.digest; // made by this build
    const how = await client.pushBlob(blob, open, { mountFrom: mountCandidates(blob), likelyNew });
    log.debug(`blob ${blob.digest}: ${how}`);
  }

  /**
   * Where a mount may find the blob. The config was made by this build: no repository has it, and
   * each try costs two round trips before the upload. A cache hit's layer is in its cache
   * repository; other layers may be in the base's or (pushed by the cache meanwhile) the cache's.
   */
  function mountCandidates(blob: Descriptor): string[] {
    if (blob.digest === image.configDescriptor.digest) return [];
    const cached = options.remoteLayers?.get(blob.digest);
    return mountSources(cached ? [cached] : options.blobSources, dest);
  }
}

/** Repositories of `dest`'s registry that may lend it a blob by cross-repository mount. */
function mountSources(sources: readonly RepositoryLocation[], dest: ImageReference): string[] {
  return sources.filter((s) => s.registry === dest.registry && s.repository !== dest.repository).map((s) => s.repository);
}


/**
 * Uploads of the final image's blobs to every destination, begun while the build goes on: a base
 * layer or a target-stage layer is final as soon as it is in the image, and its upload would
 * otherwise wait for the last step. Only blobs go up early, never a manifest, so no tag changes
 * before the push; a build that fails leaves at most unreferenced blobs, which registries collect.
 * An early upload that fails is only logged: the push uploads that blob again, with its retries.
 */
export class EarlyUploads {
  private readonly uploads = new Map<string, Promise<boolean>>();
  /** Layers streamed as they were written (offerGrowing), by destination and digest: true once there. */
  private readonly streaming = new Map<string, Promise<boolean>>();
  private readonly slots = new Slots(EARLY_UPLOADS_AT_ONCE);
  private stopped = false;
  /** The blobs of the image each destination's tag named when the build started, by destination repository and tag. */
  private readonly before = new Map<string, Promise<Set<string>>>();

  constructor(private readonly destinations: readonly ImageReference[], private readonly session: RegistrySession) {}

  /**
   * Asks each destination for the image its tag names now. CI pushes a rebuild to the tag of the
   * last build, whose blobs (base layers, unchanged steps) are then known to be there, without a
   * check each: a registry keeps every blob a tagged manifest lists. Anything else means nothing is known.
   */
  lookAtDestinations(): void {
    for (const dest of this.destinations) {
      const key = destinationKey(dest);
      if (!dest.tag || this.before.has(key)) continue;
      const blobs = this.session.client(dest.registry, dest.repository, 'push').getManifest(dest.tag)
        .then(({ bytes }) => blobsOf(bytes), () => new Set<string>());
      this.before.set(key, blobs);
    }
  }

  /** Whether the image `dest`'s tag named when the build started has `digest`. */
  async present(dest: ImageReference, digest: string): Promise<boolean> {
    return (await this.before.get(destinationKey(dest)))?.has(digest) ?? false;
  }

  /**
   * Starts uploading `blob` (read with `open`) to each destination; `sources` are mount candidates.
   * `mountableOnly`: only to destinations on a registry of one of the sources.
   */
  offer(blob: Descriptor, open: OpenBlob, sources: readonly RepositoryLocation[], options: { mountableOnly?: boolean } = {}): void {
    for (const dest of this.destinations) {
      const key = uploadKey(dest, blob.digest);
      if (this.uploads.has(key) || this.stopped) continue;
      if (options.mountableOnly && mountSources(sources, dest).length === 0) continue;
      // A layer that streamed as it was written is there; one whose stream did not happen goes up now.
      const streamed = this.streaming.get(key) ?? Promise.resolve(false);
      const upload = streamed.then((done) => done || this.slots.run(async () => {
        if (this.stopped) return false;
        if (await this.present(dest, blob.digest)) return true;
        const how = await this.session.client(dest.registry, dest.repository, 'push').pushBlob(blob, open, { mountFrom: mountSources(sources, dest) });
        log.debug(`blob ${blob.digest}: ${how} to ${dest.registry}/${dest.repository} while the image was built`);
        return true;
      })).catch((e: unknown) => {
        log.debug(`early upload of ${blob.digest} to ${dest.registry}/${dest.repository} failed (the push tries again): ${(e as Error).message}`);
        return false;
      });
      this.uploads.set(key, upload);
    }
  }

  /**
   * A layer of the final image still being written: once it has STREAM_MIN_BYTES, it streams to each
   * destination as it is written, rather than after its last byte (the registry checks the digest
   * when the writer has it). Returns what the writer calls with the finished layer (undefined: failed).
   */
  offerGrowing(growth: BlobGrowth): (layer: Descriptor | undefined) => void {
    let settle!: (layer: Descriptor | undefined) => void;
    const finished = new Promise<Descriptor | undefined>((resolve) => { settle = resolve; });
    const streams = this.destinations.map(async (dest) => {
      if (this.stopped || !(await growsTo(growth, STREAM_MIN_BYTES))) return false;
      return this.slots.run(async () => {
        if (this.stopped) return false;
        const how = await this.session.client(dest.registry, dest.repository, 'push').streamBlob(() => openGrowing(growth), finished);
        const layer = await finished;
        if (layer && how === 'uploaded') log.debug(`blob ${layer.digest}: streamed to ${dest.registry}/${dest.repository} as it was written`);
        return how === 'uploaded';
      });
    }).map((stream) => stream.catch((e: unknown) => {
      log.debug(`streaming a layer as it was written failed (it goes up once written): ${(e as Error).message}`);
      return false;
    }));
    return (layer) => {
      settle(layer);
      if (layer) for (const [i, dest] of this.destinations.entries()) this.streaming.set(uploadKey(dest, layer.digest), streams[i]!);
    };
  }

  /** Whether an early upload put `digest` in `dest`'s repository (waiting for one still running). */
  async uploaded(dest: ImageReference, digest: string): Promise<boolean> {
    const key = uploadKey(dest, digest);
    return (await this.uploads.get(key)) ?? (await this.streaming.get(key)) ?? false;
  }

  /** The build needs no more bandwidth (the push has begun, or only metadata is left): waiting uploads may run as many at once as the push's own. */
  hurry(): void {
    this.slots.grow(PUSH_UPLOADS_AT_ONCE);
  }

  /** The build failed: uploads not yet started never start. */
  stop(): void {
    this.stopped = true;
  }
}

function uploadKey(dest: ImageReference, digest: string): string {
  return `${dest.registry}/${dest.repository}@${digest}`;
}

function destinationKey(dest: ImageReference): string {
  return `${dest.registry}/${dest.repository}:${dest.tag ?? ''}`;
}

/** The config and layer digests of an image manifest (Docker v2s2 or OCI); none for an index or anything else. */
function blobsOf(bytes: Buffer): Set<string> {
  try {
    const m = JSON.parse(bytes.toString('utf8')) as { config?: { digest?: unknown }; layers?: { digest?: unknown }[] };
    if (!m.config || !Array.isArray(m.layers)) return new Set();
    return new Set([m.config, ...m.layers].map((d) => d.digest).filter((d): d is string => typeof d === 'string'));
  } catch {
    return new Set();
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
