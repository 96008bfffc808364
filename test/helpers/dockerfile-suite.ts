// The data-driven Dockerfile comparison suite: each case is a directory under test/data/dockerfile-suite/
// with a Dockerfile, an optional context/ directory and an optional case.json (the CaseJson fields
// below; expected-output.txt beside it for cases docker cannot build). A case is built by kiln
// (chroot isolation, on the host) and by `docker build` (legacy builder) from the same base images, and
// the two images' config and merged file trees must be equal. Base images are named in Dockerfiles by
// tokens (@BUSYBOX@, @DEBIAN@, @NODE@, @REGISTRY@) that the suite replaces before building.
import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';
import { chmod, cp, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { docker, kiln } from './exec.js';
import { dockerImageTree, type Tree, type TreeEntry } from './image-tree.js';

export interface SuiteCase {
  name: string;
  /** The case's directory in test/data/dockerfile-suite. */
  dir: string;
  /** The Dockerfile's path in the built context (default "Dockerfile"); the case's Dockerfile is written there. */
  dockerfile: string;
  buildArgs: string[];
  target?: string;
  /** Empty directories to make in the context (git keeps none). */
  mkdir: string[];
  /** Modes to set on context paths before building (git keeps only the executable bit). */
  chmod: Record<string, string>;
  /** Pushed by kiln to @REGISTRY@/suite/<name>:latest, for later cases to build FROM (published cases run first). */
  publish: boolean;
  /** A command run as root in both images (a string goes through `sh -c`, an array is exec'd); outputs must match. */
  check?: string | string[];
  /** Regular expressions of paths whose content (not metadata) may differ between two builds. */
  volatile: RegExp[];
  /** A known divergence of kiln from Docker that is not fixed yet: the case is skipped with this reason. */
  knownDivergence?: string;
  /**
   * The test dockerd's legacy builder lacks the feature (heredocs, ...): kiln's image alone is checked,
   * `check` must print expected-output.txt.
   */
  dockerUnsupported?: string;
  /**
   * Where the legacy builder differs from BuildKit and kiln follows BuildKit: Docker's tree entries are
   * patched with these BuildKit values before comparing (null removes the entry; config keys are
   * replaced whole), so the case still asserts everything else and kiln's value at these.
   */
  buildkitDiffers?: { reason: string; tree?: Record<string, Partial<TreeEntry> | null>; config?: Record<string, unknown> };
}

interface CaseJson {
  dockerfile?: string;
  buildArgs?: string[];
  target?: string;
  mkdir?: string[];
  chmod?: Record<string, string>;
  publish?: boolean;
  check?: string | string[];
  volatile?: string[];
  knownDivergence?: string;
  dockerUnsupported?: string;
  buildkitDiffers?: SuiteCase['buildkitDiffers'];
}

/** Every case under root, published ones first, then by name. */
export async function loadSuiteCases(root: string): Promise<SuiteCase[]> {
  const cases: SuiteCase[] = [];
  for (const name of (await readdir(root)).sort()) {
    const dir = join(root, name);
    if (!existsSync(join(dir, 'Dockerfile'))) continue;
    const json = existsSync(join(dir, 'case.json')) ? JSON.parse(await readFile(join(dir, 'case.json'), 'utf8')) as CaseJson : {};
    cases.push({
      name, dir,
      dockerfile: json.dockerfile ?? 'Dockerfile',
      buildArgs: json.buildArgs ?? [],
      target: json.target,
      mkdir: json.mkdir ?? [],
      chmod: json.chmod ?? {},
      publish: json.publish ?? false,
      check: json.check,
      volatile: (json.volatile ?? []).map((v) => new RegExp(v)),
      knownDivergence: json.knownDivergence,
      dockerUnsupported: json.dockerUnsupported,
      buildkitDiffers: json.buildkitDiffers,
    });
  }
  return cases.sort((a, b) => Number(b.publish) - Number(a.publish));
}

/** Copies the case's context to workDir/<name> and writes its Dockerfile with the tokens replaced. */
export async function prepareContext(c: SuiteCase, workDir: string, tokens: Record<string, string>): Promise<string> {
  const ctx = join(workDir, c.name);
  await mkdir(ctx, { recursive: true });
  if (existsSync(join(c.dir, 'context'))) await cp(join(c.dir, 'context'), ctx, { recursive: true, verbatimSymlinks: true });
  let text = await readFile(join(c.dir, 'Dockerfile'), 'utf8');
  for (const [token, value] of Object.entries(tokens)) text = text.replaceAll(token, value);
  const unknown = /@[A-Z]+@/.exec(text);
  if (unknown) throw new Error(`${c.name}/Dockerfile: unknown token ${unknown[0]}`);
  await mkdir(dirname(join(ctx, c.dockerfile)), { recursive: true });
  await writeFile(join(ctx, c.dockerfile), text);
  for (const path of c.mkdir) await mkdir(join(ctx, path), { recursive: true });
  for (const [path, mode] of Object.entries(c.chmod)) await chmod(join(ctx, path), parseInt(mode, 8));
  return ctx;
}

const CONFIG_KEYS = ['Env', 'Cmd', 'Entrypoint', 'WorkingDir', 'User', 'Labels', 'ExposedPorts', 'Volumes',
  'Healthcheck', 'StopSignal', 'Shell', 'OnBuild'] as const;

function buildFlags(c: SuiteCase, ctx: string): string[] {
  return [...c.buildArgs.flatMap((a) => ['--build-arg', a]), ...(c.target ? ['--target', c.target] : []), '-f', join(ctx, c.dockerfile)];
}

/** Builds with kiln into the test dockerd as tag (also pushed there when `push`); fails with kiln's stderr. */
export async function kilnBuild(c: SuiteCase, ctx: string, tag: string, tarPath: string, push: boolean): Promise<void> {
  const r = await kiln(['executor', '-c', ctx, ...buildFlags(c, ctx), '-d', tag, '--tar-path', tarPath, ...(push ? [] : ['--no-push'])],
    { timeoutMs: 600_000 });
  assert.equal(r.code, 0, `kiln build of ${c.name} failed:\n${r.stderr}`);
  await docker(['load', '-q', '-i', tarPath]);
  await rm(tarPath, { force: true });
}

export async function dockerBuild(c: SuiteCase, ctx: string, tag: string): Promise<void> {
  // --no-cache: cases build two at a time, and the legacy builder would reuse another case's
  // intermediate image for an identical step, which that case's `docker rmi` may delete mid-build
  // ("unable to find image sha256:…", seen once in CI).
  await docker(['build', '-q', '--no-cache', '--network', 'host', '-t', tag, ...buildFlags(c, ctx), ctx], { timeoutMs: 600_000 });
}

/** Output of c.check in a fresh container of image. */
export async function runCheck(c: SuiteCase, image: string): Promise<string> {
  const argv = typeof c.check === 'string' ? ['sh', '-c', c.check] : c.check!;
  return docker(['run', '--rm', '--network', 'host', '--user', '0', '--entrypoint', argv[0]!, image, ...argv.slice(1)]);
}

function comparableTree(tree: Tree, volatile: RegExp[]): Tree {
  const out: Tree = {};
  for (const [path, entry] of Object.entries(tree)) {
    if (!volatile.some((v) => v.test(path))) {
      out[path] = entry;
      continue;
    }
    const { sha256: _hash, ...rest } = entry;
    out[path] = { ...rest, size: -1 };
  }
  return out;
}

/** Docker's tree with the BuildKit values where the legacy builder is known to differ. */
function asBuildkitWouldHave(tree: Tree, c: SuiteCase): Tree {
  const out = { ...tree };
  for (const [path, patch] of Object.entries(c.buildkitDiffers?.tree ?? {})) {
    assert.ok(out[path], `${path} is missing from docker's image: the buildkitDiffers entry of ${c.name} is stale`);
    if (patch === null) delete out[path];
    else out[path] = { ...out[path], ...patch };
  }
  return out;
}

/** Config (the keys above) and merged file trees of the two images must be equal; then the check's output. */
export async function compareImages(c: SuiteCase, kilnTag: string, dockerTag: string): Promise<void> {
  const config = async (tag: string): Promise<Record<string, unknown>> =>
    (JSON.parse(await docker(['image', 'inspect', tag])) as { Config: Record<string, unknown> }[])[0]!.Config;
  const [k, dockers] = await Promise.all([config(kilnTag), config(dockerTag)]);
  const d = { ...dockers, ...c.buildkitDiffers?.config };
  for (const key of CONFIG_KEYS) assert.deepEqual(k[key] ?? null, d[key] ?? null, `${c.name}: Config.${key}`);
  const [kTree, dTree] = await Promise.all([dockerImageTree(kilnTag), dockerImageTree(dockerTag)]);
  assert.deepEqual(comparableTree(kTree, c.volatile), comparableTree(asBuildkitWouldHave(dTree, c), c.volatile), `${c.name}: file trees differ`);
  if (c.check) {
    const [kOut, dOut] = await Promise.all([runCheck(c, kilnTag), runCheck(c, dockerTag)]);
    assert.equal(kOut, dOut, `${c.name}: the check's output differs`);
  }
}
