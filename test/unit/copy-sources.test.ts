// Which paths a COPY --from unpacks from a stage: the sources' literal parts, with their symlinks
// followed, and nothing else; everything when that cannot be told safely.
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { sourceSubset } from '../../src/build/copy-sources.js';
import { FsView } from '../../src/build/fs-view.js';
import type { LayerEntry } from '../../src/layer/layer-writer.js';

const at = new Date(0);
const dir = (path: string): LayerEntry => ({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: at });
const file = (path: string): LayerEntry => ({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: at, size: 1 });
const link = (path: string, linkname: string, type: 'symlink' | 'hardlink' = 'symlink'): LayerEntry =>
  ({ path, type, mode: 0o777, uid: 0, gid: 0, mtime: at, linkname });

const view = FsView.of([
  dir('app'), dir('app/src'), file('app/src/index.js'), dir('usr'), dir('usr/lib'), dir('usr/lib/node'), file('usr/lib/node/x'),
  dir('usr/bin'), file('usr/bin/tool'), link('lib', 'usr/lib'), link('app/current', '/usr/lib/node'),
]);

describe('sourceSubset', () => {
  it('keeps a source, its parents and all below it, and nothing else', () => {
    const subset = sourceSubset(['/app/src'], view)!;
    assert.ok(subset);
    for (const p of ['', 'app', 'app/src', 'app/src/index.js']) assert.equal(subset.keep(p), true, p);
    for (const p of ['usr', 'usr/bin/tool', 'lib', 'app/current', 'application']) assert.equal(subset.keep(p), false, p);
  });

  it('follows a symlinked source and symlinked parents, keeping the links themselves', () => {
    const subset = sourceSubset(['lib/node', '/app/current'], view)!;
    for (const p of ['lib', 'lib/node', 'usr', 'usr/lib', 'usr/lib/node/x', 'app', 'app/current']) assert.equal(subset.keep(p), true, p);
    assert.equal(subset.keep('usr/bin/tool'), false);
  });

  it('cuts a glob at its first wildcard, and tells subsets apart by what they keep', () => {
    const a = sourceSubset(['/app/*/index.js'], view)!;
    assert.equal(a.keep('app/src/index.js'), true);
    assert.equal(a.keep('usr'), false);
    assert.notEqual(a.id, sourceSubset(['/usr/bin'], view)!.id);
  });

  it('unpacks everything for a root, a leading glob, or a hard link reaching outside', () => {
    assert.equal(sourceSubset(['/'], view), undefined);
    assert.equal(sourceSubset(['.'], view), undefined);
    assert.equal(sourceSubset(['*.js'], view), undefined);
    const linked = FsView.of([dir('app'), link('app/tool', 'usr/bin/tool', 'hardlink'), dir('usr'), dir('usr/bin'), file('usr/bin/tool')]);
    assert.equal(sourceSubset(['/app'], linked), undefined);
  });

  it('tells which layers hold something it copies, so the others are never read', () => {
    const subset = sourceSubset(['/app/src'], view)!;
    const listing = (entries: LayerEntry[], whiteouts: string[] = [], opaque: string[] = []) => ({ entries, whiteouts, opaque });
    // Parent directories alone change nothing copied; a base's /usr is irrelevant.
    assert.equal(subset.touches(listing([dir('app'), dir('usr'), file('usr/bin/tool')])), false);
    assert.equal(subset.touches(listing([dir('app/src'), file('app/src/index.js')])), true);
    assert.equal(subset.touches(listing([file('app/src/other.js')])), true);
    // A parent replaced by a file or a symlink, or deleted, or made opaque, changes what is copied.
    assert.equal(subset.touches(listing([file('app')])), true);
    assert.equal(subset.touches(listing([link('app', 'usr')])), true);
    assert.equal(subset.touches(listing([], ['app'])), true);
    assert.equal(subset.touches(listing([], ['app/src/index.js'])), true);
    assert.equal(subset.touches(listing([], ['application'])), false);
    assert.equal(subset.touches(listing([], [], ['app'])), true);
    assert.equal(subset.touches(listing([], [], ['usr'])), false);
  });
});
