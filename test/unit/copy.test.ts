// COPY/ADD planning without a daemon: --chmod (octal and symbolic, as BuildKit's setmode port applies
// it), .dockerignore-style patterns for --exclude and --parents, what counts as a URL or git source,
// archive detection and member names, and whole plans over temporary contexts — --exclude, --parents,
// --link over a symlinked directory of the image, ADD of archives with hostile members.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { cleanMemberName, compressionOf, detectArchive, startsWithTarHeader } from '../../src/build/add-archive.js';
import { applyChmod, parseChmod } from '../../src/build/chmod.js';
import { CopyError, planCopy, sourceKind, type CopyPlan } from '../../src/build/copy.js';
import { LayerPlan } from '../../src/build/copy-tree.js';
import { FsView } from '../../src/build/fs-view.js';
import { BuildContext } from '../../src/context/build-context.js';
import { BadPatternError, goClean, PathPatterns } from '../../src/context/go-glob.js';
import type { LayerEntry } from '../../src/layer/layer-writer.js';
import { encodeHeader, END_OF_ARCHIVE, padding, type TarEntryType } from '../../src/layer/tar-format.js';

const temps: string[] = [];
after(async () => { for (const t of temps) await rm(t, { recursive: true, force: true }); });

const mode = (spec: string, from: number, dir = false): string => applyChmod(parseChmod(spec), from, dir).toString(8);

describe('--chmod', () => {
  it('takes octal as BuildKit does: any run of octal digits up to 07777', () => {
    assert.equal(mode('755', 0o600), '755');
    assert.equal(mode('0644', 0o777), '644');
    assert.equal(mode('7', 0o777), '7');
    assert.equal(mode('00004755', 0), '4755');
    for (const bad of ['10000', '8', '0o755', '79']) {
      assert.throws(() => parseChmod(bad), /invalid chmod parameter: '.*'\. it should be octal string and between 0 and 07777/);
    }
  });

  it('applies symbolic modes to each file\'s own mode (the cases of BuildKit\'s own test)', () => {
    assert.equal(mode('go-w', 0o666), '644');
    assert.equal(mode('o-rwx,g+x', 0o644), '650');
    assert.equal(mode('u=rwx,g=,o=', 0o644), '700');
    assert.equal(mode('u+rw,g+r,o-x,o+w', 0o644), '646');
    assert.equal(mode('a+X', 0o500, true), '511');
    assert.equal(mode('g+rw,o+rw', 0o500, true), '566');
    assert.equal(mode('u=rwX,go=rX', 0o500, true), '755');
    assert.equal(mode('u=rwX,go=rX', 0o600), '644');
    assert.equal(mode('u=rwX,go=rX', 0o700), '755');
  });

  it('gives X only to directories and to files that were executable, and clears it like x with "-"', () => {
    assert.equal(mode('+X', 0o644), '644');
    assert.equal(mode('+X', 0o744), '755');
    assert.equal(mode('a=rX', 0o644), '444');
    assert.equal(mode('a=rX', 0o700), '555');
    assert.equal(mode('a=rX', 0o700, true), '555');
    assert.equal(mode('-X', 0o755), '644');
    // X looks at the mode before the whole --chmod: "-x" first does not make it a plain file.
    assert.equal(mode('a-x,a+X', 0o755), '755');
    assert.equal(mode('+x,-x', 0o644), '644');
  });

  it('copies classes, handles s and t, and keeps the sticky bit on "="', () => {
    assert.equal(mode('g=u', 0o604), '664');
    assert.equal(mode('g=u,o-r', 0o604), '660');
    assert.equal(mode('o+g', 0o650), '655');
    assert.equal(mode('u-o', 0o755), '255');
    assert.equal(mode('u+s', 0o755), '4755');
    assert.equal(mode('+s', 0o755), '6755');
    assert.equal(mode('o+s', 0o755), '755');
    assert.equal(mode('+t', 0o755, true), '1755');
    assert.equal(mode('=rw', 0o1755, true), '1666');
    assert.equal(mode('u=', 0o4755), '55');
    assert.equal(mode('u+r-w', 0o644), '444');
    assert.equal(mode('+x', 0o644), '755');
  });

  it('refuses malformed modes', () => {
    for (const bad of ['u', 'u+x,', 'x', '+q', 'u+x,,g+w', 'a+rw!', '-1', ' +x']) {
      assert.throws(() => parseChmod(bad), (e: Error) => e instanceof CopyError && /invalid chmod parameter/.test(e.message), bad);
    }
  });
});

describe('.dockerignore-style patterns (--exclude, --parents)', () => {
  const m = (patterns: string[], path: string): boolean => PathPatterns.compile(patterns).matches(path);

  it('matches a path or one of its parents, * and ? within one component, ** across them', () => {
    assert.ok(m(['*.txt'], 'a.txt'));
    assert.ok(!m(['*.txt'], 'd/a.txt'), '* does not cross "/"');
    assert.ok(m(['**/*.txt'], 'd/e/a.txt'));
    assert.ok(m(['**/*.txt'], 'a.txt'));
    assert.ok(m(['skip'], 'skip/deep/s.txt'));
    assert.ok(m(['src/**'], 'src/a/b'));
    assert.ok(!m(['src/**'], 'src'));
    assert.ok(m(['**/node_modules'], 'a/node_modules/x'));
    assert.ok(m(['a?c'], 'abc') && !m(['a?c'], 'a/c'));
    assert.ok(m(['[a-c]x'], 'bx') && !m(['[^a-c]x'], 'bx'));
    assert.ok(m(['a\\*b'], 'a*b') && !m(['a\\*b'], 'axb'));
    assert.ok(m(['a+b.(c)'], 'a+b.(c)'), 'regular-expression characters are literal');
    assert.ok(m(['./x/../y'], 'y'), 'patterns are cleaned');
    assert.ok(!m(['/y'], 'y'), 'a leading "/" is kept, as in BuildKit');
  });

  it('re-includes with "!" and refuses bad patterns', () => {
    const p = PathPatterns.compile(['skip', '!skip/keep.txt']);
    assert.ok(p.hasExclusions);
    assert.ok(p.matches('skip/s.txt'));
    assert.ok(!p.matches('skip/keep.txt'));
    const parent = p.match('skip');
    assert.ok(parent.matched);
    assert.ok(!p.match('skip/keep.txt', parent.state).matched);
    assert.ok(p.match('skip/other', parent.state).matched);
    assert.throws(() => PathPatterns.compile(['[a']), BadPatternError);
    assert.throws(() => PathPatterns.compile(['a\\']), BadPatternError);
    assert.throws(() => PathPatterns.compile(['[]a]']), BadPatternError);
    assert.throws(() => PathPatterns.compile(['!']), /illegal exclusion pattern/);
    assert.ok(PathPatterns.compile(['', '  ']).empty);
  });

  it('knows which directories cannot hold a match', () => {
    const p = PathPatterns.compile(['src/*/pkg.json']);
    assert.ok(p.couldMatchBelow('src'));
    assert.ok(p.couldMatchBelow('src/a'));
    assert.ok(!p.couldMatchBelow('lib'));
    assert.ok(!p.couldMatchBelow('src/a/deeper'));
    assert.ok(PathPatterns.compile(['src/**/x']).couldMatchBelow('src/a/b/c'));
    assert.ok(!PathPatterns.compile(['src/**/x']).couldMatchBelow('lib'));
    assert.equal(goClean('a/./b/../c/'), 'a/c');
    assert.equal(goClean('/../x'), '/x');
    assert.equal(goClean(''), '.');
  });
});

describe('sources BuildKit does not read from the context', () => {
  it('tells URLs and git repositories from local paths', () => {
    const cases: [string, string][] = [
      ['https://example.com/a.tgz', 'url'], ['http://example.com/', 'url'], ['https://github.com/moby/buildkit.git', 'git'],
      ['https://github.com/moby/buildkit.git#v0.1:docs', 'git'], ['git@github.com:moby/buildkit.git', 'git'], ['ssh://host/repo', 'git'],
      ['git://host/repo', 'git'], ['github.com/moby/buildkit', 'local'], ['./git@x:y', 'local'], ['ftp://host/x', 'local'],
      ['HTTPS://example.com/x', 'local'], ['dir/file', 'local'],
    ];
    for (const [source, kind] of cases) assert.equal(sourceKind(source), kind, source);
  });
});

interface Member { name: string; type?: TarEntryType; mode?: number; uid?: number; gid?: number; content?: string; linkname?: string }

function tarOf(members: Member[]): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    const type = m.type ?? 'file';
    const content = Buffer.from(m.content ?? '');
    parts.push(encodeHeader({
      name: m.name, type, mode: m.mode ?? (type === 'dir' ? 0o755 : 0o644), uid: m.uid ?? 0, gid: m.gid ?? 0,
      size: type === 'file' ? content.length : 0, mtime: 1_700_000_000, linkname: m.linkname,
    }));
    if (type === 'file') parts.push(content, padding(content.length));
  }
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

describe('ADD archives', () => {
  it('are told by content: a compression signature, then a tar header Go accepts', async () => {
    const tar = tarOf([{ name: 'a', content: 'x' }]);
    assert.ok(startsWithTarHeader(tar));
    assert.ok(!startsWithTarHeader(Buffer.alloc(1024)), 'an empty archive is copied as a file');
    assert.ok(!startsWithTarHeader(Buffer.from('plain text, not a tar'.repeat(40))));
    const v7 = Buffer.from(tar);
    v7.fill(0, 257, 265); // no "ustar" magic: Go still reads it
    let sum = 0;
    v7.fill(0x20, 148, 156);
    for (let i = 0; i < 512; i++) sum += v7[i]!;
    v7.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
    assert.ok(startsWithTarHeader(v7));
    assert.equal(compressionOf(gzipSync(tar)), 'gzip');
    assert.equal(compressionOf(Buffer.from('BZh91AY')), 'bzip2');
    assert.equal(compressionOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 0])), 'xz');
    assert.equal(compressionOf(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0])), 'zstd');
    assert.equal(compressionOf(Buffer.from([0x1f, 0x8b, 0x07])), 'none');

    const dir = await mkdtemp(join(tmpdir(), 'kiln-copy-unit-'));
    temps.push(dir);
    const files: [string, Buffer, string | undefined][] = [
      ['plain.tar', tar, 'none'], ['a.tgz', gzipSync(tar), 'gzip'], ['bad.gz', Buffer.from([0x1f, 0x8b, 0x08, 1, 2, 3]), undefined],
      ['empty.tar.gz', Buffer.alloc(0), undefined], ['gz-of-text.gz', gzipSync('hello'), undefined],
      ['a.tbz', execFileSync('bzip2', ['-c'], { input: tar }), 'bzip2'], ['a.txz', execFileSync('xz', ['-c'], { input: tar }), 'xz'],
      ['a.tzst', execFileSync('zstd', ['-c', '-q'], { input: tar }), 'zstd'],
    ];
    for (const [name, data, expected] of files) {
      await writeFile(join(dir, name), data);
      assert.equal(await detectArchive(join(dir, name)), expected, name);
    }
  });

  it('place member names inside the destination as Docker does', () => {
    assert.equal(cleanMemberName('.'), undefined);
    assert.equal(cleanMemberName('./'), undefined);
    assert.equal(cleanMemberName('/'), '');
    assert.equal(cleanMemberName('..'), '');
    assert.equal(cleanMemberName('../../x'), 'x');
    assert.equal(cleanMemberName('/etc/passwd'), 'etc/passwd');
    assert.equal(cleanMemberName('a/../../b'), 'b');
    assert.equal(cleanMemberName('./a//b/'), 'a/b');
  });
});

describe('symlinks looked up from a root', () => {
  const entry = (path: string, type: LayerEntry['type'], linkname?: string): LayerEntry =>
    ({ path, type, mode: 0o755, uid: 0, gid: 0, mtime: new Date(0), ...(linkname ? { linkname } : {}) });
  const image = new FsView();
  image.apply([entry('usr', 'dir'), entry('usr/lib', 'dir'), entry('lib', 'symlink', 'usr/lib'), entry('dest', 'dir'), entry('dest/abs', 'symlink', '/etc'), entry('dest/up', 'symlink', '../../..'), entry('file', 'file')]);
  const mkdir = (path: string): LayerEntry => entry(path, 'dir');

  it('follows symlinks inside a chroot at the destination', () => {
    const plan = new LayerPlan(image);
    const opts = { followLast: false, mkdir, danglingLinks: 'create' as const, what: 'ADD' };
    assert.equal(plan.resolve('', 'lib/x/y', opts), 'usr/lib/x/y');
    assert.equal(plan.resolve('dest', 'abs/x', opts), 'dest/etc/x', 'an absolute target starts at the root');
    assert.equal(plan.resolve('dest', 'up/x', opts), 'dest/x', '".." stops at the root');
    assert.equal(plan.resolve('dest', '../../x', opts), 'dest/x');
    assert.ok(plan.get('dest/etc')?.type === 'dir', 'missing parents are planned');
    assert.throws(() => plan.resolve('', 'file/x', opts), /\/file is not a directory/);
    assert.equal(plan.resolve('dest', 'abs/y', { ...opts, danglingLinks: 'error' as const }), 'dest/etc/y', 'the target exists now');
    assert.equal(plan.resolve('', 'lib/new/x', { ...opts, danglingLinks: 'error' as const }), 'usr/lib/new/x', 'a missing directory after a link is made');
  });

  it('sees what the layer placed before the image, and forgets what it replaced', () => {
    const plan = new LayerPlan(image);
    plan.put(entry('lib', 'dir'));
    assert.equal(plan.resolve('', 'lib/x', { followLast: false, mkdir, danglingLinks: 'create', what: 'COPY' }), 'lib/x');
    plan.put({ ...entry('usr', 'file'), content: Buffer.alloc(0) });
    assert.equal(plan.get('usr/lib'), undefined);
    plan.put(entry('usr', 'dir'));
    assert.equal(plan.get('usr/lib'), undefined, 'a directory put back does not bring the old contents back');
  });
});

async function context(files: Record<string, string | { mode?: number; link?: string; data?: Buffer }>): Promise<BuildContext> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-copy-ctx-'));
  temps.push(dir);
  for (const [path, spec] of Object.entries(files)) {
    const abs = join(dir, path);
    await mkdir(join(abs, '..'), { recursive: true });
    if (typeof spec === 'string') await writeFile(abs, spec);
    else if (spec.link !== undefined) await symlink(spec.link, abs);
    else if (spec.data !== undefined) await writeFile(abs, spec.data);
    else await mkdir(abs, { recursive: true });
    if (typeof spec !== 'string' && spec.mode !== undefined) await chmod(abs, spec.mode);
  }
  return BuildContext.open(dir);
}

async function plan(ctx: BuildContext, p: Partial<CopyPlan> & Pick<CopyPlan, 'sources' | 'dest'>, image = new FsView()): Promise<Record<string, string>> {
  const entries = await planCopy({ instruction: 'COPY', inline: [], defaultOwner: { uid: 0, gid: 0 }, ...p }, ctx, image);
  const out: Record<string, string> = {};
  for (const e of entries) out[e.path] = `${e.type} ${e.mode.toString(8)} ${e.uid}:${e.gid}${e.linkname ? ' -> ' + e.linkname : ''}`;
  return out;
}

describe('COPY and ADD plans', () => {
  it('--exclude filters below directory sources, relative to them, with exceptions', async () => {
    const ctx = await context({ 'dir/a.txt': 'a', 'dir/b.md': 'b', 'dir/sub/c.md': 'c', 'dir/skip/s.txt': 's', 'dir/skip/keep.txt': 'k', 'top.md': 't' });
    const out = await plan(ctx, { sources: ['dir', 'top.md'], dest: '/ex/', excludes: ['*.md', 'skip', '!skip/keep.txt'] });
    assert.deepEqual(Object.keys(out).sort(), ['ex', 'ex/a.txt', 'ex/skip', 'ex/skip/keep.txt', 'ex/sub', 'ex/sub/c.md', 'ex/top.md']);
  });

  it('--parents keeps the directories from the root, or from a "/./" pivot, and needs exact sources to exist', async () => {
    const ctx = await context({ 'x/y/a.txt': 'a', 'x/y/b.txt': 'b', 'x/y/c.md': 'c', 'lib/z.txt': 'z', 'other/q.txt': 'q' });
    const out = await plan(ctx, { sources: ['x/y/a.txt', 'x/./y/*.md', 'lib'], dest: '/p', parents: true });
    assert.deepEqual(Object.keys(out).sort(), ['p', 'p/lib', 'p/lib/z.txt', 'p/x', 'p/x/y', 'p/x/y/a.txt', 'p/y', 'p/y/c.md']);
    await assert.rejects(plan(ctx, { sources: ['x/nothing.txt'], dest: '/p/', parents: true }), /COPY failed: "x\/nothing.txt" not found/);
    assert.deepEqual(Object.keys(await plan(ctx, { sources: ['x/*.none'], dest: '/p/', parents: true })), ['p'], 'a wildcard may match nothing');
    const excluded = await plan(ctx, { sources: ['x'], dest: '/p/', parents: true, excludes: ['x/y/*.md'] });
    assert.ok(excluded['p/x/y/a.txt'] && !excluded['p/x/y/c.md']);
  });

  it('--link ignores the image: no symlink of it is followed and parents are planned as created', async () => {
    const ctx = await context({ 'f.txt': 'f', 'dir/g.txt': 'g' });
    const image = new FsView();
    const e = (path: string, type: LayerEntry['type'], extra: Partial<LayerEntry> = {}): LayerEntry => ({ path, type, mode: 0o755, uid: 0, gid: 0, mtime: new Date(0), ...extra });
    image.apply([e('real', 'dir'), e('linkdir', 'symlink', { linkname: '/real' }), e('tmp', 'dir', { mode: 0o1777 }), e('existing', 'dir')]);
    const unlinked = await plan(ctx, { sources: ['f.txt'], dest: '/linkdir/f.txt' }, image);
    assert.deepEqual(Object.keys(unlinked), ['real/f.txt']);
    const linked = await plan(ctx, { sources: ['f.txt'], dest: '/linkdir/f.txt', link: true }, image);
    assert.deepEqual(linked, { linkdir: 'dir 755 0:0', 'linkdir/f.txt': 'file 644 0:0' });
    assert.deepEqual(await plan(ctx, { sources: ['f.txt'], dest: '/tmp/', link: true, chown: '7:8' }, image), { tmp: 'dir 755 7:8', 'tmp/f.txt': 'file 644 7:8' });
    assert.deepEqual(Object.keys(await plan(ctx, { sources: ['f.txt'], dest: '/existing', link: true }, image)), ['existing'], 'without "/" the file replaces the directory');
    // With --chmod, BuildKit copies as without --link.
    assert.deepEqual(Object.keys(await plan(ctx, { sources: ['f.txt'], dest: '/linkdir/f.txt', link: true, chmod: '600' }, image)), ['real/f.txt']);
    await assert.rejects(plan(ctx, { sources: ['f.txt'], dest: '/x', link: true, chown: 'app' }, image), /--chown=app with --link/);
    assert.deepEqual(await plan(ctx, { sources: ['f.txt'], dest: '/x', link: true, chown: 'root' }, image), { x: 'file 644 0:0' });
  });

  it('a directory source goes into a created destination with 0755, not the source directory\'s mode', async () => {
    const ctx = await context({ 'd700': { mode: 0o700 }, 'd700/f': 'f' });
    assert.deepEqual(await plan(ctx, { sources: ['d700'], dest: '/new' }), { new: 'dir 755 0:0', 'new/f': 'file 644 0:0' });
    assert.deepEqual(await plan(ctx, { sources: ['d700'], dest: '/new', chmod: 'go-r' }), { new: 'dir 755 0:0', 'new/f': 'file 600 0:0' });
  });

  it('ADD extracts archives into the destination, keeping members inside it', async () => {
    const tar = tarOf([
      { name: './', type: 'dir', mode: 0o777 },
      { name: 'app/', type: 'dir', mode: 0o750, uid: 1234, gid: 2345 },
      { name: 'app/data.txt', content: 'data', uid: 1234, gid: 2345 },
      { name: 'etc/', type: 'dir' },
      { name: 'app/abs', type: 'symlink', linkname: '/etc' },
      { name: 'app/abs/inside', content: 'in' },
      { name: '../escape', content: 'e' },
      { name: '/rooted', content: 'r' },
      { name: 'implied/deep/f', content: 'f', mode: 0o4755 },
      { name: 'app/hard', type: 'hardlink', linkname: '/app/data.txt', mode: 0o600, uid: 5, gid: 6 },
    ]);
    const ctx = await context({ 'a.tgz': { data: gzipSync(tar) }, 'etc-missing.tar': { data: tarOf([{ name: 'l', type: 'symlink', linkname: '/nowhere' }, { name: 'l/x', content: 'x' }]) } });
    const out = await plan(ctx, { instruction: 'ADD', sources: ['a.tgz'], dest: '/dest' });
    assert.deepEqual(out, {
      dest: 'dir 755 0:0',
      'dest/app': 'dir 750 1234:2345',
      'dest/app/data.txt': 'file 600 5:6',
      'dest/app/abs': 'symlink 777 0:0 -> /etc',
      'dest/etc': 'dir 755 0:0',
      'dest/etc/inside': 'file 644 0:0',
      'dest/escape': 'file 644 0:0',
      'dest/rooted': 'file 644 0:0',
      'dest/implied': 'dir 755 0:0',
      'dest/implied/deep': 'dir 755 0:0',
      'dest/implied/deep/f': 'file 4755 0:0',
      'dest/app/hard': 'hardlink 600 5:6 -> dest/app/data.txt',
    });
    const owned = await plan(ctx, { instruction: 'ADD', sources: ['a.tgz'], dest: '/o/', chown: '7:8', identity: async () => ({ uid: 7, gid: 8 }), chmod: '600' });
    assert.equal(owned['o'], 'dir 755 7:8');
    assert.equal(owned['o/app'], 'dir 750 7:8', '--chown applies to members, --chmod does not');
    assert.equal(owned['o/implied'], 'dir 755 0:0', 'implied directories stay root\'s');
    assert.deepEqual(await plan(ctx, { instruction: 'ADD', sources: ['a.tgz'], dest: '/k/', unpack: false }), { k: 'dir 755 0:0', 'k/a.tgz': 'file 644 0:0' });
    assert.deepEqual(Object.keys(await plan(ctx, { sources: ['a.tgz'], dest: '/c/' })), ['c', 'c/a.tgz'], 'COPY never extracts');
    await assert.rejects(plan(ctx, { instruction: 'ADD', sources: ['etc-missing.tar'], dest: '/d/' }), /points to a missing directory/);
  });

  it('refuses what BuildKit refuses', async () => {
    const ctx = await context({ 'f.txt': 'f' });
    await assert.rejects(plan(ctx, { instruction: 'ADD', sources: ['f.txt'], dest: '/x', checksum: 'sha256:00' }), /^Error: checksum requires HTTP\(S\) or Git sources$/);
    await assert.rejects(plan(ctx, { instruction: 'ADD', sources: ['f.txt', 'f.txt'], dest: '/x/', checksum: 'sha256:00' }), /checksum can't be specified for multiple sources/);
    await assert.rejects(plan(ctx, { sources: ['https://example.com/x'], dest: '/x' }), /source can't be a URL for COPY/);
    await assert.rejects(plan(ctx, { sources: ['git@github.com:moby/buildkit.git'], dest: '/x' }), /source can't be a git ref for COPY/);
    await assert.rejects(plan(ctx, { sources: ['f.txt'], dest: '/x', excludes: ['[z'] }), /invalid --exclude pattern: syntax error in pattern "\[z"/);
  });
});
