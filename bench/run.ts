// `npm run bench`: kiln against its peers on this machine, in one run, alternating, reporting
// medians and kiln/peer ratios (absolute times on shared machines mean little; ratios do).
// Suites, chosen with KILN_BENCH (comma list, default all):
//   registry  (issue #3) pull and push of a ~200 MB multi-layer image between two local
//             distribution registries — kiln (FROM the image, push elsewhere) versus `skopeo copy`;
//             then a small image between two TLS registries behind 20 ms round trips (bench/registry-latency.ts).
//   snapshot  (issue #4) RUN snapshot cost on 10k/100k-file roots, per isolation mode, versus
//             buildah and kaniko (bench/snapshot.ts).
//   cache     (issue #6) a 10-step Debian Dockerfile built cold, rebuilt warm, and rebuilt after a
//             change in its last step, each from an empty machine with a registry cache (bench/cache.ts).
//   compression (issue #8) layer gzip and zstd throughput: kiln's parallel gzip against pigz and
//             single-stream zlib at levels 1 and 6, kiln's zstd against `zstd -T0 -3` (bench/compression.ts).
//   workloads (issue #8) six build workloads (busybox app, Debian apt-get, Node.js npm ci, 100k-file
//             RUN, 1 GB layer, warm 10-step rebuild) by kiln, docker build, buildah and kaniko, with
//             wall, CPU and peak memory (bench/workloads.ts).
//   remote    (issue #8) the workloads' warm rebuild against a TLS registry 20 ms away: kiln, and with
//             KANIKO_IMAGE kiln's image and kaniko's, each in a fresh container (bench/remote-cache.ts).
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kiln, mustRun } from '../test/helpers/exec.js';
import { startRegistry, type TestRegistry } from '../test/helpers/registry.js';
import { markdownTable, median, REPETITIONS, timed, writeResults } from './common.js';
import { snapshotSuite } from './snapshot.js';
import { cacheSuite } from './cache.js';
import { compressionSuite } from './compression.js';
import { tlsLatencyRow } from './registry-latency.js';
import { workloadsSuite } from './workloads.js';
import { remoteSuite } from './remote-cache.js';

interface Measurement { tool: string; seconds: number; }

const LAYER_MB = [80, 60, 40, 20];

async function makeBigImage(dir: string, source: TestRegistry): Promise<string> {
  // Random bytes: incompressible, so compression cost does not hide transfer cost.
  const ctx = join(dir, 'big-context');
  await mkdir(ctx, { recursive: true });
  const lines = ['FROM scratch'];
  for (const [i, mb] of LAYER_MB.entries()) {
    await writeFile(join(ctx, `part${i}.bin`), randomBytes(mb << 20));
    lines.push(`COPY part${i}.bin /data/part${i}.bin`);
  }
  await writeFile(join(ctx, 'Dockerfile'), lines.join('\n') + '\n');
  const image = `${source.host}/bench/big:1`;
  const r = await kiln(['executor', '-c', ctx, '-d', image, '-v', 'warn'], { timeoutMs: 600_000 });
  if (r.code !== 0) throw new Error(`building the benchmark image failed: ${r.stderr}`);
  return image;
}

/**
 * One round: each tool copies into a registry of its own that has never seen the blobs (no mounts, no reuse).
 * The order alternates by round, so neither tool always runs first after the registries start.
 */
async function pullPushRound(dir: string, image: string, round: number): Promise<Measurement[]> {
  const ctx = join(dir, `pull-push-${round}`);
  await mkdir(ctx, { recursive: true });
  await writeFile(join(ctx, 'Dockerfile'), `FROM ${image}\nENV ROUND=${round}\n`);
  const [kilnTarget, skopeoTarget] = await Promise.all([startRegistry('http'), startRegistry('http')]);
  try {
    const copyWithKiln = async (): Promise<Measurement> => ({
      tool: 'kiln',
      seconds: await timed(async () => {
        const r = await kiln(['executor', '-c', ctx, '-d', `${kilnTarget.host}/kiln/round${round}:1`, '-v', 'warn'], { timeoutMs: 600_000 });
        if (r.code !== 0) throw new Error(`kiln failed: ${r.stderr}`);
      }),
    });
    const copyWithSkopeo = async (): Promise<Measurement> => ({
      tool: 'skopeo copy',
      seconds: await timed(() => mustRun('skopeo', ['copy', '--src-tls-verify=false', '--dest-tls-verify=false',
        `docker://${image}`, `docker://${skopeoTarget.host}/skopeo/round${round}:1`], { timeoutMs: 600_000 })),
    });
    const order = round % 2 === 0 ? [copyWithKiln, copyWithSkopeo] : [copyWithSkopeo, copyWithKiln];
    const measured: Measurement[] = [];
    for (const copy of order) measured.push(await copy());
    return measured;
  } finally {
    await Promise.all([kilnTarget.stop(), skopeoTarget.stop()]);
  }
}

async function registrySuite(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-'));
  const source = await startRegistry('http');
  try {
    const image = await makeBigImage(dir, source);
    const results: Measurement[] = [];
    for (let round = 0; round < REPETITIONS; round++) results.push(...(await pullPushRound(dir, image, round)));
    const kilnMedian = median(results.filter((m) => m.tool === 'kiln').map((m) => m.seconds));
    const skopeoMedian = median(results.filter((m) => m.tool === 'skopeo copy').map((m) => m.seconds));
    const ratio = kilnMedian / skopeoMedian;
    const row = { workload: `pull + push of a ${LAYER_MB.reduce((a, b) => a + b, 0)} MB, ${LAYER_MB.length}-layer image`, repetitions: REPETITIONS, kilnMedianSeconds: kilnMedian, peer: 'skopeo copy', peerMedianSeconds: skopeoMedian, ratio, target: '<= 1.0' };
    const latency = await tlsLatencyRow(dir, REPETITIONS);
    console.log(markdownTable(['workload', 'kiln median', 'peer', 'peer median', 'kiln/peer', 'target'], [
      [row.workload, `${kilnMedian.toFixed(2)} s`, row.peer, `${skopeoMedian.toFixed(2)} s`, ratio.toFixed(2), row.target],
      [latency.workload, `${latency.kilnMedianSeconds.toFixed(2)} s, ${latency.kilnConnections} connections`, 'skopeo copy',
        `${latency.skopeoMedianSeconds.toFixed(2)} s, ${latency.skopeoConnections} connections`, latency.ratio.toFixed(2), ''],
    ]));
    console.log('(kiln includes its Node start-up and a metadata-only build step; skopeo only copies)');
    await writeResults('registry', { row, results, latency });
  } finally {
    await source.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

const SUITES: Record<string, () => Promise<void>> = {
  workloads: workloadsSuite, registry: registrySuite, snapshot: snapshotSuite, cache: cacheSuite, compression: compressionSuite, remote: remoteSuite,
};

async function main(): Promise<void> {
  const chosen = (process.env.KILN_BENCH || Object.keys(SUITES).join(',')).split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = chosen.filter((s) => !(s in SUITES));
  if (unknown.length) throw new Error(`unknown KILN_BENCH suite(s): ${unknown.join(', ')} (known: ${Object.keys(SUITES).join(', ')})`);
  for (const name of chosen) {
    console.log(`\n## ${name}\n`);
    const seconds = await timed(SUITES[name]!);
    console.log(`\n(${name} suite: ${seconds.toFixed(0)} s)`);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
