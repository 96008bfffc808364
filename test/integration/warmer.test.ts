// `kiln warmer` and the executor's --cache-dir against the real distribution registry: the warmer
// stores base images (from --image and a Dockerfile's FROM lines) as an OCI layout that skopeo
// reads; the executor builds from it without downloading a layer, falls back to the registry when
// the tag moved, and uses the recorded digest when the registry is gone.
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { kiln, mustRun } from '../helpers/exec.js';
import { pushBusyboxImage } from '../helpers/base-images.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';

let registry: TestRegistry;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-warmer-'));
  registry = await startRegistry('http');
  await pushBusyboxImage(registry, 'base/busybox', 'latest', 'v2s2');
  await pushBusyboxImage(registry, 'base/other', 'oci', 'oci');
});
after(async () => {
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Blob GETs the registry served, from its access log. */
async function blobGets(): Promise<number> {
  const text = await readFile(registry.logFile, 'utf8');
  return (text.match(/"GET \/v2\/[^"]*\/blobs\/sha256:/g) ?? []).length;
}

describe('kiln warmer and --cache-dir', () => {
  it('warms --image and the Dockerfile\'s bases, skips fresh ones, and the executor builds without downloading them', async () => {
    const cacheDir = join(dir, 'cache');
    const ctx = join(dir, 'ctx');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'Dockerfile'), [
      'ARG BASE=base/busybox',
      `FROM ${registry.host}/$BASE:latest AS first`,
      'RUN echo built > /built',
      'FROM first',
      `COPY --from=${registry.host}/base/other:oci /bin/busybox /other-busybox`,
    ].join('\n') + '\n');
    const warm = await kiln(['warmer', '--cache-dir', cacheDir, '--dockerfile', join(ctx, 'Dockerfile'), '--image', `${registry.host}/base/other:oci`]);
    assert.equal(warm.code, 0, warm.stderr);
    assert.match(warm.stderr + warm.stdout, /Cached .*base\/busybox:latest/);
    assert.match(warm.stderr + warm.stdout, /Cached .*base\/other:oci/);
    // The cache is an OCI layout others can read (skopeo 1.9 reads OCI manifests only from a layout).
    const inspected = JSON.parse(await mustRun('skopeo', ['inspect', `oci:${cacheDir}:${registry.host}/base/other:oci`])) as { Layers: string[] };
    assert.ok(inspected.Layers.length > 0);

    const again = await kiln(['warmer', '-c', cacheDir, '-i', `${registry.host}/base/busybox:latest`]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr + again.stdout, /already in cache/);

    const before = await blobGets();
    const built = await kiln(['executor', '-c', ctx, '--cache-dir', cacheDir, '-d', `${registry.host}/warmed/app:1`]);
    assert.equal(built.code, 0, built.stderr);
    assert.match(built.stderr, /Found .*base\/busybox:latest .* in the base-image cache/);
    assert.equal(await blobGets(), before, 'no blob may be downloaded from the registry');
    const copied = join(dir, 'copied');
    await mustRun('skopeo', ['copy', ...registry.skopeoArgs('src'), `docker://${registry.host}/warmed/app:1`, `oci:${copied}:app`]);

    // A moved tag is pulled from the registry, not served stale from the cache.
    const mover = join(dir, 'mover');
    await mkdir(mover, { recursive: true });
    await writeFile(join(mover, 'Dockerfile'), `FROM ${registry.host}/base/busybox:latest\nENV MOVED=1\n`);
    const move = await kiln(['executor', '-c', mover, '-d', `${registry.host}/base/busybox:latest`]);
    assert.equal(move.code, 0, move.stderr);
    const moved = await kiln(['executor', '-c', ctx, '--cache-dir', cacheDir, '-d', `${registry.host}/warmed/app:2`]);
    assert.equal(moved.code, 0, moved.stderr);
    assert.match(moved.stderr, /No cached image for .*base\/busybox:latest/, `stdout: ${moved.stdout}`);
  });

  it('builds from the cache when the registry is unreachable, by the digest the warmer recorded', async () => {
    const cacheDir = join(dir, 'offline-cache');
    const other = await startRegistry('http');
    try {
      await pushBusyboxImage(other, 'base/gone', 'latest', 'v2s2');
      const warm = await kiln(['warmer', '-c', cacheDir, '-i', `${other.host}/base/gone:latest`]);
      assert.equal(warm.code, 0, warm.stderr);
    } finally {
      await other.stop();
    }
    const ctx = join(dir, 'offline');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'Dockerfile'), `FROM ${other.host}/base/gone:latest\nRUN echo offline > /o\n`);
    const r = await kiln(['executor', '-c', ctx, '--cache-dir', cacheDir, '--no-push', '--tar-path', join(dir, 'offline.tar'), '-d', 'offline/app:1', '--image-download-retry', '0']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /using sha256:[0-9a-f]{64} from the cache/);
  });

  it('refuses a warmer call with nothing to warm, naming the flags', async () => {
    const r = await kiln(['warmer', '-c', join(dir, 'empty')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /at least one image to cache \(--image\), or a --dockerfile/);
  });
});
