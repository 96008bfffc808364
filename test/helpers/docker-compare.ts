// Builds one Dockerfile with kiln and with `docker build` (legacy builder) and compares the two
// images: runtime config, merged file tree, and optionally the output of a command run in both.
import { strict as assert } from 'node:assert';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { docker, kiln } from './exec.js';
import { dockerImageTree, type Tree } from './image-tree.js';

export interface CompareCase {
  name: string;
  dockerfile: string;
  buildArgs?: string[];
  /** Extra kiln flags. */
  kilnArgs?: string[];
  /** Environment for kiln. */
  kilnEnv?: NodeJS.ProcessEnv;
  /** A shell command run in both images (as root); the outputs must match, `ls -l` dates aside. */
  check?: string;
  /** Context files (path → content). */
  files?: Record<string, string>;
  /** Paths whose content is expected to differ between two builds (logs, caches with times in them). */
  volatile?: (path: string) => boolean;
}

const CONFIG_KEYS = ['Env', 'Cmd', 'Entrypoint', 'WorkingDir', 'User', 'ExposedPorts', 'Volumes', 'Labels', 'Shell'] as const;

export async function compareWithDocker(c: CompareCase, workDir: string): Promise<void> {
  const ctx = join(workDir, c.name);
  await mkdir(ctx, { recursive: true });
  await writeFile(join(ctx, 'Dockerfile'), c.dockerfile);
  for (const [path, content] of Object.entries(c.files ?? {})) {
    await mkdir(join(ctx, path, '..'), { recursive: true });
    await writeFile(join(ctx, path), content);
  }
  const args = (c.buildArgs ?? []).flatMap((a) => ['--build-arg', a]);
  const kilnTag = `kiln-compare/${c.name}:kiln`;
  const dockerTag = `kiln-compare/${c.name}:docker`;
  const tar = join(workDir, `${c.name}.tar`);
  const r = await kiln(['executor', '-c', ctx, '--no-push', '-d', kilnTag, '--tar-path', tar, ...args, ...(c.kilnArgs ?? [])], { env: { ...process.env, ...c.kilnEnv } });
  assert.equal(r.code, 0, r.stderr);
  await docker(['load', '-i', tar]);
  await docker(['build', '-q', '--network', 'host', '-t', dockerTag, ...args, ctx]);
  try {
    const [k, d] = await Promise.all([kilnTag, dockerTag].map(async (t) => JSON.parse(await docker(['image', 'inspect', t]))[0]));
    for (const key of CONFIG_KEYS) assert.deepEqual(k.Config[key] ?? null, d.Config[key] ?? null, `Config.${key}`);
    const [kTree, dTree] = await Promise.all([dockerImageTree(kilnTag), dockerImageTree(dockerTag)]);
    assert.deepEqual(comparable(kTree, c.volatile), comparable(dTree, c.volatile));
    if (c.check) {
      const run = (tag: string): Promise<string> => docker(['run', '--rm', '--network', 'host', '--user', '0', tag, 'sh', '-c', c.check!]);
      const [kOut, dOut] = await Promise.all([run(kilnTag), run(dockerTag)]);
      const undated = (s: string): string => s.replace(/\s+\w{3} +\d+ +[\d:]+ /g, ' ');
      assert.equal(undated(kOut), undated(dOut));
    }
  } finally {
    await docker(['rmi', kilnTag, dockerTag]);
  }
}

function comparable(tree: Tree, volatile?: (path: string) => boolean): Tree {
  if (!volatile) return tree;
  const out: Tree = {};
  for (const [path, entry] of Object.entries(tree)) {
    if (!volatile(path)) {
      out[path] = entry;
      continue;
    }
    const { sha256: _hash, ...rest } = entry;
    out[path] = { ...rest, size: -1 };
  }
  return out;
}
