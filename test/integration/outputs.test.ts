// A two-layer image built with the layer writer and assembled in-process, written as a docker-archive
// and as an OCI layout, then read back by the real consumers: skopeo, umoci and podman.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { lstat, mkdtemp, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BlobStore } from '../../src/image/blob-store.js';
import { assembleImage, layerMediaType, type BuiltImage, type MediaTypeFamily } from '../../src/image/image.js';
import { MediaType, type ImageConfig } from '../../src/image/types.js';
import { writeLayer, type LayerEntry, type WrittenLayer } from '../../src/layer/layer-writer.js';
import { writeDockerArchive } from '../../src/output/docker-archive.js';
import { writeOciLayout } from '../../src/output/oci-layout.js';
import { mustRun } from '../helpers/exec.js';

const created = '2024-01-02T03:04:05Z';
const t = new Date(created);
const repoTags = ['reg:5000/app:1', 'example.com/team/app:latest'];
const longName = `app/data/${'n'.repeat(120)}/${'m'.repeat(130)}`;

interface Fixture {
  dir: string;
  store: BlobStore;
  layers: WrittenLayer[];
  image: BuiltImage;
}

const dirEntry = (path: string, mode = 0o755, uid = 0, gid = 0): LayerEntry => ({ path, type: 'dir', mode, uid, gid, mtime: t });

async function buildImage(dir: string, store: BlobStore, family: MediaTypeFamily): Promise<Fixture> {
  const tool = join(dir, 'tool.sh');
  await writeFile(tool, '#!/bin/sh\necho tool\n');
  const mediaType = layerMediaType(family);
  const first = await writeLayer([
    dirEntry('app'), dirEntry('app/bin'), dirEntry('etc'), dirEntry('usr'), dirEntry('usr/local'), dirEntry('usr/local/bin'),
    { path: 'app/bin/tool', type: 'file', mode: 0o755, uid: 0, gid: 0, mtime: t, source: tool },
    // Sorts before its target, so the writer moves the content onto it.
    { path: 'app/bin/alias', type: 'hardlink', mode: 0o755, uid: 0, gid: 0, mtime: t, linkname: 'app/bin/tool' },
    { path: 'app/bin/suid', type: 'file', mode: 0o4755, uid: 0, gid: 0, mtime: t, content: Buffer.from('setuid\n') },
    { path: 'etc/motd', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, content: Buffer.from('welcome\n') },
    { path: 'usr/local/bin/tool', type: 'symlink', mode: 0o777, uid: 0, gid: 0, mtime: t, linkname: '/app/bin/tool' },
  ], store, { mediaType });
  const second = await writeLayer([
    dirEntry('app'), dirEntry('app/data', 0o750, 1000, 1000), dirEntry(longName.slice(0, longName.lastIndexOf('/'))), dirEntry('etc'), dirEntry('tmp', 0o1777),
    { path: 'app/data/secret', type: 'file', mode: 0o600, uid: 1000, gid: 1000, mtime: t, content: Buffer.from('s3cret') },
    // PAX records (long path, an id beyond ustar's 7 octal digits, an xattr) for Go's archive/tar in umoci and podman.
    { path: longName, type: 'file', mode: 0o640, uid: 3000000, gid: 3000001, mtime: t, content: Buffer.from('long'), xattrs: { 'user.origin': Buffer.from('kiln') } },
    { path: 'etc/.wh.motd', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, content: Buffer.alloc(0) }, // deletes etc/motd
  ], store, { mediaType });
  const config: ImageConfig = {
    architecture: 'amd64',
    os: 'linux',
    created,
    config: {
      Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'GREETING=hi'],
      Entrypoint: ['/app/bin/tool'],
      Cmd: ['--serve'],
      WorkingDir: '/app',
      User: '1000:1000',
      Labels: { 'org.example.b': '2', 'org.example.a': '1' },
      ExposedPorts: { '8080/tcp': {} },
    },
    rootfs: { type: 'layers', diff_ids: [first.diffId, second.diffId] },
    history: [
      { created, created_by: 'COPY tool.sh /app/bin/tool' },
      { created, created_by: 'ENV GREETING=hi', empty_layer: true },
      { created, created_by: 'COPY data /app/data' },
    ],
  };
  const image = await assembleImage(config, [first.descriptor, second.descriptor], store, family);
  return { dir, store, layers: [first, second], image };
}

async function json(file: string, args: string[]): Promise<unknown> {
  return JSON.parse(await mustRun(file, args));
}

describe('docker-archive and OCI layout outputs', () => {
  let f: Fixture;
  let archive: string;
  let layout: string;
  before(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-outputs-'));
    f = await buildImage(dir, await BlobStore.createTemp('kiln-outputs-blobs-'), 'oci');
    archive = join(dir, 'out', 'image.tar');
    layout = join(dir, 'layout');
    await writeDockerArchive(f.image, repoTags, archive);
    await writeOciLayout(f.image, layout, { refName: '1.0' });
  });
  after(async () => {
    await f.store.dispose();
    await rm(f.dir, { recursive: true, force: true });
  });

  it('assembles a manifest and config that line up with the layers', () => {
    const { image, layers } = f;
    assert.equal(image.manifest.mediaType, MediaType.ociManifest);
    assert.equal(image.configDescriptor.mediaType, MediaType.ociConfig);
    assert.deepEqual(image.manifest.layers.map((l) => l.digest), layers.map((l) => l.descriptor.digest));
    assert.ok(image.manifest.layers.every((l) => l.mediaType === MediaType.ociLayerGzip));
    assert.equal(image.config.rootfs.diff_ids.length, image.config.history.filter((h) => !h.empty_layer).length);
    const text = image.configBytes.toString();
    assert.ok(!/\s"|":\s/.test(text), 'no whitespace between tokens');
    assert.ok(text.indexOf('"org.example.a"') < text.indexOf('"org.example.b"'), 'keys sorted');
  });

  it('serialises the config the same whatever order its keys were set in', async () => {
    const { image, store } = f;
    const reordered = Object.fromEntries(Object.entries(image.config).reverse()) as unknown as ImageConfig;
    const shuffled: ImageConfig = { ...reordered, config: { ...image.config.config, Labels: { 'org.example.a': '1', 'org.example.b': '2' } } };
    const again = await assembleImage(shuffled, image.manifest.layers, store, 'oci');
    assert.deepEqual(again.configBytes, image.configBytes);
    assert.equal(again.manifestDescriptor.digest, image.manifestDescriptor.digest);
  });

  it('writes an OCI layout skopeo reads: same digest, layers, manifest and config bytes', async () => {
    const inspected = await json('skopeo', ['inspect', `oci:${layout}:1.0`]) as { Digest: string; Layers: string[]; Env: string[]; Labels: Record<string, string>; Architecture: string };
    assert.equal(inspected.Digest, f.image.manifestDescriptor.digest);
    assert.deepEqual(inspected.Layers, f.layers.map((l) => l.descriptor.digest));
    assert.deepEqual(inspected.Env, f.image.config.config.Env);
    assert.deepEqual(inspected.Labels, { 'org.example.a': '1', 'org.example.b': '2' });
    assert.equal(inspected.Architecture, 'amd64');
    assert.equal(await mustRun('skopeo', ['inspect', '--raw', `oci:${layout}:1.0`]), f.image.manifestBytes.toString());
    assert.equal(await mustRun('skopeo', ['inspect', '--raw', '--config', `oci:${layout}:1.0`]), f.image.configBytes.toString());

    assert.deepEqual(JSON.parse(await readFile(join(layout, 'oci-layout'), 'utf8')), { imageLayoutVersion: '1.0.0' });
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
    assert.deepEqual(index, {
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: [{ ...f.image.manifestDescriptor, annotations: { 'org.opencontainers.image.ref.name': '1.0' } }],
    });
    const blobs = (await readdir(join(layout, 'blobs', 'sha256'))).sort();
    const expected = [f.image.configDescriptor, f.image.manifestDescriptor, ...f.layers.map((l) => l.descriptor)].map((d) => d.digest.slice(7)).sort();
    assert.deepEqual(blobs, expected);
    const layer = f.layers[0]!.descriptor.digest;
    assert.equal((await stat(join(layout, 'blobs', 'sha256', layer.slice(7)))).ino, (await stat(f.store.path(layer))).ino, 'hardlinked from the store');
  });

  it('unpacks with umoci by tag into the files, modes, owners and links of both layers', async () => {
    const bundle = join(f.dir, 'bundle');
    await mustRun('umoci', ['unpack', '--image', `${layout}:1.0`, bundle]);
    const root = join(bundle, 'rootfs');
    assert.equal(await readFile(join(root, 'app/bin/tool'), 'utf8'), '#!/bin/sh\necho tool\n');
    assert.equal((await lstat(join(root, 'app/bin/tool'))).mode & 0o7777, 0o755);
    assert.equal((await lstat(join(root, 'app/bin/suid'))).mode & 0o7777, 0o4755);
    assert.equal((await lstat(join(root, 'app/bin/alias'))).ino, (await lstat(join(root, 'app/bin/tool'))).ino);
    const long = await lstat(join(root, longName));
    assert.deepEqual([long.mode & 0o7777, long.uid, long.gid], [0o640, 3000000, 3000001]);
    assert.equal(await readFile(join(root, longName), 'utf8'), 'long');
    assert.equal(await readlink(join(root, 'usr/local/bin/tool')), '/app/bin/tool');
    const secret = await lstat(join(root, 'app/data/secret'));
    assert.deepEqual([secret.mode & 0o7777, secret.uid, secret.gid], [0o600, 1000, 1000]);
    const data = await lstat(join(root, 'app/data'));
    assert.deepEqual([data.mode & 0o7777, data.uid, data.gid], [0o750, 1000, 1000]);
    assert.equal((await lstat(join(root, 'tmp'))).mode & 0o7777, 0o1777);
    assert.equal(await readFile(join(root, 'app/data/secret'), 'utf8'), 's3cret');
    await assert.rejects(lstat(join(root, 'etc/motd')), { code: 'ENOENT' }, 'the whiteout in layer 2 removed it');
    await assert.rejects(lstat(join(root, 'etc/.wh.motd')), { code: 'ENOENT' });
    const runtime = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8'));
    assert.deepEqual(runtime.process.args, ['/app/bin/tool', '--serve']);
    assert.equal(runtime.process.cwd, '/app');
    assert.deepEqual([runtime.process.user.uid, runtime.process.user.gid], [1000, 1000]);
  });

  it('writes a docker-archive of compressed layers, stored once each, that skopeo inspects', async () => {
    const listing = execFileSync('tar', ['-tvf', archive], { encoding: 'utf8' }).trim().split('\n').map((l) => l.split(/\s+/).slice(-1)[0]);
    const layerFiles = f.layers.map((l) => `${l.descriptor.digest.slice(7)}.tar.gz`);
    assert.deepEqual(listing, [f.image.configDescriptor.digest, ...layerFiles, 'manifest.json']);
    const manifest = JSON.parse(execFileSync('tar', ['-xOf', archive, 'manifest.json'], { encoding: 'utf8' }));
    assert.deepEqual(manifest, [{ Config: f.image.configDescriptor.digest, RepoTags: repoTags, Layers: layerFiles }]);
    assert.deepEqual(execFileSync('tar', ['-xOf', archive, layerFiles[0]!]), await readFile(f.store.path(f.layers[0]!.descriptor.digest)));

    const inspected = await json('skopeo', ['inspect', `docker-archive:${archive}`]) as { Layers: string[]; Env: string[]; Created: string; Os: string };
    // containers/image serves docker-archive layers uncompressed, so it names them by diff_id.
    assert.deepEqual(inspected.Layers, f.image.config.rootfs.diff_ids);
    assert.deepEqual(inspected.Env, f.image.config.config.Env);
    assert.equal(inspected.Created, created);
    assert.equal(inspected.Os, 'linux');
    assert.equal(await mustRun('skopeo', ['inspect', '--raw', '--config', `docker-archive:${archive}`]), f.image.configBytes.toString());
  });

  it('loads into podman (a throwaway store) with the expected config, tags and layers', async () => {
    const storage = join(f.dir, 'podman');
    const podman = ['--root', join(storage, 'root'), '--runroot', join(storage, 'run'), '--storage-driver', 'vfs'];
    const loaded = await mustRun('podman', [...podman, 'load', '-i', archive]);
    assert.match(loaded, /reg:5000\/app:1/);
    const [image] = await json('podman', [...podman, 'image', 'inspect', 'reg:5000/app:1']) as Array<{
      Id: string; RepoTags: string[]; Config: Record<string, unknown>; RootFS: { Layers: string[] }; History: unknown[]; Architecture: string; Created: string;
    }>;
    assert.ok(image);
    assert.equal(image.Id, f.image.configDescriptor.digest.slice(7), 'the image ID is the digest of our config bytes');
    assert.deepEqual([...image.RepoTags].sort(), ['example.com/team/app:latest', 'reg:5000/app:1']);
    assert.deepEqual(image.RootFS.Layers, f.image.config.rootfs.diff_ids);
    assert.deepEqual(image.Config.Env, f.image.config.config.Env);
    assert.deepEqual(image.Config.Entrypoint, ['/app/bin/tool']);
    assert.deepEqual(image.Config.Cmd, ['--serve']);
    assert.equal(image.Config.WorkingDir, '/app');
    assert.equal(image.Config.User, '1000:1000');
    assert.deepEqual(image.Config.Labels, { 'org.example.a': '1', 'org.example.b': '2' });
    assert.deepEqual(image.Config.ExposedPorts, { '8080/tcp': {} });
    assert.equal(image.History.length, 3);
    assert.equal(image.Created, created);

    // containers/storage applied both layers: look at the result (vfs "mounts" are plain directories).
    const root = (await mustRun('podman', [...podman, 'image', 'mount', 'reg:5000/app:1'])).trim();
    try {
      assert.equal(await readFile(join(root, 'app/bin/alias'), 'utf8'), '#!/bin/sh\necho tool\n');
      assert.equal((await lstat(join(root, 'app/bin/suid'))).mode & 0o7777, 0o4755);
      assert.equal(await readlink(join(root, 'usr/local/bin/tool')), '/app/bin/tool');
      const long = await lstat(join(root, longName));
      assert.deepEqual([long.mode & 0o7777, long.uid, long.gid], [0o640, 3000000, 3000001]);
      await assert.rejects(lstat(join(root, 'etc/motd')), { code: 'ENOENT' });
    } finally {
      await mustRun('podman', [...podman, 'image', 'unmount', 'reg:5000/app:1']);
    }
  });

  it('survives skopeo copy from the docker-archive into an OCI layout', async () => {
    const copy = join(f.dir, 'copied');
    await mustRun('skopeo', ['--insecure-policy', 'copy', `docker-archive:${archive}`, `oci:${copy}:copied`]);
    const config = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', '--config', `oci:${copy}:copied`])) as ImageConfig;
    assert.deepEqual(config.rootfs.diff_ids, f.image.config.rootfs.diff_ids, 'the same layer contents');
    assert.deepEqual(config.config.Entrypoint, f.image.config.config.Entrypoint);
    assert.deepEqual(config.history, f.image.config.history);
    const bundle = join(f.dir, 'copied-bundle');
    await mustRun('umoci', ['unpack', '--image', `${copy}:copied`, bundle]);
    assert.equal(await readFile(join(bundle, 'rootfs/app/data/secret'), 'utf8'), 's3cret');
  });

  it('rewrites the index for the next image but keeps the blobs already in the layout', async () => {
    const dir = await mkdtemp(join(f.dir, 'second-'));
    const other = await buildImage(dir, f.store, 'oci');
    const config = { ...other.image.config, config: { ...other.image.config.config, Cmd: ['--other'] } };
    const next = await assembleImage(config, other.image.manifest.layers, f.store, 'oci');
    const reused = join(f.dir, 'reused');
    await writeOciLayout(f.image, reused, { refName: 'first' });
    await writeOciLayout(next, reused);
    const index = JSON.parse(await readFile(join(reused, 'index.json'), 'utf8'));
    assert.deepEqual(index.manifests, [next.manifestDescriptor], 'only the new image, and no ref name when none is given');
    await stat(join(reused, 'blobs', 'sha256', f.image.manifestDescriptor.digest.slice(7)));
    const inspected = await json('skopeo', ['inspect', `oci:${reused}`]) as { Digest: string };
    assert.equal(inspected.Digest, next.manifestDescriptor.digest);
  });
});

describe('docker media types', () => {
  let f: Fixture;
  before(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-outputs-docker-'));
    f = await buildImage(dir, await BlobStore.createTemp('kiln-outputs-blobs-'), 'docker');
  });
  after(async () => {
    await f.store.dispose();
    await rm(f.dir, { recursive: true, force: true });
  });

  it('uses the docker manifest, config and layer media types, relabelling OCI gzip layers', async () => {
    assert.equal(f.image.manifest.mediaType, MediaType.dockerManifest);
    assert.equal(f.image.manifest.config.mediaType, MediaType.dockerConfig);
    assert.ok(f.image.manifest.layers.every((l) => l.mediaType === MediaType.dockerLayerGzip));
    const relabelled = await assembleImage(f.image.config, f.layers.map((l) => ({ ...l.descriptor, mediaType: MediaType.ociLayerGzip })), f.store, 'docker');
    assert.deepEqual(relabelled.manifestBytes, f.image.manifestBytes);
  });

  it('writes a docker-archive with a repeated layer and no tags that skopeo and podman load', async () => {
    const layer = f.layers[0]!;
    const config: ImageConfig = {
      ...f.image.config,
      rootfs: { type: 'layers', diff_ids: [layer.diffId, layer.diffId] },
      history: [{ created_by: 'one' }, { created_by: 'two' }],
    };
    const image = await assembleImage(config, [layer.descriptor, layer.descriptor], f.store, 'docker');
    const archive = join(f.dir, 'repeated.tar');
    await writeDockerArchive(image, [], archive);
    const names = execFileSync('tar', ['-tf', archive], { encoding: 'utf8' }).trim().split('\n');
    assert.deepEqual(names, [image.configDescriptor.digest, `${layer.descriptor.digest.slice(7)}.tar.gz`, 'manifest.json']);
    const inspected = await json('skopeo', ['inspect', `docker-archive:${archive}`]) as { Layers: string[] };
    assert.deepEqual(inspected.Layers, [layer.diffId, layer.diffId]);
    const storage = join(f.dir, 'podman');
    const podman = ['--root', join(storage, 'root'), '--runroot', join(storage, 'run'), '--storage-driver', 'vfs'];
    await mustRun('podman', [...podman, 'load', '-i', archive]);
    const [loaded] = await json('podman', [...podman, 'image', 'inspect', image.configDescriptor.digest.slice(7)]) as Array<{ RootFS: { Layers: string[] } }>;
    assert.deepEqual(loaded?.RootFS.Layers, [layer.diffId, layer.diffId]);
  });

  it('fails, leaving no archive behind, when a layer blob is corrupt', async () => {
    const extra = await writeLayer([{ path: 'x', type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: t, content: Buffer.from('x'.repeat(5000)) }], f.store, {
      mediaType: layerMediaType('docker'),
    });
    const config: ImageConfig = { ...f.image.config, rootfs: { type: 'layers', diff_ids: [extra.diffId] }, history: [{ created_by: 'x' }] };
    const image = await assembleImage(config, [extra.descriptor], f.store, 'docker');
    const blob = f.store.path(extra.descriptor.digest);
    const bytes = await readFile(blob);
    const at = bytes.length - 10;
    bytes.writeUInt8(bytes.readUInt8(at) ^ 0xff, at);
    await writeFile(blob, bytes);
    const out = join(f.dir, 'corrupt', 'image.tar');
    await assert.rejects(writeDockerArchive(image, ['x:1'], out), /is corrupt/);
    assert.deepEqual(await readdir(join(f.dir, 'corrupt')), []);
  });
});
