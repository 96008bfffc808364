// Workloads suite (issue #8): six build workloads, each built by kiln (chroot isolation, on the host)
// and by every peer on the machine — docker build (the private dockerd, legacy builder), buildah bud
// (--isolation chroot, vfs, a fresh store per build) and the kaniko executor when KANIKO_IMAGE names a
// kaniko debug image in that dockerd — all pushing to one local distribution registry, tools
// alternating (order rotating per round), KILN_BENCH_REPETITIONS rounds. Every build starts from an
// "empty machine": nothing local but what the tool needs to run (bench/workload-tools.ts). The "floor"
// column is no builder: GNU tar and a plain chroot doing a one-RUN workload's work (bench/floor.ts); a
// target the floor itself misses is reported as out of any builder's reach.
//
// Rounds: KILN_BENCH_REPETITIONS, default 1 for this suite: one round takes ~15 min on a 2-core machine
// (buildah and docker spend minutes on the 100k-file and 1 GB workloads); 3 rounds give medians.
// Knobs: KILN_BENCH_WORKLOADS (comma list of workload ids, default all), KILN_BENCH_TOOLS (comma list
// of kiln, kiln-zstd, kiln-image, docker, buildah, kaniko, floor; default every one present but kiln-zstd and
// kiln-image: kiln's own image run as a GitLab job runs it, compared with kaniko), KILN_BENCH_WIDE_FILES (default 100000),
// KILN_BENCH_BIG_MB (default 1024).
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pushBusyboxImage } from '../test/helpers/base-images.js';
import { pushDebianImage } from '../test/helpers/debian-base.js';
import { dockerEnv, mustRun } from '../test/helpers/exec.js';
import { pushNodeImage } from '../test/helpers/node-base.js';
import { startRegistry } from '../test/helpers/registry.js';
import { chosen, ensureDocker, markdownTable, median, onInterrupt, writeResults, type Usage } from './common.js';
import { availableTools, type BuildTool } from './workload-tools.js';

const REPETITIONS = Number(process.env.KILN_BENCH_REPETITIONS ?? 1);
const WIDE_FILES = Number(process.env.KILN_BENCH_WIDE_FILES ?? 100_000);
const BIG_MB = Number(process.env.KILN_BENCH_BIG_MB ?? 1024);
/** Issue #8's targets. */
const TARGETS = { coldVsKaniko: 0.5, coldVsBuildah: 0.7, warmVsKaniko: 0.25, bigPeakMb: 200 };

interface Bases { busybox: string; debian: string; node: string; }

interface Workload {
  id: string;
  title: string;
  /** The base image it builds on (pushed to the registry once per run). */
  base: keyof Bases;
  /** Writes the Dockerfile and files into ctx. */
  prepare(ctx: string, bases: Bases): Promise<void>;
  /** Timed as a warm rebuild: built once untimed into the same cache, then rebuilt with nothing changed. */
  warm?: boolean;
}

async function files(ctx: string, content: Record<string, string>): Promise<void> {
  for (const [path, text] of Object.entries(content)) {
    await mkdir(join(ctx, path, '..'), { recursive: true });
    await writeFile(join(ctx, path), text);
  }
}

const WORKLOADS: Workload[] = [
  {
    id: 'small', title: 'small app on busybox',
    base: 'busybox',
    prepare: (ctx, b) => files(ctx, {
      Dockerfile: [`FROM ${b.busybox}`, 'WORKDIR /app', 'COPY app/ /app/', 'RUN chmod +x /app/run.sh && echo built > /app/built', 'ENV MODE=production', 'CMD ["/app/run.sh"]'].join('\n') + '\n',
      'app/run.sh': '#!/bin/sh\necho "running in $MODE"\n',
      ...Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`app/static/file${i}.txt`, `static file ${i}\n`.repeat(50)])),
    }),
  },
  {
    id: 'debian', title: 'Debian base, apt-get install of 3 packages',
    base: 'debian',
    prepare: (ctx, b) => files(ctx, {
      Dockerfile: [`FROM ${b.debian}`, 'ARG DEBIAN_FRONTEND=noninteractive',
        'RUN apt-get update && apt-get install -y --no-install-recommends jq less procps && rm -rf /var/lib/apt/lists/*'].join('\n') + '\n',
    }),
  },
  {
    id: 'node', title: 'Node.js app: npm ci in a builder stage, runtime stage',
    base: 'node',
    async prepare(ctx, b) {
      const pkg = { name: 'bench-app', version: '1.0.0', private: true, dependencies: { ms: '2.1.3', picocolors: '1.1.1' } };
      await files(ctx, {
        Dockerfile: [`FROM ${b.node} AS build`, 'WORKDIR /app', 'COPY package.json package-lock.json ./', 'RUN npm ci --omit=dev --no-audit --no-fund',
          'COPY src/ ./src/', `FROM ${b.node}`, 'WORKDIR /app', 'COPY --from=build /app /app', 'USER 1000', 'CMD ["node", "src/index.js"]'].join('\n') + '\n',
        'package.json': JSON.stringify(pkg, null, 2) + '\n',
        'src/index.js': "const ms = require('ms');\nconst pc = require('picocolors');\nconsole.log(pc.green(`up in ${ms(1500)}`));\n",
      });
      // The lockfile npm ci needs, resolved once from the npm registry (kept out of the timings).
      await mustRun('npm', ['install', '--package-lock-only', '--no-audit', '--no-fund', '--ignore-scripts'], { cwd: ctx, timeoutMs: 120_000 });
    },
  },
  {
    id: 'wide', title: `wide tree: one RUN writes ${WIDE_FILES.toLocaleString('en-US')} small files`,
    base: 'busybox',
    prepare: (ctx, b) => files(ctx, {
      Dockerfile: [`FROM ${b.busybox}`,
        `RUN mkdir /tree && cd /tree && for d in $(seq 0 ${Math.ceil(WIDE_FILES / 1000) - 1}); do mkdir $d; for f in $(seq 0 999); do echo "$d/$f" > $d/$f; done; done`].join('\n') + '\n',
    }),
  },
  {
    id: 'big', title: `${BIG_MB} MB layer (half random, half text) from one RUN`,
    base: 'busybox',
    prepare: (ctx, b) => files(ctx, {
      Dockerfile: [`FROM ${b.busybox}`,
        `RUN head -c ${(BIG_MB / 2) * 2 ** 20} /dev/urandom > /random.bin && yes "kiln benchmark: compressible text line $(date +%s)" | head -c ${(BIG_MB / 2) * 2 ** 20} > /text.txt`].join('\n') + '\n',
    }),
  },
  {
    id: 'warm', title: '10-step Dockerfile rebuilt warm (registry cache, nothing changed)', warm: true,
    base: 'busybox',
    prepare: (ctx, b) => files(ctx, {
      Dockerfile: [`FROM ${b.busybox}`, 'ENV APP_HOME=/app', 'WORKDIR /app', 'COPY app/ /app/', 'RUN mkdir -p /app/data && cp /app/*.txt /app/data/',
        "RUN echo 'builder:x:1001:1001::/home/builder:/bin/sh' >> /etc/passwd && mkdir -p /home/builder && chown 1001 /home/builder", 'RUN echo "config" > /etc/app.conf', 'RUN seq 1 10000 > /app/numbers', 'USER builder', 'RUN echo done > /home/builder/last'].join('\n') + '\n',
      ...Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`app/file${i}.txt`, `file ${i}\n`])),
    }),
  },
];

/** The warm workload's context (its Dockerfile FROM `busybox`), for the remote suite's rebuilds. */
export async function prepareWarmWorkload(ctx: string, busybox: string): Promise<void> {
  await WORKLOADS.find((w) => w.id === 'warm')!.prepare(ctx, { busybox, debian: '', node: '' });
}

interface Run { workload: string; tool: string; round: number; usage: Usage; startupSeconds?: number; }

const fmt = (s: number | undefined, unit = ' s', digits = 1): string => (s === undefined || !Number.isFinite(s) ? '—' : `${s.toFixed(digits)}${unit}`);

interface Medians { wall?: number; cpu?: number; maxRssMb?: number; startup?: number; }
interface Row {
  workload: string; title: string; kiln: Medians; kilnNodePeakMb?: number; kilnRunPeakMb?: number;
  peers: Record<string, Medians & { ratio?: number }>;
  /** kiln in its image against kaniko in its image: the GitLab job kiln replaces, both in containers. */
  imageVsKaniko?: number;
}

function report(workloads: Workload[], tools: BuildTool[], runs: Run[]): { rows: Row[]; table: string; memory: string } {
  const med = (w: string, t: string, pick: (r: Run) => number | undefined): number | undefined => {
    const values = runs.filter((r) => r.workload === w && r.tool === t).map(pick).filter((v): v is number => v !== undefined && Number.isFinite(v));
    return values.length ? median(values) : undefined;
  };
  const peers = tools.filter((t) => t.id !== 'kiln');
  const rows = workloads.map((w): Row => {
    const of = (t: string): Medians => ({
      wall: med(w.id, t, (r) => r.usage.wallSeconds), cpu: med(w.id, t, (r) => r.usage.cpuSeconds),
      maxRssMb: med(w.id, t, (r) => r.usage.maxRssMb), startup: med(w.id, t, (r) => r.startupSeconds),
    });
    const kiln = of('kiln');
    const inImage = of('kiln-image').wall;
    const kaniko = of('kaniko').wall;
    return {
      ...(inImage !== undefined && kaniko ? { imageVsKaniko: inImage / kaniko } : {}),
      workload: w.id, title: w.title, kiln, kilnNodePeakMb: med(w.id, 'kiln', (r) => r.usage.peakRssMbByProgram?.node),
      kilnRunPeakMb: med(w.id, 'kiln', (r) => runStepsPeak(r.usage)),
      peers: Object.fromEntries(peers.map((p) => { const m = of(p.id); return [p.id, { ...m, ratio: kiln.wall !== undefined && m.wall ? kiln.wall / m.wall : undefined }]; })),
    };
  });
  const both = peers.some((p) => p.id === 'kiln-image') && peers.some((p) => p.id === 'kaniko');
  const table = markdownTable(
    ['workload', 'kiln wall (CPU)', ...peers.flatMap((p) => [`${p.name} wall (CPU)`, `kiln/${p.id}`]), ...(both ? ['kiln-image/kaniko'] : [])],
    rows.map((r) => [r.title, `${fmt(r.kiln.wall)} (${fmt(r.kiln.cpu)})`,
      ...peers.flatMap((p) => { const m = r.peers[p.id]!; return [`${fmt(m.wall)} (${fmt(m.cpu)})${m.startup !== undefined ? `, ${fmt(m.startup)} start-up` : ''}`, fmt(m.ratio, '', 2)]; }),
      ...(both ? [fmt(r.imageVsKaniko, '', 2)] : [])]));
  const memory = markdownTable(['workload', 'kiln (node) peak RSS', 'kiln RUN steps peak RSS', ...peers.map((p) => `${p.name} largest process`)],
    rows.map((r) => [r.title, fmt(r.kilnNodePeakMb, ' MB', 0), fmt(r.kilnRunPeakMb, ' MB', 0), ...peers.map((p) => (['docker', 'kaniko', 'kiln-image'].includes(p.id) ? '—' : fmt(r.peers[p.id]!.maxRssMb, ' MB', 0)))]));
  return { rows, table, memory };
}

/** Peak RSS of what kiln ran for RUN steps: every program in its tree but node, kiln-sandbox and zstd. */
function runStepsPeak(usage: Usage): number | undefined {
  const others = Object.entries(usage.peakRssMbByProgram ?? {}).filter(([p]) => !['node', 'kiln-sandbox', 'zstd', 'time'].includes(p));
  return others.length ? Math.max(...others.map(([, mb]) => mb)) : undefined;
}

function targets(rows: Row[]): string[] {
  const lines: string[] = [];
  const check = (what: string, got: number | undefined, limit: number, below = true, floor?: number): void => {
    // The floor against the same peer: above the limit, no builder could meet the target.
    const unreachable = floor !== undefined && floor > limit ? ` (the floor alone is ${floor.toFixed(2)} of it: no builder can meet this)` : '';
    lines.push(`target: ${what} ${below ? '<=' : '>='} ${limit}: ${got === undefined ? 'not measured' : `${got.toFixed(2)}, ${(below ? got <= limit : got >= limit) ? 'met' : `NOT met${unreachable}`}`}`);
  };
  for (const r of rows) {
    const p = r.peers;
    const floorOf = (peer: string): number | undefined => (p.floor?.wall !== undefined && p[peer]?.wall ? p.floor.wall / p[peer].wall : undefined);
    if (r.workload === 'warm') { check(`${r.workload}: kiln/kaniko`, p.kaniko?.ratio, TARGETS.warmVsKaniko); continue; }
    check(`${r.workload} cold: kiln/kaniko`, p.kaniko?.ratio, TARGETS.coldVsKaniko, true, floorOf('kaniko'));
    check(`${r.workload} cold: kiln/buildah`, p.buildah?.ratio, TARGETS.coldVsBuildah, true, floorOf('buildah'));
    if (r.workload === 'big') check('big: kiln peak RSS (node), MB', r.kilnNodePeakMb, TARGETS.bigPeakMb);
  }
  return lines;
}

/**
 * docker's builds start from an empty machine only if its store is empty: layers that images of other
 * runs share with a base are not pulled nor extracted again (a shared test dockerd had docker's Node.js
 * build at 2.9 s instead of 11 s). Said loudly, since it makes docker look faster.
 */
async function warnIfDockerNotEmpty(): Promise<void> {
  const images = (await mustRun('docker', ['images', '-a', '-q'], { env: dockerEnv() })).split('\n').filter(Boolean);
  if (images.length) {
    console.log(`WARNING: docker's store already holds ${images.length} images; its builds may reuse their layers. ` +
      'For empty-machine numbers, unset DOCKER_HOST and set KILN_DOCKERD_DIR to a new directory: the bench then starts (and stops) a fresh private dockerd.');
  }
}

export async function workloadsSuite(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-workloads-'));
  const registry = await startRegistry('http');
  const docker = await ensureDocker();
  let tools: BuildTool[] = [];
  const cleanup = async (): Promise<void> => {
    await Promise.all(tools.map((t) => t.dispose?.()));
    await registry.stop();
    await mustRun('rm', ['-rf', '--one-file-system', dir], { timeoutMs: 600_000 }).catch(() => rm(dir, { recursive: true, force: true }));
    await docker.release();
  };
  const forget = onInterrupt(cleanup);
  try {
    const workloads = chosen(WORKLOADS, process.env.KILN_BENCH_WORKLOADS, 'KILN_BENCH_WORKLOADS');
    tools = chosen(await availableTools(), process.env.KILN_BENCH_TOOLS, 'KILN_BENCH_TOOLS');
    if (tools.some((t) => t.id === 'docker')) await warnIfDockerNotEmpty();
    console.log(`tools: ${tools.map((t) => t.name).join(', ')}; workloads: ${workloads.map((w) => w.id).join(', ')}; ${REPETITIONS} rounds`);
    const needs = (base: keyof Bases): boolean => workloads.some((w) => w.base === base);
    const bases: Bases = { busybox: `${registry.host}/base/busybox:1`, debian: `${registry.host}/base/debian:12`, node: `${registry.host}/base/node:20` };
    await pushBusyboxImage(registry, 'base/busybox', '1', 'oci');
    if (needs('debian')) await pushDebianImage(registry, 'base/debian', '12', 'v2s2');
    if (needs('node')) await pushNodeImage(registry, 'base/node', '20', 'v2s2');

    const runs: Run[] = [];
    const load: number[] = [];
    for (let round = 0; round < REPETITIONS; round++) {
      for (const w of workloads) {
        for (let t = 0; t < tools.length; t++) {
          const tool = tools[(t + round) % tools.length]!;
          const ctx = join(dir, `${w.id}-${tool.id}-${round}`);
          await mkdir(ctx, { recursive: true });
          await w.prepare(ctx, bases);
          const image = `${registry.host}/bench-${w.id}/${tool.id}:${round}`;
          const cacheRepo = `${registry.host}/bench-cache/${w.id}-${tool.id}-${round}`;
          if (w.warm) await tool.build({ ctx, image, cacheRepo });
          load.push(loadavg()[0]!);
          const built = await tool.build({ ctx, image, cacheRepo: w.warm ? cacheRepo : undefined });
          if (!built) {
            await mustRun('rm', ['-rf', '--one-file-system', ctx]);
            continue;
          }
          runs.push({ workload: w.id, tool: tool.id, round, usage: built.usage, startupSeconds: built.startupSeconds });
          const u = built.usage;
          console.log(`  round ${round + 1}/${REPETITIONS} ${w.id} ${tool.name}: ${u.wallSeconds.toFixed(1)} s, CPU ${u.cpuSeconds.toFixed(1)} s` +
            (u.peakRssMbByProgram ? `, node peak ${fmt(u.peakRssMbByProgram.node, ' MB', 0)}, RUN peak ${fmt(runStepsPeak(u), ' MB', 0)}` : `, largest process ${fmt(u.maxRssMb, ' MB', 0)}`) +
            ` (load ${loadavg()[0]!.toFixed(1)})`);
          await mustRun('rm', ['-rf', '--one-file-system', ctx]);
        }
      }
    }
    const { rows, table, memory } = report(workloads, tools, runs);
    console.log(`\n### Workloads (median of ${REPETITIONS}; load average ${Math.min(...load).toFixed(1)}-${Math.max(...load).toFixed(1)} on ${cpus().length} cores)\n`);
    console.log(table);
    console.log('\nwall and CPU (user+sys of the tool\'s process tree; docker and kaniko: the CLI, dockerd, containerd and the "docker" cgroup, which other docker users on the machine add to)\n');
    console.log(memory);
    console.log('');
    for (const line of targets(rows)) console.log(line);
    console.log(`results: ${await writeResults('workloads', { repetitions: REPETITIONS, cores: cpus().length, loadAverage: { min: Math.min(...load), max: Math.max(...load) }, targets: TARGETS, rows, runs })}`);
  } finally {
    forget();
    await cleanup();
  }
}
