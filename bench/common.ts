// Helpers shared by the benchmark suites: timing, medians, Markdown tables, result files, the
// private dockerd the container-based tools need, and what a command costs (wall, CPU, memory).
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mustRun, runCommand, type CommandResult } from '../test/helpers/exec.js';
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

/** What one run of a tool cost. CPU is user+sys of the command and every descendant it waited for. */
export interface Usage {
  wallSeconds: number;
  cpuSeconds: number;
  /** Largest resident set of any single process of the tree (GNU time's %M), MB. */
  maxRssMb: number;
  /** Peak resident set per program name (VmHWM, sampled every SAMPLE_MS), MB: e.g. node, kiln-sandbox, zstd, sh. */
  peakRssMbByProgram?: Record<string, number>;
  /** Peak of the sum of the tree's resident sets at one sample, MB. */
  peakTreeRssMb?: number;
}

const SAMPLE_MS = 100;

/** pid → parent pid and program name, for every process visible in /proc. */
async function processTable(): Promise<Map<number, { ppid: number; comm: string }>> {
  const table = new Map<number, { ppid: number; comm: string }>();
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the last ")".
    const close = stat.lastIndexOf(')');
    if (close < 0) continue;
    table.set(Number(name), { comm: stat.slice(stat.indexOf('(') + 1, close), ppid: Number(stat.slice(close + 2).split(' ')[1]) });
  }
  return table;
}

/** VmHWM and VmRSS of a process in kB (0 once it is gone). */
async function memoryOf(pid: number): Promise<{ hwm: number; rss: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
}

/** Samples the memory of `root`'s process tree until stop() is called. */
function sampleTree(root: number): { stop(): Promise<{ byProgram: Record<string, number>; peakTreeKb: number }> } {
  const peakByPid = new Map<number, { comm: string; kb: number }>();
  let peakTreeKb = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const table = await processTable();
      const tree = new Set([root]);
      // Parents come before children in most tables, but not always: repeat until nothing is added.
      for (let grew = true; grew;) {
        grew = false;
        for (const [pid, p] of table) if (!tree.has(pid) && tree.has(p.ppid)) { tree.add(pid); grew = true; }
      }
      let sum = 0;
      for (const pid of tree) {
        const { hwm, rss } = await memoryOf(pid);
        sum += rss;
        const seen = peakByPid.get(pid);
        if (hwm > (seen?.kb ?? 0)) peakByPid.set(pid, { comm: table.get(pid)?.comm ?? '?', kb: hwm });
      }
      peakTreeKb = Math.max(peakTreeKb, sum);
      await new Promise((r) => setTimeout(r, SAMPLE_MS));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      const byProgram: Record<string, number> = {};
      for (const { comm, kb } of peakByPid.values()) byProgram[comm] = Math.max(byProgram[comm] ?? 0, kb);
      return { byProgram, peakTreeKb };
    },
  };
}

/**
 * Runs a command under GNU time (wall, user+sys of the whole tree, largest single RSS); with
 * `sample`, also the peak memory of each program in the tree (kiln's node apart from its RUN steps).
 */
export async function measured(
  file: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; sample?: boolean } = {},
): Promise<{ result: CommandResult; usage: Usage }> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-time-'));
  const out = join(dir, 'time');
  try {
    const child = spawn('/usr/bin/time', ['-f', '%e %U %S %M', '-o', out, file, ...args], { env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const sampler = options.sample ? sampleTree(child.pid!) : undefined;
    const result = await new Promise<CommandResult>((resolve, reject) => {
      let stdout = '';
      let stderr = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 1_800_000);
      child.stdout.on('data', (d: Buffer) => { stdout = (stdout + d.toString()).slice(-100_000); });
      child.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-100_000); });
      child.on('error', (e) => { clearTimeout(timer); reject(e); });
      child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }); });
    });
    const sampled = await sampler?.stop();
    const line = (await readFile(out, 'utf8').catch(() => '')).trim().split('\n').at(-1) ?? '';
    const [wall, user, sys, rssKb] = line.split(' ').map(Number);
    const usage: Usage = { wallSeconds: wall ?? NaN, cpuSeconds: (user ?? NaN) + (sys ?? NaN), maxRssMb: (rssKb ?? NaN) / 1024 };
    if (sampled) {
      usage.peakRssMbByProgram = Object.fromEntries(Object.entries(sampled.byProgram).map(([k, kb]) => [k, kb / 1024]));
      usage.peakTreeRssMb = sampled.peakTreeKb / 1024;
    }
    return { result, usage };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** CPU seconds so far of the private dockerd and its containerd, and of every container (cpuacct cgroup "docker"). */
export async function dockerCpuSeconds(): Promise<number> {
  const ticks = Number(await runCommand('getconf', ['CLK_TCK']).then((r) => r.stdout.trim())) || 100;
  const daemonPid = Number((await readFile(join(process.env.KILN_DOCKERD_DIR ?? '/tmp/kiln-dockerd', 'dockerd.pid'), 'utf8').catch(() => '0')).trim());
  const table = await processTable();
  let seconds = 0;
  for (const [pid, p] of table) {
    if (pid !== daemonPid && !(p.ppid === daemonPid && p.comm === 'containerd')) continue;
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    seconds += (Number(fields[11]) + Number(fields[12])) / ticks; // utime, stime
  }
  const containers = await readFile('/sys/fs/cgroup/cpuacct/docker/cpuacct.usage', 'utf8').catch(() => '0');
  return seconds + Number(containers) / 1e9;
}

/** The entries of `all` whose ids a comma list (an env knob named `what`) names; all of them when unset. Unknown ids are an error. */
export function chosen<T extends { id: string }>(all: T[], env: string | undefined, what: string): T[] {
  if (!env) return all;
  const ids = env.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = ids.filter((id) => !all.some((x) => x.id === id));
  if (unknown.length) throw new Error(`unknown ${what}: ${unknown.join(', ')} (known: ${all.map((x) => x.id).join(', ')})`);
  return all.filter((x) => ids.includes(x.id));
}
