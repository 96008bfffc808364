// The distribution API for one repository: manifests and blobs, read with digest verification and
// written with HEAD-skips, cross-repository mounts, and monolithic or chunked uploads.
import { createHash } from 'node:crypto';
import { DigestMismatchError } from '../image/blob-store.js';
import { MediaType } from '../image/types.js';
import { log } from '../log/logger.js';
import { openAhead, RangeReader, type OpenBlob } from './range-reader.js';
import type { BodyCheck } from './resumable-body.js';
import { headerValue, type RegistryTransport, type TransportRequest } from './transport.js';
import { RegistryError } from './types.js';

export interface RegistryClientOptions {
  /** Blobs up to this size go in one PUT; larger ones in PATCH chunks. */
  chunkThreshold?: number;
  chunkSize?: number;
  /** Fresh upload sessions to try after a retryable failure. */
  uploadRetries?: number;
  uploadRetryDelayMs?: number;
}

/**
 * 64 MiB: most layers fit, and one PUT is the fewest round trips and the upload every registry
 * supports; bigger blobs go in 64 MiB PATCHes so no request body exceeds the caps of common
 * fronting proxies (Cloudflare's 100 MB) while staying far above S3-backed registries' 5 MiB part minimum.
 */
export const DEFAULT_CHUNK_THRESHOLD = 64 << 20;
export const DEFAULT_CHUNK_SIZE = 64 << 20;
export const MAX_MANIFEST_BYTES = 4 << 20;

const MANIFEST_ACCEPT = [MediaType.ociManifest, MediaType.ociIndex, MediaType.dockerManifest, MediaType.dockerManifestList].join(', ');
const MANIFEST_TYPES = new Set<string>(MANIFEST_ACCEPT.split(', '));
const DIGEST = /^(sha256|sha512):([0-9a-f]+)$/;

interface UploadSession {
  location: string;
  minChunk?: number;
  maxChunk?: number;
}

function isDigest(reference: string): boolean {
  return reference.includes(':');
}

function digestOf(bytes: Buffer, algorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

function positiveInt(value: string | undefined): number | undefined {
  const n = value === undefined ? NaN : Number(value);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

function withQuery(location: string, query: string): string {
  return location + (location.includes('?') ? '&' : '?') + query;
}

/** The media type of a manifest: Content-Type when it names one, else the document's own field or shape. */
function manifestMediaType(contentType: string | undefined, bytes: Buffer): string {
  const declared = contentType?.split(';')[0]!.trim();
  if (declared && MANIFEST_TYPES.has(declared)) return declared;
  try {
    const doc = JSON.parse(bytes.toString('utf8')) as { mediaType?: unknown; manifests?: unknown };
    if (typeof doc.mediaType === 'string' && doc.mediaType !== '') return doc.mediaType;
    return Array.isArray(doc.manifests) ? MediaType.ociIndex : MediaType.ociManifest;
  } catch {
    return declared ?? 'application/octet-stream';
  }
}

export class RegistryClient {
  private readonly chunkThreshold: number;
  private readonly chunkSize: number;
  private readonly uploadRetries: number;
  private readonly uploadRetryDelayMs: number;

  constructor(
    readonly transport: RegistryTransport,
    readonly repository: string,
    options: RegistryClientOptions = {},
  ) {
    this.chunkThreshold = options.chunkThreshold ?? DEFAULT_CHUNK_THRESHOLD;
    this.chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE;
    this.uploadRetries = options.uploadRetries ?? 2;
    this.uploadRetryDelayMs = options.uploadRetryDelayMs ?? 1000;
  }

  private get registry(): string {
    return this.transport.registry;
  }

  /** One token for everything a push does: asking for pull alone first would fetch a second one. */
  private get readScopes(): string[] {
    return this.transport.purpose === 'push' ? this.writeScopes : [`repository:${this.repository}:pull`];
  }

  private get writeScopes(): string[] {
    return [`repository:${this.repository}:push,pull`];
  }

  private name(reference: string): string {
    return `${this.repository}${isDigest(reference) ? '@' : ':'}${reference}`;
  }

  private request(req: Omit<TransportRequest, 'scopes'> & { scopes?: string[] }): ReturnType<RegistryTransport['request']> {
    return this.transport.request({ scopes: this.readScopes, ...req });
  }

  async getManifest(reference: string): Promise<{ bytes: Buffer; mediaType: string; digest: string }> {
    const algorithm = isDigest(reference) ? this.checkDigest(reference) : 'sha256';
    const operation = `fetching manifest ${this.name(reference)}`;
    const res = await this.request({ method: 'GET', path: `/v2/${this.repository}/manifests/${reference}`, headers: { accept: MANIFEST_ACCEPT }, expectStatus: [200], operation });
    const tooLarge = (): RegistryError =>
      new RegistryError(`${operation} on ${this.registry}: the manifest is larger than ${MAX_MANIFEST_BYTES >> 20} MiB, kiln's limit (OCI manifests are small; is this really a manifest?)`, this.registry, 200);
    if ((positiveInt(headerValue(res.headers, 'content-length')) ?? 0) > MAX_MANIFEST_BYTES) {
      await res.body.dump();
      throw tooLarge();
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      size += chunk.length;
      if (size > MAX_MANIFEST_BYTES) {
        await res.body.dump();
        throw tooLarge();
      }
      chunks.push(chunk as Buffer);
    }
    const bytes = Buffer.concat(chunks);
    const digest = digestOf(bytes, algorithm);
    if (isDigest(reference) && digest !== reference) {
      throw new RegistryError(`${operation} on ${this.registry}: the registry returned content that hashes to ${digest}`, this.registry, 200, true);
    }
    return { bytes, mediaType: manifestMediaType(headerValue(res.headers, 'content-type'), bytes), digest };
  }

  async headManifest(reference: string): Promise<{ digest: string; mediaType: string; size: number } | undefined> {
    if (isDigest(reference)) this.checkDigest(reference);
    const res = await this.request({
      method: 'HEAD', path: `/v2/${this.repository}/manifests/${reference}`, headers: { accept: MANIFEST_ACCEPT }, expectStatus: [200, 404],
      operation: `checking manifest ${this.name(reference)}`,
    });
    await res.body.dump();
    if (res.status === 404) return undefined;
    const digest = headerValue(res.headers, 'docker-content-digest');
    const mediaType = headerValue(res.headers, 'content-type')?.split(';')[0]!.trim();
    const size = positiveInt(headerValue(res.headers, 'content-length'));
    if (!digest || !DIGEST.test(digest) || !mediaType || !MANIFEST_TYPES.has(mediaType) || size === undefined) {
      // The registry did not say enough in headers (they are optional): ask for the manifest itself.
      const manifest = await this.getManifest(reference);
      return { digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.bytes.length };
    }
    if (isDigest(reference) && digest !== reference) {
      throw new RegistryError(`checking manifest ${this.name(reference)} on ${this.registry}: the registry reports digest ${digest}`, this.registry, 200);
    }
    return { digest, mediaType, size };
  }

  async blobExists(digest: string): Promise<boolean> {
    this.checkDigest(digest);
    const res = await this.request({ method: 'HEAD', path: `/v2/${this.repository}/blobs/${digest}`, expectStatus: [200, 404], operation: `checking blob ${digest} in ${this.repository}` });
    await res.body.dump();
    return res.status === 200;
  }

  async getBlob(digest: string): Promise<NodeJS.ReadableStream> {
    const algorithm = this.checkDigest(digest);
    const hash = createHash(algorithm);
    // Hashed in the response stream itself: no extra stream per blob, each byte hashed once.
    const check: BodyCheck = {
      update: (chunk) => { hash.update(chunk); },
      final: () => {
        const actual = `${algorithm}:${hash.digest('hex')}`;
        return actual === digest ? undefined : new DigestMismatchError(`blob ${digest} from ${this.registry}/${this.repository} hashes to ${actual}: the download was corrupted or the registry serves wrong content`);
      },
    };
    const res = await this.request({ method: 'GET', path: `/v2/${this.repository}/blobs/${digest}`, expectStatus: [200], operation: `fetching blob ${digest} of ${this.repository}`, check });
    return res.body;
  }

  async mountBlob(digest: string, fromRepository: string): Promise<boolean> {
    const session = await this.startUpload({ digest, from: fromRepository });
    if (!session) return true;
    await this.cancelUpload(session.location);
    return false;
  }

  /** `open` gives the blob's bytes for each attempt (a stream, or the promise of one, such as another registry's getBlob). */
  async pushBlob(
    descriptor: { digest: string; size: number }, open: OpenBlob, options: { mountFrom?: string[]; likelyNew?: boolean } = {},
  ): Promise<'exists' | 'mounted' | 'uploaded'> {
    let session: UploadSession | undefined;
    const sources = (options.mountFrom ?? []).filter((r) => r !== this.repository);
    if (options.likelyNew && sources.length === 0) {
      // A blob the build just made (its config) is almost never there: the upload session is asked
      // for alongside the check, a round trip sooner, and cancelled in the rare case it is there.
      const [exists, offered] = await Promise.allSettled([this.blobExists(descriptor.digest), this.startUpload()]);
      const started = offered.status === 'fulfilled' ? offered.value : undefined;
      if (exists.status === 'rejected' || exists.value) {
        if (started) await this.cancelUpload(started.location);
        if (exists.status === 'rejected') throw exists.reason;
        return 'exists';
      }
      session = started; // when the POST failed, the attempts below start another
    } else if (await this.blobExists(descriptor.digest)) {
      return 'exists';
    }
    for (const [i, from] of sources.entries()) {
      try {
        const offered = await this.startUpload({ digest: descriptor.digest, from });
        if (!offered) return 'mounted';
        // The last offer is used for the upload rather than abandoned and reopened.
        if (i === sources.length - 1) session = offered;
        else await this.cancelUpload(offered.location);
      } catch (e) {
        log.debug(`mounting ${descriptor.digest} from ${from} on ${this.registry} failed: ${(e as Error).message}`);
      }
    }
    // With no mount to try the bytes are surely needed: open them (a download from another registry,
    // perhaps) while the upload session starts, rather than one round trip later.
    const ahead = sources.length === 0 ? openAhead(open) : undefined;
    try {
      for (let attempt = 0; ; attempt++) {
        let current: UploadSession | undefined;
        try {
          // A retry may find the blob complete: the last attempt's failure was only its answer.
          if (attempt > 0 && (await this.blobExists(descriptor.digest))) return 'uploaded';
          current = session ?? (await this.startUpload());
          session = undefined;
          if (!current) return 'mounted';
          await this.upload(current, descriptor, ahead?.open ?? open);
          return 'uploaded';
        } catch (e) {
          if (current) await this.cancelUpload(current.location);
          if (!(e instanceof RegistryError && e.retryable) || attempt >= this.uploadRetries) throw e;
          log.warn(`upload of ${descriptor.digest} to ${this.registry}/${this.repository} failed: ${e.message}; starting a new upload (${attempt + 1}/${this.uploadRetries})`);
          await new Promise((resolve) => setTimeout(resolve, this.uploadRetryDelayMs * 3 ** attempt));
        }
      }
    } finally {
      ahead?.discard();
    }
  }

  async putManifest(reference: string, bytes: Buffer, mediaType: string): Promise<string> {
    const computed = digestOf(bytes, isDigest(reference) ? this.checkDigest(reference) : 'sha256');
    const target = `${this.registry}/${this.name(reference)}`;
    if (isDigest(reference) && computed !== reference) {
      throw new RegistryError(`refusing to push a manifest to ${target}: its content hashes to ${computed}`, this.registry);
    }
    const res = await this.transport.request({
      method: 'PUT', path: `/v2/${this.repository}/manifests/${reference}`, scopes: this.writeScopes, headers: { 'content-type': mediaType },
      body: bytes, expectStatus: [200, 201, 202, 204], operation: `pushing manifest ${this.name(reference)}`,
    });
    await res.body.dump();
    const reported = headerValue(res.headers, 'docker-content-digest');
    if (reported === undefined || !DIGEST.test(reported)) return computed;
    const ours = digestOf(bytes, DIGEST.exec(reported)![1]);
    if (ours !== reported) {
      throw new RegistryError(`${this.registry} stored the manifest for ${target} as ${reported}, but its content hashes to ${ours}`, this.registry, res.status);
    }
    return reported;
  }

  async checkPushPermission(): Promise<void> {
    try {
      const session = await this.startUpload();
      // The session only proves permission. As in go-containerregistry, it is cancelled without
      // waiting (best effort; the transport's close() still lets the request finish).
      if (session) void this.cancelUpload(session.location);
    } catch (e) {
      if (e instanceof RegistryError && (e.status === 401 || e.status === 403)) {
        const path = /repository path/.test(e.message) ? '' : `; check also that "${this.repository}" is the right repository path`;
        throw new RegistryError(`kiln cannot push to ${this.registry}/${this.repository}: ${e.message}${path}`, this.registry, e.status);
      }
      throw e;
    }
  }

  /** POST to start an upload (or mount): the session, or undefined when the blob was mounted (201). */
  private async startUpload(mount?: { digest: string; from: string }): Promise<UploadSession | undefined> {
    const base = `/v2/${this.repository}/blobs/uploads/`;
    const query = mount ? `?mount=${encodeURIComponent(mount.digest)}&from=${encodeURIComponent(mount.from)}` : '';
    const res = await this.transport.request({
      method: 'POST', path: base + query, scopes: mount ? [...this.writeScopes, `repository:${mount.from}:pull`] : this.writeScopes,
      expectStatus: mount ? [201, 202] : [202], operation: mount ? `mounting blob ${mount.digest} from ${mount.from} into ${this.repository}` : `starting an upload to ${this.repository}`,
    });
    await res.body.dump();
    if (res.status === 201) return undefined;
    const location = headerValue(res.headers, 'location');
    if (!location) throw new RegistryError(`starting an upload to ${this.registry}/${this.repository}: the registry gave no upload Location`, this.registry, res.status);
    // Relative Locations are relative to the upload URL; absolute ones may name another host.
    const resolved = new URL(location, `http://registry${base}`);
    return {
      location: /^https?:\/\//i.test(location) ? location : resolved.pathname + resolved.search,
      minChunk: positiveInt(headerValue(res.headers, 'oci-chunk-min-length')),
      maxChunk: positiveInt(headerValue(res.headers, 'oci-chunk-max-length')),
    };
  }

  /** Best effort: an abandoned session expires on its own anyway. */
  private async cancelUpload(location: string): Promise<void> {
    try {
      const res = await this.transport.request({ method: 'DELETE', path: location, scopes: this.writeScopes, retries: 0 });
      await res.body.dump();
    } catch (e) {
      log.debug(`cancelling an upload on ${this.registry}: ${(e as Error).message}`);
    }
  }

  private async upload(session: UploadSession, descriptor: { digest: string; size: number }, open: OpenBlob): Promise<void> {
    const { digest, size } = descriptor;
    const threshold = Math.min(this.chunkThreshold, session.maxChunk ?? Infinity);
    const operation = `uploading blob ${digest} to ${this.repository}`;
    let location = session.location;
    // Upload PUTs and PATCHes are not repeated in place: a registry that saw part of a body rejects
    // the repeat, so a failed upload starts a new session instead (pushBlob).
    if (size <= threshold) {
      const res = await this.transport.request({
        method: 'PUT', path: withQuery(location, `digest=${encodeURIComponent(digest)}`), scopes: this.writeScopes, body: open,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) }, retries: 0, expectStatus: [201, 204], operation,
      });
      await res.body.dump();
      return this.checkReportedDigest(res.headers, digest);
    }
    const chunkSize = Math.max(Math.min(this.chunkSize, session.maxChunk ?? Infinity), session.minChunk ?? 1);
    const reader = new RangeReader(open, size);
    try {
      for (let offset = 0; offset < size; offset += chunkSize) {
        const length = Math.min(chunkSize, size - offset);
        const end = offset + length - 1;
        const res = await this.transport.request({
          method: 'PATCH', path: location, scopes: this.writeScopes, body: () => reader.range(offset, length),
          headers: { 'content-type': 'application/octet-stream', 'content-length': String(length), 'content-range': `${offset}-${end}` },
          expectStatus: [202, 204], operation: `${operation} (bytes ${offset}-${end})`,
        });
        await res.body.dump();
        const acknowledged = /^(?:bytes=)?0-(\d+)$/.exec(headerValue(res.headers, 'range') ?? '')?.[1];
        if (acknowledged !== undefined && Number(acknowledged) !== end) {
          throw new RegistryError(`${operation}: the registry holds bytes 0-${acknowledged} after receiving 0-${end}`, this.registry, res.status, true);
        }
        location = headerValue(res.headers, 'location') ?? location;
      }
    } finally {
      reader.close();
    }
    const res = await this.transport.request({
      method: 'PUT', path: withQuery(location, `digest=${encodeURIComponent(digest)}`), scopes: this.writeScopes,
      headers: { 'content-length': '0' }, retries: 0, expectStatus: [201, 204], operation,
    });
    await res.body.dump();
    this.checkReportedDigest(res.headers, digest);
  }

  /**
   * Uploads a blob whose bytes are still being produced, in one streamed PATCH (docker push's own
   * kind), then closes the upload with the digest `finished` gives once the bytes are all written:
   * the registry checks it. Undefined from `finished` (the blob was never completed) cancels it.
   */
  async streamBlob(open: OpenBlob, finished: Promise<{ digest: string; size: number } | undefined>): Promise<'uploaded' | 'cancelled'> {
    const session = await this.startUpload();
    if (!session) throw new RegistryError(`starting an upload to ${this.registry}/${this.repository}: the registry gave no session`, this.registry);
    const operation = `streaming a blob to ${this.repository}`;
    try {
      const res = await this.transport.request({
        method: 'PATCH', path: session.location, scopes: this.writeScopes, body: open,
        headers: { 'content-type': 'application/octet-stream' }, retries: 0, expectStatus: [202, 204], operation,
      });
      await res.body.dump();
      const location = headerValue(res.headers, 'location') ?? session.location;
      const blob = await finished;
      if (!blob) {
        await this.cancelUpload(location);
        return 'cancelled';
      }
      const put = await this.transport.request({
        method: 'PUT', path: withQuery(location, `digest=${encodeURIComponent(blob.digest)}`), scopes: this.writeScopes,
        headers: { 'content-length': '0' }, retries: 0, expectStatus: [201, 204], operation: `uploading blob ${blob.digest} to ${this.repository}`,
      });
      await put.body.dump();
      this.checkReportedDigest(put.headers, blob.digest);
      return 'uploaded';
    } catch (e) {
      await this.cancelUpload(session.location);
      throw e;
    }
  }

  private checkReportedDigest(headers: Record<string, string | string[] | undefined>, digest: string): void {
    const reported = headerValue(headers, 'docker-content-digest');
    if (reported !== undefined && reported !== digest) {
      throw new RegistryError(`uploading blob ${digest} to ${this.registry}/${this.repository}: the registry stored it as ${reported}`, this.registry);
    }
  }

  /** The digest's algorithm; kiln verifies sha256 and sha512 only. */
  private checkDigest(digest: string): string {
    const m = DIGEST.exec(digest);
    if (!m) throw new RegistryError(`unsupported digest "${digest}" for ${this.registry}/${this.repository}: kiln verifies sha256 and sha512 digests`, this.registry);
    return m[1]!;
  }
}
