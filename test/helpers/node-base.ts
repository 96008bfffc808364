// A Node.js base image for tests and benchmarks that need `node` and `npm` in RUN steps: the Debian
// base of debian-base.ts plus one layer holding this machine's node binary at /usr/local/bin/node, its
// npm at /usr/local/lib/node_modules/npm (with npm and npx links in /usr/local/bin), any shared
// library node needs that the Debian base lacks, and this machine's CA bundle for npm's HTTPS.
// Cached as an OCI layout under CACHE_ROOT, keyed by the recipe, the Debian layout, the node binary
// and the CA bundle; pushed with skopeo.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, cp, link, mkdir, mkdtemp, readFile, readdir, realpath, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { mustRun } from './exec.js';
import type { TestRegistry } from './registry.js';
import { pushOciLayout, sha256, writeLayoutIndex } from './base-images.js';
import { debianLayout, writeLayer } from './debian-base.js';

const CACHE_ROOT = '/var/tmp/kiln-test-node';
/** Bump when the image recipe changes: it keys the cache. */
const RECIPE = 'node-on-bookworm-2';
/** This machine's CA bundle: HTTPS (npm's registry) may go through a proxy that only it trusts. */
const CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
const EPOCH = new Date('2025-01-01T00:00:00Z');

interface OciIndex { manifests: { digest: string }[] }
interface OciManifest { config: { digest: string }; layers: { mediaType: string; digest: string; size: number }[] }
interface OciConfig {
  config: Record<string, unknown>;
  rootfs: { diff_ids: string[] };
  history?: { created: string; created_by: string }[];
}

const blobPath = (layout: string, digest: string): string => join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length));
const readJson = async <T>(path: string): Promise<T> => JSON.parse(await readFile(path, 'utf8')) as T;

/** The node running this process and the npm installed beside it (or the first npm on PATH). */
async function nodeInstall(): Promise<{ node: string; npmDir: string }> {
  const node = await realpath(process.execPath);
  const beside = join(dirname(node), '..', 'lib', 'node_modules', 'npm');
  if (existsSync(join(beside, 'package.json'))) return { node, npmDir: await realpath(beside) };
  const npmBin = (await mustRun('sh', ['-c', 'command -v npm'])).trim();
  // npm's bin is <npm>/bin/npm-cli.js behind a symlink.
  return { node, npmDir: dirname(dirname(await realpath(npmBin))) };
}

/** Libraries node links against, as absolute host paths (from ldd; the vdso has none). */
async function sharedLibraries(node: string): Promise<string[]> {
  const out = await mustRun('ldd', [node]);
  return [...out.matchAll(/=>\s*(\/\S+)/g)].map((m) => m[1]!);
}

/** Paths in the image's first layer, without a leading slash. */
async function layerPaths(layout: string, manifest: OciManifest): Promise<Set<string>> {
  const list = await mustRun('tar', ['--list', '--gzip', '--file', blobPath(layout, manifest.layers[0]!.digest)],
    { timeoutMs: 120_000 });
  return new Set(list.split('\n').map((p) => p.replace(/^\.?\//, '').replace(/\/$/, '')));
}

/** The node layer's root: node, npm, links, and missing libraries at their merged-/usr paths. */
async function stageNodeRoot(root: string, debian: string, debianManifest: OciManifest): Promise<void> {
  const { node, npmDir } = await nodeInstall();
  const bin = join(root, 'usr/local/bin');
  const modules = join(root, 'usr/local/lib/node_modules');
  await mkdir(bin, { recursive: true });
  await mkdir(modules, { recursive: true });
  await cp(node, join(bin, 'node'));
  await chmod(join(bin, 'node'), 0o755);
  await cp(npmDir, join(modules, 'npm'), { recursive: true, verbatimSymlinks: true });
  await symlink('../lib/node_modules/npm/bin/npm-cli.js', join(bin, 'npm'));
  await symlink('../lib/node_modules/npm/bin/npx-cli.js', join(bin, 'npx'));
  // Node reads its own CA list plus NODE_EXTRA_CA_CERTS (set in the config), not the system's.
  if (existsSync(CA_BUNDLE)) {
    await mkdir(join(root, dirname(CA_BUNDLE).slice(1)), { recursive: true });
    await cp(CA_BUNDLE, join(root, CA_BUNDLE.slice(1)));
  }
  const present = await layerPaths(debian, debianManifest);
  for (const lib of await sharedLibraries(node)) {
    // Bookworm is merged-/usr: /lib is a link to usr/lib, so the library's real place is under usr/.
    const inImage = lib.replace(/^\/(lib|lib64)\//, 'usr/$1/').replace(/^\//, '');
    if (present.has(inImage)) continue;
    await mkdir(join(root, dirname(inImage)), { recursive: true });
    await cp(await realpath(lib), join(root, inImage));
  }
}

async function buildLayout(debian: string, cached: string): Promise<void> {
  await mkdir(CACHE_ROOT, { recursive: true });
  const work = await mkdtemp(join(CACHE_ROOT, `.build-${process.pid}-`));
  try {
    const debianManifest = await readJson<OciManifest>(blobPath(debian, (await readJson<OciIndex>(join(debian, 'index.json'))).manifests[0]!.digest));
    const debianConfig = await readJson<OciConfig>(blobPath(debian, debianManifest.config.digest));
    const root = join(work, 'root');
    await stageNodeRoot(root, debian, debianManifest);
    const layout = join(work, 'layout');
    const blobs = join(layout, 'blobs', 'sha256');
    await mkdir(blobs, { recursive: true });
    const layerFile = join(work, 'layer.tmp');
    const layer = await writeLayer(root, layerFile);
    await rename(layerFile, blobPath(layout, layer.digest));
    for (const l of debianManifest.layers) {
      // Same file system: a hard link saves copying the Debian layer.
      await link(blobPath(debian, l.digest), blobPath(layout, l.digest)).catch(() => cp(blobPath(debian, l.digest), blobPath(layout, l.digest)));
    }
    const { version } = await readJson<{ version: string }>(join((await nodeInstall()).npmDir, 'package.json'));
    const config = JSON.stringify({
      ...debianConfig,
      config: { ...debianConfig.config, Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', `NODE_VERSION=${process.versions.node}`,
        ...(existsSync(CA_BUNDLE) ? [`NODE_EXTRA_CA_CERTS=${CA_BUNDLE}`] : [])], Cmd: ['node'] },
      rootfs: { type: 'layers', diff_ids: [...debianConfig.rootfs.diff_ids, layer.diffId] },
      history: [...(debianConfig.history ?? []),
        { created: EPOCH.toISOString(), created_by: `kiln test harness: node ${process.version} and npm ${version} from this machine` }],
    });
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: Buffer.byteLength(config) },
      layers: [...debianManifest.layers, { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer.digest, size: layer.size }],
    });
    for (const blob of [config, manifest]) await writeFile(blobPath(layout, sha256(blob)), blob);
    await writeLayoutIndex(layout, manifest);
    try {
      await rename(layout, cached);
    } catch (e) {
      if (!existsSync(join(cached, 'index.json'))) throw e; // another process finished first
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Build dirs left by processes that died mid-build. */
async function removeStaleBuilds(): Promise<void> {
  if (!existsSync(CACHE_ROOT)) return;
  for (const name of await readdir(CACHE_ROOT)) {
    const pid = /^\.build-(\d+)-/.exec(name)?.[1];
    if (pid === undefined || Number(pid) === process.pid) continue;
    try {
      process.kill(Number(pid), 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') await rm(join(CACHE_ROOT, name), { recursive: true, force: true });
    }
  }
}

async function nodeLayout(): Promise<string> {
  const debian = await debianLayout();
  const { node } = await nodeInstall();
  const { size, mtimeMs } = await stat(node);
  const ca = existsSync(CA_BUNDLE) ? sha256(await readFile(CA_BUNDLE)) : 'none';
  const key = createHash('sha256').update(JSON.stringify([RECIPE, basename(debian), process.version, node, size, mtimeMs, ca])).digest('hex');
  const cached = join(CACHE_ROOT, `${RECIPE}-${key.slice(0, 12)}`);
  if (existsSync(join(cached, 'index.json'))) return cached;
  await removeStaleBuilds();
  await buildLayout(debian, cached);
  return cached;
}

let layoutPromise: Promise<string> | undefined;
function cachedNodeLayout(): Promise<string> {
  layoutPromise ??= nodeLayout().catch((e: unknown) => { layoutPromise = undefined; throw e; });
  return layoutPromise;
}

/**
 * Builds (once per machine, cached) a Node.js image: the Debian bookworm base of pushDebianImage plus
 * this machine's node and npm in /usr/local, and pushes it to registry/repository:tag in the given
 * manifest format. Returns the manifest digest as the registry has it. Cmd is ["node"].
 */
export async function pushNodeImage(registry: TestRegistry, repository: string, tag: string, format: 'oci' | 'v2s2'): Promise<string> {
  return pushOciLayout(await cachedNodeLayout(), registry, repository, tag, format, 300_000);
}
