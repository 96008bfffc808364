// The layer cache (--cache) against the real distribution registry, across separate kiln processes
// that share only the registry: each key input changed alone misses (and the log says why), nothing
// changed hits without running or extracting anything, and a cached build has the same content as
// an uncached one.
import { strict as assert } from 'node:assert';
import { chmod, mkdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { useBaseFixture } from '../helpers/fixture.js';
import { docker, kiln } from '../helpers/exec.js';
import { dockerImageTree } from '../helpers/image-tree.js';
import { pushBusyboxImage } from '../helpers/base-images.js';
import { httpRequest } from '../helpers/registry.js';

const fx = useBaseFixture('layer-cache', { image: 'busybox', format: 'v2s2' });

interface Build { code: number; log: string; }

/** Writes the context (Dockerfile + files) and builds it with the cache in `repo`. */
async function build(name: string, dockerfile: string, files: Record<string, string>, args: string[] = []): Promise<Build> {
  const ctx = join(fx.dir, name);
  await mkdir(ctx, { recursive: true });
  await writeFile(join(ctx, 'Dockerfile'), dockerfile.replaceAll('BASE', fx.base));
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(ctx, path, '..'), { recursive: true });
    await writeFile(join(ctx, path), content);
  }
  const r = await kiln(['executor', '-c', ctx, '-d', `${fx.registry.host}/cache-test/${name}:1`, '--cache', ...args], { timeoutMs: 300_000 });
  const log = r.stdout + r.stderr;
  assert.equal(r.code, 0, log);
  return { code: r.code, log };
}

const hits = (b: Build): number => (b.log.match(/Using caching version of cmd/g) ?? []).length;
const misses = (b: Build): string[] => [...b.log.matchAll(/No cached layer found for cmd (.*)/g)].map((m) => m[1]!);

const APP = [
  'FROM BASE',
  'ARG VERSION=1',
  'ENV MODE=fast',
  'COPY app.txt /app/app.txt',
  'RUN echo "built $VERSION $MODE" > /built.txt && cat /app/app.txt >> /built.txt',
  'WORKDIR /work',
  'RUN echo second > /work/second.txt && touch /app/app.txt',
  'RUN true',
].join('\n') + '\n';

describe('layer cache in a registry repository', () => {
  it('misses on the first build, then hits every step without running or extracting anything', async () => {
    const first = await build('app', APP, { 'app.txt': 'app v1\n' }, ['--cache-repo', `${fx.registry.host}/cache-test/shared`]);
    assert.equal(hits(first), 0);
    assert.equal(misses(first).length, 4, first.log); // three RUNs and the WORKDIR
    const baseBlobGets = async (): Promise<number> => ((await readFile(fx.registry.logFile, 'utf8')).match(/"GET \/v2\/base\/busybox\/blobs\//g) ?? []).length;
    const cacheBlobGets = async (): Promise<number> => ((await readFile(fx.registry.logFile, 'utf8')).match(/"GET \/v2\/cache-test\/shared\/blobs\//g) ?? []).length;
    const before = await baseBlobGets();
    const cacheBefore = await cacheBlobGets();
    const byKeyGets = async (): Promise<number> => ((await readFile(fx.registry.logFile, 'utf8')).match(/"GET \/v2\/cache-test\/shared\/manifests\/[0-9a-f]{64} /g) ?? []).length;
    const byKeyBefore = await byKeyGets();
    const second = await build('app', APP, { 'app.txt': 'app v1\n' }, ['--cache-repo', `${fx.registry.host}/cache-test/shared`]);
    assert.equal(hits(second), 4, second.log);
    // A hit is decided from its entry's manifest alone; no later step needed the hits' files, so the
    // only config read from the cache is the one holding the base's listing (for the COPY).
    assert.equal(await cacheBlobGets() - cacheBefore, 1);
    // Every entry came from what the last build stored at its step, asked for ahead: none by key.
    assert.equal(await byKeyGets() - byKeyBefore, 0);
    assert.ok(await byKeyGets() > 0, 'the first build looked entries up by key');
    // The COPY needed the image's files: they came from the listings the first build cached, so only
    // the base's config was read, none of its layers.
    assert.equal(await baseBlobGets() - before, 1);
    assert.deepEqual(misses(second), []);
    assert.doesNotMatch(second.log, /Running: /);
    assert.doesNotMatch(second.log, /RUN steps use/);

    // The cached image runs and has the same file tree as one built without the cache.
    const uncached = await kiln(['executor', '-c', join(fx.dir, 'app'), '-d', `${fx.registry.host}/cache-test/uncached:1`], { timeoutMs: 300_000 });
    assert.equal(uncached.code, 0, uncached.stderr);
    await docker(['pull', '-q', `${fx.registry.host}/cache-test/app:1`]);
    await docker(['pull', '-q', `${fx.registry.host}/cache-test/uncached:1`]);
    const cachedTree = await dockerImageTree(`${fx.registry.host}/cache-test/app:1`);
    assert.deepEqual(cachedTree, await dockerImageTree(`${fx.registry.host}/cache-test/uncached:1`));
    assert.equal(await docker(['run', '--rm', '--network', 'host', `${fx.registry.host}/cache-test/app:1`, 'cat', '/built.txt', '/work/second.txt']), 'built 1 fast\napp v1\nsecond\n');
  });

  for (const change of [
    { what: 'a build arg', args: ['--build-arg', 'VERSION=2'], files: {}, dockerfile: APP, reason: /build arg VERSION changed/ },
    { what: 'a context file', args: [], files: { 'app.txt': 'app v2\n' }, dockerfile: APP, reason: /context file app\.txt changed/ },
    { what: 'an ENV before the step', args: [], files: {}, dockerfile: APP.replace('MODE=fast', 'MODE=slow'), reason: /line 3 changed: ENV MODE=fast → ENV MODE=slow/ },
    { what: 'the RUN itself', args: [], files: {}, dockerfile: APP.replace('"built $VERSION', '"made $VERSION'), reason: /line 5 changed/ },
  ]) {
    it(`misses when ${change.what} changes, and says why`, async () => {
      const name = `change-${change.what.replace(/\W+/g, '-').toLowerCase()}`;
      const files = { 'app.txt': 'app v1\n', ...change.files };
      // Prime the cache with the unchanged build, in a repository of the test's own.
      const repo = ['--cache-repo', `${fx.registry.host}/cache-test/${name}-cache`];
      await build(name, APP, { 'app.txt': 'app v1\n' }, repo);
      const again = await build(name, change.dockerfile, files, [...repo, ...change.args]);
      assert.equal(hits(again), 0, again.log);
      assert.match(misses(again)[0]!, change.reason, again.log);
      // The changed build is cached in turn: the same inputs now hit.
      const third = await build(name, change.dockerfile, files, [...repo, ...change.args]);
      assert.equal(hits(third), 4, third.log);
    });
  }

  it('ignores modification times of context files, as BuildKit does', async () => {
    const repo = ['--cache-repo', `${fx.registry.host}/cache-test/mtime-cache`];
    await build('mtime', APP, { 'app.txt': 'same\n' }, repo);
    await utimes(join(fx.dir, 'mtime', 'app.txt'), new Date(), new Date(Date.now() + 60_000));
    assert.equal(hits(await build('mtime', APP, { 'app.txt': 'same\n' }, repo)), 4);
  });

  it('hits with --reproducible too, and gives the same digest as the uncached build', async () => {
    // Reproducible history says 1970; the entries must still carry the real time, or --cache-ttl
    // would expire every one of them at once.
    const repo = ['--cache-repo', `${fx.registry.host}/cache-test/reproducible-cache`, '--reproducible'];
    const digestFile = join(fx.dir, 'reproducible.digest');
    await build('reproducible', APP, { 'app.txt': 'same\n' }, [...repo, '--digest-file', digestFile]);
    const first = await readFile(digestFile, 'utf8');
    const again = await build('reproducible', APP, { 'app.txt': 'same\n' }, [...repo, '--digest-file', digestFile]);
    assert.equal(hits(again), 4, again.log);
    assert.equal(await readFile(digestFile, 'utf8'), first);
  });

  it('misses when only the mode of a context file changes', async () => {
    const repo = ['--cache-repo', `${fx.registry.host}/cache-test/mode-cache`];
    await build('mode', APP, { 'app.txt': 'same\n' }, repo);
    await chmod(join(fx.dir, 'mode', 'app.txt'), 0o600);
    const again = await build('mode', APP, { 'app.txt': 'same\n' }, repo);
    assert.equal(hits(again), 0, again.log);
    assert.match(misses(again)[0]!, /context file app\.txt changed/);
  });

  it('misses when the base image changes', async () => {
    const repo = ['--cache-repo', `${fx.registry.host}/cache-test/base-cache`];
    await pushBusyboxImage(fx.registry, 'base/moving', 'latest', 'v2s2');
    const dockerfile = APP.replace('FROM BASE', `FROM ${fx.registry.host}/base/moving:latest`);
    await build('base', dockerfile, { 'app.txt': 'x\n' }, repo);
    await pushBusyboxImage(fx.registry, 'base/moving', 'latest', 'oci'); // same files, another manifest
    const again = await build('base', dockerfile, { 'app.txt': 'x\n' }, repo);
    assert.equal(hits(again), 0, again.log);
    assert.match(misses(again)[0]!, /the base image changed/);
  });

  it('keys COPY --from on the source stage, and caches COPY with --cache-copy-layers', async () => {
    const repo = ['--cache-repo', `${fx.registry.host}/cache-test/stages-cache`, '--cache-copy-layers'];
    const dockerfile = (word: string): string => [
      'FROM BASE AS builder',
      `RUN mkdir /out && echo ${word} > /out/result`,
      'FROM BASE',
      'COPY --from=builder /out/result /result',
      'RUN cat /result > /seen',
    ].join('\n') + '\n';
    const first = await build('stages', dockerfile('one'), {}, repo);
    assert.equal(misses(first).length, 3);
    const same = await build('stages', dockerfile('one'), {}, repo);
    assert.equal(hits(same), 3, same.log);
    const changed = await build('stages', dockerfile('two'), {}, repo);
    assert.equal(hits(changed), 0, changed.log);
    await docker(['pull', '-q', `${fx.registry.host}/cache-test/stages:1`]);
    assert.equal(await docker(['run', '--rm', '--network', 'host', `${fx.registry.host}/cache-test/stages:1`, 'cat', '/seen']), 'two\n');
  });

  it('runs steps after a hit on the cached layer files (the root is made from the cache)', async () => {
    const repo = ['--cache-repo', `${fx.registry.host}/cache-test/partial-cache`];
    const dockerfile = (tail: string): string => ['FROM BASE', 'RUN echo cached > /a', `RUN cat /a > /b && echo ${tail} >> /b`].join('\n') + '\n';
    await build('partial', dockerfile('one'), {}, repo);
    const second = await build('partial', dockerfile('two'), {}, repo);
    assert.equal(hits(second), 1, second.log);
    assert.equal(misses(second).length, 1);
    await docker(['pull', '-q', `${fx.registry.host}/cache-test/partial:1`]);
    assert.equal(await docker(['run', '--rm', '--network', 'host', `${fx.registry.host}/cache-test/partial:1`, 'cat', '/b']), 'cached\ntwo\n');
  });

  it('pushes nothing with --no-push-cache, and treats expired entries as misses (--cache-ttl)', async () => {
    const repo = `${fx.registry.host}/cache-test/ttl-cache`;
    await build('nopush', APP, { 'app.txt': 'n\n' }, ['--cache-repo', repo, '--no-push-cache']);
    const tags = await httpRequest(`${fx.registry.url}/v2/cache-test/ttl-cache/tags/list`);
    assert.equal(tags.status, 404, 'the cache repository must not exist');
    await build('nopush', APP, { 'app.txt': 'n\n' }, ['--cache-repo', repo]);
    const expired = await build('nopush', APP, { 'app.txt': 'n\n' }, ['--cache-repo', repo, '--cache-ttl', '1ms']);
    assert.equal(hits(expired), 0, expired.log);
    assert.match(misses(expired)[0]!, /expired/);
  });

  it('keeps the cache in a local OCI layout with --cache-repo oci:/path (no registry needed)', async () => {
    const layout = join(fx.dir, 'layout-cache');
    const ctx = join(fx.dir, 'layout');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'Dockerfile'), APP.replaceAll('BASE', fx.base));
    await writeFile(join(ctx, 'app.txt'), 'from a layout\n');
    const args = (n: number): string[] => ['executor', '-c', ctx, '--no-push', '-d', `kiln-cache/layout:${n}`, '--tar-path', join(fx.dir, `layout-${n}.tar`), '--cache', '--cache-repo', `oci:${layout}`];
    const first = await kiln(args(1));
    assert.equal(first.code, 0, first.stderr);
    assert.equal(misses({ code: 0, log: first.stderr }).length, 4);
    const second = await kiln(args(2));
    assert.equal(second.code, 0, second.stderr);
    assert.equal(hits({ code: 0, log: second.stderr }), 4, second.stderr);
    await docker(['load', '-i', join(fx.dir, 'layout-2.tar')]);
    try {
      assert.equal(await docker(['run', '--rm', 'kiln-cache/layout:2', 'cat', '/built.txt']), 'built 1 fast\nfrom a layout\n');
    } finally {
      await docker(['rmi', 'kiln-cache/layout:2']);
    }
  });

  it('builds anyway when the cache registry cannot be reached', async () => {
    const r = await build('unreachable', 'FROM BASE\nRUN echo ok > /ok\n', {}, ['--cache-repo', '127.0.0.1:9/nowhere/cache', '--push-retry', '0']);
    assert.match(r.log, /could not be read, building without it/);
    assert.match(r.log, /Failed to push cache layer/);
  });
});
