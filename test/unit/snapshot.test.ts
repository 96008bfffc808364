import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { link, mkdir, mkdtemp, rm, symlink, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setAttribute } from 'fs-xattr';
import { diffTrees, indexTree, TreeIndex } from '../../src/snapshot/walk-snapshot.js';
import { FIELDS, walkTree } from '../../src/snapshot/tree-walk.js';
import { DETAIL_FIELDS, nativeScan, ScanParser } from '../../src/snapshot/native-scan.js';
import { snapshotUpperDir, walkUpperDir } from '../../src/snapshot/upper-snapshot.js';
import { snapshotLayerEntries } from '../../src/snapshot/snapshot.js';
import { makeNodes, sandboxBinary } from '../../src/isolation/sandbox-binary.js';

/** vfs_cap_data v2 with cap_net_raw permitted, as setcap writes it: binary, with NUL bytes. */
const CAP_NET_RAW = Buffer.from([0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'kiln-snapshot-')); });
after(async () => rm(dir, { recursive: true, force: true }));

/** Runs `test` with KILN_NATIVE_SCAN set for indexTree: kiln-sandbox scan, or the Node.js walk. */
async function withWalker(walker: 'native' | 'node', test: () => Promise<void>): Promise<void> {
  const saved = process.env['KILN_NATIVE_SCAN'];
  process.env['KILN_NATIVE_SCAN'] = walker === 'node' ? '0' : '1';
  try {
    await test();
  } finally {
    if (saved === undefined) delete process.env['KILN_NATIVE_SCAN'];
    else process.env['KILN_NATIVE_SCAN'] = saved;
  }
}

/** Every path of an index with its numbers, sorted: what two walks must agree on. */
function dump(index: TreeIndex): [string, number[]][] {
  return [...index.paths()].sort().map((p) => [p, Array.from({ length: FIELDS }, (_, f) => index.field(p, f)!)]);
}

const nodeIndex = async (root: string, ignored: string[]): Promise<TreeIndex> => TreeIndex.from(await walkTree(root, ignored));
const nativeIndex = async (root: string, ignored: string[], threads?: number): Promise<TreeIndex> =>
  TreeIndex.fromEntries(await nativeScan(root, ignored, { threads }));

/** A file name with bytes that are not UTF-8 (Node.js takes Buffer paths as they are). */
const latin1 = (dirPath: string, name: string): Buffer => Buffer.concat([Buffer.from(dirPath + '/'), Buffer.from(name, 'latin1')]);

for (const walker of ['native', 'node'] as const) describe(`walk snapshots (${walker} walk)`, () => {
  it('finds added, changed and deleted entries, with whiteouts only where needed', () => withWalker(walker, async () => {
    const root = join(dir, `walk-${walker}`);
    await mkdir(join(root, 'keep/deep'), { recursive: true });
    await mkdir(join(root, 'gone/sub'), { recursive: true });
    await writeFile(join(root, 'keep/same'), 'same');
    await writeFile(join(root, 'keep/changed'), 'old');
    await writeFile(join(root, 'gone/sub/f'), 'x');
    await writeFile(join(root, 'becomes-dir'), 'x');
    await mkdir(join(root, 'becomes-file/inner'), { recursive: true });
    const ignored = ['ignored'];
    const before = await indexTree(root, ignored);
    await new Promise((r) => setTimeout(r, 20));
    await writeFile(join(root, 'keep/changed'), 'new!');
    await rm(join(root, 'gone'), { recursive: true });
    await rm(join(root, 'becomes-dir'));
    await mkdir(join(root, 'becomes-dir'));
    await rm(join(root, 'becomes-file'), { recursive: true });
    await writeFile(join(root, 'becomes-file'), 'f');
    await writeFile(join(root, 'new'), 'n');
    await link(join(root, 'new'), join(root, 'new-link'));
    await symlink('new', join(root, 'sym'));
    await mkdir(join(root, 'ignored'));
    await writeFile(join(root, 'ignored/x'), 'x');
    await chmod(join(root, 'keep/deep'), 0o700);
    const snap = diffTrees(root, before, await indexTree(root, ignored), 'full');
    const byPath = Object.fromEntries(snap.entries.map((e) => [e.path, e]));
    assert.deepEqual(Object.keys(byPath).sort(), ['becomes-dir', 'becomes-file', 'keep/changed', 'keep/deep', 'new', 'new-link', 'sym']);
    assert.equal(byPath['new-link']!.type, 'hardlink');
    assert.equal(byPath['new-link']!.linkname, 'new');
    assert.equal(byPath['sym']!.linkname, 'new');
    assert.deepEqual(snap.whiteouts, ['gone']);
    const markers = snapshotLayerEntries(snap).filter((e) => e.path.includes('.wh.')).map((e) => e.path);
    assert.deepEqual(markers, ['.wh.gone']);
  }));

  it('time mode looks at modification times only', () => withWalker(walker, async () => {
    const root = join(dir, `time-${walker}`);
    await mkdir(root);
    await writeFile(join(root, 'f'), 'x');
    const before = await indexTree(root, []);
    await chmod(join(root, 'f'), 0o600);
    assert.equal(diffTrees(root, before, await indexTree(root, []), 'time').entries.length, 0);
    assert.equal(diffTrees(root, before, await indexTree(root, []), 'full').entries.length, 1);
  }));

  it('leaves names that are not UTF-8 out, and counts them', () => withWalker(walker, async () => {
    const root = join(dir, `latin1-${walker}`);
    await mkdir(root);
    await writeFile(join(root, 'plain'), 'x');
    const before = await indexTree(root, []);
    writeFileSync(latin1(root, 'caf\xe9'), 'x');
    mkdirSync(latin1(root, 'd\xe9j\xe0'));
    writeFileSync(Buffer.concat([latin1(root, 'd\xe9j\xe0'), Buffer.from('/below')]), 'x');
    await writeFile(join(root, 'new'), 'n');
    const now = await indexTree(root, []);
    assert.equal(now.skipped, 2);
    const snap = diffTrees(root, before, now, 'full');
    assert.deepEqual(snap.entries.map((e) => e.path), ['new']);
    assert.deepEqual(snap.whiteouts, []);
  }));

  it('sees a path changed in relaxed directories only when its owner or mode moved', () => withWalker(walker, async () => {
    const root = join(dir, `relaxed-${walker}`);
    await mkdir(join(root, 'etc'), { recursive: true });
    const before = await indexTree(root, []);
    await writeFile(join(root, 'etc', 'hosts'), '');
    await rm(join(root, 'etc', 'hosts'));
    const relaxed = new Set(['etc']);
    assert.deepEqual(diffTrees(root, before, await indexTree(root, []), 'full', () => false, relaxed).entries, []);
    await chmod(join(root, 'etc'), 0o700);
    assert.deepEqual(diffTrees(root, before, await indexTree(root, []), 'full', () => false, relaxed).entries.map((e) => e.path), ['etc']);
  }));
});

describe('tree walks', () => {
  it('split between threads find every path once, and skip ignored ones', async () => {
    const root = join(dir, 'wide');
    for (let d = 0; d < 80; d++) {
      await mkdir(join(root, 'top', `d${d}`, 'sub'), { recursive: true });
      await writeFile(join(root, 'top', `d${d}`, 'sub', 'f'), 'x');
    }
    await mkdir(join(root, 'top', 'd7', 'skip'), { recursive: true });
    for (const index of [await indexTree(root, ['top/d7/skip', 'top/d9']), await nodeIndex(root, ['top/d7/skip', 'top/d9'])]) {
      assert.equal(index.size, 1 + 80 * 3 - 3 + 0);
      assert.ok(index.has('top/d79/sub/f') && !index.has('top/d7/skip') && !index.has('top/d9/sub'));
    }
  });

  it('kiln-sandbox scan gives the numbers of the Node.js walk, for every kind of entry and name', async () => {
    const root = join(dir, 'kinds');
    await mkdir(join(root, 'dir/sub'), { recursive: true });
    await writeFile(join(root, 'dir/file'), 'content');
    await writeFile(join(root, 'dir/sub/empty'), '');
    await chmod(join(root, 'dir/sub/empty'), 0o4755);
    await link(join(root, 'dir/file'), join(root, 'hardlink'));
    await symlink('dir/file', join(root, 'symlink'));
    await symlink('dir', join(root, 'dirlink')); // never followed
    await symlink('/nowhere', join(root, 'dangling'));
    await makeNodes([
      { type: 'fifo', mode: 0o644, major: 0, minor: 0, path: join(root, 'fifo') },
      { type: 'char', mode: 0o666, major: 1, minor: 3, path: join(root, 'null') },
    ]);
    for (const name of ['with space', 'new\nline', 'tab\there', 'back\\slash', 'caf\u00e9', '\u65e5\u672c', '\u{1f600}', 'repl\ufffd', '-dash', '.hidden']) {
      await writeFile(join(root, name), name);
    }
    writeFileSync(latin1(root, 'not-utf8-\xff'), 'x');
    await mkdir(join(root, 'ignored/deep'), { recursive: true });
    await writeFile(join(root, 'ignored/deep/f'), 'x');
    await writeFile(join(root, 'dir/ignored-file'), 'x');
    await mkdir(join(root, 'ignored-not'), { recursive: true }); // a prefix of an ignored path is not ignored
    let deep = join(root, 'deep');
    for (let i = 0; i < 150; i++) deep = join(deep, `level${i}`);
    await mkdir(deep, { recursive: true });
    await writeFile(join(deep, 'bottom'), 'x');
    for (let d = 0; d < 40; d++) {
      await mkdir(join(root, 'wide', `d${d}`), { recursive: true });
      await writeFile(join(root, 'wide', `d${d}`, 'f'), `${d}`);
    }
    const ignored = ['ignored', 'dir/ignored-file', 'no/such/path', 'dirlink/file'];
    const expected = dump(await nodeIndex(root, ignored));
    assert.equal(expected.length, 10 + 10 + 1 + 152 + 81);
    assert.ok(expected.some(([p]) => p === 'new\nline') && !expected.some(([p]) => p.startsWith('ignored/') || p === 'dir/ignored-file'));
    for (const threads of [undefined, 1, 4]) {
      const index = await nativeIndex(root, ignored, threads);
      assert.deepEqual(dump(index), expected, `threads: ${threads ?? 'default'}`);
      assert.equal(index.skipped, 1);
    }
    assert.equal((await nodeIndex(root, ignored)).skipped, 1);
  });

  it('a root that does not exist is empty for both walks', async () => {
    for (const index of [await nativeIndex(join(dir, 'missing'), []), await nodeIndex(join(dir, 'missing'), [])]) assert.equal(index.size, 0);
  });

  it('parses kiln-sandbox scan output cut into chunks of any size, and refuses it cut short', async () => {
    const root = join(dir, 'chunks');
    for (let d = 0; d < 30; d++) {
      await mkdir(join(root, `d${d}`), { recursive: true });
      for (let f = 0; f < 200; f++) await writeFile(join(root, `d${d}`, `file-${f}`), '');
    }
    const output = execFileSync(sandboxBinary(), ['scan', root], { maxBuffer: 1 << 26 });
    const whole = new ScanParser();
    whole.push(output);
    const expected = dump(TreeIndex.fromEntries(whole.result()));
    assert.equal(expected.length, 30 * 201);
    for (const size of [1, 7, 4093, 65536]) {
      const parser = new ScanParser();
      for (let at = 0; at < output.length; at += size) parser.push(output.subarray(at, at + size));
      assert.deepEqual(dump(TreeIndex.fromEntries(parser.result())), expected, `chunks of ${size}`);
    }
    const short = new ScanParser();
    short.push(output.subarray(0, output.length - 1));
    assert.throws(() => short.result(), /cut short/);
    const long = new ScanParser();
    assert.throws(() => long.push(Buffer.concat([output, output.subarray(0, 8)])), /after its end/);
  });

  it('falls back to the Node.js walk when kiln-sandbox cannot scan', async () => {
    const root = join(dir, 'fallback');
    await mkdir(join(root, 'a'), { recursive: true });
    await writeFile(join(root, 'a/f'), 'x');
    const expected = dump(await nodeIndex(root, []));
    const old = join(dir, 'old-sandbox');
    await writeFile(old, '#!/bin/sh\necho "usage: kiln-sandbox run" >&2\nexit 2\n', { mode: 0o755 });
    const saved = process.env['KILN_SANDBOX'];
    try {
      for (const binary of [join(dir, 'no-such-binary'), old]) {
        process.env['KILN_SANDBOX'] = binary;
        assert.deepEqual(dump(await indexTree(root, [])), expected, binary);
      }
    } finally {
      if (saved === undefined) delete process.env['KILN_SANDBOX'];
      else process.env['KILN_SANDBOX'] = saved;
    }
  });
});

describe('overlay upper snapshots', () => {
  it('reads whiteout devices, opaque directories, hardlinks and xattrs', async () => {
    const upper = join(dir, 'upper');
    await mkdir(join(upper, 'etc/opaque'), { recursive: true });
    await writeFile(join(upper, 'etc/file'), 'x');
    await link(join(upper, 'etc/file'), join(upper, 'etc/file2'));
    await makeNodes([{ type: 'char', mode: 0, major: 0, minor: 0, path: join(upper, 'etc/deleted') }]);
    await setAttribute(join(upper, 'etc/opaque'), 'trusted.overlay.opaque', Buffer.from('y'));
    await setAttribute(join(upper, 'etc/file'), 'security.capability', CAP_NET_RAW);
    const snap = await snapshotUpperDir(upper);
    assert.deepEqual(snap.whiteouts, ['etc/deleted']);
    assert.deepEqual(snap.opaque, ['etc/opaque']);
    const file = snap.entries.find((e) => e.path === 'etc/file')!;
    assert.deepEqual(file.xattrs, { 'security.capability': CAP_NET_RAW });
    assert.equal(snap.entries.find((e) => e.path === 'etc/file2')!.type, 'hardlink');
    assert.equal(snap.entries.find((e) => e.path === 'etc/opaque')!.xattrs, undefined, 'overlay xattrs stay out of layers');
  });

  it('gives the same snapshot, in the same order, from kiln-sandbox scan as from the Node.js walk', async () => {
    const upper = join(dir, 'upper-both');
    // Names whose order differs between a plain sort of whole paths and the walk's (a/b before a-b).
    for (const d of ['a/b/c', 'a-b', 'a.d/x', 'Z', 'é/ü', 'opaque/inner']) await mkdir(join(upper, d), { recursive: true });
    for (const f of ['a/b/c/f', 'a-b/f', 'a.d/x/f', 'a/0', 'Z/f', 'é/ü/ß', 'opaque/inner/f', 'top']) await writeFile(join(upper, f), f);
    await link(join(upper, 'a/0'), join(upper, 'Z/hard'));
    await link(join(upper, 'a/0'), join(upper, 'a-b/hard'));
    await symlink('../top', join(upper, 'a/link'));
    await chmod(join(upper, 'top'), 0o4755);
    await makeNodes([
      { type: 'char', mode: 0, major: 0, minor: 0, path: join(upper, 'a/b/gone') },
      { type: 'char', mode: 0o666, major: 1, minor: 3, path: join(upper, 'a/null') },
      { type: 'block', mode: 0o660, major: 7, minor: 1, path: join(upper, 'a/loop1') },
      { type: 'fifo', mode: 0o644, major: 0, minor: 0, path: join(upper, 'a.d/fifo') },
    ]);
    await setAttribute(join(upper, 'opaque'), 'trusted.overlay.opaque', Buffer.from('y'));
    await setAttribute(join(upper, 'a/b'), 'user.note', Buffer.from('kept'));
    await setAttribute(join(upper, 'top'), 'security.capability', CAP_NET_RAW);
    // The scan runs here (it would fall back to the walk without kiln-sandbox, and compare nothing).
    const details = await nativeScan(upper, [], { details: true });
    assert.equal(details.fields, DETAIL_FIELDS);
    let scanned!: Awaited<ReturnType<typeof snapshotUpperDir>>;
    await withWalker('native', async () => { scanned = await snapshotUpperDir(upper); });
    assert.deepEqual(scanned, walkUpperDir(upper));
    // The walk's order is not a plain sort of the paths, and every kind of entry is there.
    const paths = scanned.entries.map((e) => e.path);
    assert.ok(paths.indexOf('a/b/c/f') < paths.indexOf('a-b'), paths.join(' '));
    assert.deepEqual(scanned.whiteouts, ['a/b/gone']);
    assert.deepEqual(scanned.opaque, ['opaque']);
    const of = (p: string) => scanned.entries.find((e) => e.path === p)!;
    assert.deepEqual([of('a/null').type, of('a/null').devmajor, of('a/null').devminor], ['char', 1, 3]);
    assert.deepEqual([of('a/loop1').type, of('a/loop1').devmajor, of('a/loop1').devminor], ['block', 7, 1]);
    // "Z" sorts before "a": the first of the three names carries the content.
    assert.equal(of('Z/hard').type, 'file');
    assert.deepEqual([of('a/0').type, of('a/0').linkname, of('a-b/hard').linkname], ['hardlink', 'Z/hard', 'Z/hard']);
    assert.deepEqual(of('a/b').xattrs, { 'user.note': Buffer.from('kept') });
    assert.deepEqual(of('top').xattrs, { 'security.capability': CAP_NET_RAW });
    assert.equal(of('top').mode, 0o4755);
    assert.equal(of('a/link').linkname, '../top');
  });
});
