// A minimal Debian bookworm base image for tests that need real RUN steps (apt, bash): debootstrap
// --variant=minbase once per machine, cached as a one-layer OCI layout under CACHE_ROOT, then pushed
// with skopeo. The cache is keyed by the recipe, architecture and mirror.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { mustRun, runCommand } from './exec.js';
import type { TestRegistry } from './registry.js';
import { goArch, pushOciLayout, sha256, writeLayoutIndex } from './base-images.js';

/** On disk rather than in /tmp so that it outlives reboots that clear /tmp. */
const CACHE_ROOT = '/var/tmp/kiln-test-debian';
/** Bump when the rootfs or image recipe changes: it keys the cache. */
const RECIPE = 'bookworm-minbase-2';
const SUITE = 'bookworm';
const FALLBACK_MIRROR = 'http://deb.debian.org/debian';
/** Install-time mtimes are clamped to this, and the config's dates use it. */
const EPOCH = new Date('2025-01-01T00:00:00Z');

/** The Debian mirror this machine's apt uses (one-line .list and deb822 .sources files). */
async function aptMirror(): Promise<string> {
  const dir = '/etc/apt/sources.list.d';
  const files = ['/etc/apt/sources.list'];
  try {
    files.push(...(await readdir(dir)).filter((f) => /\.(list|sources)$/.test(f)).sort().map((f) => join(dir, f)));
  } catch { /* no sources.list.d */ }
  const found: { uri: string; suites: string[] }[] = [];
  for (const file of files) {
    let text: string;
    try { text = await readFile(file, 'utf8'); } catch { continue; }
    if (file.endsWith('.sources')) {
      for (const stanza of text.split(/\n\s*\n/)) {
        const fields = new Map<string, string>();
        for (const m of stanza.matchAll(/^([\w-]+):[ \t]*(.*)$/gm)) fields.set(m[1]!.toLowerCase(), m[2]!.trim());
        if (!(fields.get('types') ?? '').split(/\s+/).includes('deb') || fields.get('enabled') === 'no') continue;
        const suites = (fields.get('suites') ?? '').split(/\s+/);
        for (const uri of (fields.get('uris') ?? '').split(/\s+/)) found.push({ uri, suites });
      }
    } else {
      for (const m of text.matchAll(/^[ \t]*deb[ \t]+(?:\[[^\]]*\][ \t]+)?(\S+)[ \t]+(\S+)/gm)) found.push({ uri: m[1]!, suites: [m[2]!] });
    }
  }
  const usable = found.filter((s) => /^(https?|file):/.test(s.uri));
  const pick = usable.find((s) => s.suites.includes(SUITE)) ?? usable.find((s) => /\/debian\/?$/.test(s.uri));
  return (pick?.uri ?? FALLBACK_MIRROR).replace(/\/+$/, '');
}

/** debootstrap mounts /proc (and more in some containers) in the target; a killed run leaves them. */
async function unmountUnder(dir: string): Promise<void> {
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')
    .map((line) => (line.split(' ')[4] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((m) => m.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) await runCommand('umount', ['-l', m], { timeoutMs: 30_000 });
}

async function removeTree(dir: string): Promise<void> {
  await unmountUnder(dir);
  await rm(dir, { recursive: true, force: true });
}

/** Removes the entries of dir that match (all by default), keeping dir itself. */
async function emptyDir(dir: string, match: (name: string) => boolean = () => true): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const name of (await readdir(dir)).filter(match)) await rm(join(dir, name), { recursive: true, force: true });
}

/** Build dirs of processes that died mid-build (named .build-PID-*). */
async function removeStaleBuilds(): Promise<void> {
  for (const name of await readdir(CACHE_ROOT)) {
    const pid = /^\.build-(\d+)-/.exec(name)?.[1];
    if (pid === undefined || Number(pid) === process.pid) continue;
    try {
      process.kill(Number(pid), 0);
      continue; // its builder still runs
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') continue;
    }
    await removeTree(join(CACHE_ROOT, name));
  }
}

/** What Docker's debian images leave out: apt lists and caches, host files, device nodes, and the
 * logs and ldconfig cache that hold install times (without them the layer is reproducible). */
async function cleanRootfs(rootfs: string, mirror: string): Promise<void> {
  await unmountUnder(rootfs);
  await emptyDir(join(rootfs, 'var/lib/apt/lists'));
  await emptyDir(join(rootfs, 'var/cache/apt'), (n) => n.endsWith('.bin'));
  await emptyDir(join(rootfs, 'var/cache/apt/archives'), (n) => n.endsWith('.deb'));
  for (const dir of ['dev', 'proc', 'sys']) await emptyDir(join(rootfs, dir));
  for (const path of ['debootstrap', 'var/log/bootstrap.log', 'var/log/dpkg.log', 'var/log/alternatives.log',
    'var/cache/ldconfig/aux-cache', 'etc/resolv.conf', 'etc/hostname']) {
    await rm(join(rootfs, path), { recursive: true, force: true });
  }
  await writeFile(join(rootfs, 'etc/apt/sources.list'), `deb ${mirror} ${SUITE} main\n`);
}

/** GNU tar of the rootfs, gzipped in-process, hashing both forms on the way. */
export async function writeLayer(rootfs: string, file: string): Promise<{ diffId: string; digest: string; size: number }> {
  const tar = spawn('tar', [
    '--create', '--file=-', '--directory', rootfs, '--sort=name', '--numeric-owner', '--xattrs', '--xattrs-include=*',
    '--format=posix', '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
    `--mtime=@${EPOCH.getTime() / 1000}`, '--clamp-mtime', '--transform=s,^\\./,,', '.',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  tar.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number>((resolve, reject) => {
    tar.on('error', reject);
    tar.on('close', (code) => resolve(code ?? 1));
  });
  const raw = createHash('sha256');
  const gz = createHash('sha256');
  let size = 0;
  await pipeline(
    tar.stdout,
    async function* (source: AsyncIterable<Buffer>) { for await (const c of source) { raw.update(c); yield c; } },
    createGzip({ level: 6 }),
    async function* (source: AsyncIterable<Buffer>) { for await (const c of source) { gz.update(c); size += c.length; yield c; } },
    createWriteStream(file),
  );
  const code = await exited;
  if (code !== 0) throw new Error(`tar of ${rootfs} exited ${code}\n${stderr}`);
  return { diffId: 'sha256:' + raw.digest('hex'), digest: 'sha256:' + gz.digest('hex'), size };
}

/** The image as an OCI layout (tag "latest") in dir; index.json is written last. */
async function writeLayout(rootfs: string, dir: string, mirror: string): Promise<void> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const layerFile = join(dir, 'layer.tmp');
  const layer = await writeLayer(rootfs, layerFile);
  await rename(layerFile, join(blobs, layer.digest.slice('sha256:'.length)));
  const config = JSON.stringify({
    created: EPOCH.toISOString(),
    architecture: goArch(),
    os: 'linux',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['bash'] },
    rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    history: [{ created: EPOCH.toISOString(), created_by: `kiln test harness: debootstrap --variant=minbase ${SUITE} ${mirror}` }],
  });
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: Buffer.byteLength(config) },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer.digest, size: layer.size }],
  });
  for (const blob of [config, manifest]) await writeFile(join(blobs, sha256(blob).slice('sha256:'.length)), blob);
  await writeLayoutIndex(dir, manifest);
}

async function buildLayout(): Promise<string> {
  const mirror = await aptMirror();
  const cached = join(CACHE_ROOT, `${RECIPE}-${goArch()}-${sha256(mirror).slice(7, 19)}`);
  if (existsSync(join(cached, 'index.json'))) return cached;
  await mkdir(CACHE_ROOT, { recursive: true });
  await removeStaleBuilds();
  if ((await runCommand('sh', ['-c', 'command -v debootstrap'])).code !== 0) {
    await mustRun('apt-get', ['update', '-qq'], { timeoutMs: 300_000 });
    await mustRun('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'debootstrap'],
      { timeoutMs: 300_000, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  }
  // Built beside the cache and renamed into place, so an interrupted run never leaves half a cache.
  const work = await mkdtemp(join(CACHE_ROOT, `.build-${process.pid}-`));
  try {
    const rootfs = join(work, 'rootfs');
    await mustRun('debootstrap', ['--variant=minbase', SUITE, rootfs, mirror], { timeoutMs: 15 * 60_000 });
    await cleanRootfs(rootfs, mirror);
    const layout = join(work, 'layout');
    await writeLayout(rootfs, layout, mirror);
    try {
      await rename(layout, cached);
    } catch (e) {
      // Another process finished first: its cache is as good as ours.
      if (!existsSync(join(cached, 'index.json'))) throw e;
    }
    return cached;
  } finally {
    await removeTree(work);
  }
}

let layoutPromise: Promise<string> | undefined;
/** The cached OCI layout's directory; one build per process even with concurrent callers. */
export function debianLayout(): Promise<string> {
  layoutPromise ??= buildLayout().catch((e: unknown) => { layoutPromise = undefined; throw e; });
  return layoutPromise;
}

/**
 * Builds (once per machine, cached) a minimal Debian bookworm rootfs with debootstrap --variant=minbase,
 * and pushes it as a one-layer image to registry/repository:tag in the given manifest format.
 * Returns the manifest digest as the registry has it. Inside, apt uses this machine's Debian mirror.
 */
export async function pushDebianImage(registry: TestRegistry, repository: string, tag: string, format: 'oci' | 'v2s2'): Promise<string> {
  return pushOciLayout(await debianLayout(), registry, repository, tag, format, 300_000);
}
