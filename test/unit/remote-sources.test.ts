// ADD's remote sources and kaniko's contexts, parsed: BuildKit's git reference syntax (fragment and
// query forms), the file name BuildKit gives a URL, kaniko's --context prefixes and --git options.
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { parseContextSource, parseGitFlags } from '../../src/context/context-source.js';
import { urlFileName } from '../../src/context/remote-file.js';
import { isCommitHash, parseGitRef, redactUrl, sourceKind } from '../../src/context/remote-source.js';

describe('git references (BuildKit dfgitutil)', () => {
  it('reads the fragment form #ref:subdir', () => {
    assert.deepEqual(parseGitRef('https://host/repo.git'), { remote: 'https://host/repo.git', subdir: '' });
    assert.deepEqual(parseGitRef('https://host/repo.git#v1.2:docs/api/'), { remote: 'https://host/repo.git', ref: 'v1.2', subdir: 'docs/api' });
    assert.deepEqual(parseGitRef('git@github.com:moby/buildkit.git#:frontend'), { remote: 'git@github.com:moby/buildkit.git', subdir: 'frontend' });
    assert.deepEqual(parseGitRef('ssh://git@host/repo.git#main'), { remote: 'ssh://git@host/repo.git', ref: 'main', subdir: '' });
  });
  it('reads the query form, with tag= and branch= made full ref names', () => {
    assert.deepEqual(parseGitRef('https://host/r.git?tag=v1&subdir=x&keep-git-dir=true&checksum=abc1234'),
      { remote: 'https://host/r.git', ref: 'refs/tags/v1', subdir: 'x', keepGitDir: true, checksum: 'abc1234' });
    assert.equal(parseGitRef('https://host/r.git?branch=dev').ref, 'refs/heads/dev');
    assert.equal(parseGitRef('https://host/r.git?submodules=false').submodules, false);
    assert.equal(parseGitRef('https://host/r.git?keep-git-dir').keepGitDir, true);
  });
  it('refuses conflicts, unknown keys and subdirs that climb', () => {
    assert.throws(() => parseGitRef('https://host/r.git?ref=a&tag=b'), /ref conflicts/);
    assert.throws(() => parseGitRef('https://host/r.git?tag=a&branch=b'), /branch conflicts with tag/);
    assert.throws(() => parseGitRef('https://host/r.git?color=red'), /unexpected query "color"/);
    assert.throws(() => parseGitRef('https://host/r.git?ref='), /query "ref" has no value/);
    assert.throws(() => parseGitRef('https://host/r.git#main:../x'), /may not contain "\.\."/);
  });
  it('tells sources apart as BuildKit does', () => {
    const cases: [string, string][] = [
      ['https://example.com/a.tgz', 'url'], ['https://host/repo.git', 'git'], ['https://host/repo.git#v1:docs', 'git'],
      ['git@github.com:moby/buildkit.git', 'git'], ['git://host/repo', 'git'], ['../x', 'local'], ['github.com/moby/buildkit', 'local'],
    ];
    for (const [source, kind] of cases) assert.equal(sourceKind(source), kind, source);
    assert.ok(isCommitHash('a'.repeat(40)) && !isCommitHash('abc1234') && !isCommitHash('main'));
    assert.equal(redactUrl('https://user:secret@host/r.git'), 'https://host/r.git');
  });
});

describe('ADD <url> file names (the Dockerfile frontend: the last path segment)', () => {
  it('names files by the URL path, else __unnamed__', () => {
    assert.equal(urlFileName('https://host/dir/file.tar.gz?x=1#y'), 'file.tar.gz');
    assert.equal(urlFileName('https://host/dir/a%20b.txt'), 'a b.txt');
    assert.equal(urlFileName('https://host/'), '__unnamed__');
    assert.equal(urlFileName('https://host'), '__unnamed__');
  });
});

describe('kaniko contexts', () => {
  it('reads every prefix kaniko knows', () => {
    assert.deepEqual(parseContextSource('/workspace/', [], {}), { kind: 'dir', path: '/workspace/' });
    assert.deepEqual(parseContextSource('dir:///src', [], {}), { kind: 'dir', path: '/src' });
    assert.deepEqual(parseContextSource('tar://ctx.tar.gz', [], {}), { kind: 'tar', path: 'ctx.tar.gz' });
    assert.deepEqual(parseContextSource('tar://stdin', [], {}), { kind: 'tar', path: 'stdin' });
    assert.deepEqual(parseContextSource('https://host/ctx.tar.gz', [], {}), { kind: 'https-tar', url: 'https://host/ctx.tar.gz' });
    const git = parseContextSource('git://github.com/acme/app.git#refs/heads/dev#0123abc', ['branch=x'], {});
    assert.deepEqual(git, { kind: 'git', remote: 'https://github.com/acme/app.git', ref: 'refs/heads/dev', commit: '0123abc', options: { branch: 'x', singleBranch: false, recurseSubmodules: false, insecureSkipTls: false } });
    assert.equal((parseContextSource('git://host/app.git', [], { GIT_PULL_METHOD: 'http' }) as { remote: string }).remote, 'http://host/app.git');
  });
  it('refuses cloud storage in one place, saying it is not built yet, and unknown prefixes', () => {
    for (const c of ['s3://bucket/ctx.tar.gz', 'gs://bucket/ctx.tar.gz', 'https://acct.blob.core.windows.net/c/ctx.tar.gz']) {
      assert.throws(() => parseContextSource(c, [], {}), /contexts are not built yet in kiln/, c);
    }
    assert.throws(() => parseContextSource('ftp://host/x', [], {}), /unknown build context prefix "ftp:\/\/"/);
  });
  it('reads --git options, comma-separated or repeated, with Go booleans', () => {
    assert.deepEqual(parseGitFlags(['branch=main,single-branch=true', 'recurse-submodules=1', 'insecure-skip-tls=F']),
      { branch: 'main', singleBranch: true, recurseSubmodules: true, insecureSkipTls: false });
    assert.throws(() => parseGitFlags(['branch']), /must be in the key=value format: branch/);
    assert.throws(() => parseGitFlags(['single-branch=zaza']), /expected true or false/);
    assert.throws(() => parseGitFlags(['depth=1']), /invalid --git key "depth"/);
  });
});
