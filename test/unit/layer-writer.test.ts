import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BlobStore, DigestMismatchError } from '../../src/image/blob-store.js';
import { writeLayer, type LayerEntry } from '../../src/layer/layer-writer.js';

const gzipOci = 'application/vnd.oci.image.layer.v1.tar+gzip';
const t = new Date('2024-05-06T07:08:09Z');
let dir: string;
let store: BlobStore;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-layer-'));
  store = new BlobStore(join(dir, 'blobs'));
  await writeFile(join(dir, 'src.txt'), 'from disk\n');
});
after(async () => rm(dir, { recursive: true, force: true }));

const longDir = 'd'.repeat(120) + '/' + 'e'.repeat(120);
const entries = (): LayerEntry[] => [
  { path: 'etc', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t },
  { path: 'etc/inline', type: 'file', mode: 0o4755, uid: 1, gid: 2, mtime: t, content: Buffer.from('inline\n') },
  { path: 'etc/disk', type: 'file', mode: 0o640, uid: 3000000, gid: 3000001, mtime: t, size: 10, source: join(dir, 'src.txt') },
  { path: 'etc/link', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: t, linkname: '../inline' },
  { path: 'etc/hard', type: 'hardlink', mode: 0o4755, uid: 1, gid: 2, mtime: t, linkname: 'etc/inline' },
  { path: 'tmp', type: 'dir', mode: 0o1777, uid: 0, gid: 0, mtime: t },
  { path: longDir, type: 'dir', mode: 0o700, uid: 0, gid: 0, mtime: t },
  { path: `${longDir}/${'f'.repeat(150)}.txt`, type: 'file', mode: 0o600, uid: 0, gid: 0, mtime: t, content: Buffer.from('deep') },
];

describe('writeLayer', () => {
  it('gives the same bytes for the same entries in any order, and a diff_id equal to sha256 of the tar', async () => {
    const a = await writeLayer(entries(), store, { mediaType: gzipOci });
    const b = await writeLayer(entries().reverse(), store, { mediaType: gzipOci });
    assert.deepEqual(a, b);
    const blob = store.path(a.descriptor.digest);
    const tar = execFileSync('gzip', ['-dc', blob], { maxBuffer: 1 << 24 });
    assert.equal(a.diffId, 'sha256:' + createHash('sha256').update(tar).digest('hex'));
    assert.equal(a.uncompressedSize, tar.length);
    assert.equal(a.descriptor.size, (await readFile(blob)).length);
  });

  it('writes what the system tar reads back: types, modes, big ids, links, long names', async () => {
    const layer = await writeLayer(entries(), store, { mediaType: gzipOci });
    const listing = execFileSync('tar', ['-tvzf', store.path(layer.descriptor.digest), '--numeric-owner'], { encoding: 'utf8' });
    const lines = listing.trim().split('\n').map((l) => l.replace(/\s+/g, ' '));
    assert.equal(lines.length, entries().length);
    assert.ok(lines.some((l) => /^drwxr-xr-x 0\/0 0 .* etc\/$/.test(l)), listing);
    assert.ok(lines.some((l) => l.startsWith('drwx------ ') && l.endsWith(`${longDir}/`)), listing);
    assert.ok(lines.some((l) => /^-rw-r----- 3000000\/3000001 10 .* etc\/disk$/.test(l)), listing);
    assert.ok(lines.some((l) => /^h.* etc\/hard link to etc\/inline$/.test(l)), listing);
    assert.ok(lines.some((l) => /^-rwsr-xr-x 1\/2 7 .* etc\/inline$/.test(l)), listing);
    assert.ok(lines.some((l) => /^l.* etc\/link -> \.\.\/inline$/.test(l)), listing);
    assert.ok(lines.some((l) => /^drwxrwxrwt .* tmp\/$/.test(l)), listing);
    assert.ok(lines.some((l) => l.endsWith(`${longDir}/${'f'.repeat(150)}.txt`)), listing);
    assert.ok(lines.every((l) => l.includes('2024-05-06')), listing);
  });

  it('writes an empty layer as a valid empty tar', async () => {
    const layer = await writeLayer([], store, { mediaType: gzipOci });
    assert.equal(execFileSync('tar', ['-tzf', store.path(layer.descriptor.digest)], { encoding: 'utf8' }), '');
  });

  it('streams a large file without holding it in memory', async () => {
    const big = join(dir, 'big.bin');
    const handle = await open(big, 'w');
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < 200; i++) {
      chunk.fill(i);
      await handle.write(chunk);
    }
    await handle.close();
    const before = process.memoryUsage().rss;
    let peak = before;
    const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
    try {
      await writeLayer([{ path: 'big.bin', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, size: 200 << 20, source: big }], store, { mediaType: gzipOci });
    } finally {
      clearInterval(timer);
    }
    assert.ok(peak - before < 64 << 20, `rss grew by ${((peak - before) / 1048576).toFixed(0)} MiB for a 200 MiB layer`);
  });
});

describe('BlobStore', () => {
  it('verifies content on read and reports corruption', async () => {
    const d = await store.putBytes(Buffer.from('{"a":1}'), 'application/json');
    const read = async (): Promise<string> => {
      let text = '';
      for await (const c of store.openVerified(d.digest)) text += (c as Buffer).toString();
      return text;
    };
    assert.equal(await read(), '{"a":1}');
    await writeFile(store.path(d.digest), '{"a":2}');
    await assert.rejects(read(), DigestMismatchError);
    assert.equal(await store.has(d.digest), true);
    assert.throws(() => store.path('md5:abc'), /unsupported digest/);
  });
});
