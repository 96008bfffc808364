// ADD of URLs and git repositories, against real servers the test starts on 127.0.0.1: a Node HTTP(S)
// file server (Last-Modified, a redirect, 404s) and git repositories made with Debian's git, served
// over smart HTTP by `git http-backend`. ADD <url> is compared with `docker build` (the legacy builder
// downloads URLs as BuildKit does: 0600, Last-Modified as mtime, not extracted). The legacy builder has
// no git sources (it GETs the .git URL as a file: "failed to GET .../repo.git with status 404"), no
// --checksum and no --keep-git-dir, so for those kiln's image is read back and checked against
// BuildKit's rules.
import { strict as assert } from 'node:assert';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { encodeHeader, END_OF_ARCHIVE, padding } from '../../src/layer/tar-format.js';
import { compareWithDocker } from '../helpers/docker-compare.js';
import { docker, kiln } from '../helpers/exec.js';
import { useBaseFixture } from '../helpers/fixture.js';
import { startFileServer, type FileServer } from '../helpers/file-server.js';
import { startGitHttpServer, type GitHttpServer } from '../helpers/git-http-server.js';
import { createTestRepo } from '../helpers/git-repo.js';
import { dockerImageTree, type Tree } from '../helpers/image-tree.js';
import { httpRequest } from '../helpers/registry.js';
import { createTestCa, type TestCa } from '../helpers/test-ca.js';

const fx = useBaseFixture('remote-sources', { image: 'busybox', format: 'v2s2', dockerPull: true });
const LAST_MODIFIED = new Date('2021-03-04T05:06:07Z');

let files: FileServer;
let gitServer: GitHttpServer;
let git: string;
const commits: Record<string, string> = {};

describe('remote sources', () => {
before(async () => {
  files = await startFileServer();
  files.files.set('/files/data.txt', { content: 'data from the server\n', lastModified: LAST_MODIFIED });
  files.files.set('/files/other.bin', { content: 'other\n' }); // no Last-Modified: the epoch
  files.files.set('/files/archive.tar.gz', { content: gzipSync(oneFileTar('member.txt', 'member\n')), lastModified: LAST_MODIFIED });
  files.redirects.set('/moved/data.txt', '/files/data.txt');
  const repos = join(fx.dir, 'repos');
  await mkdir(repos, { recursive: true });
  const repo = await createTestRepo(repos, 'app');
  commits.first = await repo.commit({ 'a.txt': 'a\n', 'docs/readme.md': 'docs v1\n', 'run.sh': '#!/bin/sh\necho run\n' }, 'first', ['run.sh']);
  await repo.tag('v1', false);
  await repo.tag('v1-annotated', true);
  commits.second = await repo.commit({ 'b.txt': 'b\n', 'docs/readme.md': 'docs v2\n' }, 'second');
  await repo.branch('feature');
  commits.feature = await repo.commit({ 'feature.txt': 'feature\n' }, 'feature');
  gitServer = await startGitHttpServer(repos);
  git = `${gitServer.url}/${repo.name}`;
});

after(async () => {
  await files?.stop();
  await gitServer?.stop();
});

/** A tar archive holding one file. */
function oneFileTar(name: string, text: string): Buffer {
  const content = Buffer.from(text);
  return Buffer.concat([
    encodeHeader({ name, type: 'file', mode: 0o644, uid: 0, gid: 0, size: content.length, mtime: 1_700_000_000 }),
    content, padding(content.length), END_OF_ARCHIVE,
  ]);
}

/** Builds with kiln into a docker-archive, loads it and returns the image's merged file tree. */
async function kilnTree(name: string, dockerfile: string, extra: string[] = []): Promise<{ tree: Tree; stderr: string }> {
  const ctx = join(fx.dir, name);
  await mkdir(ctx, { recursive: true });
  await writeFile(join(ctx, 'Dockerfile'), dockerfile);
  const tag = `kiln-remote/${name}:kiln`;
  const tar = join(fx.dir, `${name}.tar`);
  const r = await kiln(['executor', '-c', ctx, '--no-push', '-d', tag, '--tar-path', tar, ...extra]);
  assert.equal(r.code, 0, r.stderr);
  await docker(['load', '-i', tar]);
  try {
    return { tree: await dockerImageTree(tag), stderr: r.stderr };
  } finally {
    await docker(['rmi', tag]);
    await rm(tar, { force: true });
  }
}

/** A build that must fail: its one-line error, and nothing pushed to the destination. */
async function failingBuild(name: string, dockerfile: string): Promise<string> {
  const ctx = join(fx.dir, name);
  await mkdir(ctx, { recursive: true });
  await writeFile(join(ctx, 'Dockerfile'), dockerfile);
  const r = await kiln(['executor', '-c', ctx, '-d', `${fx.registry.host}/remote/${name}:1`]);
  assert.equal(r.code, 1, r.stderr);
  const manifest = await httpRequest(`${fx.registry.url}/v2/remote/${name}/manifests/1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  assert.equal(manifest.status, 404, 'nothing may be pushed after a failed ADD');
  const lines = r.stderr.trim().split('\n');
  return lines[lines.length - 1]!;
}

describe('ADD <url> matches docker build', () => {
  it('downloads into directories and files, follows redirects, keeps Last-Modified, 0600, --chown, never extracts', async () => {
    await compareWithDocker({
      name: 'add-url',
      dockerfile: [
        `FROM ${fx.base}`,
        `ADD ${files.url}/files/data.txt /dl/`,
        `ADD ${files.url}/files/data.txt /renamed`,
        `ADD ${files.url}/moved/data.txt /redirected/`,
        `ADD ${files.url}/files/other.bin ${files.url}/files/archive.tar.gz /several/`,
        `ADD --chown=1000:1000 ${files.url}/files/data.txt /owned/`,
        'RUN stat -c "%a %u:%g %Y %n" /dl/data.txt /renamed /redirected/data.txt /several/other.bin /several/archive.tar.gz /owned/data.txt > /stat',
      ].join('\n') + '\n',
      check: 'cat /stat',
    }, fx.dir);
    const stat = (await kilnTree('add-url-stat', `FROM ${fx.base}\nADD ${files.url}/files/data.txt /dl/\n`)).tree['dl/data.txt'];
    assert.deepEqual({ mode: stat?.mode, uid: stat?.uid }, { mode: '600', uid: 0 });
  });
});

describe('ADD <url>: BuildKit-only flags and failures', () => {
  it('--checksum verifies the content, --chmod applies, --unpack=true extracts', async () => {
    const sum = (await import('node:crypto')).createHash('sha256').update('data from the server\n').digest('hex');
    const { tree } = await kilnTree('add-url-flags', [
      `FROM ${fx.base}`,
      `ADD --checksum=sha256:${sum} --chmod=644 ${files.url}/files/data.txt /checked`,
      `ADD --unpack=true ${files.url}/files/archive.tar.gz /unpacked/`,
    ].join('\n') + '\n');
    assert.equal(tree['checked']?.mode, '644');
    assert.equal(tree['checked']?.sha256, sum);
    assert.equal(tree['unpacked/member.txt']?.size, 'member\n'.length);
    assert.equal(tree['unpacked/archive.tar.gz'], undefined);
  });

  it('a checksum mismatch, a 404 and a refused connection are one line naming the line and the URL; nothing is pushed', async () => {
    const wrong = 'sha256:' + '0'.repeat(64);
    const mismatch = await failingBuild('checksum', `FROM ${fx.base}\nADD --checksum=${wrong} ${files.url}/files/data.txt /x\n`);
    assert.match(mismatch, /Dockerfile:2: checksum mismatch for http:\/\/127\.0\.0\.1:\d+\/files\/data\.txt: expected sha256:0{64}, got sha256:[0-9a-f]{64}$/);
    const missing = await failingBuild('notfound', `FROM ${fx.base}\nRUN true\nADD ${files.url}/files/missing.txt /x\n`);
    assert.match(missing, /Dockerfile:3: failed to download http:\/\/127\.0\.0\.1:\d+\/files\/missing\.txt: HTTP 404 Not Found$/);
    const refused = await failingBuild('refused', `FROM ${fx.base}\nADD http://127.0.0.1:9/x.txt /x\n`);
    assert.match(refused, /Dockerfile:2: failed to download http:\/\/127\.0\.0\.1:9\/x\.txt: connection refused by 127\.0\.0\.1:9$/);
  });

  it('builds from a --dockerfile URL, as kaniko does, and names a missing one', async () => {
    files.files.set('/files/remote.Dockerfile', { content: `FROM ${fx.base}\nCOPY local.txt /from-context.txt\n` });
    const ctx = join(fx.dir, 'remote-dockerfile');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'local.txt'), 'from the context\n');
    const tag = `${fx.registry.host}/remote/dockerfile:1`;
    const r = await kiln(['executor', '-c', ctx, '-f', `${files.url}/files/remote.Dockerfile`, '-d', tag]);
    assert.equal(r.code, 0, r.stderr);
    await docker(['pull', '-q', tag]);
    try {
      assert.equal(await docker(['run', '--rm', tag, 'cat', '/from-context.txt']), 'from the context\n');
    } finally {
      await docker(['rmi', tag]);
    }
    const missing = await kiln(['executor', '-c', ctx, '-f', `${files.url}/files/none.Dockerfile`, '--no-push']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr.trim().split('\n').at(-1)!, /^kiln: failed to download http:\/\/127\.0\.0\.1:\d+\/files\/none\.Dockerfile: HTTP 404 Not Found$/);
  });

  describe('https with kiln\'s extra CA certificates', () => {
    let ca: TestCa;
    let secure: FileServer;
    before(async () => {
      ca = await createTestCa(fx.dir);
      secure = await startFileServer(await ca.issue(['localhost'], ['127.0.0.1']));
      secure.files.set('/secure.txt', { content: 'over TLS\n', lastModified: LAST_MODIFIED });
    });
    after(async () => { await secure?.stop(); });

    it('trusts SSL_CERT_DIR (kaniko\'s /kaniko/ssl/certs) for URLs and git, and fails in one line without it', async () => {
      const certs = join(fx.dir, 'certs');
      await mkdir(certs, { recursive: true });
      await writeFile(join(certs, 'additional-ca-cert-bundle.crt'), await readFile(ca.caFile));
      const ctx = join(fx.dir, 'https');
      await mkdir(ctx, { recursive: true });
      const secureGit = await startGitHttpServer(join(fx.dir, 'repos'), await ca.issue(['localhost'], ['127.0.0.1']));
      after(() => secureGit.stop());
      await writeFile(join(ctx, 'Dockerfile'), `FROM scratch\nADD ${secure.url}/secure.txt /\nADD ${secureGit.url}/app.git#v1:docs /docs/\n`);
      const ok = await kiln(['executor', '-c', ctx, '--no-push', '-d', 'x/https:1'], { env: { ...process.env, SSL_CERT_DIR: certs } });
      assert.equal(ok.code, 0, ok.stderr);
      const untrusted = await kiln(['executor', '-c', ctx, '--no-push', '-d', 'x/https:1'], { env: { ...process.env, SSL_CERT_DIR: '' } });
      assert.equal(untrusted.code, 1);
      assert.match(untrusted.stderr.trim().split('\n').pop()!, /Dockerfile:2: failed to download https:\/\/127\.0\.0\.1:\d+\/secure\.txt: TLS handshake with 127\.0\.0\.1:\d+ failed/);
      await writeFile(join(ctx, 'Dockerfile'), `FROM scratch\nADD ${secureGit.url}/app.git#v1:docs /docs/\n`);
      const untrustedGit = await kiln(['executor', '-c', ctx, '--no-push', '-d', 'x/https:1'], { env: { ...process.env, SSL_CERT_DIR: '' } });
      assert.equal(untrustedGit.code, 1);
      assert.match(untrustedGit.stderr.trim().split('\n').pop()!, /Dockerfile:2: fetching "v1" of https:\/\/127\.0\.0\.1:\d+\/app\.git failed: .*(certificate|SSL)/);
    });
  });

  it('the layer cache keys a URL by its content: unchanged hits, changed misses', async () => {
    const ctx = join(fx.dir, 'url-cache');
    await mkdir(ctx, { recursive: true });
    files.files.set('/files/cached.txt', { content: 'version 1\n', lastModified: LAST_MODIFIED });
    await writeFile(join(ctx, 'Dockerfile'), `FROM ${fx.base}\nADD ${files.url}/files/cached.txt /cached.txt\n`);
    const build = (): ReturnType<typeof kiln> => kiln(['executor', '-c', ctx, '--no-push', '-d', 'x/cache:1', '--cache=true', '--cache-copy-layers', `--cache-repo=oci:${join(fx.dir, 'url-cache-layout')}`]);
    const first = await build();
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /No cached layer found for cmd ADD/);
    const second = await build();
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /Using caching version of cmd: ADD/);
    files.files.set('/files/cached.txt', { content: 'version 2\n', lastModified: LAST_MODIFIED });
    const third = await build();
    assert.equal(third.code, 0, third.stderr);
    assert.match(third.stderr, /No cached layer found for cmd ADD/);
    assert.doesNotMatch(third.stderr, /Using caching version of cmd: ADD/);
  });
});

describe('ADD <git repository>', () => {
  it('checks out branches, tags, commits and subdirs; leaves .git out unless --keep-git-dir; git\'s modes; --chown', async () => {
    const { tree } = await kilnTree('add-git', [
      `FROM ${fx.base}`,
      `ADD ${git} /head/`,
      `ADD ${git}#v1 /tag`,
      `ADD ${git}#v1-annotated:docs /annotated-docs`,
      `ADD ${git}#${commits.first} /commit/`,
      `ADD ${git}#feature /branch`,
      `ADD ${git}?ref=v1&subdir=docs /query-docs`,
      `ADD --keep-git-dir=true ${git}#main /kept`,
      `ADD --chown=1000:1000 ${git}#v1:docs /owned`,
      `ADD --checksum=${commits.second} ${git}#main:docs /checked`,
    ].join('\n') + '\n');
    const under = (dir: string): string[] => Object.keys(tree).filter((p) => p.startsWith(dir + '/')).map((p) => p.slice(dir.length + 1)).sort();
    assert.deepEqual(under('head'), ['a.txt', 'b.txt', 'docs', 'docs/readme.md', 'run.sh']);
    assert.deepEqual(under('tag'), ['a.txt', 'docs', 'docs/readme.md', 'run.sh']);
    assert.deepEqual(under('annotated-docs'), ['readme.md']);
    assert.deepEqual(under('commit'), under('tag'));
    assert.deepEqual(under('branch'), ['a.txt', 'b.txt', 'docs', 'docs/readme.md', 'feature.txt', 'run.sh']);
    assert.deepEqual(under('query-docs'), ['readme.md']);
    assert.ok(tree['kept/.git/HEAD'], 'kept .git');
    assert.ok(!Object.keys(tree).some((p) => p.startsWith('head/.git')), '.git left out');
    assert.equal(tree['head/run.sh']?.mode, '755');
    assert.equal(tree['head/a.txt']?.mode, '644');
    assert.deepEqual([tree['head/a.txt']?.uid, tree['owned/readme.md']?.uid, tree['owned/readme.md']?.gid], [0, 1000, 1000]);
    assert.equal(tree['annotated-docs/readme.md']?.sha256, (await import('node:crypto')).createHash('sha256').update('docs v1\n').digest('hex'));
    assert.deepEqual(under('checked'), ['readme.md']);
  });

  it('a wrong --checksum, a missing ref and COPY of a git source fail in one line', async () => {
    const wrong = await failingBuild('git-checksum', `FROM ${fx.base}\nADD --checksum=${commits.first} ${git}#main /x\n`);
    assert.match(wrong, new RegExp(`Dockerfile:2: expected checksum to match ${commits.first}, got ${commits.second}`));
    const missing = await failingBuild('git-missing', `FROM ${fx.base}\nADD ${git}#no-such-branch /x\n`);
    assert.match(missing, /Dockerfile:2: fetching "no-such-branch" of http:\/\/127\.0\.0\.1:\d+\/app\.git failed: .*no-such-branch/);
    const copy = await failingBuild('git-copy', `FROM ${fx.base}\nCOPY ${git} /x\n`);
    assert.match(copy, /Dockerfile:2: source can't be a git ref for COPY$/);
  });
});
});
