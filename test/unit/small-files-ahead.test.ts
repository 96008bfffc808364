// The worker that reads a big layer's small files ahead: order, batches, errors, and the layers it feeds.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Worker } from 'node:worker_threads';
import { BlobStore } from '../../src/image/blob-store.js';
import { MediaType } from '../../src/image/types.js';
import { writeLayer, type LayerEntry } from '../../src/layer/layer-writer.js';
import { AHEAD_MIN_FILES, SmallFilesAhead } from '../../src/layer/small-files-ahead.js';

let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'kiln-small-files-')); });
after(async () => rm(dir, { recursive: true, force: true }));

/** Distinct bytes per file, so a file read at another's place shows. */
const bytesOf = (i: number, size: number): Buffer => Buffer.from(Array.from({ length: size }, (_, k) => (i * 31 + k) % 251));

/** File i's name: sorted as the tar sorts paths, they keep their index order. */
const nameOf = (i: number): string => `f${String(i).padStart(5, '0')}`;

async function makeFiles(sub: string, sizes: number[]): Promise<{ source: string; path: string; size: number }[]> {
  await mkdir(join(dir, sub), { recursive: true });
  return Promise.all(sizes.map(async (size, i) => {
    const source = join(dir, sub, nameOf(i));
    await writeFile(source, bytesOf(i, size));
    return { source, path: `${sub}/${nameOf(i)}`, size };
  }));
}

describe('SmallFilesAhead', () => {
  it('gives every file its own bytes, in order, across batches of files and of bytes', async () => {
    // 1,300 tiny files span batches of 512 files; the 200 KiB ones end batches by their bytes.
    const sizes = Array.from({ length: 1300 }, (_, i) => (i % 97 === 0 ? 200 << 10 : i % 13));
    const files = await makeFiles('order', sizes);
    const ahead = new SmallFilesAhead(files);
    try {
      for (const [i, f] of files.entries()) assert.deepEqual(await ahead.next(), bytesOf(i, f.size), f.path);
    } finally {
      ahead.close();
    }
  });

  it('says which file grew, shrank or went away, with the error of the file system', async () => {
    const files = await makeFiles('errors', [4, 4, 4, 4]);
    await writeFile(files[0]!.source, 'grown');
    await writeFile(files[1]!.source, 'x');
    await rm(files[2]!.source);
    const ahead = new SmallFilesAhead(files);
    try {
      await assert.rejects(ahead.next(), /errors\/f00000 \(errors\/f00000 in the layer\) changed while being written: expected 4 bytes, found more/);
      await assert.rejects(ahead.next(), /expected 4 bytes, found 1/);
      await assert.rejects(ahead.next(), (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && /no such file/.test(e.message));
      assert.deepEqual(await ahead.next(), bytesOf(3, 4));
    } finally {
      ahead.close();
    }
  });

  it('reads what the worker did not deliver itself when the worker dies', async () => {
    // More files than the worker may read ahead (8 batches of 512) before the first is taken.
    const files = await makeFiles('died', Array.from({ length: 6000 }, (_, i) => 1 + (i % 7)));
    const ahead = new SmallFilesAhead(files);
    const inside = ahead as unknown as { worker: Worker; readingHere: boolean };
    try {
      assert.deepEqual(await ahead.next(), bytesOf(0, files[0]!.size));
      // What a crash of the worker looks like from here: it exits, batches stop.
      await inside.worker.terminate();
      for (let i = 1; i < files.length; i++) assert.deepEqual(await ahead.next(), bytesOf(i, files[i]!.size), files[i]!.path);
      assert.equal(inside.readingHere, true, 'the last files were read on this thread');
    } finally {
      ahead.close();
    }
  });

  it('stops reading when closed early, and a closed reader refuses more', async () => {
    const files = await makeFiles('closed', Array.from({ length: 3000 }, () => 3));
    const ahead = new SmallFilesAhead(files);
    assert.deepEqual(await ahead.next(), bytesOf(0, 3));
    ahead.close();
    // What was read already may still be handed out; past it, the reader says it is closed.
    await assert.rejects(async () => { for (let i = 1; i < files.length; i++) await ahead.next(); }, /no longer read/);
  });
});

describe('layers with many small files', () => {
  it('are the same tar whether their files are read ahead or not', async () => {
    const count = AHEAD_MIN_FILES + 100;
    const files = await makeFiles('layer', Array.from({ length: count }, (_, i) => 1 + (i % 50)));
    const t = new Date('2024-01-02T03:04:05Z');
    const entries: LayerEntry[] = [
      { path: 'layer', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t },
      ...files.map((f): LayerEntry => ({ path: f.path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, size: f.size, source: f.source })),
    ];
    const store = new BlobStore(join(dir, 'blobs'));
    const ahead = await writeLayer(entries, store, { mediaType: MediaType.ociLayerGzip });
    // Under AHEAD_MIN_FILES small files the writer reads them itself: the same files in two halves.
    const half = Math.floor(count / 2);
    const firstHalf = await writeLayer(entries.slice(0, half), store, { mediaType: MediaType.ociLayerGzip });
    assert.ok(half < AHEAD_MIN_FILES);
    const tar = execFileSync('gzip', ['-dc', store.path(ahead.descriptor.digest)], { maxBuffer: 1 << 30 });
    const tarOfHalf = execFileSync('gzip', ['-dc', store.path(firstHalf.descriptor.digest)], { maxBuffer: 1 << 30 });
    // The first half's tar (without its two end blocks) opens the whole layer's tar byte for byte.
    assert.deepEqual(tar.subarray(0, tarOfHalf.length - 1024), tarOfHalf.subarray(0, tarOfHalf.length - 1024));
    const out = join(dir, 'extracted');
    await mkdir(out);
    execFileSync('tar', ['-x', '-C', out], { input: tar, maxBuffer: 1 << 30 });
    for (const i of [0, 1, half, count - 1]) assert.deepEqual(await readFile(join(out, 'layer', nameOf(i))), bytesOf(i, files[i]!.size));
  });

  it('fail when one of those files changed, naming it', async () => {
    const files = await makeFiles('changed', Array.from({ length: AHEAD_MIN_FILES + 1 }, () => 2));
    const t = new Date(0);
    const entries = files.map((f): LayerEntry => ({ path: f.path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, size: f.size, source: f.source }));
    await writeFile(files[AHEAD_MIN_FILES]!.source, 'more');
    const store = new BlobStore(join(dir, 'blobs-changed'));
    await assert.rejects(writeLayer(entries, store, { mediaType: MediaType.ociLayerGzip }), new RegExp(`changed/${nameOf(AHEAD_MIN_FILES)} in the layer\\) changed while being written`));
  });
});
