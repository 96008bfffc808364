// zstd layers (issue #8) checked against the zstd program run on its own, GNU tar and sha256.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { BlobStore } from '../../src/image/blob-store.js';
import { layerMediaType } from '../../src/image/image.js';
import { MediaType } from '../../src/image/types.js';
import { decompressLayer } from '../../src/layer/decompress.js';
import { writeLayer, type LayerEntry } from '../../src/layer/layer-writer.js';
import { createZstdCompressor, createZstdDecompressor } from '../../src/layer/zstd.js';

const t = new Date('2024-05-06T07:08:09Z');
let dir: string;
let store: BlobStore;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-zstd-'));
  store = new BlobStore(join(dir, 'blobs'));
});
after(async () => rm(dir, { recursive: true, force: true }));

async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** 6 MiB that zstd's threads split into several jobs: incompressible runs between text. */
function mixed(): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < 6; i++) parts.push(i % 2 ? randomBytes(1 << 20) : Buffer.from(`line ${i} of some text\n`.repeat(60_000)).subarray(0, 1 << 20));
  return Buffer.concat(parts);
}

const sha256 = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');

describe('zstd', () => {
  it('compresses to what `zstd -d` gives back, the same bytes whatever the thread count', async () => {
    const input = mixed();
    const compress = (workers: number, cut: number) => collect(Readable.from([input.subarray(0, cut), input.subarray(cut)]).pipe(createZstdCompressor(3, workers)));
    const compressed = await compress(2, 1000);
    assert.equal(compressed.readUInt32LE(0), 0xfd2fb528, 'a zstd frame');
    assert.ok(compressed.length < input.length * 0.6, `compressed ${compressed.length} of ${input.length}`);
    assert.ok(execFileSync('zstd', ['-d', '-c', '-q'], { input: compressed, maxBuffer: 1 << 26 }).equals(input));
    assert.ok(compressed[4]! & 0x04, 'the frame header announces a content checksum, as the zstd program writes');
    // One worker per core on a 2-core and a 64-core machine must give one digest (--reproducible).
    assert.ok((await compress(1, 3 << 20)).equals(compressed), '1 worker gives the same bytes');
    assert.ok((await compress(8, 77)).equals(compressed), '8 workers give the same bytes');
  });

  it('decompresses, and fails with zstd\'s message on corrupt data', async () => {
    const input = mixed();
    const compressed = execFileSync('zstd', ['-q', '-c'], { input, maxBuffer: 1 << 26 });
    assert.ok((await collect(Readable.from([compressed]).pipe(createZstdDecompressor('test data')))).equals(input));
    const truncated = compressed.subarray(0, compressed.length - 100);
    await assert.rejects(pipeline(Readable.from([truncated]), createZstdDecompressor('test data'), async function* (s) { for await (const _ of s) yield; }),
      /zstd decompression of test data failed \(zstd exited 1\)/);
  });

  it('names the Debian package when the decompressor is missing', async () => {
    const missing = createZstdDecompressor('test data', { file: join(dir, 'no-such-zstd'), prefix: [] });
    await assert.rejects(pipeline(Readable.from([Buffer.from('x')]), missing, async function* (s) { for await (const _ of s) yield; }),
      /needs the "zstd" program, which is not installed \(Debian package zstd\)/);
  });

  it('refuses levels zstd does not have', () => {
    assert.throws(() => createZstdCompressor(0), /zstd level 0: use 1-19/);
    assert.throws(() => createZstdCompressor(20), /zstd level 20/);
  });

  it('writes OCI tar+zstd layers: digest over the blob, diff_id over the tar, read back by decompressLayer and GNU tar', async () => {
    const entries: LayerEntry[] = [
      { path: 'app', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t },
      { path: 'app/data.bin', type: 'file', mode: 0o644, uid: 1000, gid: 1000, mtime: t, content: mixed() },
      { path: 'app/link', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: t, linkname: 'data.bin' },
    ];
    const mediaType = layerMediaType('oci', 'zstd');
    assert.equal(mediaType, MediaType.ociLayerZstd);
    const layer = await writeLayer(entries, store, { mediaType });
    assert.equal(layer.descriptor.mediaType, MediaType.ociLayerZstd);
    const blob = await readFile(store.path(layer.descriptor.digest));
    assert.equal(layer.descriptor.digest, sha256(blob));
    assert.equal(layer.descriptor.size, blob.length);
    const tar = execFileSync('zstd', ['-d', '-c', '-q'], { input: blob, maxBuffer: 1 << 26 });
    assert.equal(layer.diffId, sha256(tar));
    assert.equal(layer.uncompressedSize, tar.length);
    assert.ok((await collect(await decompressLayer(Readable.from([blob]), 'test'))).equals(tar), 'decompressLayer reads zstd by its magic');
    const listing = execFileSync('tar', ['-tv', '--numeric-owner', '--zstd', '-f', '-'], { input: blob, encoding: 'utf8' });
    assert.match(listing, /1000\/1000\s+6291456 .* app\/data\.bin/);
    // The same entries at a higher level: another blob, the same tar.
    const level9 = await writeLayer(entries, store, { mediaType, compressionLevel: 9 });
    assert.equal(level9.diffId, layer.diffId);
    assert.notEqual(level9.descriptor.digest, layer.descriptor.digest);
  });

  it('keeps gzip for Docker-format images, as kaniko does', () => {
    assert.equal(layerMediaType('docker', 'zstd'), MediaType.dockerLayerGzip);
    assert.equal(layerMediaType('oci', 'gzip'), MediaType.ociLayerGzip);
  });
});
