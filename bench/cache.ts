// Cache suite (issue #6): a 10-step Dockerfile on a Debian base with apt-get install, built the way
// CI builds it — each build on an empty machine (no local state), with a registry-backed layer cache:
//   cold    the cache repository is empty
//   warm    nothing changed since the cold build
//   late    only the last step changed
// kiln (--cache, chroot isolation), buildah (--layers --cache-from/--cache-to, vfs, a fresh store per
// build) and kaniko (--cache, when KANIKO_IMAGE names a kaniko debug image in the docker engine),
// all pushing to the same local registry, alternating, REPETITIONS rounds with fresh cache repos.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dockerEnv, kiln, mustRun, runCommand, type CommandResult } from '../test/helpers/exec.js';
import { pushDebianImage } from '../test/helpers/debian-base.js';
import { startRegistry, type TestRegistry } from '../test/helpers/registry.js';
import { chosen, ensureDocker, markdownTable, median, onInterrupt, REPETITIONS, timed, writeResults } from './common.js';

const TIMEOUT_MS = 900_000;
const SCENARIOS = ['cold', 'warm', 'late'] as const;
type Scenario = (typeof SCENARIOS)[number];

function dockerfile(base: string, last: string): string {
  return [
    `FROM ${base}`,
    'ARG DEBIAN_FRONTEND=noninteractive',
    'ENV APP_HOME=/app',
    'RUN apt-get update && apt-get install -y --no-install-recommends jq && rm -rf /var/lib/apt/lists/*',
    'WORKDIR /app',
    'COPY app/ /app/',
    'RUN mkdir -p /app/data && cp /app/*.txt /app/data/',
    'RUN useradd -m builder',
    'RUN echo "config" > /etc/app.conf',
    'USER builder',
    `RUN echo "${last}" > /home/builder/last`,
  ].join('\n') + '\n';
}

interface Tool {
  /** What KILN_BENCH_TOOLS calls it. */
  id: string;
  name: string;
  /** Builds ctx and pushes to `image`, with its layer cache in `cacheRepo`. */
  build(ctx: string, image: string, cacheRepo: string): Promise<void>;
}

function check(what: string, r: CommandResult): void {
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}):\n${(r.stderr + r.stdout).slice(-3000)}`);
}

const kilnTool: Tool = {
  id: 'kiln',
  name: 'kiln',
  async build(ctx, image, cacheRepo) {
    check('kiln', await kiln(['executor', '-c', ctx, '-d', image, '--cache', '--cache-repo', cacheRepo, '-v', 'warn'], { timeoutMs: TIMEOUT_MS }));
  },
};

/** buildah with a fresh vfs store per build: only the registry cache carries over, as on a CI runner. */
const buildahTool: Tool = {
  id: 'buildah',
  name: 'buildah (vfs, --layers)',
  async build(ctx, image, cacheRepo) {
    const store = await mkdtemp(join(tmpdir(), 'kiln-bench-buildah-'));
    const forget = onInterrupt(() => mustRun('rm', ['-rf', '--one-file-system', store]));
    try {
      const common = ['--root', join(store, 'root'), '--runroot', join(store, 'run'), '--storage-driver', 'vfs'];
      check('buildah bud', await runCommand('buildah', [...common, 'bud', '--isolation', 'chroot', '--layers', '--tls-verify=false',
        '--cache-from', cacheRepo, '--cache-to', cacheRepo, '-t', image, '-f', join(ctx, 'Dockerfile'), ctx],
      { env: { ...process.env, STORAGE_DRIVER: 'vfs' }, timeoutMs: TIMEOUT_MS }));
      check('buildah push', await runCommand('buildah', [...common, 'push', '--tls-verify=false', image, `docker://${image}`], { timeoutMs: TIMEOUT_MS }));
    } finally {
      await mustRun('rm', ['-rf', '--one-file-system', store], { timeoutMs: TIMEOUT_MS });
      forget();
    }
  },
};

function kanikoTool(kanikoImage: string): Tool {
  return {
    id: 'kaniko',
    name: 'kaniko',
    async build(ctx, image, cacheRepo) {
      const name = `kiln-bench-${randomBytes(4).toString('hex')}`;
      try {
        check('kaniko', await runCommand('docker', ['run', '--rm', '--name', name, '--network', 'host', '-v', `${ctx}:/workspace`, kanikoImage,
          '--context', 'dir:///workspace', '--dockerfile', '/workspace/Dockerfile', '--destination', image,
          '--cache', '--cache-repo', cacheRepo, '--insecure', '--insecure-pull', '--skip-tls-verify'], { env: dockerEnv(), timeoutMs: TIMEOUT_MS }));
      } finally {
        await runCommand('docker', ['rm', '-f', name], { env: dockerEnv() }).catch(() => undefined);
      }
    },
  };
}

interface Run { tool: string; scenario: Scenario; seconds: number; }

async function round(dir: string, registry: TestRegistry, base: string, tools: Tool[], index: number): Promise<Run[]> {
  const runs: Run[] = [];
  // The order turns every round: on a disk still discarding what the tool before deleted, creating
  // files costs several times more, and the first tool of a round pays for the last one's cleanup.
  const turned = tools.map((_, i) => tools[(i + index) % tools.length]!);
  for (const tool of turned) {
    const slug = tool.name.split(' ')[0]!.toLowerCase();
    const ctx = join(dir, `${slug}-${index}`);
    await mkdir(join(ctx, 'app'), { recursive: true });
    for (let i = 0; i < 20; i++) await writeFile(join(ctx, 'app', `file${i}.txt`), `file ${i}\n`);
    const cacheRepo = `${registry.host}/bench-cache/${slug}-${index}`;
    const image = `${registry.host}/bench-app/${slug}:${index}`;
    for (const scenario of SCENARIOS) {
      await writeFile(join(ctx, 'Dockerfile'), dockerfile(base, scenario === 'late' ? `changed ${index}` : `original ${index}`));
      const seconds = await timed(() => tool.build(ctx, image, cacheRepo));
      console.log(`  round ${index + 1}: ${tool.name} ${scenario} ${seconds.toFixed(2)} s`);
      runs.push({ tool: tool.name, scenario, seconds });
    }
  }
  return runs;
}

export async function cacheSuite(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-cache-'));
  const registry = await startRegistry('http');
  const docker = await ensureDocker();
  const cleanup = async (): Promise<void> => {
    await registry.stop();
    await rm(dir, { recursive: true, force: true });
    await docker.release();
  };
  const forget = onInterrupt(cleanup);
  try {
    await pushDebianImage(registry, 'bench/debian', '12', 'v2s2');
    const base = `${registry.host}/bench/debian:12`;
    let tools = [kilnTool, buildahTool];
    const kanikoImage = process.env.KANIKO_IMAGE;
    if (kanikoImage && (await runCommand('docker', ['image', 'inspect', kanikoImage], { env: dockerEnv() })).code === 0) tools.push(kanikoTool(kanikoImage));
    else console.log('kaniko skipped: set KANIKO_IMAGE to a kaniko debug image loaded into the docker engine');
    // KILN_BENCH_TOOLS (kiln,buildah,kaniko) leaves peers out; kiln always runs, the ratios being its own.
    tools = chosen(tools, process.env.KILN_BENCH_TOOLS, 'KILN_BENCH_TOOLS');
    if (!tools.includes(kilnTool)) tools.unshift(kilnTool);
    const runs: Run[] = [];
    for (let r = 0; r < REPETITIONS; r++) runs.push(...(await round(dir, registry, base, tools, r)));
    const med = (tool: string, scenario: Scenario): number => median(runs.filter((x) => x.tool === tool && x.scenario === scenario).map((x) => x.seconds));
    const peers = tools.filter((t) => t !== kilnTool);
    const rows = SCENARIOS.map((s) => [s, `${med('kiln', s).toFixed(2)} s`,
      ...peers.flatMap((p) => [`${med(p.name, s).toFixed(2)} s`, (med('kiln', s) / med(p.name, s)).toFixed(2)])]);
    console.log(markdownTable(['scenario', 'kiln', ...peers.flatMap((p) => [p.name, `kiln/${p.name.split(' ')[0]}`])], rows));
    console.log('(targets: warm at most 0.25x kaniko and under 2 s; late change at most 0.5x kaniko)');
    await writeResults('cache', { repetitions: REPETITIONS, runs, medians: Object.fromEntries(tools.map((t) => [t.name, Object.fromEntries(SCENARIOS.map((s) => [s, med(t.name, s)]))])) });
  } finally {
    forget();
    await cleanup();
  }
}
