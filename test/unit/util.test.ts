// src/util: OncePerKey (shared work per key, failures forgotten), Slots (a counting semaphore) and removeTree.
import { strict as assert } from 'node:assert';
import { chmod, lstat, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { OncePerKey } from '../../src/util/once-per-key.js';
import { removeTree } from '../../src/util/remove-tree.js';
import { Slots } from '../../src/util/slots.js';

describe('OncePerKey', () => {
  it('runs the work once per key for every caller, during and after it', async () => {
    const once = new OncePerKey<number>();
    let runs = 0;
    const make = async (): Promise<number> => ++runs;
    const [a, b] = await Promise.all([once.get('k', make), once.get('k', make)]);
    assert.deepEqual([a, b, await once.get('k', make), runs], [1, 1, 1, 1]);
    assert.equal(await once.get('other', make), 2);
  });

  it('forgets a failure, so the next caller tries again', async () => {
    const once = new OncePerKey<string>();
    await assert.rejects(once.get('k', async () => { throw new Error('network down'); }), /network down/);
    assert.equal(await once.get('k', async () => 'fetched'), 'fetched');
  });

  it('keeps a value set from elsewhere, but never over one it has', async () => {
    const once = new OncePerKey<string>();
    once.set('k', 'adopted');
    once.set('k', 'second');
    assert.equal(await once.get('k', async () => 'made'), 'adopted');
  });
});

describe('Slots', () => {
  /** Starts `count` tasks that each wait for their own release; reports how many ran at once at most. */
  function tasks(slots: Slots, count: number) {
    let running = 0;
    let peak = 0;
    const release: (() => void)[] = [];
    const started: number[] = [];
    const done = Array.from({ length: count }, (_, i) => slots.run(async () => {
      running++;
      peak = Math.max(peak, running);
      started.push(i);
      await new Promise<void>((resolve) => release.push(resolve));
      running--;
    }));
    return { done, started, release, peak: () => peak };
  }
  const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

  it('runs at most its size at once, the others in order as slots free up', async () => {
    const t = tasks(new Slots(2), 4);
    await tick();
    assert.deepEqual(t.started, [0, 1]);
    t.release.shift()!();
    await tick();
    assert.deepEqual(t.started, [0, 1, 2]);
    while (t.release.length) { t.release.shift()!(); await tick(); }
    await Promise.all(t.done);
    assert.deepEqual([t.started, t.peak()], [[0, 1, 2, 3], 2]);
  });

  it('grows: waiting tasks start at once, and the larger size holds afterwards', async () => {
    const slots = new Slots(1);
    const t = tasks(slots, 5);
    await tick();
    assert.deepEqual(t.started, [0]);
    slots.grow(3);
    await tick();
    assert.deepEqual(t.started, [0, 1, 2]);
    slots.grow(2); // never shrinks
    while (t.release.length) { t.release.shift()!(); await tick(); }
    await Promise.all(t.done);
    assert.equal(t.peak(), 3);
  });
});

describe('removeTree', () => {
  it('removes a tree with unreadable directories, with rm or fs.rm, and never follows a symlink out of it', async () => {
    const base = await mkdtemp(join(tmpdir(), 'kiln-remove-'));
    try {
      const tree = join(base, 'tree');
      const kept = join(base, 'kept');
      await mkdir(join(tree, 'a/locked'), { recursive: true });
      await mkdir(kept);
      await writeFile(join(kept, 'file'), 'stays');
      await writeFile(join(tree, 'a/locked/f'), 'x');
      await symlink(kept, join(tree, 'link'));
      await chmod(join(tree, 'a/locked'), 0o000);
      await removeTree(tree, 'rm-program');
      await assert.rejects(lstat(tree));
      assert.equal((await lstat(join(kept, 'file'))).size, 5);
      await removeTree(join(base, 'never-there'), 'rm-program');
      await mkdir(join(tree, 'again'), { recursive: true });
      await symlink(kept, join(tree, 'again', 'link'));
      await removeTree(tree, 'fs');
      await assert.rejects(lstat(tree));
      assert.equal((await lstat(join(kept, 'file'))).size, 5);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});

