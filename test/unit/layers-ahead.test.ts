// Base layers applied ahead of the first RUN (container isolation): in their order whatever order
// they arrive in, from a growing blob file for big layers, from the store when that fails, never on
// top of a layer that failed; and DirectoryRoot taking them as applied, listed in the same pass.
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import type { LayerListing } from '../../src/cache/layer-listing.js';
import { BlobStore } from '../../src/image/blob-store.js';
import { MediaType } from '../../src/image/types.js';
import { storedLayer } from '../../src/rootfs/build-root.js';
import { DirectoryRoot } from '../../src/rootfs/directory-root.js';
import { WORKER_MIN_BYTES } from '../../src/rootfs/extract-in-worker.js';
import { LayersAhead, type AheadLayer, type Growing } from '../../src/rootfs/layers-ahead.js';

const BIG = WORKER_MIN_BYTES;
const layer = (c: string, size = 100): AheadLayer => ({ digest: `sha256:${c.repeat(64)}`, size });
const growing = { tempPath: '/nowhere', shared: new SharedArrayBuffer(16) } satisfies Growing;
const listed = (name: string): LayerListing => ({ entries: [{ path: name }], whiteouts: [], opaque: [] } as unknown as LayerListing);
const turns = async (n = 5): Promise<void> => { for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r)); };

/** An ApplyLayer that records its calls and finishes each when the test says so. */
function recorder(fail: (l: AheadLayer, g?: Growing) => boolean = () => false) {
  const calls: string[] = [];
  const finish = new Map<string, () => void>();
  const apply = (l: AheadLayer, g?: Growing): Promise<LayerListing | undefined> => {
    const name = `${l.digest.slice(7, 8)}${g ? ' growing' : ''}`;
    calls.push(name);
    if (fail(l, g)) return Promise.reject(new Error(`${name} failed`));
    return new Promise((resolve) => finish.set(name, () => resolve(listed(name))));
  };
  return { calls, finish: (name: string) => finish.get(name)!(), apply };
}

describe('LayersAhead', () => {
  it('applies layers in their order, whatever order their blobs are stored in', async () => {
    const r = recorder();
    const ahead = new LayersAhead([layer('a'), layer('b'), layer('c')], r.apply);
    ahead.stored(layer('c').digest);
    ahead.stored(layer('b').digest);
    await turns();
    assert.deepEqual(r.calls, [], 'nothing goes on before the bottom layer');
    ahead.stored(layer('a').digest);
    await turns();
    assert.deepEqual(r.calls, ['a']);
    r.finish('a');
    await turns();
    assert.deepEqual(r.calls, ['a', 'b'], 'one at a time: b waits for a');
    r.finish('b');
    await turns();
    r.finish('c');
    assert.deepEqual(await ahead.listing(layer('c').digest), listed('c'));
  });

  it('follows a big layer as it downloads and a small one only once stored', async () => {
    const r = recorder();
    const ahead = new LayersAhead([layer('a', 10), layer('b', BIG)], r.apply);
    ahead.growing(layer('a').digest, growing);
    ahead.growing(layer('b').digest, growing);
    await turns();
    assert.deepEqual(r.calls, [], 'a small layer is not followed by a worker');
    ahead.stored(layer('a').digest);
    await turns();
    r.finish('a');
    await turns();
    assert.deepEqual(r.calls, ['a', 'b growing']);
    r.finish('b growing');
    assert.deepEqual(await ahead.listing(layer('b').digest), listed('b growing'));
  });

  it('applies the stored blob when following the download failed', async () => {
    const r = recorder((_l, g) => g !== undefined);
    const ahead = new LayersAhead([layer('a', BIG)], r.apply);
    ahead.growing(layer('a').digest, growing);
    await turns();
    assert.deepEqual(r.calls, ['a growing']);
    ahead.stored(layer('a').digest);
    await turns();
    assert.deepEqual(r.calls, ['a growing', 'a']);
    r.finish('a');
    assert.deepEqual(await ahead.listing(layer('a').digest), listed('a'));
  });

  it('applies nothing on top of a layer that failed, and nothing that never arrives', async () => {
    const r = recorder((l) => l.digest === layer('a').digest);
    const ahead = new LayersAhead([layer('a'), layer('b'), layer('c')], r.apply);
    ahead.stored(layer('a').digest);
    ahead.stored(layer('b').digest);
    await assert.rejects(ahead.listing(layer('b').digest), /a failed/);
    ahead.abandon(new Error('download failed'));
    await assert.rejects(ahead.take(layer('a').digest)!, /a failed/);
    await assert.rejects(ahead.listing(layer('c').digest), /a failed/);
    assert.deepEqual(r.calls, ['a']);

    const never = new LayersAhead([layer('d')], recorder().apply);
    never.abandon(new Error('download failed'));
    await assert.rejects(never.listing(layer('d').digest), /download failed/);
  });

  it('hands the root its layers in order, then nothing; a layer out of order is an internal error', async () => {
    const r = recorder();
    const ahead = new LayersAhead([layer('a'), layer('b')], r.apply);
    assert.throws(() => ahead.take(layer('b').digest), /internal error/);
    assert.ok(ahead.take(layer('a').digest));
    assert.ok(ahead.take(layer('b').digest));
    assert.equal(ahead.take(layer('c').digest), undefined);
  });
});

describe('DirectoryRoot.applyAhead', () => {
  const dirs: string[] = [];
  after(async () => { for (const d of dirs) await rm(d, { recursive: true, force: true }); });

  async function tarGz(entries: { name: string; content?: Buffer | string; type?: 'directory' }[]): Promise<Buffer> {
    const p = pack();
    const chunks: Buffer[] = [];
    p.on('data', (c) => { chunks.push(c as Buffer); });
    const ended = new Promise<void>((r) => p.on('end', () => r()));
    for (const e of entries) {
      if (e.type === 'directory') p.entry({ name: e.name, type: 'directory', mode: 0o755 });
      else p.entry({ name: e.name, mode: 0o644 }, Buffer.from(e.content ?? ''));
    }
    p.finalize();
    await ended;
    return gzipSync(Buffer.concat(chunks), { level: 1 });
  }

  it('applies a big and a small layer in order, whiteouts and ignored paths included, and the root takes them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-ahead-'));
    dirs.push(dir);
    const store = await BlobStore.createTemp();
    try {
      const big = randomBytes(BIG + 4096); // random: the gzip blob stays big enough for a worker
      const bottom = await store.putBytes(await tarGz([
        { name: 'etc/', type: 'directory' }, { name: 'etc/gone.txt', content: 'old\n' }, { name: 'data/big.bin', content: big },
        { name: 'kiln/own.txt', content: 'must not be written\n' },
      ]), MediaType.ociLayerGzip);
      const top = await store.putBytes(await tarGz([{ name: 'etc/.wh.gone.txt' }, { name: 'etc/new.txt', content: 'new\n' }]), MediaType.ociLayerGzip);
      assert.ok(bottom.size >= BIG, 'the bottom layer goes to a worker');
      await mkdir(join(dir, 'root'));
      const root = new DirectoryRoot({ path: join(dir, 'root'), isolation: 'chroot', workDir: join(dir, 'work'), ignored: ['kiln'], snapshotMode: 'full', extractRetries: 0 });
      const ahead = root.applyAhead([bottom, top], (digest) => storedLayer(store, digest))!;
      assert.equal(root.applyAhead([top], (digest) => storedLayer(store, digest)), undefined, 'one set of layers at a time');
      ahead.stored(top.digest); // the top arrives first: it must wait for the bottom
      ahead.stored(bottom.digest);
      const [bottomListing, topListing] = await Promise.all([ahead.listing(bottom.digest), ahead.listing(top.digest)]);
      assert.ok(bottomListing?.entries.some((e) => e.path === 'data/big.bin'), 'listed in the same pass');
      assert.deepEqual(topListing?.whiteouts, ['etc/gone.txt']);
      assert.deepEqual((await readdir(join(dir, 'root', 'etc'))).sort(), ['new.txt']);
      // Taken as applied, not extracted again: a file removed meanwhile stays removed.
      await rm(join(dir, 'root', 'etc', 'new.txt'));
      await root.addLayer(storedLayer(store, bottom.digest));
      await root.addLayer(storedLayer(store, top.digest));
      assert.deepEqual(await readdir(join(dir, 'root', 'etc')), []);
      assert.ok(root.applyAhead([], (digest) => storedLayer(store, digest)), 'once every layer was taken, a later stage may give more');
      assert.ok((await readFile(join(dir, 'root', 'data', 'big.bin'))).equals(big));
      assert.deepEqual(await readdir(join(dir, 'root')).then((n) => n.sort()), ['data', 'etc'], 'the ignored path is left alone');
    } finally {
      await store.dispose();
    }
  });
});
