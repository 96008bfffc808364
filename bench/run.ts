// `npm run bench`: kiln against its peers on this machine, in one run, alternating, reporting
// medians and kiln/peer ratios (absolute times on shared machines mean little; ratios do).
// Workload today (issue #3): pull and push of a ~200 MB multi-layer image between two local
// distribution registries — kiln (FROM the image, push elsewhere) versus `skopeo copy`.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kiln, mustRun } from '../test/helpers/exec.js';
import { repoRoot } from '../test/helpers/paths.js';
import { startRegistry, type TestRegistry } from '../test/helpers/registry.js';

interface Measurement { tool: string; seconds: number; }

const REPETITIONS = Number(process.env.KILN_BENCH_REPETITIONS ?? 3);
const LAYER_MB = [80, 60, 40, 20];

async function timed(work: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

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

/** One round: each tool copies into a registry of its own that has never seen the blobs (no mounts, no reuse). */
async function pullPushRound(dir: string, image: string, round: number): Promise<Measurement[]> {
  const ctx = join(dir, `pull-push-${round}`);
  await mkdir(ctx, { recursive: true });
  await writeFile(join(ctx, 'Dockerfile'), `FROM ${image}\nENV ROUND=${round}\n`);
  const [kilnTarget, skopeoTarget] = await Promise.all([startRegistry('http'), startRegistry('http')]);
  try {
    const kilnSeconds = await timed(async () => {
      const r = await kiln(['executor', '-c', ctx, '-d', `${kilnTarget.host}/kiln/round${round}:1`, '-v', 'warn'], { timeoutMs: 600_000 });
      if (r.code !== 0) throw new Error(`kiln failed: ${r.stderr}`);
    });
    const skopeoSeconds = await timed(() => mustRun('skopeo', ['copy', '--src-tls-verify=false', '--dest-tls-verify=false',
      `docker://${image}`, `docker://${skopeoTarget.host}/skopeo/round${round}:1`], { timeoutMs: 600_000 }));
    return [{ tool: 'kiln', seconds: kilnSeconds }, { tool: 'skopeo copy', seconds: skopeoSeconds }];
  } finally {
    await Promise.all([kilnTarget.stop(), skopeoTarget.stop()]);
  }
}

async function main(): Promise<void> {
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
    console.log('| workload | kiln median | peer | peer median | kiln/peer | target |');
    console.log('|---|---|---|---|---|---|');
    console.log(`| ${row.workload} | ${kilnMedian.toFixed(2)} s | ${row.peer} | ${skopeoMedian.toFixed(2)} s | ${ratio.toFixed(2)} | ${row.target} |`);
    console.log('(kiln includes its Node start-up and a metadata-only build step; skopeo only copies)');
    const resultsDir = join(repoRoot, 'bench', 'results');
    await mkdir(resultsDir, { recursive: true });
    await writeFile(join(resultsDir, `registry-${new Date().toISOString().replace(/[:.]/g, '-')}.json`), JSON.stringify({ row, results }, null, 2));
  } finally {
    await source.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
