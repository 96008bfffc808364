// LayerCache entries against an in-memory storage: a hit is decided from the entry's manifest alone
// (its summary annotation), the config read only when the layer's files are asked for; entries
// written before the annotation existed still hit, through their config.
import { strict as assert } from 'node:assert';
import { after, describe, it } from 'node:test';
import { Readable } from 'node:stream';
import { BlobStore } from '../../src/image/blob-store.js';
import { MediaType, type Descriptor, type Manifest } from '../../src/image/types.js';
import type { CacheStorage } from '../../src/cache/cache-storage.js';
import { LayerCache } from '../../src/cache/layer-cache.js';
import type { LayerListing } from '../../src/cache/layer-listing.js';

/** A registry repository in memory, counting what lookups read. */
class MemoryStorage implements CacheStorage {
  readonly description = 'memory';
  readonly location = { registry: 'cache.example', repository: 'cache' };
  readonly manifests = new Map<string, Buffer>();
  readonly blobs = new Map<string, Buffer>();
  blobReads = 0;

  readonly manifestReads: string[] = [];

  async manifest(tag: string): Promise<Buffer | undefined> {
    this.manifestReads.push(tag);
    return this.manifests.get(tag);
  }

  async blob(digest: string): Promise<Buffer> {
    this.blobReads++;
    const bytes = this.blobs.get(digest);
    if (!bytes) throw new Error(`no blob ${digest}`);
    return bytes;
  }

  async putBlob(blob: Descriptor, open: () => Readable): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of open()) chunks.push(c as Buffer);
    this.blobs.set(blob.digest, Buffer.concat(chunks));
  }

  async putManifest(tags: readonly string[], bytes: Buffer): Promise<void> {
    for (const tag of tags) this.manifests.set(tag, bytes);
  }
}

const KEY = 'a'.repeat(64);
const LISTING: LayerListing = {
  entries: [{ path: 'app', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: new Date(1_700_000_000_000) } as LayerListing['entries'][number]],
  whiteouts: [], opaque: [],
};

describe('LayerCache', () => {
  const stores: BlobStore[] = [];
  after(async () => { for (const s of stores) await s.dispose(); });

  async function cacheWithEntry(): Promise<{ cache: LayerCache; storage: MemoryStorage }> {
    const store = await BlobStore.createTemp();
    stores.push(store);
    const layer = await store.putBytes(Buffer.from('not really a layer'), MediaType.ociLayerGzip);
    const storage = new MemoryStorage();
    const cache = new LayerCache(storage, store, { ttlMs: 3_600_000, push: true, platform: { os: 'linux', architecture: 'amd64' } });
    cache.save({
      key: KEY, position: 'p'.repeat(64), inputs: { parent: 'parent', items: [] }, createdBy: 'RUN make', created: new Date().toISOString(),
      layer: { descriptor: layer, diffId: `sha256:${'d'.repeat(64)}` }, listing: LISTING,
    });
    await cache.flush();
    return { cache, storage };
  }

  it('decides a hit from the manifest alone and reads the config only for the files', async () => {
    const { cache, storage } = await cacheWithEntry();
    storage.blobReads = 0;
    const hit = await cache.lookup(KEY);
    assert.ok('key' in hit, JSON.stringify(hit));
    assert.equal(hit.createdBy, 'RUN make');
    assert.equal(hit.layer?.diffId, `sha256:${'d'.repeat(64)}`);
    assert.equal(storage.blobReads, 0, 'no config read for the lookup');
    assert.deepEqual((await hit.listing?.())?.entries.map((e) => e.path), ['app']);
    assert.equal(storage.blobReads, 1);
  });

  it('still hits an entry without the summary annotation (written by an earlier kiln), through its config', async () => {
    const { cache, storage } = await cacheWithEntry();
    const manifest = JSON.parse(storage.manifests.get(KEY)!.toString()) as Manifest;
    assert.ok(manifest.annotations?.['dev.kiln.cache.entry'], 'the entry has the annotation to remove');
    delete manifest.annotations;
    storage.manifests.set(KEY, Buffer.from(JSON.stringify(manifest)));
    storage.blobReads = 0;
    const hit = await cache.lookup(KEY);
    assert.ok('key' in hit, JSON.stringify(hit));
    assert.equal(hit.createdBy, 'RUN make');
    assert.equal(storage.blobReads, 1);
    assert.deepEqual((await hit.listing?.())?.entries.map((e) => e.path), ['app']);
    assert.equal(storage.blobReads, 1, 'the listing came with the config already read');
  });

  it('takes the entry prefetched at the step when its key matches, and looks the key up otherwise', async () => {
    const { cache, storage } = await cacheWithEntry();
    cache.prefetch(['p'.repeat(64), 'q'.repeat(64)]);
    const hit = await cache.lookup(KEY, 'p'.repeat(64));
    assert.ok('key' in hit, JSON.stringify(hit));
    assert.ok(!storage.manifestReads.includes(KEY), 'no request by key');
    assert.deepEqual(await cache.lookup('e'.repeat(64), 'p'.repeat(64)), { miss: 'no entry' });
    assert.ok(storage.manifestReads.includes('e'.repeat(64)), 'another key at that step is looked up by key');
    assert.deepEqual(storage.manifestReads.filter((t) => t.startsWith('step-')).sort(), ['step-' + 'p'.repeat(40), 'step-' + 'q'.repeat(40)]);
  });

  it('misses on an entry whose annotation names another key, or none', async () => {
    const { cache, storage } = await cacheWithEntry();
    storage.manifests.set('b'.repeat(64), storage.manifests.get(KEY)!);
    assert.deepEqual(await cache.lookup('b'.repeat(64)), { miss: 'the entry under this key was not written by this kiln' });
    assert.deepEqual(await cache.lookup('c'.repeat(64)), { miss: 'no entry' });
  });
});
