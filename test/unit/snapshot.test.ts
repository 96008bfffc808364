import { strict as assert } from 'node:assert';
import { link, mkdir, mkdtemp, rm, symlink, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setAttribute } from 'fs-xattr';
import { diffTrees, indexTree } from '../../src/snapshot/walk-snapshot.js';
import { snapshotUpperDir } from '../../src/snapshot/upper-snapshot.js';
import { snapshotLayerEntries } from '../../src/snapshot/snapshot.js';
import { makeNodes } from '../../src/isolation/sandbox-binary.js';

/** vfs_cap_data v2 with cap_net_raw permitted, as setcap writes it: binary, with NUL bytes. */
const CAP_NET_RAW = Buffer.from([0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'kiln-snapshot-')); });
after(async () => rm(dir, { recursive: true, force: true }));

describe('walk snapshots', () => {
  it('finds added, changed and deleted entries, with whiteouts only where needed', async () => {
    const root = join(dir, 'walk');
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
  });

  it('time mode looks at modification times only', async () => {
    const root = join(dir, 'time');
    await mkdir(root);
    await writeFile(join(root, 'f'), 'x');
    const before = await indexTree(root, []);
    await chmod(join(root, 'f'), 0o600);
    assert.equal(diffTrees(root, before, await indexTree(root, []), 'time').entries.length, 0);
    assert.equal(diffTrees(root, before, await indexTree(root, []), 'full').entries.length, 1);
  });
});

describe('tree walks', () => {
  it('split between threads find every path once, and skip ignored ones', async () => {
    const root = join(dir, 'wide');
    for (let d = 0; d < 80; d++) {
      await mkdir(join(root, 'top', `d${d}`, 'sub'), { recursive: true });
      await writeFile(join(root, 'top', `d${d}`, 'sub', 'f'), 'x');
    }
    await mkdir(join(root, 'top', 'd7', 'skip'), { recursive: true });
    const index = await indexTree(root, ['top/d7/skip', 'top/d9']);
    assert.equal(index.size, 1 + 80 * 3 - 3 + 0);
    assert.ok(index.has('top/d79/sub/f') && !index.has('top/d7/skip') && !index.has('top/d9/sub'));
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
    const snap = snapshotUpperDir(upper);
    assert.deepEqual(snap.whiteouts, ['etc/deleted']);
    assert.deepEqual(snap.opaque, ['etc/opaque']);
    const file = snap.entries.find((e) => e.path === 'etc/file')!;
    assert.deepEqual(file.xattrs, { 'security.capability': CAP_NET_RAW });
    assert.equal(snap.entries.find((e) => e.path === 'etc/file2')!.type, 'hardlink');
    assert.equal(snap.entries.find((e) => e.path === 'etc/opaque')!.xattrs, undefined, 'overlay xattrs stay out of layers');
  });
});
