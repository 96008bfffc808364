// Layer extraction, checked on disk. Tars are built in memory: with tar-stream's pack() where it can,
// and with the project's own ustar encoder for what tar-stream refuses to write (binary xattrs,
// hostile names). Every test extracts into <tmp>/root next to <tmp>/outside, and checks that nothing
// outside the root changed.
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { getAttribute, listAttributes } from 'fs-xattr';
import { pack } from 'tar-stream';
import { encodeHeader, encodePaxRecords, END_OF_ARCHIVE, padding, type TarEntryType } from '../../src/layer/tar-format.js';
import { log } from '../../src/log/logger.js';
import { extractLayer, UnsafeLayerError, type ExtractOptions, type ExtractStats } from '../../src/rootfs/extract-layer.js';
import { extractInWorker } from '../../src/rootfs/extract-in-worker.js';
import { BaseFileLister } from '../../src/build/base-files.js';
import { ListingCollector } from '../../src/cache/layer-listing.js';
import { BlobStore, sha256Digest } from '../../src/image/blob-store.js';

const T = 1_700_000_000; // entry mtimes, whole seconds
const OLD = 1_000_000_000;

interface Spec {
  name: string;
  type?: TarEntryType;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  content?: string | Buffer;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Record<string, Buffer>;
}

/** A tar written block by block: any name, any link target, binary PAX values. */
function tar(specs: Spec[], end = true): Buffer {
  const parts: Buffer[] = [];
  for (const s of specs) {
    const type = s.type ?? 'file';
    const content = Buffer.from(s.content ?? '');
    parts.push(encodeHeader({
      name: s.name, type, mode: s.mode ?? (type === 'dir' ? 0o755 : 0o644), uid: s.uid ?? 0, gid: s.gid ?? 0,
      size: content.length, mtime: s.mtime ?? T, linkname: s.linkname, devmajor: s.devmajor, devminor: s.devminor, xattrs: s.xattrs,
    }), content, padding(content.length));
  }
  if (end) parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

const temps: string[] = [];
after(async () => { for (const t of temps) await rm(t, { recursive: true, force: true }); });

interface Box { base: string; root: string; outside: string; before: string; }

/** What must not change outside the root: names, contents, modes, owners, times. */
async function state(outside: string): Promise<string> {
  const out: string[] = [];
  for (const name of ['', 'dir', 'file']) {
    const s = await lstat(join(outside, name));
    out.push(`${name} ${s.mode} ${s.uid}:${s.gid} ${s.mtimeMs} ${s.ino}`);
  }
  return out.join('\n');
}

/** <tmp>/root (empty) and <tmp>/outside (a file, a directory) whose state is checked after each test. */
async function box(): Promise<Box> {
  const base = await mkdtemp(join(tmpdir(), 'kiln-extract-'));
  temps.push(base);
  const root = join(base, 'root');
  const outside = join(base, 'outside');
  await mkdir(root);
  await mkdir(join(outside, 'dir'), { recursive: true });
  await writeFile(join(outside, 'file'), 'secret');
  await utimes(join(outside, 'dir'), OLD, OLD);
  await utimes(outside, OLD, OLD);
  return { base, root, outside, before: await state(outside) };
}

async function untouched(b: Box): Promise<void> {
  assert.deepEqual((await readdir(b.base)).sort(), ['outside', 'root'], 'nothing was created beside the root');
  assert.deepEqual((await readdir(b.outside)).sort(), ['dir', 'file']);
  assert.deepEqual(await readdir(join(b.outside, 'dir')), []);
  assert.equal(await readFile(join(b.outside, 'file'), 'utf8'), 'secret');
  assert.equal(await state(b.outside), b.before);
}

const apply = (layerName = 'test-layer'): ExtractOptions => ({ whiteouts: 'apply', layerName });

function run(root: string, data: Buffer, options: ExtractOptions = apply()): Promise<ExtractStats> {
  return extractLayer(Readable.from([data]), root, options);
}

const run2 = (stream: Readable, root: string): Promise<ExtractStats> => extractLayer(stream, root, apply());

async function refused(b: Box, data: Buffer, pattern: RegExp, type: new (...args: never[]) => Error = UnsafeLayerError): Promise<void> {
  await assert.rejects(run(b.root, data), (e: Error) => {
    assert.ok(e instanceof type, `${e.constructor.name}: ${e.message}`);
    assert.match(e.message, /test-layer/);
    assert.match(e.message, pattern);
    return true;
  });
  await untouched(b);
}

/** A header block with another typeflag (and so another checksum). */
function withTypeflag(block: Buffer, typeflag: string): Buffer {
  const out = Buffer.from(block);
  out.write(typeflag, 156, 'latin1');
  out.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of out) sum += byte;
  out.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return out;
}

/** A stand-in for kiln-sandbox mknod without CAP_MKNOD: fifos are made, a device stops the batch with EPERM's exit code. */
async function fakeSandbox(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-fake-sandbox-'));
  temps.push(dir);
  const script = join(dir, 'kiln-sandbox');
  await writeFile(script, [
    '#!/usr/bin/env node',
    "const fields = require('fs').readFileSync(0, 'utf8').split('\\0');",
    'for (let i = 0; i + 4 < fields.length; i += 5) {',
    '  const [type, mode, , , path] = fields.slice(i, i + 5);',
    "  if (type !== 'p') { process.stderr.write('kiln-sandbox: mknod ' + path + ': Operation not permitted\\n'); process.exit(2); }",
    "  require('child_process').execFileSync('mkfifo', ['-m', mode, path]);",
    '}',
  ].join('\n'));
  await chmod(script, 0o755);
  return script;
}

const exists = (path: string): Promise<boolean> => lstat(path).then(() => true, () => false);
const major = (rdev: number): number => (rdev >> 8) & 0xfff;
const minor = (rdev: number): number => (rdev & 0xff) | ((rdev >> 12) & 0xfff00);

describe('extractLayer', () => {
  it('extracts every entry type with its mode, owner and mtime', async () => {
    const b = await box();
    const stats = await run(b.root, tar([
      { name: 'bin/', type: 'dir', mode: 0o751, uid: 3, gid: 4, mtime: OLD },
      { name: 'bin/su', mode: 0o4755, uid: 0, gid: 0, content: 'setuid' },
      { name: 'bin/sg', mode: 0o2711, uid: 1000, gid: 2000, content: 'setgid' },
      { name: 'tmp/', type: 'dir', mode: 0o1777 },
      { name: 'bin/link', type: 'symlink', uid: 5, gid: 6, mtime: OLD, linkname: '/no/such/target' },
      { name: 'bin/hard', type: 'hardlink', mode: 0o4755, linkname: 'bin/su' },
      { name: 'dev/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 },
      { name: 'dev/loop0', type: 'block', mode: 0o660, gid: 6, devmajor: 7, devminor: 0 },
      { name: 'run/fifo', type: 'fifo', mode: 0o640, uid: 7, gid: 8 },
      { name: 'big-ids', uid: 3_000_000, gid: 4_000_000 }, // beyond ustar's octal fields: PAX records
    ]));
    assert.deepEqual(stats, { files: 10, bytes: 12, skipped: 0 });
    const check = async (path: string, mode: number, uid: number, gid: number, mtime = T): Promise<void> => {
      const s = await lstat(join(b.root, path));
      assert.deepEqual([s.mode & 0o7777, s.uid, s.gid, s.mtimeMs], [mode, uid, gid, mtime * 1000], path);
    };
    await check('bin', 0o751, 3, 4, OLD);
    await check('bin/su', 0o4755, 0, 0);
    await check('bin/sg', 0o2711, 1000, 2000);
    await check('tmp', 0o1777, 0, 0);
    const dev = await lstat(join(b.root, 'dev')); // a missing parent: root's, 0755
    assert.deepEqual([dev.mode & 0o7777, dev.uid, dev.gid], [0o755, 0, 0]);
    assert.equal(await readFile(join(b.root, 'bin/su'), 'utf8'), 'setuid');
    assert.equal(await readlink(join(b.root, 'bin/link')), '/no/such/target');
    const link = await lstat(join(b.root, 'bin/link'));
    assert.deepEqual([link.isSymbolicLink(), link.uid, link.gid, link.mtimeMs], [true, 5, 6, OLD * 1000]);
    assert.equal((await lstat(join(b.root, 'bin/hard'))).ino, (await lstat(join(b.root, 'bin/su'))).ino);
    const nul = await lstat(join(b.root, 'dev/null'));
    assert.ok(nul.isCharacterDevice());
    assert.deepEqual([major(nul.rdev), minor(nul.rdev), nul.mode & 0o7777, nul.mtimeMs], [1, 3, 0o666, T * 1000]);
    const loop = await lstat(join(b.root, 'dev/loop0'));
    assert.ok(loop.isBlockDevice());
    assert.deepEqual([major(loop.rdev), minor(loop.rdev), loop.mode & 0o7777, loop.gid], [7, 0, 0o660, 6]);
    assert.ok((await lstat(join(b.root, 'run/fifo'))).isFIFO());
    await check('run/fifo', 0o640, 7, 8);
    await check('big-ids', 0o644, 3_000_000, 4_000_000);
    await untouched(b);
  });

  it('keeps binary xattr values byte for byte', async () => {
    const b = await box();
    // A valid VFS_CAP_REVISION_2 value: the kernel checks the format. 0xff grants capabilities 0-7.
    const capability = Buffer.from([0x01, 0x00, 0x00, 0x02, 0xff, 0x20, 0x00, 0x00, ...Array<number>(12).fill(0)]);
    const raw = Buffer.from([0x00, 0xff, 0x80, 0x3d, 0x0a, 0xc3, 0x28, 0x00]); // NUL, "=", newline, bad UTF-8
    await run(b.root, tar([
      { name: 'ping', mode: 0o755, uid: 1, content: 'x', xattrs: { 'security.capability': capability, 'trusted.kiln': raw } },
      { name: 'd/', type: 'dir', xattrs: { 'trusted.kiln': raw } },
      { name: 'evil', xattrs: { 'trusted.overlay.opaque': Buffer.from('y') } },
    ]));
    assert.deepEqual(await getAttribute(join(b.root, 'ping'), 'security.capability'), capability);
    assert.deepEqual(await getAttribute(join(b.root, 'ping'), 'trusted.kiln'), raw);
    assert.deepEqual(await getAttribute(join(b.root, 'd'), 'trusted.kiln'), raw);
    assert.deepEqual(await listAttributes(join(b.root, 'evil')), [], 'a layer cannot set overlayfs attributes');
    await untouched(b);
  });

  it('sets directory mtimes after their children are written', async () => {
    const b = await box();
    await run(b.root, tar([
      { name: 'a/', type: 'dir', mtime: OLD },
      { name: 'a/b/', type: 'dir', mtime: OLD + 1 },
      { name: 'a/b/c', content: 'c' },
      { name: 'a/d', content: 'd' },
      { name: 'a/b/e/f', content: 'f' },
    ]));
    assert.equal((await lstat(join(b.root, 'a'))).mtimeMs, OLD * 1000);
    assert.equal((await lstat(join(b.root, 'a/b'))).mtimeMs, (OLD + 1) * 1000);
    await untouched(b);
  });

  it('replaces entries of another type and merges directories', async () => {
    const b = await box();
    await run(b.root, tar([
      { name: 'dir-to-file/x', content: 'x' },
      { name: 'dir-to-link/x', content: 'x' },
      { name: 'file-to-dir', content: 'old' },
      { name: 'link-to-dir', type: 'symlink', linkname: '../outside/dir' },
      { name: 'link-to-file', type: 'symlink', linkname: '../outside/file' },
      { name: 'merged/', type: 'dir', mode: 0o700 },
      { name: 'merged/old', content: 'kept' },
    ]));
    await run(b.root, tar([
      { name: 'dir-to-file', content: 'now a file' },
      { name: 'dir-to-link', type: 'symlink', linkname: 'dir-to-file' },
      { name: 'file-to-dir/', type: 'dir' },
      { name: 'file-to-dir/y', content: 'y' },
      { name: 'link-to-dir/', type: 'dir', mode: 0o750 },
      { name: 'link-to-dir/z', content: 'z' },
      { name: 'link-to-file', content: 'replaced, not written through' },
      { name: 'merged/', type: 'dir', mode: 0o755, uid: 9 },
    ]));
    assert.equal(await readFile(join(b.root, 'dir-to-file'), 'utf8'), 'now a file');
    assert.equal(await readlink(join(b.root, 'dir-to-link')), 'dir-to-file');
    assert.equal(await readFile(join(b.root, 'file-to-dir/y'), 'utf8'), 'y');
    const linkToDir = await lstat(join(b.root, 'link-to-dir'));
    assert.deepEqual([linkToDir.isDirectory(), linkToDir.mode & 0o7777], [true, 0o750]);
    assert.equal(await readFile(join(b.root, 'link-to-dir/z'), 'utf8'), 'z');
    assert.ok((await lstat(join(b.root, 'link-to-file'))).isFile());
    const merged = await lstat(join(b.root, 'merged'));
    assert.deepEqual([merged.mode & 0o7777, merged.uid], [0o755, 9]);
    assert.equal(await readFile(join(b.root, 'merged/old'), 'utf8'), 'kept');
    await untouched(b);
  });

  it('streams large files and reads gzip layers written by tar-stream', async () => {
    const b = await box();
    const big = randomBytes(3 * 1024 * 1024 + 5);
    const p = pack();
    p.entry({ name: './', type: 'directory', mode: 0o700 }); // the root's own entry changes nothing
    p.entry({ name: './etc/', type: 'directory', mode: 0o755 });
    p.entry({ name: './etc/big', mode: 0o600, uid: 12, gid: 13, mtime: new Date(T * 1000) }, big);
    p.entry({ name: './etc/small', mode: 0o644 }, 'small');
    p.finalize();
    const chunks: Buffer[] = [];
    for await (const c of p) chunks.push(c as Buffer);
    const stats = await run(b.root, gzipSync(Buffer.concat(chunks)));
    assert.deepEqual(stats, { files: 3, bytes: big.length + 5, skipped: 0 });
    assert.deepEqual(await readFile(join(b.root, 'etc/big')), big);
    assert.equal((await lstat(b.root)).mode & 0o7777, 0o755);
    const s = await lstat(join(b.root, 'etc/big'));
    assert.deepEqual([s.mode & 0o7777, s.uid, s.gid, s.mtimeMs], [0o600, 12, 13, T * 1000]);
    await untouched(b);
  });

  it('reads PAX records wherever the stream splits them: after big files, long names, global headers', async () => {
    const b = await box();
    const value = Buffer.from([0xff, 0x00, 0x80, 0x0a]);
    const longName = `deep/${'n'.repeat(150)}/${'é'.repeat(40)}`;
    const global = encodePaxRecords(new Map([['SCHILY.xattr.trusted.global', Buffer.from([0xfe, 0x01])]]));
    const globalHeader = encodeHeader({ name: 'pax_global_header', type: 'file', mode: 0o644, uid: 0, gid: 0, size: global.length, mtime: 0 });
    const data = Buffer.concat([
      tar([{ name: 'big', content: randomBytes(2 * 1024 * 1024 + 1) }], false),
      withTypeflag(globalHeader, 'g'), global, padding(global.length),
      tar([{ name: longName, content: 'long', xattrs: { 'trusted.v': value } }, { name: 'plain', content: 'p', uid: 3_000_000 }]),
    ]);
    const pieces: Buffer[] = []; // 1000-byte pieces: headers and records straddle chunks
    for (let i = 0; i < data.length; i += 1000) pieces.push(data.subarray(i, i + 1000));
    await extractLayer(Readable.from(pieces), b.root, apply());
    assert.deepEqual(await getAttribute(join(b.root, longName), 'trusted.v'), value);
    assert.deepEqual(await getAttribute(join(b.root, longName), 'trusted.global'), Buffer.from([0xfe, 0x01]));
    assert.deepEqual(await getAttribute(join(b.root, 'plain'), 'trusted.global'), Buffer.from([0xfe, 0x01]));
    assert.deepEqual(await listAttributes(join(b.root, 'plain')), ['trusted.global']);
    assert.equal((await lstat(join(b.root, 'plain'))).uid, 3_000_000);
    assert.deepEqual(await listAttributes(join(b.root, 'big')), []);
    await untouched(b);
  });

  it('links to fifos of the same layer, and drops what is pending below a replaced directory', async () => {
    const b = await box();
    await run(b.root, tar([
      { name: 'f', type: 'fifo', mode: 0o600 },
      { name: 'h', type: 'hardlink', linkname: 'f' },
      { name: 'd/', type: 'dir' },
      { name: 'd/fifo', type: 'fifo' },
      { name: 'd/dir/', type: 'dir', mtime: OLD + 5 },
      { name: 'd/h', type: 'hardlink', linkname: 'f' },
      // Replaces the directory: the fifo, the link and the mtime due below it must not follow the symlink.
      { name: 'd', type: 'symlink', linkname: '../outside' },
    ]));
    assert.equal((await lstat(join(b.root, 'h'))).ino, (await lstat(join(b.root, 'f'))).ino);
    assert.ok((await lstat(join(b.root, 'f'))).isFIFO());
    assert.equal(await readlink(join(b.root, 'd')), '../outside');
    await untouched(b);
  });

  it('skips device nodes with one warning when mknod is not permitted, but makes fifos', async (t) => {
    const b = await box();
    const saved = process.env['KILN_SANDBOX'];
    process.env['KILN_SANDBOX'] = await fakeSandbox();
    const lines: string[] = [];
    log.configure({ write: (line) => { lines.push(line); } });
    t.after(() => {
      if (saved === undefined) delete process.env['KILN_SANDBOX'];
      else process.env['KILN_SANDBOX'] = saved;
      log.configure({ write: (line) => process.stderr.write(line) });
    });
    const stats = await run(b.root, tar([
      { name: 'a-fifo', type: 'fifo', mode: 0o640, uid: 4 },
      { name: 'dev/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 },
      { name: 'dev/sda', type: 'block', mode: 0o660, devmajor: 8, devminor: 0 },
      { name: 'z-fifo', type: 'fifo', mode: 0o600 },
    ]));
    assert.deepEqual(stats, { files: 2, bytes: 0, skipped: 2 });
    const fifo = await lstat(join(b.root, 'a-fifo'));
    assert.deepEqual([fifo.isFIFO(), fifo.mode & 0o7777, fifo.uid], [true, 0o640, 4]);
    assert.ok((await lstat(join(b.root, 'z-fifo'))).isFIFO());
    assert.deepEqual(await readdir(join(b.root, 'dev')), []);
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /test-layer.*no permission to create device nodes, 2 left out/);
    // Overlay whiteouts need no privilege, so they are retried; this stand-in refuses them too: an error.
    await assert.rejects(run(b.root, tar([{ name: 'dev/tty', type: 'char', devmajor: 5 }, { name: '.wh.gone' }]), { whiteouts: 'overlay', layerName: 'test-layer' }),
      /^Error: layer test-layer: mknod .*\/gone: Operation not permitted$/);
    await untouched(b);
  });

  it('gives up cleanly when the layer stream fails, and destroys it on any failure', async () => {
    const b = await box();
    const failing = new Readable({ read() {} });
    failing.push(tar([{ name: 'a', content: 'x'.repeat(5000) }]).subarray(0, 1024));
    setTimeout(() => failing.destroy(new Error('connection reset')), 20);
    await assert.rejects(run2(failing, b.root), /^Error: layer test-layer: cannot read it: connection reset$/);
    const unsafe = Readable.from([tar([{ name: '../x' }])]);
    await assert.rejects(run2(unsafe, b.root), UnsafeLayerError);
    assert.ok(unsafe.destroyed);
    await untouched(b);
  });

  it('applies whiteouts and opaque directories, keeping what the same layer wrote there', async () => {
    const b = await box();
    await run(b.root, tar([
      { name: 'gone/sub/file', content: 'x' }, { name: 'gone-file', content: 'x' }, { name: 'stays', content: 'x' },
      { name: 'opq/old', content: 'x' }, { name: 'opq/sub/old', content: 'x' }, { name: 'opq/oldsub/x', content: 'x' },
    ]));
    await run(b.root, tar([
      { name: '.wh.gone' },
      { name: '.wh.gone-file' },
      { name: '.wh.never-there' },
      { name: 'opq/before', content: 'b' }, // listed before the marker, still kept
      { name: 'opq/sub/new', content: 'n' },
      { name: 'opq/.wh..wh..opq' },
      { name: 'opq/after', content: 'a' },
    ]));
    assert.deepEqual((await readdir(b.root)).sort(), ['opq', 'stays']);
    assert.deepEqual((await readdir(join(b.root, 'opq'))).sort(), ['after', 'before', 'sub']);
    assert.deepEqual(await readdir(join(b.root, 'opq/sub')), ['new'], 'lower entries of a kept directory go too');
    await untouched(b);
  });

  it('writes overlay whiteouts and opaque markers', async () => {
    const b = await box();
    await run(b.root, tar([
      { name: 'etc/.wh.passwd' },
      { name: 'var/cache/.wh..wh..opq' },
      { name: 'opq/', type: 'dir', mode: 0o700 },
      { name: 'opq/.wh..wh..opq' },
      { name: 'opq/new', content: 'n' },
    ]), { whiteouts: 'overlay', layerName: 'test-layer' });
    const whiteout = await lstat(join(b.root, 'etc/passwd'));
    assert.ok(whiteout.isCharacterDevice());
    assert.deepEqual([whiteout.rdev, whiteout.uid, whiteout.gid], [0, 0, 0]);
    const cache = await lstat(join(b.root, 'var/cache'));
    assert.deepEqual([cache.isDirectory(), cache.mode & 0o7777, cache.uid], [true, 0o755, 0]);
    assert.equal((await getAttribute(join(b.root, 'var/cache'), 'trusted.overlay.opaque')).toString(), 'y');
    assert.equal((await getAttribute(join(b.root, 'opq'), 'trusted.overlay.opaque')).toString(), 'y');
    assert.equal((await lstat(join(b.root, 'opq'))).mode & 0o7777, 0o700);
    assert.deepEqual(await readdir(join(b.root, 'opq')), ['new']);
    await untouched(b);
  });

  it('lists the layer in the same pass, on a worker thread too, exactly as the base lister reads it', async () => {
    const data = gzipSync(tar([
      { name: './', type: 'dir' },
      { name: 'etc/', type: 'dir' },
      { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n' },
      { name: 'etc/group', content: 'root:x:0:\n' },
      { name: 'etc/.wh.shadow' },
      { name: 'var/cache/.wh..wh..opq' },
      { name: 'usr/bin/tool', content: 'x'.repeat(70_000), mode: 0o4755, uid: 5, gid: 6 },
      { name: 'usr/bin/alias', type: 'hardlink', linkname: 'usr/bin/tool' },
      { name: 'bin', type: 'symlink', linkname: 'usr/bin' },
      { name: 'dev/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 },
    ]));
    const digest = sha256Digest(data);
    const lister = new BaseFileLister();
    await lister.listLayer({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: data.length }, Readable.from([data]));
    const expected = lister.listing({ mediaType: '', digest, size: data.length });
    assert.equal(expected.entries.find((e) => e.path === 'etc/passwd')?.content?.toString().split('\n')[1], 'app:x:1000:1000::/home/app:/bin/sh');

    const inThread = await box();
    const list = new ListingCollector();
    await run(inThread.root, data, { whiteouts: 'overlay', layerName: 'test-layer', list, warn: () => undefined });
    assert.deepEqual(list.listing, expected);

    const onWorker = await box();
    const file = join(onWorker.base, 'outside', 'blob');
    await writeFile(file, data);
    const listed = await extractInWorker({ path: file, digest, root: onWorker.root, whiteouts: 'overlay', layerName: 'test-layer' });
    assert.deepEqual(listed, expected);
    assert.ok(Buffer.isBuffer(listed.entries.find((e) => e.path === 'etc/group')?.content));
    assert.equal((await lstat(join(onWorker.root, 'usr/bin/tool'))).size, 70_000);
    assert.ok((await lstat(join(onWorker.root, 'etc/shadow'))).isCharacterDevice(), 'the overlay whiteout was written');

    // A blob still downloading: the worker follows the file as it grows and ends with the commit.
    const growing = await box();
    const store = await BlobStore.createTemp('kiln-extract-growing-');
    try {
      const writer = await store.createWriter({ growing: true });
      await writer.growth!.opened;
      const half = data.length >> 1;
      await new Promise<void>((resolve, reject) => writer.stream.write(data.subarray(0, half), (e) => (e ? reject(e) : resolve())));
      const extracting = extractInWorker({
        path: store.path(digest), digest, root: growing.root, whiteouts: 'overlay', layerName: 'test-layer',
        growing: { tempPath: writer.growth!.path, shared: writer.growth!.shared },
      });
      await new Promise((resolve) => setTimeout(resolve, 100)); // the worker is waiting for the rest by now
      writer.stream.end(data.subarray(half));
      await writer.commit();
      assert.deepEqual(await extracting, expected);
      assert.equal((await lstat(join(growing.root, 'usr/bin/tool'))).size, 70_000);
      // A download that gives up fails the extraction, which the stored blob's then replaces.
      const abandoned = await box();
      const gaveUp = await store.createWriter({ growing: true });
      await gaveUp.growth!.opened;
      gaveUp.stream.write(data.subarray(0, half));
      const failing = extractInWorker({
        path: join(store.dir, 'never'), digest, root: abandoned.root, whiteouts: 'overlay', layerName: 'test-layer',
        growing: { tempPath: gaveUp.growth!.path, shared: gaveUp.growth!.shared },
      });
      const refused = assert.rejects(failing, /download of blob sha256:\w+ failed/);
      await new Promise((resolve) => setTimeout(resolve, 100));
      await gaveUp.abort();
      await refused;
    } finally {
      await store.dispose();
    }

    // The worker verifies the blob's digest as it reads: other bytes under that name are refused.
    const corrupt = await box();
    const bad = join(corrupt.base, 'outside', 'blob');
    await writeFile(bad, gzipSync(tar([{ name: 'evil', content: 'not the layer' }])));
    await assert.rejects(extractInWorker({ path: bad, digest, root: corrupt.root, whiteouts: 'overlay', layerName: 'test-layer' }), /corrupt|hashes to/);
  });

  it('follows parent symlinks inside the root (usrmerge, absolute targets)', async () => {
    const b = await box();
    await run(b.root, tar([
      { name: 'usr/lib/', type: 'dir' },
      { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
      { name: 'lib64', type: 'symlink', linkname: '/usr/lib' },
      { name: 'hop', type: 'symlink', linkname: '/./usr/../lib64/../../../usr' }, // ".." stays at the root
      // An absolute target is the image's path, never the host's.
      { name: 'host', type: 'symlink', linkname: b.outside },
    ]));
    await run(b.root, tar([
      { name: 'lib/x86_64-linux-gnu/libc.so.6', content: 'libc' },
      { name: 'lib64/ld.so', content: 'ld' },
      { name: 'hop/lib/hopped', content: 'h' },
      { name: 'host/file', content: 'inside' },
      { name: 'host/dir/.wh..wh..opq' },
    ]));
    assert.equal(await readFile(join(b.root, 'usr/lib/x86_64-linux-gnu/libc.so.6'), 'utf8'), 'libc');
    assert.equal(await readFile(join(b.root, 'usr/lib/ld.so'), 'utf8'), 'ld');
    assert.equal(await readFile(join(b.root, 'usr/lib/hopped'), 'utf8'), 'h');
    assert.equal(await readlink(join(b.root, 'lib')), 'usr/lib');
    assert.equal(await readFile(join(b.root, b.outside, 'file'), 'utf8'), 'inside');
    await untouched(b);
  });

  describe('refuses', () => {
    const cases: [string, Spec[], RegExp][] = [
      ['a parent-relative name', [{ name: '../x', content: 'x' }], /"\.\.\/x".*above the root/],
      ['a name climbing out after normalisation', [{ name: 'a/../../x' }], /a\/\.\.\/\.\.\/x/],
      ['an absolute name', [{ name: '/etc/x' }], /"\/etc\/x".*absolute/],
      ['a symlink parent climbing out', [
        { name: 'evil', type: 'symlink', linkname: '../../..' }, { name: 'evil/x', content: 'x' },
      ], /"evil\/x".*outside the root/],
      ['a symlink planted in the same tar and written through', [
        { name: 'a/', type: 'dir' }, { name: 'a/ln', type: 'symlink', linkname: '../../outside' },
        { name: 'a/ln/file', content: 'pwned' },
      ], /"a\/ln\/file".*"a\/ln" is a symlink to "..\/..\/outside"/],
      ['a whiteout through a symlink parent climbing out', [
        { name: 'evil', type: 'symlink', linkname: '../outside' }, { name: 'evil/.wh.file' },
      ], /"evil\/\.wh\.file".*outside the root/],
      ['an opaque marker through a symlink parent climbing out', [
        { name: 'evil', type: 'symlink', linkname: '../outside' }, { name: 'evil/.wh..wh..opq' },
      ], /outside the root/],
      ['a symlink loop', [
        { name: 'l1', type: 'symlink', linkname: 'l2' }, { name: 'l2', type: 'symlink', linkname: 'l1' }, { name: 'l1/x' },
      ], /too many levels of symlinks/],
      ['a hard link climbing out', [{ name: 'h', type: 'hardlink', linkname: '../../outside/file' }], /"h".*above the root/],
      ['a hard link to an absolute path', [{ name: 'h', type: 'hardlink', linkname: '/outside/file' }], /"h".*absolute/],
      ['a hard link through a symlink out', [
        { name: 'out', type: 'symlink', linkname: '../outside' }, { name: 'h', type: 'hardlink', linkname: 'out/file' },
      ], /"h".*outside the root/],
      ['a hard link to a directory', [{ name: 'd/', type: 'dir' }, { name: 'h', type: 'hardlink', linkname: 'd' }], /directory/],
      ['a whiteout of ".."', [{ name: '.wh...' }], /whiteout of "\.\."/],
      ['a whiteout climbing out', [{ name: '../.wh.outside' }], /above the root/],
      ['a NUL byte in a name', [{ name: 'a\0b' }], /NUL/],
    ];
    for (const [what, specs, pattern] of cases) {
      it(what, async () => refused(await box(), tar(specs), pattern));
    }

    it('hard links and symlink parents naming the host path of a file outside', async () => {
      const b = await box();
      await refused(b, tar([{ name: 'h', type: 'hardlink', linkname: join(b.outside, 'file') }]), /"h".*absolute/);
      // As a symlink's target, the same absolute path means <root>/<path>: nothing outside is reached.
      await run(b.root, tar([
        { name: 'l', type: 'symlink', linkname: join(b.outside, 'file') },
        { name: 'h', type: 'hardlink', linkname: 'l', mode: 0o777, uid: 1234 },
        { name: 'l2', type: 'symlink', linkname: '../outside/file' },
        { name: 'h2', type: 'hardlink', linkname: 'l2', mode: 0o777, uid: 1234 }, // chmod would follow it
      ]));
      assert.equal(await readlink(join(b.root, 'h')), join(b.outside, 'file'), 'a hard link to the symlink itself');
      assert.equal((await lstat(join(b.root, 'h2'))).uid, 1234);
      await untouched(b);
    });

    it('a hard link to a missing file, a truncated tar, garbage and zstd, as corrupt layers', async () => {
      const b = await box();
      await refused(b, tar([{ name: 'h', type: 'hardlink', linkname: 'nope' }]), /corrupt.*"h".*does not exist/, Error);
      const whole = tar([{ name: 'a', content: 'x'.repeat(2000) }, { name: 'b', content: 'y' }]);
      await refused(b, whole.subarray(0, 1200), /corrupt/, Error); // inside a's content
      await refused(b, whole.subarray(0, 2600), /corrupt/, Error); // inside b's header
      await refused(b, gzipSync(whole).subarray(0, 100), /corrupt/, Error);
      const badSize = tar([{ name: 'a', content: 'x' }]);
      badSize.write('00000000077\0', 124, 'latin1'); // claims 63 bytes, checksum now wrong
      await refused(b, badSize, /corrupt/, Error);
      await refused(b, Buffer.from('not a tar at all, but long enough to be read as a header block'.repeat(20)), /corrupt/, Error);
      await refused(b, Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]), /zstd/, Error); // a truncated zstd frame
      // Fields that parse to NaN or to negative numbers, with valid checksums.
      const absurd = (offset: number, field: Buffer): Buffer => {
        const block = tar([{ name: 'absurd' }], false);
        field.copy(block, offset);
        return Buffer.concat([withTypeflag(block, '0'), END_OF_ARCHIVE]);
      };
      await refused(b, absurd(100, Buffer.from('zzzzzzz\0')), /corrupt.*"absurd".*invalid mode/, Error);
      await refused(b, absurd(108, Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe])), /corrupt.*"absurd".*invalid owner -1:0/, Error);
      await refused(b, absurd(136, Buffer.from('9999zzzzzzz\0')), /corrupt.*"absurd".*invalid modification time/, Error);
      await refused(b, absurd(124, Buffer.from('zzzzzzzzzzz\0')), /corrupt: Invalid header/, Error);
    });
  });

  it('never writes nor deletes ignored paths', async () => {
    const b = await box();
    const options: ExtractOptions = { ...apply(), ignore: (p) => p === 'proc' || p === 'kaniko/keep' };
    await mkdir(join(b.root, 'proc/1'), { recursive: true });
    await mkdir(join(b.root, 'kaniko/keep'), { recursive: true });
    await writeFile(join(b.root, 'kaniko/keep/secret'), 's');
    await writeFile(join(b.root, 'kaniko/other'), 'o');
    await symlink('proc', join(b.root, 'p'));
    const stats = await run(b.root, tar([
      { name: 'proc/1/status', content: 'x' },
      { name: 'kaniko/keep/new', content: 'x' },
      { name: 'p/via-link', content: 'x' },
      { name: '.wh.proc' },
      { name: 'kaniko/.wh.keep' },
      { name: 'kaniko/.wh..wh..opq' },
      { name: 'kaniko/written', content: 'w' },
    ]), options);
    assert.deepEqual(stats, { files: 1, bytes: 1, skipped: 5 });
    assert.deepEqual(await readdir(join(b.root, 'proc')), ['1']);
    assert.deepEqual(await readdir(join(b.root, 'proc/1')), []);
    assert.deepEqual((await readdir(join(b.root, 'kaniko'))).sort(), ['keep', 'written']);
    assert.deepEqual(await readdir(join(b.root, 'kaniko/keep')), ['secret']);
    await run(b.root, tar([{ name: '.wh.kaniko' }]), options);
    assert.deepEqual(await readdir(join(b.root, 'kaniko')), ['keep'], 'a whiteout spares what is ignored below it');
    assert.ok(await exists(join(b.root, 'kaniko/keep/secret')));
    await untouched(b);
  });
});
