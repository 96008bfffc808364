import { strict as assert } from 'node:assert';
import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { after, before, beforeEach, describe, it } from 'node:test';
import { DigestMismatchError } from '../../src/image/blob-store.js';
import { MediaType } from '../../src/image/types.js';
import { RegistryClient, type RegistryClientOptions } from '../../src/registry/client.js';
import { createTransport, type RegistryTransport } from '../../src/registry/transport.js';
import { RegistryError, type AuthenticatorFactory, type RegistryOptions } from '../../src/registry/types.js';

const sha256 = (data: Buffer | string): string => 'sha256:' + createHash('sha256').update(data).digest('hex');

const options: RegistryOptions = {
  insecure: false, insecurePull: false, insecureRegistries: [], skipTlsVerify: false, skipTlsVerifyPull: false,
  skipTlsVerifyRegistries: [], registryCertificates: new Map(), registryClientCertificates: new Map(),
  certificateDirectories: [], certificateFiles: [], pushRetry: 0, imageDownloadRetry: 0,
};

interface Seen { method: string; url: string; headers: IncomingMessage['headers']; size: number }
/** Returns true when it answered the request itself. */
type Hook = (req: IncomingMessage, res: ServerResponse, body: Buffer) => boolean;

/** Just enough of the distribution API, in memory, over plain HTTP on 127.0.0.1. */
class FakeRegistry {
  readonly blobs = new Map<string, Buffer>();
  readonly manifests = new Map<string, { bytes: Buffer; mediaType: string }>();
  readonly uploads = new Map<string, Buffer>();
  readonly seen: Seen[] = [];
  hooks: Hook[] = [];
  host = '';
  private readonly server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      this.seen.push({ method: req.method!, url: req.url!, headers: req.headers, size: body.length });
      if (req.url === '/v2/' || !this.hooks.some((hook) => hook(req, res, body))) this.handle(req, res, body);
    });
  });

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.host = `127.0.0.1:${(this.server.address() as { port: number }).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  requests(method?: string): string[] {
    return this.seen.filter((r) => r.url !== '/v2/' && (!method || r.method === method)).map((r) => `${r.method} ${r.url}`);
  }

  private handle(req: IncomingMessage, res: ServerResponse, body: Buffer): void {
    const url = new URL(req.url!, 'http://registry');
    const fail = (status: number, code: string, message: string): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code, message }] }));
    };
    let m: RegExpExecArray | null;
    if (url.pathname === '/v2/') {
      res.end('{}');
    } else if ((m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url.pathname))) {
      const [, repo, ref] = m as unknown as [string, string, string];
      if (req.method === 'PUT') {
        const entry = { bytes: body, mediaType: req.headers['content-type']! };
        this.manifests.set(`${repo}:${ref}`, entry);
        this.manifests.set(`${repo}:${sha256(body)}`, entry);
        res.writeHead(201, { 'docker-content-digest': sha256(body) });
        return void res.end();
      }
      const entry = this.manifests.get(`${repo}:${ref}`);
      if (!entry) return fail(404, 'MANIFEST_UNKNOWN', 'manifest unknown');
      res.writeHead(200, { 'content-type': entry.mediaType, 'content-length': entry.bytes.length, 'docker-content-digest': sha256(entry.bytes) });
      res.end(req.method === 'HEAD' ? undefined : entry.bytes);
    } else if ((m = /^\/v2\/(.+)\/blobs\/uploads\/$/.exec(url.pathname)) && req.method === 'POST') {
      const repo = m[1]!;
      const mount = url.searchParams.get('mount');
      const source = mount && this.blobs.get(`${url.searchParams.get('from')}@${mount}`);
      if (source) {
        this.blobs.set(`${repo}@${mount}`, source);
        res.writeHead(201, { location: `/v2/${repo}/blobs/${mount}` });
        return void res.end();
      }
      const id = randomUUID();
      this.uploads.set(id, Buffer.alloc(0));
      res.writeHead(202, { location: `/v2/${repo}/blobs/uploads/${id}?_state=0`, range: '0-0' });
      res.end();
    } else if ((m = /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/.exec(url.pathname))) {
      const [, repo, id] = m as unknown as [string, string, string];
      const data = this.uploads.get(id);
      if (!data) return fail(404, 'BLOB_UPLOAD_UNKNOWN', 'blob upload unknown to registry');
      if (req.method === 'DELETE') {
        this.uploads.delete(id);
        res.writeHead(204);
        return void res.end();
      }
      const range = req.headers['content-range'];
      if (range && Number(range.split('-')[0]) !== data.length) return fail(416, 'BLOB_UPLOAD_INVALID', 'out of order');
      const now = Buffer.concat([data, body]);
      this.uploads.set(id, now);
      if (req.method === 'PATCH') {
        res.writeHead(202, { location: `/v2/${repo}/blobs/uploads/${id}?_state=${now.length}`, range: `0-${now.length - 1}` });
        return void res.end();
      }
      const digest = url.searchParams.get('digest')!;
      if (sha256(now) !== digest) return fail(400, 'DIGEST_INVALID', 'provided digest did not match uploaded content');
      this.uploads.delete(id);
      this.blobs.set(`${repo}@${digest}`, now);
      res.writeHead(201, { location: `/v2/${repo}/blobs/${digest}`, 'docker-content-digest': digest });
      res.end();
    } else if ((m = /^\/v2\/(.+)\/blobs\/([^/]+)$/.exec(url.pathname))) {
      const blob = this.blobs.get(`${m[1]}@${m[2]}`);
      if (!blob) return fail(404, 'BLOB_UNKNOWN', 'blob unknown to registry');
      res.writeHead(200, { 'content-length': blob.length, 'docker-content-digest': m[2] });
      res.end(req.method === 'HEAD' ? undefined : blob);
    } else {
      fail(404, 'NOT_FOUND', 'no route');
    }
  }
}

const noAuth: AuthenticatorFactory = () => ({ cached: () => undefined, challenge: async () => { throw new Error('unexpected challenge'); } });

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('RegistryClient', () => {
  const registry = new FakeRegistry();
  const transports: RegistryTransport[] = [];
  const client = (repository = 'team/app', clientOptions: RegistryClientOptions = {}, auth: AuthenticatorFactory = noAuth): RegistryClient => {
    const transport = createTransport(registry.host, 'push', options, auth, { retryDelayMs: 1 });
    transports.push(transport);
    return new RegistryClient(transport, repository, { uploadRetryDelayMs: 1, ...clientOptions });
  };
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: {}, layers: [] }));

  before(() => registry.start());
  after(async () => {
    await Promise.all(transports.map((t) => t.close()));
    await registry.stop();
  });
  beforeEach(() => {
    registry.seen.length = 0;
    registry.hooks = [];
  });

  it('gets a manifest by tag and by digest, verifying the digest', async () => {
    registry.manifests.set('team/app:v1', { bytes: manifest, mediaType: MediaType.ociManifest });
    registry.manifests.set(`team/app:${sha256(manifest)}`, { bytes: manifest, mediaType: MediaType.ociManifest });
    assert.deepEqual(await client().getManifest('v1'), { bytes: manifest, mediaType: MediaType.ociManifest, digest: sha256(manifest) });
    assert.equal((await client().getManifest(sha256(manifest))).digest, sha256(manifest));
    assert.equal(registry.seen.at(-1)!.headers.accept,
      `${MediaType.ociManifest}, ${MediaType.ociIndex}, ${MediaType.dockerManifest}, ${MediaType.dockerManifestList}`);
    const wrong = sha256('something else');
    registry.manifests.set(`team/app:${wrong}`, { bytes: manifest, mediaType: MediaType.ociManifest });
    await assert.rejects(client().getManifest(wrong), new RegExp(`fetching manifest team/app@${wrong} on ${registry.host}: the registry returned content that hashes to ${sha256(manifest)}`));
  });

  it('refuses manifests over 4 MiB, declared or streamed', async () => {
    registry.manifests.set('team/app:huge', { bytes: Buffer.alloc((4 << 20) + 1, 32), mediaType: MediaType.ociManifest });
    await assert.rejects(client().getManifest('huge'), /the manifest is larger than 4 MiB/);
    registry.hooks.push((req, res) => {
      if (!req.url!.endsWith('/manifests/streamed')) return false;
      res.writeHead(200, { 'content-type': MediaType.ociManifest });
      for (let i = 0; i < 5; i++) res.write(Buffer.alloc(1 << 20, 32));
      res.end();
      return true;
    });
    await assert.rejects(client().getManifest('streamed'), /the manifest is larger than 4 MiB/);
  });

  it('says an image is not found, or that the repository is missing', async () => {
    await assert.rejects(client().getManifest('nope'), (e: unknown) => {
      assert.ok(e instanceof RegistryError && e.status === 404);
      assert.equal(e.message, `fetching manifest team/app:nope on ${registry.host} failed: HTTP 404 (MANIFEST_UNKNOWN: manifest unknown); image not found: check the name and tag`);
      return true;
    });
    registry.hooks.push((_req, res) => {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}');
      return true;
    });
    await assert.rejects(client('ghost/app').getManifest('v1'), /NAME_UNKNOWN: repository name not known to registry\); the repository does not exist on/);
  });

  it('heads manifests: digest, media type and size, or undefined', async () => {
    registry.manifests.set('team/app:v2', { bytes: manifest, mediaType: MediaType.dockerManifest });
    assert.deepEqual(await client().headManifest('v2'), { digest: sha256(manifest), mediaType: MediaType.dockerManifest, size: manifest.length });
    assert.equal(await client().headManifest('absent'), undefined);
  });

  it('streams blobs, failing with DigestMismatchError on wrong bytes', async () => {
    const data = Buffer.from('layer bytes');
    registry.blobs.set(`team/app@${sha256(data)}`, data);
    assert.deepEqual(await readAll(await client().getBlob(sha256(data))), data);
    assert.equal(await client().blobExists(sha256(data)), true);
    assert.equal(await client().blobExists(sha256('missing')), false);
    const claimed = sha256('what was asked for');
    registry.blobs.set(`team/app@${claimed}`, data);
    await assert.rejects(readAll(await client().getBlob(claimed)), (e: unknown) => {
      assert.ok(e instanceof DigestMismatchError);
      assert.match(e.message, new RegExp(`blob ${claimed} from ${registry.host}/team/app hashes to ${sha256(data)}`));
      return true;
    });
  });

  it('skips blobs the registry has, and uploads small ones in one PUT', async () => {
    const data = Buffer.from('config json');
    const digest = sha256(data);
    let opened = 0;
    const open = (): NodeJS.ReadableStream => { opened++; return Readable.from([data]); };
    assert.equal(await client().pushBlob({ digest, size: data.length }, open), 'uploaded');
    assert.deepEqual(registry.blobs.get(`team/app@${digest}`), data);
    assert.deepEqual(registry.requests().map((r) => r.replace(/[0-9a-f-]{36}\?_state=0/, 'ID')), [
      `HEAD /v2/team/app/blobs/${digest}`, 'POST /v2/team/app/blobs/uploads/', `PUT /v2/team/app/blobs/uploads/ID&digest=${encodeURIComponent(digest)}`,
    ]);
    assert.equal(registry.seen.at(-1)!.headers['content-length'], String(data.length));
    registry.seen.length = 0;
    assert.equal(await client().pushBlob({ digest, size: data.length }, open), 'exists');
    assert.deepEqual(registry.requests(), [`HEAD /v2/team/app/blobs/${digest}`]);
    assert.equal(opened, 1);
  });

  it('asks for the upload session alongside the check for a blob the build just made, cancelling it when the blob is there', async () => {
    const data = Buffer.from('a config this build made');
    const digest = sha256(data);
    // The check is held until the POST arrives (or 2 s pass): a client that waits for it is seen waiting.
    let postSeen!: () => void;
    const post = new Promise<void>((resolve) => { postSeen = resolve; });
    let checkAnsweredFirst = false;
    registry.hooks = [(req, res) => {
      if (req.method === 'POST') postSeen();
      if (req.method !== 'HEAD') return false;
      const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 2000).unref());
      void Promise.race([post, timeout]).then((first) => {
        if (first === 'timeout') checkAnsweredFirst = true;
        const there = registry.blobs.has(`team/app@${digest}`);
        res.writeHead(there ? 200 : 404, there ? { 'content-length': data.length } : {});
        res.end();
      });
      return true;
    }];
    const open = (): NodeJS.ReadableStream => Readable.from([data]);
    assert.equal(await client().pushBlob({ digest, size: data.length }, open, { likelyNew: true }), 'uploaded');
    assert.equal(checkAnsweredFirst, false, 'the POST did not wait for the check');
    assert.deepEqual(registry.blobs.get(`team/app@${digest}`), data);
    assert.deepEqual(registry.requests().map((r) => r.split(' ')[0]).sort(), ['HEAD', 'POST', 'PUT']);
    registry.seen.length = 0;
    assert.equal(await client().pushBlob({ digest, size: data.length }, open, { likelyNew: true }), 'exists');
    assert.deepEqual(registry.requests().map((r) => r.split(' ')[0]).sort(), ['DELETE', 'HEAD', 'POST'], 'the session is cancelled');
    assert.equal(registry.uploads.size, 0);
  });

  it('streams a blob whose digest comes at the end in one PATCH, or cancels the upload when it never comes', async () => {
    const data = Buffer.concat([Buffer.alloc(300_000, 1), Buffer.alloc(300_000, 2)]);
    const digest = sha256(data);
    let finish!: (blob: { digest: string; size: number } | undefined) => void;
    const finished = new Promise<{ digest: string; size: number } | undefined>((resolve) => { finish = resolve; });
    // The bytes come in two parts with a pause between them, as a layer being compressed does.
    const open = (): NodeJS.ReadableStream => Readable.from((async function* () {
      yield data.subarray(0, 300_000);
      await new Promise((resolve) => setTimeout(resolve, 20));
      yield data.subarray(300_000);
      finish({ digest, size: data.length });
    })());
    assert.equal(await client().streamBlob(open, finished), 'uploaded');
    assert.deepEqual(registry.blobs.get(`team/app@${digest}`), data);
    const methods = registry.seen.filter((r) => r.url !== '/v2/').map((r) => r.method);
    assert.deepEqual(methods, ['POST', 'PATCH', 'PUT']);
    const patch = registry.seen.find((r) => r.method === 'PATCH')!;
    assert.equal(patch.headers['content-range'], undefined);
    assert.equal(patch.size, data.length);

    registry.seen.length = 0;
    assert.equal(await client().streamBlob(() => Readable.from([Buffer.from('abandoned')]), Promise.resolve(undefined)), 'cancelled');
    assert.deepEqual(registry.seen.filter((r) => r.url !== '/v2/').map((r) => r.method), ['POST', 'PATCH', 'DELETE']);
  });

  it('uploads large blobs in PATCH chunks with Content-Range, following each Location', async () => {
    const data = Buffer.from('0123456789abcdefghijk');
    const digest = sha256(data);
    // Pieces that do not line up with chunks, to exercise the splitting.
    const open = (): NodeJS.ReadableStream => Readable.from([data.subarray(0, 3), data.subarray(3, 13), data.subarray(13)]);
    assert.equal(await client('team/big', { chunkThreshold: 8, chunkSize: 8 }).pushBlob({ digest, size: data.length }, open), 'uploaded');
    assert.deepEqual(registry.blobs.get(`team/big@${digest}`), data);
    const patches = registry.seen.filter((r) => r.method === 'PATCH');
    assert.deepEqual(patches.map((r) => [r.headers['content-range'], r.size, r.url.replace(/.*_state=/, '')]), [['0-7', 8, '0'], ['8-15', 8, '8'], ['16-20', 5, '16']]);
    const put = registry.seen.at(-1)!;
    assert.deepEqual([put.method, put.size, put.url.replace(/.*_state=/, '')], ['PUT', 0, `21&digest=${encodeURIComponent(digest)}`]);
  });

  it('resends a chunk from a reopened stream after a mid-upload auth challenge', async () => {
    const data = Buffer.from('chunked upload that outlives its token');
    const digest = sha256(data);
    let challenged = false;
    registry.hooks.push((req, res) => {
      if (req.method !== 'PATCH' || req.headers['content-range'] !== '10-19' || challenged) return false;
      challenged = true;
      res.writeHead(401, { 'www-authenticate': 'Bearer realm="http://auth/token",error="invalid_token"' });
      res.end();
      return true;
    });
    let opened = 0;
    const auth: AuthenticatorFactory = () => ({ cached: () => undefined, challenge: async () => 'Bearer renewed' });
    const open = (): NodeJS.ReadableStream => { opened++; return Readable.from([data]); };
    assert.equal(await client('team/token', { chunkThreshold: 10, chunkSize: 10 }, auth).pushBlob({ digest, size: data.length }, open), 'uploaded');
    assert.deepEqual(registry.blobs.get(`team/token@${digest}`), data);
    assert.equal(opened, 2);
    assert.deepEqual(registry.seen.filter((r) => r.method === 'PATCH').map((r) => [r.headers['content-range'], r.size]),
      [['0-9', 10], ['10-19', 10], ['10-19', 10], ['20-29', 10], ['30-37', 8]]);
  });

  it('streams a blob from another repository into an upload, whole or in chunks, refusing wrong bytes', async () => {
    const data = Buffer.from(Array.from({ length: 50_000 }, (_, i) => i % 251));
    const digest = sha256(data);
    registry.blobs.set(`team/source@${digest}`, data);
    const claimed = sha256('what the manifest says');
    registry.blobs.set(`team/source@${claimed}`, data);
    for (const [repository, chunking] of [['team/whole', {}], ['team/chunked', { chunkThreshold: 16_384, chunkSize: 16_384 }]] as const) {
      assert.equal(await client(repository, chunking).pushBlob({ digest, size: data.length }, () => client('team/source').getBlob(digest)), 'uploaded');
      assert.deepEqual(registry.blobs.get(`${repository}@${digest}`), data);
      registry.seen.length = 0;
      // The source serves other bytes than the digest names: the upload fails on kiln's own check
      // (or the registry's, for a single PUT that arrived whole) and the blob never lands.
      await assert.rejects(client(repository, chunking).pushBlob({ digest: claimed, size: data.length }, () => client('team/source').getBlob(claimed)),
        /hashes to|DIGEST_INVALID/);
      assert.equal(registry.blobs.has(`${repository}@${claimed}`), false);
      if (repository === 'team/chunked') assert.deepEqual(registry.requests('PUT'), []);
    }
  });

  it('mounts from another repository, or uploads into the session the registry offers instead', async () => {
    const data = Buffer.from('base layer');
    const digest = sha256(data);
    registry.blobs.set(`library/base@${digest}`, data);
    const open = (): NodeJS.ReadableStream => Readable.from([data]);
    assert.equal(await client('team/mounted').pushBlob({ digest, size: data.length }, open, { mountFrom: ['library/base'] }), 'mounted');
    assert.deepEqual(registry.requests('POST'), [`POST /v2/team/mounted/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=library%2Fbase`]);
    registry.seen.length = 0;
    assert.equal(await client('team/offered').pushBlob({ digest, size: data.length }, open, { mountFrom: ['elsewhere/one', 'elsewhere/two'] }), 'uploaded');
    assert.equal(registry.requests('POST').length, 2);
    assert.equal(registry.requests('DELETE').length, 1, 'the first offered session is abandoned, the last one used');
    assert.deepEqual(registry.blobs.get(`team/offered@${digest}`), data);
    registry.seen.length = 0;
    assert.equal(await client('team/other').mountBlob(digest, 'library/base'), true);
    assert.equal(await client('team/other2').mountBlob(digest, 'nowhere/repo'), false);
    assert.deepEqual(registry.requests().map((r) => r.split(' ')[0]), ['POST', 'POST', 'DELETE']);
    assert.equal(registry.uploads.size, 0);
  });

  it('starts a new upload session after a retryable failure', async () => {
    const data = Buffer.from('flaky');
    const digest = sha256(data);
    let failures = 1;
    registry.hooks.push((req, res) => {
      if (req.method !== 'PUT' || failures-- <= 0) return false;
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"UNKNOWN","message":"storage hiccup"}]}');
      return true;
    });
    assert.equal(await client('team/flaky').pushBlob({ digest, size: data.length }, () => Readable.from([data])), 'uploaded');
    assert.deepEqual(registry.requests().map((r) => r.split(' ')[0]), ['HEAD', 'POST', 'PUT', 'DELETE', 'HEAD', 'POST', 'PUT']);
  });

  it('puts manifests and checks the digest the registry reports', async () => {
    assert.equal(await client().putManifest('v3', manifest, MediaType.ociManifest), sha256(manifest));
    assert.equal(registry.seen.at(-1)!.headers['content-type'], MediaType.ociManifest);
    assert.equal(await client().putManifest(sha256(manifest), manifest, MediaType.ociManifest), sha256(manifest));
    await assert.rejects(client().putManifest(sha256('other'), manifest, MediaType.ociManifest), /refusing to push a manifest to .*: its content hashes to/);
    registry.hooks.push((req, res) => {
      res.writeHead(201, { 'docker-content-digest': sha256('not it') });
      res.end();
      return true;
    });
    await assert.rejects(client().putManifest('v4', manifest, MediaType.ociManifest),
      new RegExp(`stored the manifest for ${registry.host}/team/app:v4 as ${sha256('not it')}, but its content hashes to ${sha256(manifest)}`));
  });

  it('checks push permission with an upload it cancels, and explains a refusal', async () => {
    registry.hooks.push((req, res) => {
      if (!req.url!.startsWith('/v2/nobody/')) return false;
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
      return true;
    });
    await assert.rejects(client('nobody/app').checkPushPermission(),
      /^RegistryError: kiln cannot push to .*\/nobody\/app: .* HTTP 401 .*check the credentials kiln has for .*; check also that "nobody\/app" is the right repository path$/);
    registry.seen.length = 0;
    await client().checkPushPermission();
    // The cancellation is not waited for.
    for (let i = 0; i < 100 && registry.requests().length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(registry.requests().map((r) => r.split(' ')[0]), ['POST', 'DELETE']);
    registry.hooks.push((req, res) => {
      res.writeHead(403, { 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}');
      return true;
    });
    await assert.rejects(client('someone/else').checkPushPermission(), (e: unknown) => {
      assert.ok(e instanceof RegistryError && e.status === 403);
      assert.match(e.message, /^kiln cannot push to 127\.0\.0\.1:\d+\/someone\/else: starting an upload to someone\/else on .* HTTP 403 \(DENIED: requested access to the resource is denied\); access denied: check that these credentials may push to this repository and that the repository path is right$/);
      return true;
    });
  });
});
