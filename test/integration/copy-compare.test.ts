// COPY and ADD of local files, in full. What Docker's legacy builder also does (ADD of local tar
// archives, plain, gzip, bzip2 and xz; destination directories) is compared with `docker build` on a
// busybox base: same file tree, modes, owners, contents and links. The test dockerd's legacy builder
// has none of BuildKit's flags (--exclude, --parents, --link, symbolic --chmod, --unpack, --checksum),
// extracts no zstd and ignores --chown for archive members, so for those kiln's image is loaded into
// docker and its file tree (`docker export`) is checked against what BuildKit produces, written out
// here; errors are checked against BuildKit's messages.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { encodeHeader, END_OF_ARCHIVE, padding, type TarEntryType } from '../../src/layer/tar-format.js';
import { useBaseFixture } from '../helpers/fixture.js';
import { compareWithDocker } from '../helpers/docker-compare.js';
import { docker, kiln } from '../helpers/exec.js';
import { dockerImageTree, type Tree } from '../helpers/image-tree.js';

interface Member { name: string; type?: TarEntryType; mode?: number; uid?: number; gid?: number; content?: string; linkname?: string }

/** A tar written header by header, so members can have any name, owner and mode. */
function tarOf(members: Member[]): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    const type = m.type ?? 'file';
    const content = Buffer.from(type === 'file' ? m.content ?? '' : '');
    parts.push(encodeHeader({
      name: m.name, type, mode: m.mode ?? (type === 'dir' ? 0o755 : 0o644), uid: m.uid ?? 0, gid: m.gid ?? 0,
      size: content.length, mtime: 1_700_000_000, linkname: m.linkname,
    }), content, padding(content.length));
  }
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

/** Members with owners, modes, links, hostile names and parents the archive does not list. */
const members = tarOf([
  { name: './', type: 'dir', mode: 0o777 },
  { name: 'app/', type: 'dir', mode: 0o750, uid: 1234, gid: 2345 },
  { name: 'app/bin/', type: 'dir' },
  { name: 'app/bin/tool', mode: 0o4755, content: 'tool\n' },
  { name: 'app/data.txt', mode: 0o640, uid: 1234, gid: 2345, content: 'data\n' },
  { name: 'app/link', type: 'symlink', linkname: 'data.txt' },
  { name: 'etc/', type: 'dir', mode: 0o751 },
  { name: 'app/abs', type: 'symlink', linkname: '/etc' },
  { name: 'app/abs/inside.txt', content: 'through an absolute link, inside the destination\n' },
  { name: 'app/hard', type: 'hardlink', linkname: 'app/data.txt', mode: 0o640, uid: 1234, gid: 2345 },
  { name: '../escape.txt', content: 'clamped\n' },
  { name: '/rooted.txt', content: 'rooted\n' },
  { name: 'implied/deep/f', mode: 0o600, uid: 7, gid: 8, content: 'f\n' },
]);

/** Users for a later --chown to find in what an archive brought. */
const users = tarOf([
  { name: 'etc/', type: 'dir' },
  { name: 'etc/passwd', content: 'root:x:0:0:root:/root:/bin/sh\narchuser:x:2001:2002::/home/archuser:/bin/sh\n' },
  { name: 'etc/group', content: 'root:x:0:\narchgroup:x:2003:\n' },
]);

const compress = (program: string, data: Buffer): Buffer => execFileSync(program, ['-c', '-q'], { input: data });
const sha = (text: string): string => createHash('sha256').update(text).digest('hex');

const fx = useBaseFixture('copy-compare', { image: 'busybox', format: 'v2s2', dockerPull: true });

async function writeContext(ctx: string, files: Record<string, string | Buffer>): Promise<void> {
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(ctx, path, '..'), { recursive: true });
    await writeFile(join(ctx, path), content);
  }
}

describe('ADD of local archives matches docker build', () => {
  it('extracts plain, gzip, bzip2 and xz archives, merging, through image symlinks, never outside the destination', async () => {
    const name = 'add-archives';
    const ctx = join(fx.dir, name);
    await writeContext(ctx, {
      'plain.tar': members,
      'members.tgz': gzipSync(members),
      'members.tbz': compress('bzip2', members),
      'members.txz': compress('xz', members),
      'merge.tar': tarOf([{ name: './', type: 'dir', mode: 0o777 }, { name: 'keep/', type: 'dir', mode: 0o751, uid: 3, gid: 4 }, { name: 'keep/new', content: 'new\n' }]),
      'with-archive/inner.tar': members,
      'd700/f': 'in a 0700 directory\n',
    });
    await chmod(join(ctx, 'd700'), 0o700);
    await compareWithDocker({
      name,
      dockerfile: [
        `FROM ${fx.base}`,
        'RUN mkdir -p /real /merge/keep && ln -s /real /linkdir && echo old > /merge/keep/old && chmod 700 /merge',
        'ADD plain.tar /plain/',
        'ADD members.tgz /gz',
        'ADD members.tbz members.txz /multi/',
        'ADD members.tgz /linkdir/',
        'ADD merge.tar /merge/',
        'ADD fake.tar.gz empty.tar zeros.tar /notarchives/',
        'ADD with-archive /dirtar/',
        'ADD --chown=1000:1000 data.txt /owned-file',
        'COPY d700 /newdest',
        'COPY d700 /merge/',
        'RUN cat /linkdir/app/data.txt /real/etc/inside.txt /merge/keep/old > /seen',
      ].join('\n') + '\n',
      files: { 'fake.tar.gz': 'not an archive, whatever its name\n', 'empty.tar': '', 'zeros.tar': '\0'.repeat(1024), 'data.txt': 'data\n' },
      check: 'cat /seen && ls -la /real /real/app /merge /merge/keep /gz /notarchives',
    }, fx.dir);
  });
});

describe('BuildKit-only COPY/ADD flags, read back from the image (the legacy builder has none of them)', () => {
  let tree: Tree;
  const under = (prefix: string): string[] => Object.keys(tree).filter((p) => p.startsWith(prefix + '/')).map((p) => p.slice(prefix.length + 1)).sort();

  before(async () => {
    const name = 'buildkit-flags';
    const ctx = join(fx.dir, name);
    await writeContext(ctx, {
      f644: 'f644\n', f755: 'f755\n', f604: 'f604\n',
      'tree/a.txt': 'a\n', 'tree/b.md': 'b\n', 'tree/run.sh': 'run\n', 'tree/sub/deep.txt': 'deep\n', 'tree/skip/s.txt': 's\n', 'tree/skip/keep.txt': 'keep\n',
      'x/y/a.txt': 'ya\n', 'x/y/b.txt': 'yb\n', 'x/other.txt': 'other\n',
      'members.tgz': gzipSync(members), 'members.tzst': compress('zstd', members), 'users.tar': users,
    });
    await chmod(join(ctx, 'f755'), 0o755);
    await chmod(join(ctx, 'f604'), 0o604);
    await chmod(join(ctx, 'tree/run.sh'), 0o755);
    await writeFile(join(ctx, 'Dockerfile'), [
      `FROM ${fx.base}`,
      'RUN mkdir -p /real /sticky /sticky2 && chmod 1777 /sticky /sticky2 && ln -s /real /linkdir',
      'COPY --chmod=u+x,go-w f644 f755 /chmod/a/',
      'COPY --chmod=a=rX tree /chmod/b/',
      'COPY --chmod=u=rwx,g=rx,o= f644 /chmod/c',
      'COPY --chmod=g=u,o-r f604 /chmod/d',
      'COPY --exclude=*.md --exclude=skip --exclude=!skip/keep.txt tree /exclude/',
      'COPY --exclude=*.txt tree/a.txt /exclude-file',
      'COPY --parents tree/sub/deep.txt x/./y/*.txt /parents/',
      'COPY f644 /linkdir/unlinked',
      'COPY --link f644 /linkdir/linked',
      'COPY --link f644 /sticky/',
      'COPY f644 /sticky2/',
      'ADD --chown=4321:4322 members.tgz /owned/',
      'ADD members.tzst /zstd/',
      'ADD --unpack=false members.tgz /kept/',
      'ADD users.tar /',
      'COPY --chown=archuser:archgroup f644 /archowned',
    ].join('\n') + '\n');
    const tag = `kiln-copy/${name}:kiln`;
    const tar = join(fx.dir, `${name}.tar`);
    const r = await kiln(['executor', '-c', ctx, '--no-push', '-d', tag, '--tar-path', tar]);
    assert.equal(r.code, 0, r.stderr);
    await docker(['load', '-i', tar]);
    try {
      tree = await dockerImageTree(tag);
    } finally {
      await docker(['rmi', tag]);
    }
  });

  it('applies symbolic --chmod to each file\'s own mode, X only to directories and executables', () => {
    const modes = (paths: string[]): string[] => paths.map((p) => `${p} ${tree[p]?.mode}`);
    assert.deepEqual(modes(['chmod/a', 'chmod/a/f644', 'chmod/a/f755', 'chmod/c', 'chmod/d']), ['chmod/a 755', 'chmod/a/f644 744', 'chmod/a/f755 755', 'chmod/c 750', 'chmod/d 660']);
    assert.deepEqual(modes(['chmod/b', 'chmod/b/a.txt', 'chmod/b/run.sh', 'chmod/b/sub', 'chmod/b/sub/deep.txt']), ['chmod/b 755', 'chmod/b/a.txt 444', 'chmod/b/run.sh 555', 'chmod/b/sub 555', 'chmod/b/sub/deep.txt 444']);
  });

  it('--exclude leaves out matches below a directory source, keeps "!" exceptions, and does not filter a named file', () => {
    assert.deepEqual(under('exclude'), ['a.txt', 'run.sh', 'skip', 'skip/keep.txt', 'sub', 'sub/deep.txt']);
    assert.equal(tree['exclude-file']?.type, 'file');
    assert.equal(tree['exclude-file']?.sha256, sha('a\n'));
  });

  it('--parents keeps the source\'s directories, from the "/./" pivot when there is one', () => {
    assert.deepEqual(under('parents'), ['tree', 'tree/sub', 'tree/sub/deep.txt', 'y', 'y/a.txt', 'y/b.txt']);
  });

  it('--link does not follow a symlinked directory of the image and replaces the metadata of existing parents', () => {
    assert.equal(tree['linkdir']?.type, 'directory');
    assert.deepEqual(under('linkdir'), ['linked']);
    assert.deepEqual(under('real'), ['unlinked']);
    assert.equal(tree['sticky']?.mode, '755');
    assert.equal(tree['sticky2']?.mode, '1777');
    assert.equal(tree['sticky/f644']?.type, 'file');
  });

  it('ADD gives archive members --chown\'s owner, extracts zstd, and keeps the archive with --unpack=false', () => {
    const owners = (paths: string[]): string[] => paths.map((p) => `${p} ${tree[p]?.uid}:${tree[p]?.gid}`);
    assert.deepEqual(owners(['owned', 'owned/app', 'owned/app/data.txt', 'owned/app/link', 'owned/implied', 'owned/implied/deep/f']),
      ['owned 4321:4322', 'owned/app 4321:4322', 'owned/app/data.txt 4321:4322', 'owned/app/link 4321:4322', 'owned/implied 0:0', 'owned/implied/deep/f 4321:4322']);
    assert.equal(tree['owned/app']?.mode, '750', '--chmod is not given, modes are the members\'');
    assert.equal(tree['zstd/app/data.txt']?.sha256, sha('data\n'));
    assert.equal(tree['zstd/etc/inside.txt']?.sha256, sha('through an absolute link, inside the destination\n'));
    assert.equal(tree['zstd/escape.txt']?.type, 'file');
    assert.deepEqual(under('kept'), ['members.tgz']);
    assert.equal(`${tree['archowned']?.uid}:${tree['archowned']?.gid}`, '2001:2003', '--chown finds the users an archive added');
  });
});

describe('ADD with --single-snapshot', () => {
  it('keeps archive members readable until the stage\'s one layer is written, and for a later --chown', async () => {
    const ctx = join(fx.dir, 'single-snapshot');
    await writeContext(ctx, {
      Dockerfile: 'FROM scratch\nADD users.tar members.tgz /\nCOPY --chown=archuser f.txt /f.txt\n',
      'users.tar': users, 'members.tgz': gzipSync(members), 'f.txt': 'f\n',
    });
    const tag = 'kiln-copy/single-snapshot:kiln';
    const tar = join(ctx, 'out.tar');
    const r = await kiln(['executor', '-c', ctx, '--no-push', '-d', tag, '--tar-path', tar, '--single-snapshot']);
    assert.equal(r.code, 0, r.stderr);
    await docker(['load', '-i', tar]);
    try {
      const t = await dockerImageTree(tag);
      assert.equal(t['app/data.txt']?.sha256, sha('data\n'));
      assert.equal(`${t['f.txt']?.uid}:${t['f.txt']?.gid}`, '2001:2002');
    } finally {
      await docker(['rmi', tag]);
    }
  });
});

describe('COPY/ADD refuse what BuildKit refuses', () => {
  const cases: { line: string; error?: RegExp }[] = [
    { line: 'ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d f.txt /x', error: /Dockerfile:2: checksum requires HTTP\(S\) or Git sources/ },
    { line: 'COPY https://example.com/file /x', error: /Dockerfile:2: source can't be a URL for COPY/ },
    { line: 'COPY git@github.com:moby/buildkit.git /x', error: /Dockerfile:2: source can't be a git ref for COPY/ }, // ADD of URLs and git: remote-sources.test.ts
    { line: 'COPY --link --chown=app f.txt /x', error: /Dockerfile:2: --chown=app with --link: .*use numeric ids/ },
    { line: 'COPY --parents nothing/here.txt /x/', error: /Dockerfile:2: COPY failed: "nothing\/here.txt" not found in the build context/ },
    { line: 'COPY --chmod=u+q f.txt /x', error: /Dockerfile:2: invalid chmod parameter: 'u\+q'/ },
    { line: 'COPY --chmod=0o755 f.txt /x', error: /Dockerfile:2: invalid chmod parameter: '0o755'\. it should be octal string and between 0 and 07777/ },
    { line: 'COPY --exclude=[z f.txt /x', error: /Dockerfile:2: invalid --exclude pattern: syntax error in pattern "\[z"/ },
    { line: 'COPY --parents nothing*/here.txt /x/' }, // a wildcard may match nothing
    { line: 'ADD --unpack=true --keep-git-dir=true f.txt /x' }, // both change nothing for a local file
  ];
  for (const [i, c] of cases.entries()) {
    it(c.line, async () => {
      const ctx = join(fx.dir, `refuse-${i}`);
      await writeContext(ctx, { Dockerfile: `FROM scratch\n${c.line}\n`, 'f.txt': 'f\n' });
      const r = await kiln(['executor', '-c', ctx, '--no-push', '--tar-path', join(ctx, 'out.tar')]);
      if (c.error) {
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, c.error);
      } else assert.equal(r.code, 0, r.stderr);
    });
  }
});
