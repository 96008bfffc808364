// Compression suite (issue #8): layer gzip and zstd throughput on ~200 MB of mixed data (alternating
// 4 MiB runs of incompressible and text-like bytes, generated deterministically into a temp file),
// then on text-like bytes only (see DATASETS),
// compressed file to file by kiln's parallel gzip at levels 1 and 6, by zlib's single stream (kiln
// before issue #8), by pigz at the same levels on every core, and by kiln's zstd stream (libzstd
// in-process through zstd-napi) against `zstd -T0 -3` itself; tools alternate, order rotating per round.
// Wall MB/s is the figure of merit; CPU seconds are printed too, since on a shared machine wall
// time also measures the neighbours.
import { createCipheriv, createHash } from 'node:crypto';
import { createReadStream, createWriteStream, readFileSync } from 'node:fs';
import { mkdtemp, open, rm, stat } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { DEFAULT_BLOCK_SIZE, DEFAULT_THRESHOLD, defaultMaxInFlight, createParallelGzip } from '../src/layer/parallel-gzip.js';
import { createZstdCompressor } from '../src/layer/zstd.js';
import { mustRun, runCommand } from '../test/helpers/exec.js';
import { markdownTable, median, onInterrupt, REPETITIONS, timed, writeResults } from './common.js';

const DATA_MB = Number(process.env.KILN_BENCH_COMPRESSION_MB ?? 200);
const RUN = 4 << 20;
const TIMEOUT_MS = 600_000;
/** Issue #8's targets: kiln's gzip at least 0.9x the throughput of `pigz -6`, its zstd 0.9x `zstd -T0 -3`. */
const TARGETS = [{ tool: 'kiln parallel -6', peer: 'pigz -6', ratio: 0.9 }, { tool: 'kiln zstd -3', peer: 'zstd -T0 -3', ratio: 0.9 }];

interface Tool { name: string; level: number; format: 'gzip' | 'zstd'; peer: boolean; run(input: string, output: string): Promise<number>; }
interface Run { tool: string; round: number; seconds: number; cpuSeconds: number; bytes: number; }

/** User+system seconds of the child processes this process has reaped (cutime + cstime of /proc/self/stat). */
function reapedChildrenSeconds(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) / 100; // USER_HZ is 100 on Linux
}

/** CPU seconds of this process (all threads, the thread pool included) and of the children it ran, spent in `work`. */
async function inProcess(work: () => Promise<unknown>): Promise<number> {
  const before = process.cpuUsage();
  const children = reapedChildrenSeconds();
  await work();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1e6 + reapedChildrenSeconds() - children;
}

function nodeTool(name: string, level: number, make: () => NodeJS.ReadWriteStream, format: Tool['format'] = 'gzip'): Tool {
  return {
    name, level, format, peer: false,
    run: (input, output) => inProcess(() => pipeline(createReadStream(input, { highWaterMark: 1 << 20 }), make(), createWriteStream(output))),
  };
}

/** A compressor program through bash, whose `times` reports the CPU its children used. */
function programTool(name: string, level: number, format: Tool['format'], script: string): Tool {
  return {
    name, level, format, peer: true,
    async run(input, output) {
      const r = await runCommand('bash', ['-c', `${script} && times`, 'bash', input, output], { timeoutMs: TIMEOUT_MS });
      if (r.code !== 0) throw new Error(`${name} exited ${r.code}: ${r.stderr}`);
      // Second line of `times`: children's user and system time, as 0m4.673s 0m0.338s.
      const child = r.stdout.trim().split('\n')[1] ?? '';
      return [...child.matchAll(/(\d+)m([\d.]+)s/g)].reduce((sum, m) => sum + Number(m[1]) * 60 + Number(m[2]), 0);
    },
  };
}

/**
 * The inputs: "mixed" alternates runs of AES-CTR keystream (incompressible, as archives and media in
 * a layer) and words (compressible like text or code); "text" is words only, so deflate's own
 * speed is compared with no help from kiln storing incompressible blocks (parallel-gzip.ts).
 */
type Dataset = 'mixed' | 'text';
const DATASETS: { id: Dataset; title: string }[] = [
  { id: 'mixed', title: 'half incompressible, half text-like' },
  { id: 'text', title: 'text-like only' },
];

async function writeData(path: string, dataset: Dataset): Promise<string> {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 1), Buffer.alloc(16, 2));
  const words = ('the of and to in is for that with on as by layer image build kiln registry manifest config digest ' +
    'const let function return import export if else await async { } ( ) ; = => 0 1 2 42 true false null').split(' ');
  const hash = createHash('sha256');
  const file = await open(path, 'w');
  try {
    for (let at = 0, i = 0; at < DATA_MB << 20; at += RUN, i++) {
      const noise: Buffer = cipher.update(Buffer.alloc(RUN));
      let run = noise;
      if (dataset === 'text' || i % 2 === 1) {
        const parts: string[] = [];
        let len = 0;
        for (let j = 0; len < RUN; j++) {
          const w = words[noise[j]! % words.length]! + (noise[j + 1]! < 24 ? '\n' : ' ');
          parts.push(w);
          len += w.length;
        }
        run = Buffer.from(parts.join(''), 'latin1').subarray(0, RUN);
      }
      run = run.subarray(0, Math.min(RUN, (DATA_MB << 20) - at));
      hash.update(run);
      await file.write(run);
    }
  } finally {
    await file.close();
  }
  return hash.digest('hex');
}

/** `gzip -dc | sha256sum` (or zstd -dc) of an output: every tool must give back the input. */
async function check(tool: Tool, output: string, inputSha: string): Promise<void> {
  const sum = (await mustRun('bash', ['-c', `${tool.format} -dc "$1" | sha256sum`, 'bash', output], { timeoutMs: TIMEOUT_MS })).split(' ')[0];
  if (sum !== inputSha) throw new Error(`${tool.name}: ${tool.format} -dc of its output is not the input (sha256 ${sum}, expected ${inputSha})`);
}

function fmtRatio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || !Number.isFinite(a / b) ? '—' : (a / b).toFixed(2);
}

export async function compressionSuite(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-compression-'));
  const forget = onInterrupt(() => rm(dir, { recursive: true, force: true }));
  try {
    const cores = availableParallelism();
    const tools: Tool[] = [
      nodeTool('kiln parallel -1', 1, () => createParallelGzip({ level: 1 })),
      nodeTool('kiln parallel -6', 6, () => createParallelGzip({ level: 6 })),
      // What kiln wrote layers with before issue #8.
      nodeTool('zlib single -1', 1, () => createGzip({ level: 1, chunkSize: 256 << 10 })),
      nodeTool('zlib single -6', 6, () => createGzip({ level: 6, chunkSize: 256 << 10 })),
    ];
    const pigz = await runCommand('pigz', ['--version']).catch(() => undefined);
    let pigzNote: string;
    if (pigz?.code === 0) {
      pigzNote = `${(pigz.stdout + pigz.stderr).trim()}, -p ${cores}`;
      for (const level of [1, 6]) tools.push(programTool(`pigz -${level}`, level, 'gzip', `pigz -p ${cores} -${level} -c "$1" > "$2"`));
    } else {
      pigzNote = 'pigz not installed: its rows and the kiln/pigz ratios are skipped (apt-get install pigz)';
    }
    console.log(pigzNote);
    const zstd = await runCommand('zstd', ['--version']).catch(() => undefined);
    if (zstd?.code === 0) {
      tools.push(nodeTool('kiln zstd -3', 3, () => createZstdCompressor(3), 'zstd'), programTool('zstd -T0 -3', 3, 'zstd', 'zstd -q -T0 -3 -c "$1" > "$2"'));
      console.log(zstd.stdout.trim());
    } else {
      console.log('zstd not installed: its rows are skipped (apt-get install zstd)');
    }
    const settings = `blocks of ${DEFAULT_BLOCK_SIZE >> 10} KiB, ${defaultMaxInFlight()} in flight, single stream up to ${DEFAULT_THRESHOLD >> 20} MiB; ` +
      `${cores} cores (${cpus()[0]?.model ?? '?'}), UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? '4 (default)'}`;
    console.log(`kiln parallel gzip: ${settings}`);

    const input = join(dir, 'input.bin');
    const output = join(dir, 'output.gz');
    const measured = [];
    for (const dataset of DATASETS) {
      const inputSha = await writeData(input, dataset.id);
      const inputBytes = (await stat(input)).size;
      console.log(`\ninput: ${(inputBytes / 1e6).toFixed(0)} MB, ${dataset.title}`);

      const runs: Run[] = [];
      for (let round = 0; round < REPETITIONS; round++) {
        for (let t = 0; t < tools.length; t++) {
          const tool = tools[(t + round) % tools.length]!;
          let cpuSeconds = 0;
          const seconds = await timed(async () => { cpuSeconds = await tool.run(input, output); });
          const bytes = (await stat(output)).size;
          if (round === 0) await check(tool, output, inputSha);
          await rm(output);
          runs.push({ tool: tool.name, round, seconds, cpuSeconds, bytes });
          console.log(`  round ${round + 1}/${REPETITIONS}: ${tool.name} ${seconds.toFixed(2)} s, ${(inputBytes / 1e6 / seconds).toFixed(1)} MB/s, CPU ${cpuSeconds.toFixed(2)} s`);
        }
      }

      const summary = tools.map((tool) => {
        const own = runs.filter((r) => r.tool === tool.name);
        const seconds = median(own.map((r) => r.seconds));
        return {
          tool: tool.name, level: tool.level, format: tool.format, peer: tool.peer, medianSeconds: seconds, mbPerSecond: inputBytes / 1e6 / seconds,
          medianCpuSeconds: median(own.map((r) => r.cpuSeconds)), compressedBytes: own[0]!.bytes,
        };
      });
      const peerOf = (s: (typeof summary)[number]) => summary.find((p) => p.peer && p.level === s.level && p.format === s.format);
      console.log(`\n### gzip and zstd of ${(inputBytes / 1e6).toFixed(0)} MB ${dataset.title}, file to file (median of ${REPETITIONS}; load ${loadavg()[0]!.toFixed(1)})\n`);
      console.log(markdownTable(['tool', 'wall', 'MB/s', 'CPU', 'size / input', 'MB/s / peer (pigz or zstd, same level)'],
        summary.map((s) => [s.tool, `${s.medianSeconds.toFixed(2)} s`, s.mbPerSecond.toFixed(1), `${s.medianCpuSeconds.toFixed(2)} s`,
          `${((100 * s.compressedBytes) / inputBytes).toFixed(2)} %`, s.peer ? '—' : fmtRatio(s.mbPerSecond, peerOf(s)?.mbPerSecond)])));

      const single = summary.find((s) => s.tool === 'zlib single -1')!;
      console.log(`\nkiln parallel -1 / zlib single -1 (kiln's default level, before and after): ${fmtRatio(summary[0]!.mbPerSecond, single.mbPerSecond)}`);
      const targets = TARGETS.map((target) => {
        const kiln = summary.find((s) => s.tool === target.tool);
        const peer = summary.find((s) => s.tool === target.peer);
        if (!kiln || !peer) {
          console.log(`target (${dataset.id}) ${target.tool} >= ${target.ratio}x ${target.peer}: not measured (${target.peer.split(' ')[0]} not installed)`);
          return { ...target, measured: undefined, perRound: [] };
        }
        const ratio = kiln.mbPerSecond / peer.mbPerSecond;
        // Per round too: neighbours' load drifts, and runs of the same round saw about the same load.
        const perRound = Array.from({ length: REPETITIONS }, (_, round) => {
          const of = (tool: string) => runs.find((r) => r.tool === tool && r.round === round)!.seconds;
          return of(target.peer) / of(target.tool);
        });
        console.log(`target (${dataset.id}): ${target.tool} >= ${target.ratio}x ${target.peer} throughput: ${ratio.toFixed(2)}x, ${ratio >= target.ratio ? 'met' : 'NOT met'}` +
          ` (per round: ${perRound.map((r) => r.toFixed(2)).join(', ')})`);
        return { ...target, measured: ratio, perRound };
      });
      measured.push({ dataset: dataset.id, inputBytes, summary, targets, runs });
    }
    console.log(`results: ${await writeResults('compression', { repetitions: REPETITIONS, settings, pigz: pigzNote, loadAverage: loadavg(), datasets: measured })}`);
  } finally {
    forget();
    await rm(dir, { recursive: true, force: true });
  }
}
