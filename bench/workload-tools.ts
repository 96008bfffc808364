// The builders the workloads suite compares, each building a context and pushing the image to the
// local registry, from an "empty machine": kiln keeps nothing between builds anyway; docker's images
// (the base included) are removed after each build and it builds with --no-cache unless a registry
// cache is asked for; buildah gets a fresh vfs store per build; kaniko (and kiln's own image, when
// asked for) runs in a fresh container.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dockerEnv, mustRun, runCommand } from '../test/helpers/exec.js';
import { buildKilnTestImage } from '../test/helpers/kiln-image.js';
import { kilnBin } from '../test/helpers/paths.js';
import { dockerCpuSeconds, measured, onInterrupt, type Usage } from './common.js';
import { floorTool } from './floor.js';

const TIMEOUT_MS = 1_800_000;

export interface BuildRequest {
  ctx: string;
  /** Where the image is pushed. */
  image: string;
  /** A registry repository for the layer cache: the tool reads it and fills it. */
  cacheRepo?: string;
}

export interface Built {
  usage: Usage;
  /** Container tools: what starting a no-op container of the tool's image costs (part of the wall time). */
  startupSeconds?: number;
}

/** build() resolves undefined when the tool has nothing to measure for the workload (the floor, for most). */
export interface BuildTool { id: string; name: string; build(request: BuildRequest): Promise<Built | undefined>; dispose?(): Promise<void>; }

function check(what: string, r: { code: number; stderr: string; stdout: string }): void {
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}):\n${(r.stderr + r.stdout).slice(-4000)}`);
}

function kilnTool(id: string, name: string, extra: string[]): BuildTool {
  return {
    id, name,
    async build({ ctx, image, cacheRepo }) {
      const cache = cacheRepo ? ['--cache', '--cache-repo', cacheRepo] : [];
      const { result, usage } = await measured(kilnBin, ['executor', '-c', ctx, '-d', image, '-v', 'warn', ...cache, ...extra], { timeoutMs: TIMEOUT_MS, sample: true });
      check(name, result);
      return { usage };
    },
  };
}

const kiln = kilnTool('kiln', 'kiln', []);
/** Only when KILN_BENCH_TOOLS names it: zstd layers apply to OCI bases (busybox here); Docker-format ones keep gzip. */
const kilnZstd = kilnTool('kiln-zstd', 'kiln --compression=zstd', ['--compression=zstd']);

/** Runs a command that uses the docker engine; its CPU includes the engine's and the containers'. */
async function withEngine(what: string, file: string, args: string[]): Promise<Usage> {
  const before = await dockerCpuSeconds();
  const { result, usage } = await measured(file, args, { env: dockerEnv(), timeoutMs: TIMEOUT_MS });
  const engine = (await dockerCpuSeconds()) - before;
  check(what, result);
  return { ...usage, cpuSeconds: usage.cpuSeconds + engine };
}

/** Removes the images tagged under the local registry and the untagged ones created since `since`. */
async function removeDockerImages(registryHost: string, since: Date): Promise<void> {
  const env = dockerEnv();
  const listed = await mustRun('docker', ['images', '--no-trunc', '--format', '{{.Repository}}:{{.Tag}} {{.ID}} {{.CreatedAt}}'], { env });
  const doomed: string[] = [];
  for (const line of listed.split('\n').filter(Boolean)) {
    const [ref, id, ...created] = line.split(' ');
    // CreatedAt: "2026-11-27 06:40:01 +0000 UTC".
    const at = new Date(created.slice(0, 2).join('T') + 'Z');
    if (ref!.startsWith(`${registryHost}/`)) doomed.push(ref!);
    else if (ref === '<none>:<none>' && at.getTime() >= since.getTime() - 1000) doomed.push(id!);
  }
  if (doomed.length) await runCommand('docker', ['rmi', '-f', ...doomed], { env });
}

const docker: BuildTool = {
  id: 'docker', name: 'docker build',
  async build({ ctx, image, cacheRepo }) {
    const host = image.slice(0, image.indexOf('/'));
    const since = new Date();
    try {
      // The legacy builder has no registry cache: the previous image (if any: the first build fills
      // the "cache") is pulled and used as --cache-from.
      const script = cacheRepo
        ? '{ docker pull -q "$2" >/dev/null 2>&1 || true; } && docker build -q --network host --cache-from "$2" -t "$2" "$1" && docker push -q "$2"'
        : 'docker build -q --network host --no-cache -t "$2" "$1" && docker push -q "$2"';
      return { usage: await withEngine('docker build', 'sh', ['-c', script, 'sh', ctx, image]) };
    } finally {
      await removeDockerImages(host, since);
    }
  },
};

const removeStore = (store: string): Promise<string> => mustRun('rm', ['-rf', '--one-file-system', store], { timeoutMs: TIMEOUT_MS });

const buildah: BuildTool = {
  id: 'buildah', name: 'buildah (vfs)',
  async build({ ctx, image, cacheRepo }) {
    const store = await mkdtemp(join(tmpdir(), 'kiln-bench-buildah-'));
    const forget = onInterrupt(() => removeStore(store));
    try {
      const common = ['--root', join(store, 'root'), '--runroot', join(store, 'run'), '--storage-driver', 'vfs'];
      const cache = cacheRepo ? ['--layers', '--cache-from', cacheRepo, '--cache-to', cacheRepo] : [];
      const bud = ['buildah', ...common, 'bud', '-q', '--isolation', 'chroot', '--tls-verify=false', ...cache, '-t', image, '-f', join(ctx, 'Dockerfile'), ctx];
      const push = ['buildah', ...common, 'push', '-q', '--tls-verify=false', image, `docker://${image}`];
      const quote = (argv: string[]): string => argv.map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
      const { result, usage } = await measured('sh', ['-c', `${quote(bud)} && ${quote(push)}`],
        { env: { ...process.env, STORAGE_DRIVER: 'vfs' }, timeoutMs: TIMEOUT_MS });
      check('buildah', result);
      return { usage };
    } finally {
      await removeStore(store);
      forget();
    }
  },
};

/**
 * An executor image run as a GitLab job runs it: a fresh container, the context mounted at
 * /workspace, kaniko's flags (kaniko's image, or kiln's, whose container isolation is then used).
 */
function executorImage(id: string, name: string, executorImage: string, startupSeconds: number): BuildTool {
  return {
    id, name,
    async build({ ctx, image, cacheRepo }) {
      const container = `kiln-bench-${randomBytes(4).toString('hex')}`;
      const cache = cacheRepo ? ['--cache', '--cache-repo', cacheRepo] : [];
      try {
        const usage = await withEngine(name, 'docker', ['run', '--rm', '--name', container, '--network', 'host', '-v', `${ctx}:/workspace`, executorImage,
          '--context', 'dir:///workspace', '--dockerfile', '/workspace/Dockerfile', '--destination', image,
          '--insecure', '--insecure-pull', '--skip-tls-verify', ...cache]);
        return { usage, startupSeconds };
      } finally {
        await runCommand('docker', ['rm', '-f', container], { env: dockerEnv() }).catch(() => undefined);
      }
    },
  };
}

/** What starting a no-op container of the image costs (the debug images have busybox). */
async function startupOf(image: string): Promise<number> {
  const startup = await measured('docker', ['run', '--rm', '--network', 'host', '--entrypoint', '/busybox/true', image], { env: dockerEnv() });
  check(`${image} start-up`, startup.result);
  return startup.usage.wallSeconds;
}

/** The tag kiln's own (debug) image gets in the bench's docker engine. */
const KILN_IMAGE = 'kiln-bench/kiln:debug';

/** kiln, and each peer that is present: docker (the engine ensureDocker found), buildah, kaniko (KANIKO_IMAGE). */
export async function availableTools(): Promise<BuildTool[]> {
  const tools = [kiln];
  if (process.env.KILN_BENCH_TOOLS?.split(',').includes('kiln-zstd')) tools.push(kilnZstd);
  if ((await runCommand('docker', ['info'], { env: dockerEnv() }).catch(() => ({ code: 1 }))).code === 0) tools.push(docker);
  else console.log('docker skipped: no engine');
  if ((await runCommand('buildah', ['--version']).catch(() => ({ code: 1 }))).code === 0) tools.push(buildah);
  else console.log('buildah skipped: not installed (apt-get install buildah)');
  const kanikoImage = process.env.KANIKO_IMAGE;
  if (kanikoImage && (await runCommand('docker', ['image', 'inspect', kanikoImage], { env: dockerEnv() })).code === 0) {
    tools.push(executorImage('kaniko', 'kaniko', kanikoImage, await startupOf(kanikoImage)));
  } else {
    console.log(kanikoImage ? `kaniko skipped: ${kanikoImage} is not in the docker engine` : 'kaniko skipped: set KANIKO_IMAGE to a kaniko debug image loaded into the docker engine');
  }
  // kiln as a GitLab job runs it (its image, container isolation), only when KILN_BENCH_TOOLS names
  // it: building the image takes a while. Compared with kaniko, the job it replaces.
  if (process.env.KILN_BENCH_TOOLS?.split(',').includes('kiln-image') && tools.some((t) => t.id === 'docker')) {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-image-'));
    try {
      await buildKilnTestImage(dir, KILN_IMAGE);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    tools.push(executorImage('kiln-image', 'kiln in its image', KILN_IMAGE, await startupOf(KILN_IMAGE)));
  }
  // Not a builder: what a workload's RUN costs with no builder at all (bench/floor.ts).
  if ((await runCommand('skopeo', ['--version']).catch(() => ({ code: 1 }))).code === 0) tools.push(floorTool());
  else console.log('floor skipped: skopeo not installed');
  return tools;
}
