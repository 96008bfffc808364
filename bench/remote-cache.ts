// Remote suite (issue #8): the warm rebuild as a GitLab job sees it. The workloads' 10-step busybox
// Dockerfile, its layer cache and its image on one TLS registry behind a proxy adding 10 ms each way
// (bench/registry-latency.ts): on loopback a round trip is nearly free, in CI each costs what the
// network makes it. Each tool builds once cold (filling its own cache repository), then rebuilds with
// nothing changed, REPETITIONS rounds, alternating. kiln runs on the host (chroot isolation); with
// KANIKO_IMAGE (a kaniko debug image in the docker engine), kaniko and kiln's own image run as a
// GitLab job runs them: a fresh container each, the registry's CA added as GitLab's docs add one.
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pushBusyboxImage } from '../test/helpers/base-images.js';
import { dockerEnv, kiln, runCommand, type CommandResult } from '../test/helpers/exec.js';
import { buildKilnTestImage } from '../test/helpers/kiln-image.js';
import { startRegistry } from '../test/helpers/registry.js';
import { ensureDocker, markdownTable, median, REPETITIONS, timed, writeResults } from './common.js';
import { delayingProxy } from './registry-latency.js';
import { prepareWarmWorkload } from './workloads.js';

const TIMEOUT_MS = 300_000;
const KILN_IMAGE = 'kiln-bench/kiln:debug';
/** Issue #8: a warm rebuild at most 0.25x kaniko's. */
const TARGET = 0.25;

interface Tool { id: string; build(image: string, cacheRepo: string): Promise<void>; }
interface Run { tool: string; round: number; seconds: number; connections: number; }

function check(what: string, r: CommandResult): void {
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}):\n${(r.stderr + r.stdout).slice(-3000)}`);
}

export async function remoteSuite(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-bench-remote-'));
  const registry = await startRegistry('tls');
  const proxy = await delayingProxy(registry.host);
  const kanikoImage = process.env.KANIKO_IMAGE;
  const docker = kanikoImage ? await ensureDocker() : undefined;
  try {
    await pushBusyboxImage(registry, 'base/busybox', '1', 'oci');
    const ctx = join(dir, 'ctx');
    await mkdir(ctx, { recursive: true });
    await prepareWarmWorkload(ctx, `${proxy.host}/base/busybox:1`);
    const inContainer = (id: string, image: string): Tool => ({
      id,
      async build(target, cacheRepo) {
        const name = `kiln-bench-${randomBytes(4).toString('hex')}`;
        try {
          check(id, await runCommand('docker', ['run', '--rm', '--name', name, '--network', 'host', '-v', `${ctx}:/workspace`,
            '-v', `${registry.caFile!}:/kaniko/ssl/certs/additional-ca-cert-bundle.crt:ro`, image,
            '--context', 'dir:///workspace', '--dockerfile', '/workspace/Dockerfile', '--destination', target,
            '--cache', '--cache-repo', cacheRepo, '-v', 'warn'], { env: dockerEnv(), timeoutMs: TIMEOUT_MS }));
        } finally {
          await runCommand('docker', ['rm', '-f', name], { env: dockerEnv() }).catch(() => undefined);
        }
      },
    });
    const tools: Tool[] = [{
      id: 'kiln',
      async build(target, cacheRepo) {
        check('kiln', await kiln(['executor', '-c', ctx, '-d', target, '--cache', '--cache-repo', cacheRepo,
          '--registry-certificate', `${proxy.host}=${registry.caFile!}`, '-v', 'warn'], { timeoutMs: TIMEOUT_MS }));
      },
    }];
    if (kanikoImage) {
      await buildKilnTestImage(dir, KILN_IMAGE);
      tools.push(inContainer('kiln-image', KILN_IMAGE), inContainer('kaniko', kanikoImage));
    } else {
      console.log('kaniko and kiln\'s image skipped: set KANIKO_IMAGE to a kaniko debug image loaded into the docker engine');
    }
    const target = (tool: Tool): [string, string] => [`${proxy.host}/bench-remote/${tool.id}:1`, `${proxy.host}/bench-remote/${tool.id}-cache`];
    for (const tool of tools) await tool.build(...target(tool)); // cold: fills the tool's cache
    const runs: Run[] = [];
    for (let round = 0; round < REPETITIONS; round++) {
      for (let t = 0; t < tools.length; t++) {
        const tool = tools[(t + round) % tools.length]!;
        const before = proxy.connections;
        const seconds = await timed(() => tool.build(...target(tool)));
        runs.push({ tool: tool.id, round, seconds, connections: proxy.connections - before });
        console.log(`  round ${round + 1}/${REPETITIONS} ${tool.id}: ${seconds.toFixed(2)} s, ${proxy.connections - before} connections`);
      }
    }
    const of = (id: string, key: 'seconds' | 'connections'): number => median(runs.filter((r) => r.tool === id).map((r) => r[key]));
    const kaniko = kanikoImage ? of('kaniko', 'seconds') : undefined;
    const rows = tools.map((tool) => ({
      tool: tool.id, seconds: of(tool.id, 'seconds'), connections: of(tool.id, 'connections'),
      vsKaniko: kaniko && tool.id !== 'kaniko' ? of(tool.id, 'seconds') / kaniko : undefined,
    }));
    console.log(`\n### Warm 10-step rebuild, cache and image on a TLS registry 20 ms away (median of ${REPETITIONS})\n`);
    console.log(markdownTable(['tool', 'wall', 'connections', '/kaniko'], rows.map((r) => [r.tool, `${r.seconds.toFixed(2)} s`, String(r.connections), r.vsKaniko?.toFixed(2) ?? '—'])));
    for (const r of rows.filter((x) => x.vsKaniko !== undefined)) {
      console.log(`target: warm, ${r.tool}/kaniko <= ${TARGET}: ${r.vsKaniko!.toFixed(2)}, ${r.vsKaniko! <= TARGET ? 'met' : 'NOT met'}`);
    }
    console.log(`results: ${await writeResults('remote', { repetitions: REPETITIONS, delayMsEachWay: 10, rows, runs })}`);
  } finally {
    await proxy.close();
    await registry.stop();
    await docker?.release();
    await rm(dir, { recursive: true, force: true });
  }
}
