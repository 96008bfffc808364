// Cache keys and miss explanations (src/cache/cache-key.ts), --cache-ttl parsing, and the file view's
// deferred layers (cache hits whose files are listed only when a later step needs them).
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { CacheChain, explainMiss, type ChainItem } from '../../src/cache/cache-key.js';
import { parseGoDuration } from '../../src/cli/executor-command.js';
import { FsView } from '../../src/build/fs-view.js';

const settings = { platform: 'linux/amd64', reproducible: 'false' };
const run = (text: string, line = 3): ChainItem => ({ line, text });

describe('cache key chain', () => {
  it('gives the same keys for the same inputs, and a new key when any input changes', () => {
    const a = CacheChain.start('image@sha256:aa', settings).add(run('ENV A=1')).add(run('RUN make'));
    const b = CacheChain.start('image@sha256:aa', settings).add(run('ENV A=1')).add(run('RUN make'));
    assert.equal(a.key, b.key);
    const variants = [
      CacheChain.start('image@sha256:bb', settings).add(run('ENV A=1')).add(run('RUN make')),
      CacheChain.start('image@sha256:aa', { ...settings, platform: 'linux/arm64' }).add(run('ENV A=1')).add(run('RUN make')),
      CacheChain.start('image@sha256:aa', settings).add(run('ENV A=2')).add(run('RUN make')),
      CacheChain.start('image@sha256:aa', settings).add(run('ENV A=1')).add({ line: 3, text: 'RUN make', files: { 'a.c': 'file:644::x' } }),
      CacheChain.start('image@sha256:aa', settings).add(run('ENV A=1')).add({ line: 3, text: 'RUN make', extra: { 'from-stage': 'k' } }),
    ];
    for (const v of variants) assert.notEqual(v.key, a.key);
  });

  it('does not depend on the order files and extras were recorded in, nor on line numbers', () => {
    const x = CacheChain.start('s', settings).add({ line: 1, text: 'COPY . /', files: { a: '1', b: '2' } });
    const y = CacheChain.start('s', settings).add({ line: 9, text: 'COPY . /', files: { b: '2', a: '1' } });
    assert.equal(x.key, y.key);
  });

  it('cannot be confused by text that moves between items', () => {
    const x = CacheChain.start('s', settings).add(run('RUN a')).add(run('b'));
    const y = CacheChain.start('s', settings).add(run('RUN a\nb'));
    assert.notEqual(x.key, y.key);
  });

  it('starts a new segment after a settled step, keeping the key', () => {
    const chain = CacheChain.start('s', settings).add(run('RUN a'));
    const settled = chain.settle();
    assert.equal(settled.key, chain.key);
    assert.equal(settled.parent, chain.key);
    assert.deepEqual(settled.items, []);
    assert.equal(chain.items.length, 2); // the FROM item and the RUN
  });
});

describe('why a step missed', () => {
  const from = { line: 0, text: 'FROM image@sha256:aa' };
  it('names a changed build arg, in an ARG or in a RUN', () => {
    assert.equal(explainMiss([from, run('ARG V=1', 2)], [from, run('ARG V=2', 2)]), 'build arg V changed (line 2)');
    assert.equal(explainMiss([run('RUN |1 V=1 sh -c make')], [run('RUN |1 V=2 sh -c make')]), 'build arg V changed (line 3)');
  });

  it('names changed, added and removed context files', () => {
    const was = { line: 4, text: 'COPY . /', files: { 'a.txt': '1', 'b.txt': '1', 'gone.txt': '1' } };
    const now = { line: 4, text: 'COPY . /', files: { 'a.txt': '2', 'b.txt': '1', 'new.txt': '1' } };
    assert.equal(explainMiss([was], [now]), 'context file a.txt changed; context file new.txt was added; context file gone.txt was removed');
  });

  it('names the base image and changed instructions', () => {
    assert.match(explainMiss([from], [{ line: 0, text: 'FROM image@sha256:bb' }])!, /^the base image changed/);
    assert.equal(explainMiss([run('ENV A=1', 2)], [run('ENV A=2', 2)]), 'line 2 changed: ENV A=1 → ENV A=2');
    assert.equal(explainMiss([run('ENV A=1', 2)], [run('ENV A=1', 2), run('LABEL x=y', 3)]), 'line 3 is new: LABEL x=y');
    assert.equal(explainMiss([run('ENV A=1', 2)], [run('ENV A=1', 2)]), undefined);
  });
});

describe('--cache-ttl', () => {
  it('reads Go durations', () => {
    assert.equal(parseGoDuration('336h0m0s', '--cache-ttl'), 336 * 3_600_000);
    assert.equal(parseGoDuration('1.5h', '--cache-ttl'), 5_400_000);
    assert.equal(parseGoDuration('2h45m', '--cache-ttl'), 9_900_000);
    assert.equal(parseGoDuration('1ms', '--cache-ttl'), 1);
    assert.equal(parseGoDuration('0', '--cache-ttl'), 0);
    assert.throws(() => parseGoDuration('2w', '--cache-ttl'), /invalid --cache-ttl "2w"/);
    assert.throws(() => parseGoDuration('10', '--cache-ttl'), /invalid --cache-ttl/);
  });
});

describe('file view with deferred layers', () => {
  const dir = (path: string): { path: string; type: 'dir'; mode: number; uid: number; gid: number; mtime: Date } => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: new Date(0) });
  it('lists a deferred layer only on ready(), stacked in order with whiteouts', async () => {
    const view = new FsView();
    view.apply([dir('a'), dir('b')]);
    let listed = 0;
    view.deferLayer(async () => { listed++; return { entries: [dir('c')], whiteouts: ['a'], opaque: [] }; });
    view.deferLayer(async () => { listed++; return { entries: [dir('c/d')], whiteouts: [], opaque: [] }; });
    assert.equal(listed, 0);
    assert.throws(() => view.isDirectory('b'), /before ready/);
    const copy = view.clone();
    await Promise.all([view.ready(), view.ready()]);
    assert.equal(listed, 2);
    assert.deepEqual(['a', 'b', 'c', 'c/d'].map((p) => view.isDirectory(p)), [false, true, true, true]);
    await copy.ready();
    assert.equal(listed, 2, 'a clone shares the listing');
    assert.equal(copy.isDirectory('c/d'), true);
  });
});
