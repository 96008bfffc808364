// Snapshot suite (issue #4): what a RUN step costs on a big root. Base images are busybox plus a
// layer of N small files (10k, 100k); each is built FROM with a no-op RUN and with a RUN that
// touches 1,000 files, by kiln in each isolation mode (reporting kiln's own snapshot time from its
// debug log) and by its peers, alternating, without pushing (pushing is not what is measured).
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
const TIMEOUT_MS = 600_000;
/** Targets of issue #4: the no-op snapshot on the 100k root. */
const TARGETS = [{ tool: 'kiln chroot', ms: 100 }, { tool: 'kiln container', ms: 1000 }];

interface Outcome { snapshotMs?: number; entries?: number; }
interface Tool { name: string; peer: boolean; build(ctx: string): Promise<Outcome>; }
interface Run extends Outcome { tool: string; files: number; step: string; round: number; seconds: number; }

function check(what: string, r: CommandResult): CommandResult {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}:\n${r.stderr.slice(-4000)}${r.stdout.slice(-2000)}`);
  return r;
}

/** kiln's debug line for the (single) RUN: `Snapshot took 12.3 ms: N entries, M whiteouts`. */
function kilnSnapshot(r: CommandResult): Outcome {
  const m = /Snapshot took ([\d.]+) ms: (\d+) entries/.exec(r.stderr + r.stdout);
  if (!m) throw new Error(`no "Snapshot took" line in kiln's log:\n${r.stderr.slice(-2000)}`);
  return { snapshotMs: Number(m[1]), entries: Number(m[2]) };
}

/** A docker run that is removed even if the CLI is killed by the time limit. */
async function dockerRun(image: string, ctx: string, args: string[]): Promise<CommandResult> {
  const name = `kiln-bench-${randomBytes(4).toString('hex')}`;
  try {
    return await runCommand('docker', ['run', '--rm', '--name', name, '--network', 'host', '-v', `${ctx}:/workspace`, image, ...args],
      { env: dockerEnv(), timeoutMs: TIMEOUT_MS });
  } finally {
    await runCommand('docker', ['rm', '-f', name], { env: dockerEnv() }).catch(() => undefined);
  }
}

function kilnTools(kilnImage: string): Tool[] {
  const onHost = (overlay: boolean) => async (ctx: string): Promise<Outcome> => {
    const env = { ...process.env, KILN_OVERLAY: overlay ? '1' : '0' };
    return kilnSnapshot(check('kiln', await kiln(['executor', '-c', ctx, '--no-push', '-v', 'debug', '--log-format', 'text'], { env, timeoutMs: TIMEOUT_MS })));
  };
  return [
    { name: 'kiln chroot', peer: false, build: onHost(true) },
    { name: 'kiln chroot walk', peer: false, build: onHost(false) },
    {
      name: 'kiln container', peer: false,
      build: async (ctx) => kilnSnapshot(check('kiln in docker', await dockerRun(kilnImage, ctx,
        ['--context=dir:///workspace', '--no-push', '-v', 'debug', '--log-format', 'text']))),
    },
  ];
}

/** buildah with vfs and a fresh store per build, so that nothing is cached between runs. */
const buildah: Tool = {
  name: 'buildah chroot (vfs)', peer: true,
  async build(ctx) {
    const store = await mkdtemp(join(tmpdir(), 'kiln-bench-buildah-'));
    try {
      check('buildah', await runCommand('buildah', [
        '--root', join(store, 'root'), '--runroot', join(store, 'run'), '--storage-driver', 'vfs',
        'bud', '--isolation', 'chroot', '--tls-verify=false', '-f', join(ctx, 'Dockerfile'), ctx,
      ], { env: { ...process.env, STORAGE_DRIVER: 'vfs' }, timeoutMs: TIMEOUT_MS }));
      return {};
    } finally {
      // --one-file-system: never follow a mount buildah might have left behind.
      await mustRun('rm', ['-rf', '--one-file-system', store], { timeoutMs: TIMEOUT_MS });
    }
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

/** busybox + /data/d0../dK with FILES_PER_DIR files each, built by kiln (COPY) and pushed. */
async function pushDataImage(dir: string, registry: TestRegistry, files: number): Promise<string> {
  await pushBusyboxImage(registry, 'base/busybox', 'latest', 'oci');
  const ctx = join(dir, `base-${files}`);
  for (let d = 0; d < files / FILES_PER_DIR; d++) {
    const sub = join(ctx, 'data', `d${d}`);
    await mkdir(sub, { recursive: true });
    await Promise.all(Array.from({ length: FILES_PER_DIR }, (_, f) => writeFile(join(sub, `f${f}`), `${d}/${f}\n`)));
  }
  await writeFile(join(ctx, 'Dockerfile'), `FROM ${registry.host}/base/busybox:latest\nCOPY data /data\n`);
  const image = `${registry.host}/bench/base-${files}:1`;
  check('kiln (base image)', await kiln(['executor', '-c', ctx, '-d', image, '-v', 'warn'], { timeoutMs: TIMEOUT_MS }));
  await rm(ctx, { recursive: true, force: true });
  return image;
}

function fmtRatio(a: number, b: number | undefined): string {
  return b === undefined || !Number.isFinite(a / b) ? '—' : (a / b).toFixed(2);
}

/**
 * All rounds on one root size, with a registry of its own: the test registry lives at most 30
 * minutes, and a 100k-file section can take a good part of that.
 */
async function sizeSection(dir: string, files: number, tools: Tool[]): Promise<{ runs: Run[]; baseSeconds: number }> {
  const registry = await startRegistry('http');
  const forget = onInterrupt(() => registry.stop());
  try {
    let base = '';
    const baseSeconds = await timed(async () => { base = await pushDataImage(dir, registry, files); });
    console.log(`  base image with ${files} files: ${baseSeconds.toFixed(1)} s`);
    const workloads = await Promise.all(STEPS.map(async (step, i) => {
      const ctx = join(dir, `ctx-${files}-${i}`);
      await mkdir(ctx);
      await writeFile(join(ctx, 'Dockerfile'), `FROM ${base}\n${step.run}\n`);
      return { step: step.name, ctx };
    }));
    // Tool order rotates each round, so no tool always runs right after the same other one.
    const runs: Run[] = [];
    for (let round = 0; round < REPETITIONS; round++) {
      for (const w of workloads) {
        for (let t = 0; t < tools.length; t++) {
          const tool = tools[(t + round) % tools.length]!;
          let outcome: Outcome = {};
          const seconds = await timed(async () => { outcome = await tool.build(w.ctx); });
          runs.push({ tool: tool.name, files, step: w.step, round, seconds, ...outcome });
          console.log(`  round ${round + 1}/${REPETITIONS} ${files} files, ${w.step}: ${tool.name} ${seconds.toFixed(2)} s` +
            (outcome.snapshotMs === undefined ? '' : `, snapshot ${outcome.snapshotMs.toFixed(1)} ms (${outcome.entries} entries)`));
        }
      }
    }
    return { runs, baseSeconds };
  } finally {
    forget();
    await registry.stop();
  }
}

/** Per-workload tables, the targets, and the JSON file. */
async function report(tools: Tool[], runs: Run[], extra: Record<string, unknown>): Promise<void> {
  const summary = SIZES.flatMap((files) => STEPS.map(({ name: step }) => {
    const rows = tools.map((tool) => {
      const own = runs.filter((r) => r.tool === tool.name && r.files === files && r.step === step);
      const snaps = own.flatMap((r) => (r.snapshotMs === undefined ? [] : [r.snapshotMs]));
      return { tool: tool.name, peer: tool.peer, medianSeconds: median(own.map((r) => r.seconds)),
        medianSnapshotMs: snaps.length ? median(snaps) : undefined, entries: own[0]?.entries };
    });
    return { files, step, rows };
  }));

  const peers = tools.filter((t) => t.peer).map((t) => t.name);
  for (const s of summary) {
    const peerSeconds = Object.fromEntries(s.rows.filter((r) => r.peer).map((r) => [r.tool, r.medianSeconds]));
    console.log(`\n### ${s.files.toLocaleString('en-US')} files, ${s.step} (median of ${REPETITIONS})\n`);
    console.log(markdownTable(['tool', 'build wall', 'kiln snapshot', 'entries', ...peers.map((p) => `wall / ${p}`)],
      s.rows.map((r) => [r.tool, `${r.medianSeconds.toFixed(2)} s`, r.medianSnapshotMs === undefined ? '—' : `${r.medianSnapshotMs.toFixed(1)} ms`,
        r.entries === undefined ? '—' : String(r.entries), ...peers.map((p) => (r.peer ? '—' : fmtRatio(r.medianSeconds, peerSeconds[p])))])));
  }

  const largest = Math.max(...SIZES);
  const noOp = summary.find((s) => s.files === largest && s.step === STEPS[0]!.name)!;
  const targets = TARGETS.map(({ tool, ms }) => {
    const got = noOp.rows.find((r) => r.tool === tool)?.medianSnapshotMs;
    return { tool, files: largest, targetMs: ms, medianSnapshotMs: got, met: got !== undefined && got < ms };
  });
  console.log('');
  for (const t of targets) {
    console.log(`target: ${t.tool} no-op snapshot on ${largest.toLocaleString('en-US')} files < ${t.targetMs} ms: ` +
      `${t.medianSnapshotMs?.toFixed(1) ?? '?'} ms, ${t.met ? 'met' : 'NOT met'}${largest === 100_000 ? '' : ' (the target is for 100,000 files)'}`);
  }
  console.log('(build wall includes pulling and extracting the base; nothing is pushed: kiln and kaniko run with --no-push, buildah commits locally)');
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
      const section = await sizeSection(dir, files, tools);
      runs.push(...section.runs);
      baseSeconds[files] = section.baseSeconds;
    }
    await report(tools, runs, { machine: { cpus: cpus().length, kernel: release() }, kaniko, setupSeconds, baseSeconds });
  } finally {
    forget();
    await cleanup();
  }
}
