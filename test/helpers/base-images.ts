// Base images made by the tests rather than pulled from the internet: a one-layer busybox image,
// written as an OCI layout by hand (no Dockerfile builder involved) and pushed with skopeo.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack, type Header } from 'tar-stream';
import { mustRun } from './exec.js';
import type { TestRegistry } from './registry.js';

/** Debian's busybox-static (listed in scripts/test.sh). */
const BUSYBOX_BINARY = '/bin/busybox';
/** Fixed timestamps keep the image, and so its digests, the same on every run. */
const EPOCH = new Date('2024-01-01T00:00:00Z');
const APPLETS = [
  'sh', 'ash', 'cat', 'chmod', 'chown', 'cp', 'echo', 'env', 'false', 'grep', 'head', 'id', 'ln', 'ls', 'mkdir',
  'mv', 'printf', 'pwd', 'rm', 'sed', 'sleep', 'stat', 'tail', 'test', 'touch', 'true', 'wc', 'whoami',
];
/** The non-root user: tests use it for --chown and USER. */
export const BUSYBOX_USER = { name: 'app', uid: 1000, gid: 1000, home: '/home/app' };

export function sha256(data: Buffer | string): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

/** This machine's architecture in Go's (and image configs') words. */
export function goArch(): string {
  const arches: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };
  return arches[process.arch] ?? process.arch;
}

/** The rootfs as an uncompressed tar. */
async function busyboxRootfsTar(): Promise<Buffer> {
  const busybox = await readFile(BUSYBOX_BINARY);
  const { name, uid, gid, home } = BUSYBOX_USER;
  const entries: { header: Partial<Header> & Pick<Header, 'name' | 'uid' | 'gid'>; content?: Buffer | string }[] = [];
  const dir = (path: string, mode: number, owner = 0): void => {
    entries.push({ header: { name: path + '/', type: 'directory', mode, uid: owner, gid: owner, mtime: EPOCH } });
  };
  const file = (path: string, mode: number, content: Buffer | string): void => {
    entries.push({ header: { name: path, type: 'file', mode, uid: 0, gid: 0, mtime: EPOCH }, content });
  };
  dir('bin', 0o755);
  file('bin/busybox', 0o755, busybox);
  for (const applet of APPLETS) {
    entries.push({ header: { name: `bin/${applet}`, type: 'symlink', linkname: 'busybox', mode: 0o777, uid: 0, gid: 0, mtime: EPOCH } });
  }
  dir('etc', 0o755);
  file('etc/passwd', 0o644, `root:x:0:0:root:/root:/bin/sh\n${name}:x:${uid}:${gid}:${name}:${home}:/bin/sh\n`);
  file('etc/group', 0o644, `root:x:0:\n${name}:x:${gid}:\n`);
  dir('home', 0o755);
  dir(home.slice(1), 0o755, uid);
  dir('root', 0o700);
  dir('tmp', 0o1777);

  const tar = pack();
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    tar.on('data', (c: unknown) => { chunks.push(c as Buffer); });
    tar.on('end', () => resolve(Buffer.concat(chunks)));
    tar.on('error', reject);
  });
  for (const { header, content } of entries) {
    const named = { ...header, uname: header.uid === 0 ? 'root' : name, gname: header.gid === 0 ? 'root' : name };
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (content === undefined) tar.entry(named, cb);
      else tar.entry(named, content, cb);
    });
  }
  tar.finalize();
  return done;
}

/** Writes the busybox image as an OCI image layout (tag "latest") into dir. */
async function writeBusyboxLayout(dir: string): Promise<void> {
  const rootfs = await busyboxRootfsTar();
  const layer = gzipSync(rootfs, { level: 6 });
  const config = JSON.stringify({
    created: EPOCH.toISOString(),
    architecture: goArch(),
    os: 'linux',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['sh'] },
    rootfs: { type: 'layers', diff_ids: [sha256(rootfs)] },
    history: [{ created: EPOCH.toISOString(), created_by: 'kiln test harness: busybox-static rootfs' }],
  });
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: Buffer.byteLength(config) },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(layer), size: layer.length }],
  });
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  for (const blob of [layer, config, manifest]) {
    await writeFile(join(blobs, sha256(blob).slice('sha256:'.length)), blob);
  }
  await writeLayoutIndex(dir, manifest);
}

/**
 * A busybox image (static busybox at /bin/busybox, applets as symlinks, /etc/passwd and /etc/group with
 * root and BUSYBOX_USER), pushed with skopeo to registry/repository:tag in the given manifest format.
 * Returns the manifest digest as the registry has it.
 */
export async function pushBusyboxImage(registry: TestRegistry, repository: string, tag: string, format: 'oci' | 'v2s2'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-busybox-'));
  try {
    const layout = join(dir, 'layout');
    await writeBusyboxLayout(layout);
    return await pushOciLayout(layout, registry, repository, tag, format, 60_000);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Pushes the "latest" image of an OCI layout with skopeo; returns the manifest digest the registry has. */
export async function pushOciLayout(
  layout: string, registry: TestRegistry, repository: string, tag: string, format: 'oci' | 'v2s2', timeoutMs: number,
): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-push-'));
  try {
    const digestFile = join(dir, 'digest');
    await mustRun('skopeo', [
      'copy', '--quiet', '--format', format, '--digestfile', digestFile, ...registry.skopeoArgs('dest'),
      `oci:${layout}:latest`, `docker://${registry.host}/${repository}:${tag}`,
    ], { timeoutMs });
    return (await readFile(digestFile, 'utf8')).trim();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** An OCI layout's oci-layout and index.json naming `manifest` as "latest" (the blobs are written by the caller). */
export async function writeLayoutIndex(dir: string, manifest: string): Promise<void> {
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(join(dir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(manifest), size: Buffer.byteLength(manifest),
      annotations: { 'org.opencontainers.image.ref.name': 'latest' },
    }],
  }));
}
