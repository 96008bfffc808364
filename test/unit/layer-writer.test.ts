// Layers are checked against independent readers: the system gzip, sha256sum and GNU tar.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { lstat, mkdtemp, open, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BlobStore } from '../../src/image/blob-store.js';
import { MediaType } from '../../src/image/types.js';
import { encodePaxRecords } from '../../src/layer/tar-format.js';
import { writeLayer, type LayerEntry } from '../../src/layer/layer-writer.js';

const mediaType = MediaType.ociLayerGzip;
const t = new Date('2024-05-06T07:08:09.750Z');
let dir: string;
let store: BlobStore;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-layer-'));
  store = new BlobStore(join(dir, 'blobs'));
  await writeFile(join(dir, 'src.txt'), 'from disk\n');
});
after(async () => rm(dir, { recursive: true, force: true }));

const dir241 = 'd'.repeat(120) + '/' + 'e'.repeat(120); // > 100 bytes
const file392 = `${dir241}/${'f'.repeat(146)}.txt`; // > 255 bytes
const binaryXattr = Buffer.from([0x01, 0x00, 0xff, 0x3d, 0x0a, 0x80, 0x00]); // NUL, "=", newline, non-UTF-8
const entries = (): LayerEntry[] => [
  { path: 'etc', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t },
  { path: 'etc/inline', type: 'file', mode: 0o4755, uid: 1, gid: 2, mtime: t, content: Buffer.from('inline\n') },
  { path: 'etc/disk', type: 'file', mode: 0o640, uid: 3000000, gid: 3000001, mtime: t, size: 10, source: join(dir, 'src.txt') },
  { path: 'etc/mid-ids', type: 'file', mode: 0o644, uid: 300000, gid: 262144, mtime: t, content: Buffer.alloc(0) },
  { path: 'etc/link', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: t, linkname: '../inline' },
  // Sorts before its target: the writer must put the content on etc/a-hard and link etc/inline to it.
  { path: 'etc/a-hard', type: 'hardlink', mode: 0o4755, uid: 1, gid: 2, mtime: t, linkname: 'etc/inline' },
  { path: 'etc/z-hard', type: 'hardlink', mode: 0o4755, uid: 1, gid: 2, mtime: t, linkname: 'etc/inline' },
  { path: 'etc/xattrs', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, content: Buffer.from('x'), xattrs: { 'user.bin': binaryXattr, 'user.text': Buffer.from('héllo') } },
  { path: 'shared', type: 'dir', mode: 0o2775, uid: 0, gid: 50, mtime: t },
  { path: 'tmp', type: 'dir', mode: 0o1777, uid: 0, gid: 0, mtime: t },
  { path: 'ünïcode', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, content: Buffer.from('utf8 name') },
  { path: 'd'.repeat(120), type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: t },
  { path: dir241, type: 'dir', mode: 0o700, uid: 0, gid: 0, mtime: t },
  { path: file392, type: 'file', mode: 0o600, uid: 0, gid: 0, mtime: t, content: Buffer.from('deep') },
  { path: `${dir241}/long-link`, type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: t, linkname: `/${file392}` },
  { path: `${dir241}/long-hard`, type: 'hardlink', mode: 0o600, uid: 0, gid: 0, mtime: t, linkname: file392 },
];

function gunzip(path: string): Buffer {
  return execFileSync('gzip', ['-dc', path], { maxBuffer: 1 << 26 });
}

function tarList(path: string): string[] {
  const listing = execFileSync('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-tvvzf', path], { encoding: 'utf8' });
  return listing.trimEnd().split('\n').map((l) => l.replace(/\s+/g, ' '));
}

/** The line `tar -tvv` prints for `name` (ending the line, so prefixes do not match). */
function lineFor(lines: string[], name: string): string {
  const line = lines.find((l) => l.endsWith(` ${name}`) || l.includes(` ${name} -> `) || l.includes(` ${name} link to `));
  assert.ok(line, `no entry ${name} in\n${lines.join('\n')}`);
  return line;
}

async function extract(blob: string): Promise<string> {
  const out = await mkdtemp(join(dir, 'x-'));
  execFileSync('tar', ['--xattrs', '--xattrs-include=user.*', '--numeric-owner', '-xpzf', blob, '-C', out]);
  return out;
}

describe('writeLayer', () => {
  it('writes byte-identical layers for the same entries, in whatever order they come', async () => {
    const other = new BlobStore(join(dir, 'other-blobs'));
    const shuffled = entries().sort(() => Math.random() - 0.5);
    const a = await writeLayer(entries(), store, { mediaType });
    const b = await writeLayer(entries().reverse(), other, { mediaType });
    const c = await writeLayer(shuffled, other, { mediaType });
    assert.deepEqual(b, a);
    assert.deepEqual(c, a);
    assert.deepEqual(await readFile(other.path(b.descriptor.digest)), await readFile(store.path(a.descriptor.digest)));
    assert.equal(a.descriptor.mediaType, mediaType);
  });

  it('reports the diff_id sha256sum computes over the gunzipped blob, and the sizes', async () => {
    const layer = await writeLayer(entries(), store, { mediaType });
    const blob = store.path(layer.descriptor.digest);
    const sum = execFileSync('sh', ['-c', 'gzip -dc "$1" | sha256sum', 'sh', blob], { encoding: 'utf8' });
    assert.equal(layer.diffId, 'sha256:' + sum.split(' ')[0]);
    assert.equal(layer.descriptor.digest, 'sha256:' + execFileSync('sha256sum', [blob], { encoding: 'utf8' }).split(' ')[0]);
    assert.equal(layer.descriptor.size, (await readFile(blob)).length);
    assert.equal(layer.uncompressedSize, gunzip(blob).length);
  });

  it('lists with GNU tar as written: sorted, types, modes, numeric ids, links, long and non-ASCII names, mtimes', async () => {
    const layer = await writeLayer(entries(), store, { mediaType });
    const lines = tarList(store.path(layer.descriptor.digest)).filter((l) => !l.startsWith(' x: '));
    const names = lines.map((l) => l.replace(/^.* 2024-05-06 07:08 /, '').replace(/ (->|link to) .*$/, ''));
    assert.deepEqual(names, [
      `${'d'.repeat(120)}/`, `${dir241}/`, file392, `${dir241}/long-hard`, `${dir241}/long-link`,
      'etc/', 'etc/a-hard', 'etc/disk', 'etc/inline', 'etc/link', 'etc/mid-ids', 'etc/xattrs', 'etc/z-hard',
      'shared/', 'tmp/', 'ünïcode',
    ]);
    assert.ok(lines.every((l) => / 2024-05-06 07:08 /.test(l)), 'mtime from the entry, in UTC');
    assert.match(lineFor(lines, 'etc/'), /^drwxr-xr-x 0\/0 0 /);
    assert.match(lineFor(lines, 'etc/a-hard'), /^-rwsr-xr-x 1\/2 7 /);
    assert.match(lineFor(lines, 'etc/inline'), /^hrwsr-xr-x 1\/2 0 .* etc\/inline link to etc\/a-hard$/);
    assert.match(lineFor(lines, 'etc/z-hard'), /^h.* etc\/z-hard link to etc\/a-hard$/);
    assert.match(lineFor(lines, 'etc/disk'), /^-rw-r----- 3000000\/3000001 10 /);
    assert.match(lineFor(lines, 'etc/mid-ids'), /^-rw-r--r-- 300000\/262144 0 /);
    assert.match(lineFor(lines, 'etc/link'), /^lrwxrwxrwx 0\/0 0 .* etc\/link -> \.\.\/inline$/);
    assert.match(lineFor(lines, 'shared/'), /^drwxrwsr-x 0\/50 0 /);
    assert.match(lineFor(lines, 'tmp/'), /^drwxrwxrwt 0\/0 0 /);
    assert.match(lineFor(lines, `${dir241}/`), /^drwx------ /);
    assert.ok(lineFor(lines, `${dir241}/long-link`).endsWith(` -> /${file392}`));
    assert.ok(lineFor(lines, `${dir241}/long-hard`).endsWith(` link to ${file392}`), 'a long hard-link target goes into a PAX linkpath');
  });

  it('extracts with GNU tar into the same files, links and xattrs', async () => {
    const layer = await writeLayer(entries(), store, { mediaType });
    const out = await extract(store.path(layer.descriptor.digest));
    assert.equal(await readFile(join(out, 'etc/disk'), 'utf8'), 'from disk\n');
    assert.equal(await readFile(join(out, file392), 'utf8'), 'deep');
    assert.equal(await readFile(join(out, 'ünïcode'), 'utf8'), 'utf8 name');
    assert.equal(await readlink(join(out, 'etc/link')), '../inline');
    assert.equal(await readlink(join(out, `${dir241}/long-link`)), `/${file392}`);
    const group = await Promise.all(['etc/a-hard', 'etc/inline', 'etc/z-hard'].map((p) => lstat(join(out, p))));
    assert.ok(group.every((s) => s.ino === group[0]!.ino && s.nlink === 3), 'one inode, three names');
    assert.equal(await readFile(join(out, 'etc/z-hard'), 'utf8'), 'inline\n');
    assert.equal((await lstat(join(out, `${dir241}/long-hard`))).ino, (await lstat(join(out, file392))).ino);
    assert.equal((await lstat(join(out, 'etc/inline'))).mtime.toISOString(), '2024-05-06T07:08:09.000Z');

    // GNU tar set the xattrs on disk; archiving that file again makes it write them back out itself.
    const again = execFileSync('tar', ['--xattrs', '--xattrs-include=user.*', '-cf', '-', '-C', out, 'etc/xattrs']);
    assert.ok(again.includes(Buffer.concat([Buffer.from('SCHILY.xattr.user.bin='), binaryXattr, Buffer.from('\n')])), 'binary xattr value survives');
    assert.ok(again.includes(Buffer.from('SCHILY.xattr.user.text=héllo\n')));
    assert.match(lineFor(tarList(store.path(layer.descriptor.digest)), 'etc/xattrs'), /^-rw-r--r--\* /);
  });

  it('writes an empty layer as a valid empty tar', async () => {
    const layer = await writeLayer([], store, { mediaType });
    const blob = store.path(layer.descriptor.digest);
    assert.equal(execFileSync('tar', ['-tzf', blob], { encoding: 'utf8' }), '');
    assert.deepEqual(gunzip(blob), Buffer.alloc(1024));
    assert.equal(layer.uncompressedSize, 1024);
  });

  it('honours the compression level without changing the tar', async () => {
    const content = Buffer.from('compressible '.repeat(10_000));
    const one: LayerEntry[] = [{ path: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, content }];
    const fast = await writeLayer(one, store, { mediaType });
    const best = await writeLayer(one, store, { mediaType, compression: 'gzip', compressionLevel: 9 });
    assert.equal(best.diffId, fast.diffId);
    assert.notEqual(best.descriptor.digest, fast.descriptor.digest);
    assert.ok(best.descriptor.size < fast.descriptor.size);
    assert.deepEqual(await writeLayer(one, store, { mediaType, compressionLevel: 0 }), fast, 'level 0 means the default, as in kaniko');
  });

  it('refuses entries it cannot write correctly, leaving nothing in the store', async () => {
    const file = (path: string): LayerEntry => ({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, content: Buffer.from(path) });
    await assert.rejects(writeLayer([file('a'), file('a')], store, { mediaType }), /two entries for a/);
    for (const bad of ['/abs', 'trailing/', 'a//b', './a', 'a/../b', '']) {
      await assert.rejects(writeLayer([file(bad)], store, { mediaType }), /must be relative and clean/, bad);
    }
    await assert.rejects(writeLayer([{ path: 'h', type: 'hardlink', mode: 0o644, uid: 0, gid: 0, mtime: t, linkname: 'elsewhere' }], store, { mediaType }),
      /not in the layer/);
    const before = await readdir(join(store.dir, 'sha256'));
    const source = join(dir, 'src.txt');
    await assert.rejects(writeLayer([{ path: 'grew', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, size: 4, source }], store, { mediaType }),
      /changed while being written: expected 4 bytes, found more/);
    await assert.rejects(writeLayer([{ path: 'shrank', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, size: 40, source }], store, { mediaType }),
      /expected 40 bytes, found 10/);
    assert.deepEqual(await readdir(join(store.dir, 'sha256')), before);
  });

  it('takes a file size from the source when the entry has none', async () => {
    const layer = await writeLayer([{ path: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, source: join(dir, 'src.txt') }], store, { mediaType });
    assert.match(tarList(store.path(layer.descriptor.digest))[0]!, /^-rw-r--r-- 0\/0 10 /);
  });

  it('streams a 200 MiB file without holding it in memory', async () => {
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
    const timer = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 10);
    let layer;
    try {
      layer = await writeLayer([{ path: 'big.bin', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, size: 200 << 20, source: big }], store, { mediaType });
    } finally {
      clearInterval(timer);
    }
    peak = Math.max(peak, process.memoryUsage().rss);
    // ~36 MiB is typical: 1 MiB read chunks awaiting collection, not retained content; buffering the file would be 200+.
    assert.ok(peak - before < 64 << 20, `rss grew by ${((peak - before) / 1048576).toFixed(0)} MiB for a 200 MiB layer`);
    assert.equal(layer.uncompressedSize, 512 + (200 << 20) + 1024);
    const sum = execFileSync('sh', ['-c', 'gzip -dc "$1" | sha256sum', 'sh', store.path(layer.descriptor.digest)], { encoding: 'utf8' });
    assert.equal(layer.diffId, 'sha256:' + sum.split(' ')[0]);
  });
});

describe('PAX records', () => {
  it('count their own length, across the digit boundaries', () => {
    for (let n = 0; n < 1100; n += 1) {
      const record = encodePaxRecords(new Map([['k', Buffer.alloc(n, 0x61)]]));
      const declared = Number(record.subarray(0, record.indexOf(0x20)).toString());
      assert.equal(declared, record.length, `value of ${n} bytes`);
      assert.equal(record.at(-1), 0x0a);
    }
  });
});
