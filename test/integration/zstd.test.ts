// --compression=zstd (issue #8): kiln pushes OCI tar+zstd layers to a distribution registry, and the
// real consumers read them back: skopeo (copy, digests verified), GNU tar, podman (pull, run),
// and kiln itself building FROM the zstd image (its layers extracted for a RUN).
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pushBusyboxImage } from '../helpers/base-images.js';
import { dockerEnv, kiln, mustRun, runCommand } from '../helpers/exec.js';
import { buildKilnTestImage } from '../helpers/kiln-image.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';

const ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';
const OCI_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
const TIMEOUT_MS = 180_000;

interface Manifest { mediaType: string; config: { digest: string }; layers: { mediaType: string; digest: string; size: number }[]; }
interface Config { rootfs: { diff_ids: string[] }; }

let dir: string;
let registry: TestRegistry;
let app: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-zstd-'));
  registry = await startRegistry('http');
  await pushBusyboxImage(registry, 'base/busybox', 'oci', 'oci');
  await pushBusyboxImage(registry, 'base/busybox', 'v2s2', 'v2s2');
  app = `${registry.host}/zstd/app:1`;
});
after(async () => {
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

async function context(name: string, dockerfile: string, files: Record<string, string | Buffer> = {}): Promise<string> {
  const ctx = join(dir, name);
  await mkdir(ctx, { recursive: true });
  await writeFile(join(ctx, 'Dockerfile'), dockerfile);
  for (const [path, content] of Object.entries(files)) await writeFile(join(ctx, path), content);
  return ctx;
}

async function build(ctx: string, args: string[]): Promise<void> {
  const r = await kiln(['executor', '-c', ctx, ...args], { timeoutMs: TIMEOUT_MS });
  assert.equal(r.code, 0, r.stderr + r.stdout);
}

const sha256 = (b: Buffer): string => 'sha256:' + createHash('sha256').update(b).digest('hex');
const blobPath = (layout: string, digest: string): string => join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length));

describe('--compression=zstd', () => {
  it('pushes tar+zstd layers with diff_ids of their tars, which skopeo copies and GNU tar extracts', async () => {
    // Layers big enough for zstd's worker threads to split: 4.8 MB of text, 3 MB of random bytes.
    const data = Buffer.from('kiln zstd layer\n'.repeat(300_000));
    const ctx = await context('app', [
      `FROM ${registry.host}/base/busybox:oci`,
      'COPY data.txt /data/data.txt',
      'RUN echo built > /built.txt && head -c 3000000 /dev/urandom > /data/random.bin',
      'CMD ["cat", "/built.txt"]',
    ].join('\n') + '\n', { 'data.txt': data });
    await build(ctx, ['-d', app, '--compression=zstd', '--insecure-pull', '--insecure']);

    const layout = join(dir, 'copied');
    await mustRun('skopeo', ['copy', '--quiet', ...registry.skopeoArgs('src'), `docker://${app}`, `oci:${layout}:1`], { timeoutMs: TIMEOUT_MS });
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    const manifest = JSON.parse(await readFile(blobPath(layout, index.manifests[0]!.digest), 'utf8')) as Manifest;
    const config = JSON.parse(await readFile(blobPath(layout, manifest.config.digest), 'utf8')) as Config;
    assert.equal(manifest.layers.length, 3);
    assert.equal(manifest.layers[0]!.mediaType, OCI_GZIP, 'the base layer is kept as it was');
    for (const [i, layer] of manifest.layers.entries()) {
      if (i === 0) continue;
      assert.equal(layer.mediaType, ZSTD, `layer ${i}`);
      const blob = await readFile(blobPath(layout, layer.digest));
      assert.equal(sha256(blob), layer.digest);
      assert.equal(blob.length, layer.size);
      assert.equal(blob.readUInt32LE(0), 0xfd2fb528, 'a zstd frame');
      const tar = execFileSync('zstd', ['-d', '-c', '-q'], { input: blob, maxBuffer: 1 << 28 });
      assert.equal(config.rootfs.diff_ids[i], sha256(tar), `diff_id of layer ${i}`);
    }

    // umoci 0.4.7 (Debian 12) refuses tar+zstd layers ("blob is not correct mediatype"): GNU tar reads them.
    const rootfs = join(dir, 'rootfs');
    await mkdir(rootfs);
    for (const layer of manifest.layers) await mustRun('tar', ['-xf', blobPath(layout, layer.digest), '-C', rootfs]);
    assert.equal(await readFile(join(rootfs, 'built.txt'), 'utf8'), 'built\n');
    assert.ok((await readFile(join(rootfs, 'data', 'data.txt'))).equals(data));
  });

  // docker.io 20.10 (Debian 12) cannot: it pulls the layer and fails with "archive/tar: invalid tar
  // header" (moby reads zstd layers since 23.0). podman, on containers/image, can.
  it('runs under podman, pulled from the registry', async () => {
    const store = join(dir, 'podman');
    const podman = ['--root', join(store, 'root'), '--runroot', join(store, 'run'), '--storage-driver', 'vfs'];
    try {
      await mustRun('podman', [...podman, 'pull', '-q', '--tls-verify=false', app], { timeoutMs: TIMEOUT_MS });
      // Limits within ours: podman's defaults are higher, and raising them needs CAP_SYS_RESOURCE.
      assert.equal(await mustRun('podman', [...podman, 'run', '--rm', '--network', 'none', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024', app], { timeoutMs: TIMEOUT_MS }), 'built\n');
    } finally {
      await runCommand('podman', [...podman, 'rmi', '-a', '-f'], { timeoutMs: TIMEOUT_MS }).catch(() => undefined);
      await mustRun('rm', ['-rf', '--one-file-system', store]);
    }
  });

  it('builds FROM a zstd image: its layers are extracted for RUN and listed for COPY --from', async () => {
    const ctx = await context('from-zstd', [
      `FROM ${app} AS zstd`,
      'RUN cat /built.txt /built.txt > /twice.txt && wc -c < /data/random.bin > /size.txt',
      `FROM ${registry.host}/base/busybox:oci`,
      'COPY --from=zstd /twice.txt /size.txt /out/',
    ].join('\n') + '\n');
    const out = join(dir, 'from-zstd.oci');
    await build(ctx, ['--no-push', '--oci-layout-path', out, '--insecure-pull']);
    const bundle = join(dir, 'from-zstd-bundle');
    await mustRun('umoci', ['unpack', '--rootless', '--image', out, bundle], { timeoutMs: TIMEOUT_MS });
    assert.equal(await readFile(join(bundle, 'rootfs', 'out', 'twice.txt'), 'utf8'), 'built\nbuilt\n');
    assert.equal((await readFile(join(bundle, 'rootfs', 'out', 'size.txt'), 'utf8')).trim(), '3000000');
    const manifest = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', `oci:${out}`])) as Manifest;
    assert.deepEqual(manifest.layers.map((l) => l.mediaType), [OCI_GZIP, OCI_GZIP], 'gzip unless --compression=zstd');
  });

  it('works in kiln\'s image, container isolation: its own zstd runs after the base replaced /lib', async () => {
    const image = `kiln-test/zstd-executor:${process.pid}`;
    await buildKilnTestImage(dir, image);
    try {
      const ctx = await context('in-container', `FROM ${app}\nRUN cat /built.txt > /again.txt\n`);
      const target = `${registry.host}/zstd/in-container:1`;
      const r = await runCommand('docker', ['run', '--rm', '--network', 'host', '-v', `${ctx}:/workspace`, image,
        '--context=dir:///workspace', `--destination=${target}`, '--compression=zstd', '--insecure', '--insecure-pull'], { env: dockerEnv(), timeoutMs: TIMEOUT_MS });
      assert.equal(r.code, 0, r.stderr);
      const layout = join(dir, 'in-container.oci');
      await mustRun('skopeo', ['copy', '--quiet', ...registry.skopeoArgs('src'), `docker://${target}`, `oci:${layout}:1`], { timeoutMs: TIMEOUT_MS });
      const manifest = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', `oci:${layout}:1`])) as Manifest;
      assert.deepEqual(manifest.layers.map((l) => l.mediaType), [OCI_GZIP, ZSTD, ZSTD, ZSTD]);
      const last = manifest.layers.at(-1)!.digest;
      assert.match(await mustRun('tar', ['-tf', blobPath(layout, last)]), /^again\.txt$/m);
    } finally {
      await runCommand('docker', ['rmi', image], { env: dockerEnv() }).catch(() => undefined);
    }
  });

  it('keeps gzip for a Docker-format base, as kaniko does, and takes zstd levels up to 19', async () => {
    const ctx = await context('docker-family', `FROM ${registry.host}/base/busybox:v2s2\nCOPY a.txt /a.txt\n`, { 'a.txt': 'a\n' });
    const out = join(dir, 'docker-family.oci');
    await build(ctx, ['--no-push', '--oci-layout-path', out, '--insecure-pull', '--compression', 'zstd', '--compression-level', '19']);
    const manifest = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', `oci:${out}`])) as Manifest;
    assert.equal(manifest.layers.at(-1)!.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');

    const bad = await kiln(['executor', '-c', ctx, '--no-push', '--compression=zstd', '--compression-level=20']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /invalid --compression-level 20 for zstd: use 0-19/);
    const unknown = await kiln(['executor', '-c', ctx, '--no-push', '--compression=lz4']);
    assert.match(unknown.stderr, /invalid --compression "lz4": use gzip or zstd/);
  });
});
