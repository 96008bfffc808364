// Snapshot suite (issue #4): what a RUN step costs on a big root. Base images are busybox plus a
// layer of N small files (10k, 100k). One Dockerfile per root holds both steps — a no-op RUN, then
// a RUN that touches 1,000 files — so each build yields both snapshot times (kiln logs one per RUN)
// at half the cost of two builds: extracting 100k files dominates every build on this machine.
// kiln runs in each isolation mode, its peers on the same Dockerfile, alternating; nothing is pushed.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pushBusyboxImage } from '../test/helpers/base-images.js';
import { buildKilnTestImage } from '../test/helpers/kiln-image.js';
import { dockerEnv, kiln, mustRun, runCommand, type CommandResult } from '../test/helpers/exec.js';
import { startRegistry, type TestRegistry } from '../test/helpers/registry.js';
import { ensureDocker, markdownTable, median, onInterrupt, REPETITIONS, timed, writeResults } from './common.js';

const FILES_PER_DIR = 1_000;
/** Root sizes (files in the extra layer); KILN_BENCH_SNAPSHOT_FILES trims them for a quick run. */
const SIZES = (process.env.KILN_BENCH_SNAPSHOT_FILES ?? '10000,100000').split(',').map((n) => Math.ceil(Number(n) / FILES_PER_DIR) * FILES_PER_DIR);
const STEPS = [
  { name: 'no-op RUN', run: 'RUN true' },
  { name: 'RUN touching 1,000 files', run: 'RUN touch /data/d0/*' },
];
const TIMEOUT_MS = 900_000;
/** Targets of issue #4: the no-op snapshot on the 100k root. */
const TARGETS = [{ tool: 'kiln chroot', ms: 100 }, { tool: 'kiln container', ms: 1000 }];

interface Snapshot { ms: number; entries: number; }
/** What a build left: kiln's snapshots, and a clean-up the caller runs outside the timing. */
interface Built { snapshots?: Snapshot[]; cleanup?: () => Promise<unknown>; }
interface Tool { name: string; peer: boolean; build(ctx: string): Promise<Built>; }
interface Run { tool: string; files: number; round: number; seconds: number; snapshots?: Snapshot[]; }

function check(what: string, r: CommandResult): CommandResult {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}:\n${r.stderr.slice(-4000)}${r.stdout.slice(-2000)}`);
  return r;
}

/** kiln's debug line for each RUN: `Snapshot took 12.3 ms: N entries, M whiteouts`. */
function kilnSnapshots(r: CommandResult): Snapshot[] {
  const found = [...(r.stderr + r.stdout).matchAll(/Snapshot took ([\d.]+) ms: (\d+) entries/g)].map((m) => ({ ms: Number(m[1]), entries: Number(m[2]) }));
  if (found.length !== STEPS.length) throw new Error(`expected ${STEPS.length} "Snapshot took" lines in kiln's log, got ${found.length}:\n${r.stderr.slice(-2000)}`);
  return found;
}

/** A docker run that is removed even if the CLI is killed by the time limit. */
async function dockerRun(image: string, ctx: string, args: string[], env: Record<string, string> = {}): Promise<CommandResult> {
  const name = `kiln-bench-${randomBytes(4).toString('hex')}`;
  const envArgs = Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]);
  try {
    return await runCommand('docker', ['run', '--rm', '--name', name, '--network', 'host', '-v', `${ctx}:/workspace`, ...envArgs, image, ...args],
      { env: dockerEnv(), timeoutMs: TIMEOUT_MS });
  } finally {
    await runCommand('docker', ['rm', '-f', name], { env: dockerEnv() }).catch(() => undefined);
  }
}

/**
 * kiln in each isolation mode; with KILN_BENCH_SNAPSHOT_NODE_WALK=1 also the walk modes with the
 * Node.js walk (KILN_NATIVE_SCAN=0) instead of kiln-sandbox scan, to compare the two in one run.
 */
function kilnTools(kilnImage: string): Tool[] {
  const onHost = (overlay: boolean, extra: Record<string, string> = {}) => async (ctx: string): Promise<Built> => {
    const env = { ...process.env, KILN_OVERLAY: overlay ? '1' : '0', ...extra };
    return { snapshots: kilnSnapshots(check('kiln', await kiln(['executor', '-c', ctx, '--no-push', '-v', 'debug', '--log-format', 'text'], { env, timeoutMs: TIMEOUT_MS }))) };
  };
  const inDocker = (env: Record<string, string> = {}) => async (ctx: string): Promise<Built> => ({
    snapshots: kilnSnapshots(check('kiln in docker', await dockerRun(kilnImage, ctx, ['--context=dir:///workspace', '--no-push', '-v', 'debug', '--log-format', 'text'], env))),
  });
  const nodeWalk = { KILN_NATIVE_SCAN: '0' };
  return [
    { name: 'kiln chroot', peer: false, build: onHost(true) },
    { name: 'kiln chroot walk', peer: false, build: onHost(false) },
    { name: 'kiln container', peer: false, build: inDocker() },
    ...(process.env.KILN_BENCH_SNAPSHOT_NODE_WALK === '1' ? [
      { name: 'kiln chroot walk (Node.js walk)', peer: false, build: onHost(false, nodeWalk) },
      { name: 'kiln container (Node.js walk)', peer: false, build: inDocker(nodeWalk) },
    ] : []),
  ];
}

/** --one-file-system: never follow a mount buildah might have left behind. */
const removeStore = (store: string): Promise<string> => mustRun('rm', ['-rf', '--one-file-system', store], { timeoutMs: TIMEOUT_MS });

/**
 * buildah with vfs and a fresh store per build, so that nothing is cached between runs. Removing
 * the store (several copies of the root) is left to the caller, untimed: it is not buildah's work.
 */
const buildah: Tool = {
  name: 'buildah chroot (vfs)', peer: true,
  async build(ctx) {
    const store = await mkdtemp(join(tmpdir(), 'kiln-bench-buildah-'));
    const forget = onInterrupt(() => removeStore(store));
    const r = await runCommand('buildah', [
      '--root', join(store, 'root'), '--runroot', join(store, 'run'), '--storage-driver', 'vfs',
      'bud', '--isolation', 'chroot', '--tls-verify=false', '-f', join(ctx, 'Dockerfile'), ctx,
    ], { env: { ...process.env, STORAGE_DRIVER: 'vfs' }, timeoutMs: TIMEOUT_MS }).catch(async (e: unknown) => { await removeStore(store); throw e; });
    if (r.code !== 0) { await removeStore(store); forget(); }
    check('buildah', r);
    return { cleanup: async () => { await removeStore(store); forget(); } };
  },
};

function kanikoTool(image: string): Tool {
  return {
    name: 'kaniko', peer: true,
    async build(ctx) {
      check('kaniko', await dockerRun(image, ctx, ['--context', 'dir:///workspace', '--dockerfile', '/workspace/Dockerfile',
        '--no-push', '--insecure-pull', '--skip-tls-verify-pull']));
      return {};
    },
  };
}

async function ensureBuildah(): Promise<void> {
  if ((await runCommand('buildah', ['--version']).catch(() => ({ code: 1 }))).code === 0) return;
  console.log('installing buildah');
  await mustRun('apt-get', ['update', '-qq'], { timeoutMs: TIMEOUT_MS });
  await mustRun('apt-get', ['install', '-y', '-qq', '--no-install-recommends', 'buildah'],
    { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, timeoutMs: TIMEOUT_MS });
}

/** busybox + /data/d0../dK with FILES_PER_DIR files of a few bytes each, built by kiln (COPY) into an OCI layout. */
async function dataImageLayout(dir: string, files: number): Promise<string> {
  const ctx = join(dir, `base-${files}`);
  const layout = join(dir, `base-${files}.oci`);
  for (let d = 0; d < files / FILES_PER_DIR; d++) {
    const sub = join(ctx, 'data', `d${d}`);
    await mkdir(sub, { recursive: true });
    await Promise.all(Array.from({ length: FILES_PER_DIR }, (_, f) => writeFile(join(sub, `f${f}`), `${d}/${f}\n`)));
  }
  const registry = await startRegistry('http');
  try {
    await pushBusyboxImage(registry, 'base/busybox', 'latest', 'oci');
    await writeFile(join(ctx, 'Dockerfile'), `FROM ${registry.host}/base/busybox:latest\nCOPY data /data\n`);
    check('kiln (base image)', await kiln(['executor', '-c', ctx, '--no-push', '--oci-layout-path', layout, '-v', 'warn'], { timeoutMs: TIMEOUT_MS }));
  } finally {
    await registry.stop();
    await rm(ctx, { recursive: true, force: true });
  }
  return layout;
}

/** The test registry stops itself after 30 minutes; one is replaced after this long, between builds. */
const REGISTRY_REFRESH_MS = 10 * 60_000;

/**
 * A registry serving one root's base image, replaced by a fresh one when it gets old: a build
 * (TIMEOUT_MS at most, pulling first) started before REGISTRY_REFRESH_MS ends well within its life.
 */
class BaseRegistry {
  private registry: TestRegistry | undefined;
  private started = 0;
  private readonly forget = onInterrupt(() => this.stop());

  constructor(private readonly layout: string, private readonly files: number) {}

  /** The base image's reference, on a registry with at least 20 minutes to live. */
  async base(): Promise<string> {
    if (!this.registry || Date.now() - this.started > REGISTRY_REFRESH_MS) {
      await this.registry?.stop();
      this.registry = undefined;
      const registry = await startRegistry('http');
      this.registry = registry;
      this.started = Date.now();
      await mustRun('skopeo', ['copy', '--quiet', ...registry.skopeoArgs('dest'), `oci:${this.layout}`, `docker://${this.reference(registry)}`], { timeoutMs: TIMEOUT_MS });
    }
    return this.reference(this.registry);
  }

  private reference(registry: TestRegistry): string {
    return `${registry.host}/bench/base-${this.files}:1`;
  }

  async stop(): Promise<void> {
    this.forget();
    await this.registry?.stop();
    this.registry = undefined;
  }
}

/** One round on one root: every tool builds the same Dockerfile once, FROM the base on `registry`. */
async function round(dir: string, files: number, registry: BaseRegistry, tools: Tool[], index: number): Promise<Run[]> {
  const ctx = join(dir, `ctx-${files}-${index}`);
  await mkdir(ctx);
  const runs: Run[] = [];
  // Tool order rotates each round, so no tool always runs right after the same other one.
  for (let t = 0; t < tools.length; t++) {
    const tool = tools[(t + index) % tools.length]!;
    // Written per build: the registry (and so the FROM line) may have been replaced meanwhile.
    await writeFile(join(ctx, 'Dockerfile'), [`FROM ${await registry.base()}`, ...STEPS.map((s) => s.run)].join('\n') + '\n');
    let built: Built = {};
    const seconds = await timed(async () => { built = await tool.build(ctx); });
    await built.cleanup?.();
    const { snapshots } = built;
    runs.push({ tool: tool.name, files, round: index, seconds, snapshots });
    console.log(`  round ${index + 1}/${REPETITIONS}, ${files} files: ${tool.name} ${seconds.toFixed(1)} s` +
      (snapshots ? `; snapshots ${snapshots.map((s) => `${s.ms.toFixed(1)} ms (${s.entries} entries)`).join(', ')}` : ''));
  }
  return runs;
}

function fmtRatio(a: number, b: number | undefined): string {
  return b === undefined || !Number.isFinite(a / b) ? '—' : (a / b).toFixed(2);
}

/** A table per root size, the issue's targets, and the JSON file. */
async function report(tools: Tool[], runs: Run[], extra: Record<string, unknown>): Promise<void> {
  const summary = SIZES.map((files) => ({
    files,
    rows: tools.map((tool) => {
      const own = runs.filter((r) => r.tool === tool.name && r.files === files);
      return {
        tool: tool.name, peer: tool.peer, medianSeconds: median(own.map((r) => r.seconds)),
        // Per step: median snapshot ms and the entries of the first run (the same every run).
        steps: tool.peer ? undefined : STEPS.map((step, i) => ({
          step: step.name, medianMs: median(own.map((r) => r.snapshots![i]!.ms)), entries: own[0]?.snapshots?.[i]?.entries,
        })),
      };
    }),
  }));

  const peers = tools.filter((t) => t.peer).map((t) => t.name);
  for (const s of summary) {
    const peerSeconds = Object.fromEntries(s.rows.filter((r) => r.peer).map((r) => [r.tool, r.medianSeconds]));
    console.log(`\n### ${s.files.toLocaleString('en-US')} files (median of ${REPETITIONS})\n`);
    console.log(markdownTable(['tool', 'build wall', ...STEPS.map((st) => `snapshot after ${st.name}`), ...peers.map((p) => `wall / ${p}`)],
      s.rows.map((r) => [r.tool, `${r.medianSeconds.toFixed(1)} s`,
        ...STEPS.map((_, i) => (r.steps ? `${r.steps[i]!.medianMs.toFixed(1)} ms (${r.steps[i]!.entries} entries)` : '—')),
        ...peers.map((p) => (r.peer ? '—' : fmtRatio(r.medianSeconds, peerSeconds[p])))])));
  }

  const largest = Math.max(...SIZES);
  const rows = summary.find((s) => s.files === largest)!.rows;
  const targets = TARGETS.map(({ tool, ms }) => {
    const got = rows.find((r) => r.tool === tool)?.steps?.[0]?.medianMs;
    return { tool, files: largest, targetMs: ms, medianSnapshotMs: got, met: got !== undefined && got < ms };
  });
  console.log('');
  for (const t of targets) {
    console.log(`target: ${t.tool} no-op snapshot on ${largest.toLocaleString('en-US')} files < ${t.targetMs} ms: ` +
      `${t.medianSnapshotMs?.toFixed(1) ?? '?'} ms, ${t.met ? 'met' : 'NOT met'}${largest === 100_000 ? '' : ' (the target is for 100,000 files)'}`);
  }
  console.log(`(one Dockerfile per root: FROM base, ${STEPS.map((s) => s.run).join(', ')}; build wall covers both steps and pulling and extracting the base;` +
    ' nothing is pushed: kiln and kaniko run with --no-push, buildah commits to its throw-away store)');
  console.log(`results: ${await writeResults('snapshot', { repetitions: REPETITIONS, ...extra, summary, targets, runs })}`);
}

export async function snapshotSuite(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-snapshot-'));
  const docker = await ensureDocker();
  // Per-process tag: a concurrent bench run must not remove the image this one uses.
  const kilnImage = `kiln-bench/executor:${process.pid}`;
  let kilnImageLoaded = false;
  const cleanup = async (): Promise<void> => {
    if (kilnImageLoaded) await runCommand('docker', ['rmi', kilnImage], { env: dockerEnv() }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    await docker.release();
  };
  const forget = onInterrupt(cleanup);
  try {
    await ensureBuildah();
    const setupSeconds = await timed(async () => {
      await buildKilnTestImage(dir, kilnImage);
      kilnImageLoaded = true;
    });
    console.log(`kiln's image for container isolation: ${setupSeconds.toFixed(1)} s`);
    const tools = [...kilnTools(kilnImage), buildah];
    const kanikoImage = process.env.KANIKO_IMAGE;
    let kaniko = 'kaniko skipped: set KANIKO_IMAGE to a kaniko debug image loaded into the docker engine';
    if (kanikoImage) {
      if ((await runCommand('docker', ['image', 'inspect', kanikoImage], { env: dockerEnv() })).code === 0) {
        tools.push(kanikoTool(kanikoImage));
        kaniko = `kaniko: ${kanikoImage}`;
      } else {
        kaniko = `kaniko skipped: KANIKO_IMAGE=${kanikoImage} is not in the docker engine (${process.env.DOCKER_HOST})`;
      }
    }
    console.log(kaniko);

    const runs: Run[] = [];
    const baseSeconds: Record<number, number> = {};
    for (const files of SIZES) {
      let layout = '';
      baseSeconds[files] = await timed(async () => { layout = await dataImageLayout(dir, files); });
      console.log(`  base image with ${files} files: ${baseSeconds[files]!.toFixed(1)} s`);
      const registry = new BaseRegistry(layout, files);
      try {
        for (let r = 0; r < REPETITIONS; r++) runs.push(...(await round(dir, files, registry, tools, r)));
      } finally {
        await registry.stop();
      }
    }
    await report(tools, runs, { machine: { cpus: cpus().length, kernel: release() }, kaniko, setupSeconds, baseSeconds });
  } finally {
    forget();
    await cleanup();
  }
}
