// The build context's file rules that follow BuildKit: .dockerignore patterns are case-sensitive,
// a source is cleaned against the context root, and tar contexts unpack safely (gzip or not).
import { strict as assert } from 'node:assert';
import { mkdtemp, mkdir, readFile, rm, stat, writeFile, readlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { BuildContext, cleanContextPath } from '../../src/context/build-context.js';
import { unpackTarContext } from '../../src/context/tar-context.js';
import { encodeHeader, END_OF_ARCHIVE, padding, type TarEntryType } from '../../src/layer/tar-format.js';

let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'kiln-context-files-')); });
after(async () => { await rm(dir, { recursive: true, force: true }); });

describe('.dockerignore', () => {
  it('matches case-sensitively, as BuildKit does', async () => {
    const ctx = join(dir, 'ignore');
    await mkdir(join(ctx, 'Docs'), { recursive: true });
    for (const f of ['README.md', 'readme.md', 'Docs/a.txt', 'keep.TXT']) await writeFile(join(ctx, f), f);
    await writeFile(join(ctx, '.dockerignore'), 'README.md\ndocs\n*.txt\n');
    const context = await BuildContext.open(ctx);
    assert.equal(context.excluded('README.md'), true);
    assert.equal(context.excluded('readme.md'), false);
    assert.equal(context.excluded('Docs'), false);
    assert.equal(context.excluded('keep.TXT'), false);
    assert.deepEqual((await context.match('*.md')).map((f) => f.rel), ['readme.md']);
  });
});

describe('sources are cleaned against the context root', () => {
  it('".." cannot climb out: "../x" is "x"', () => {
    assert.equal(cleanContextPath('../x'), 'x');
    assert.equal(cleanContextPath('../../a/./b/'), 'a/b');
    assert.equal(cleanContextPath('/../'), '');
  });
});

interface Member { name: string; type?: TarEntryType; content?: string; linkname?: string; mode?: number }
function tarOf(members: Member[]): Buffer {
  const parts: Buffer[] = [];
  for (const m of members) {
    const type = m.type ?? 'file';
    const content = Buffer.from(m.content ?? '');
    parts.push(encodeHeader({ name: m.name, type, mode: m.mode ?? (type === 'dir' ? 0o755 : 0o644), uid: 0, gid: 0, size: content.length, mtime: 1_600_000_000, linkname: m.linkname }), content, padding(content.length));
  }
  parts.push(END_OF_ARCHIVE);
  return Buffer.concat(parts);
}

describe('tar contexts', () => {
  const archive = tarOf([
    { name: './', type: 'dir' },
    { name: 'app/', type: 'dir', mode: 0o750 },
    { name: 'app/run.sh', content: 'run\n', mode: 0o755 },
    { name: 'app/link', type: 'symlink', linkname: 'run.sh' },
    { name: 'app/hard', type: 'hardlink', linkname: 'app/run.sh' },
    { name: 'implied/deep.txt', content: 'deep\n' },
  ]);

  it('unpacks plain and gzip archives, from a file or a stream, keeping modes, mtimes and links', async () => {
    for (const [name, bytes] of [['plain', archive], ['gzip', gzipSync(archive)]] as const) {
      const file = join(dir, `${name}.tar`);
      await writeFile(file, bytes);
      for (const source of [file, Readable.from([bytes.subarray(0, 100), bytes.subarray(100)])]) {
        const out = await mkdtemp(join(dir, `${name}-`));
        await unpackTarContext(source, out, name);
        assert.equal(await readFile(join(out, 'app/run.sh'), 'utf8'), 'run\n');
        assert.equal((await stat(join(out, 'app/run.sh'))).mode & 0o7777, 0o755);
        assert.equal((await stat(join(out, 'app'))).mode & 0o7777, 0o750);
        assert.equal((await stat(join(out, 'app'))).mtimeMs, 1_600_000_000_000);
        assert.equal(await readlink(join(out, 'app/link')), 'run.sh');
        assert.equal((await stat(join(out, 'app/hard'))).ino, (await stat(join(out, 'app/run.sh'))).ino);
        assert.equal(await readFile(join(out, 'implied/deep.txt'), 'utf8'), 'deep\n');
      }
    }
  });

  it('refuses entries that would land outside the directory', async () => {
    for (const members of [
      [{ name: '../escape.txt', content: 'x' }],
      [{ name: 'link', type: 'symlink' as const, linkname: '/etc' }, { name: 'link/passwd', content: 'x' }],
      [{ name: 'hard', type: 'hardlink' as const, linkname: '../../etc/passwd' }],
    ]) {
      const out = await mkdtemp(join(dir, 'hostile-'));
      await assert.rejects(unpackTarContext(Readable.from([tarOf(members)]), out, 'tar://stdin'), /tar:\/\/stdin: entry .*(outside the context|not a directory)/);
    }
  });
});
