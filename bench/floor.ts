// The floor of a workload: what no builder can skip. GNU tar unpacks the base image's layers and the
// workload's RUN command runs in a plain chroot of them: no pull (the layers are fetched untimed
// first), no snapshot, no layer, no push. A target ratio below floor/peer cannot be met by any tool,
// and the workloads suite says so. Only single-stage workloads whose Dockerfile is FROM, ARGs and
// one RUN have a floor; the others are skipped.
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mustRun } from '../test/helpers/exec.js';
import { measured } from './common.js';
import type { BuildTool } from './workload-tools.js';

interface FloorRecipe { base: string; env: string[]; run: string; }

/** FROM, ARG K=V lines and one RUN: anything else (COPY, stages, USER...) has no floor here. */
export function floorRecipe(dockerfile: string): FloorRecipe | undefined {
  const lines = dockerfile.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const from = /^FROM\s+(\S+)$/i.exec(lines[0] ?? '');
  const run = /^RUN\s+(.+)$/i.exec(lines.at(-1) ?? '');
  if (!from || !run || lines.length < 2) return undefined;
  const env: string[] = [];
  for (const line of lines.slice(1, -1)) {
    const arg = /^ARG\s+([A-Za-z_][A-Za-z0-9_]*=\S*)$/i.exec(line);
    if (!arg) return undefined;
    env.push(arg[1]!);
  }
  return { base: from[1]!, env, run: run[1]! };
}

// $1: the root; $2: the RUN command; the rest: the layers, bottom first. In its own mount namespace,
// so nothing stays mounted when it ends, whatever happens.
const SCRIPT = `set -e
root=$1; run=$2; shift 2
for layer in "$@"; do tar -xf "$layer" -C "$root"; done
mkdir -p "$root/proc" "$root/dev" "$root/tmp" "$root/etc"
rm -f "$root/etc/resolv.conf"; cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"; mount --rbind /dev "$root/dev"; mount -t tmpfs tmpfs "$root/tmp"
exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot "$root" /bin/sh -c "$run"`;

const shellQuote = (value: string): string => `'${value.replace(/'/g, `'\\''`)}'`;

/** The base's layer files, fetched once per base with skopeo into an OCI layout (untimed). */
async function layersOf(base: string, dir: string, known: Map<string, string[]>): Promise<string[]> {
  const cached = known.get(base);
  if (cached) return cached;
  const layout = join(dir, `layout-${known.size}`);
  await mustRun('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${base}`, `oci:${layout}:base`], { timeoutMs: 600_000 });
  const blob = (digest: string): string => join(layout, 'blobs', ...digest.split(':'));
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const manifest = JSON.parse(await readFile(blob(index.manifests[0]!.digest), 'utf8')) as { layers: { digest: string }[] };
  const layers = manifest.layers.map((l) => blob(l.digest));
  known.set(base, layers);
  return layers;
}

export function floorTool(): BuildTool & { dispose(): Promise<void> } {
  let dir: string | undefined;
  const known = new Map<string, string[]>();
  return {
    id: 'floor', name: 'floor (tar + chroot RUN)',
    async build({ ctx }) {
      const recipe = floorRecipe(await readFile(join(ctx, 'Dockerfile'), 'utf8'));
      if (!recipe) return undefined;
      dir ??= await mkdtemp(join(tmpdir(), 'kiln-bench-floor-'));
      const layers = await layersOf(recipe.base, dir, known);
      const root = join(dir, 'root');
      await mkdir(root);
      try {
        // An ARG is in the RUN's environment, as in a build.
        const exports = recipe.env.map((e) => { const at = e.indexOf('='); return `export ${e.slice(0, at)}=${shellQuote(e.slice(at + 1))}; `; }).join('');
        const args = ['--mount', '--propagation', 'private', 'sh', '-c', SCRIPT, 'floor', root, exports + recipe.run, ...layers];
        const { result, usage } = await measured('unshare', args, { timeoutMs: 1_800_000 });
        if (result.code !== 0) throw new Error(`the floor of ${ctx} failed (${result.code}):\n${(result.stderr + result.stdout).slice(-4000)}`);
        return { usage };
      } finally {
        await mustRun('rm', ['-rf', '--one-file-system', root], { timeoutMs: 600_000 });
      }
    },
    async dispose() {
      if (dir) await rm(dir, { recursive: true, force: true });
    },
  };
}
