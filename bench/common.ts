// Helpers shared by the benchmark suites: timing, medians, Markdown tables, result files, and the
// private dockerd the container-based tools need.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { mustRun, runCommand } from '../test/helpers/exec.js';
import { repoRoot } from '../test/helpers/paths.js';

export const REPETITIONS = Number(process.env.KILN_BENCH_REPETITIONS ?? 3);

/**
 * Clean-ups to run if the bench is interrupted (Ctrl-C, `timeout`): finally blocks do not run on a
 * signal, and a killed run would leave containers, images and 100k-file temp dirs behind.
 */
const cleanups = new Set<() => Promise<unknown>>();
export function onInterrupt(cleanup: () => Promise<unknown>): () => void {
  cleanups.add(cleanup);
  return () => { cleanups.delete(cleanup); };
}
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: cleaning up`);
    // Newest first, like unwinding finally blocks; process.exit then runs the registries' exit hooks.
    void (async () => {
      for (const cleanup of [...cleanups].reverse()) await cleanup().catch(() => undefined);
    })().finally(() => process.exit(130));
  });
}

export async function timed(work: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function markdownTable(headers: string[], rows: string[][]): string {
  const line = (cells: string[]): string => `| ${cells.join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}

/** Writes bench/results/<suite>-<timestamp>.json and returns its path. */
export async function writeResults(suite: string, data: unknown): Promise<string> {
  const dir = join(repoRoot, 'bench', 'results');
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${suite}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  await writeFile(file, JSON.stringify(data, null, 2) + '\n');
  return file;
}

const PRIVATE_DOCKER_HOST = `unix://${process.env.KILN_DOCKERD_DIR ?? '/tmp/kiln-dockerd'}/docker.sock`;

/**
 * Points DOCKER_HOST at a working engine: the caller's, or the private one of scripts/dockerd.sh,
 * started here if it is not running. release() stops it only if this call started it.
 */
export async function ensureDocker(): Promise<{ release(): Promise<void> }> {
  process.env.DOCKER_HOST ||= PRIVATE_DOCKER_HOST;
  const info = await runCommand('docker', ['info'], { timeoutMs: 30_000 });
  if (info.code === 0) return { release: async () => undefined };
  if (process.env.DOCKER_HOST !== PRIVATE_DOCKER_HOST) throw new Error(`docker info failed for DOCKER_HOST=${process.env.DOCKER_HOST}:\n${info.stderr}`);
  const script = join(repoRoot, 'scripts', 'dockerd.sh');
  await mustRun('bash', [script, 'start'], { timeoutMs: 120_000 });
  console.log(`started the private dockerd (${PRIVATE_DOCKER_HOST}); it is stopped at the end`);
  return { release: async () => { await mustRun('bash', [script, 'stop'], { timeoutMs: 60_000 }); } };
}
