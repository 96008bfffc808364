// Runs one RUN step's process through kiln-sandbox and reports its exit code.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { constants } from 'node:os';
import { sandboxBinary } from './sandbox-binary.js';
import { canMount, emulateMounts, mountsInPlace, sandboxArgs, stubLayer, type MountSetup, type StepMount } from './step-mounts.js';

export type { StepMount } from './step-mounts.js';

/** The process a RUN step starts, fully resolved (Docker's semantics are applied by the caller). */
export interface StepProcess {
  argv: string[];
  /** KEY=VALUE, exactly the step's environment. */
  env: string[];
  /** Absolute, inside the root. */
  cwd: string;
  uid: number;
  gid: number;
  /** Supplementary groups. */
  groups: number[];
  /** Files the step sees under /dev (a RUN heredoc script at /dev/pipes/NAME), outside its layer; mode 0755. */
  files?: { target: string; content: string }[];
  /** RUN --mount: mounts the step sees and its layer never holds. */
  mounts?: StepMount[];
  /** RUN --network=none: a network namespace of its own with only loopback. */
  noNetwork?: boolean;
  /** Files to hold an exclusive lock on while the step runs (cache mounts with sharing=locked). */
  locks?: string[];
}

/** Where the step runs: chroot isolation (namespaces + chroot) or in place (container isolation). */
export type SandboxPlacement =
  | {
    kind: 'chroot';
    /** The directory that becomes "/" (the overlay mount point when `overlay` is given). */
    root: string;
    /** overlayfs mount data; paths in it are relative to `workDir`. */
    overlay?: string;
    workDir: string;
    /** Host files bind-mounted on /etc/hosts and /etc/resolv.conf. */
    hostsFile: string;
    resolvFile: string;
    hostname: string;
    /** Filled in: in-image directories whose times kiln moved (a walk compares them without times). */
    touched?: string[];
  }
  | { kind: 'container'; touched?: string[] };

export class SandboxSetupError extends Error {}

/** Exit code of the step (128+N when killed by signal N); throws when the sandbox itself failed. */
export async function runStepProcess(step: StepProcess, where: SandboxPlacement): Promise<number> {
  const placed: string[] = [];
  const mounts = step.mounts?.length ? await setUpMounts(step.mounts, where) : undefined;
  try {
    where.touched?.push(...mounts?.setup.touched ?? []);
    return await runPlaced(step, where, placed, mounts);
  } finally {
    await Promise.all(placed.map((f) => rm(f, { force: true })));
    await mounts?.setup.undo();
  }
}

/** Mount targets made where snapshots never see them, and how the sandbox mounts them. */
async function setUpMounts(mounts: StepMount[], where: SandboxPlacement): Promise<{ setup: MountSetup; overlay?: string }> {
  if (where.kind === 'container') return { setup: await (await canMount() ? mountsInPlace(mounts, '/') : emulateMounts(mounts)) };
  if (!where.overlay) return { setup: await mountsInPlace(mounts, where.root) };
  const layer = await stubLayer(mounts, where.overlay, where.workDir);
  return { overlay: layer.overlay, setup: { args: sandboxArgs(mounts), touched: [], undo: () => rm(layer.dir, { recursive: true, force: true }) } };
}

async function runPlaced(step: StepProcess, where: SandboxPlacement, placed: string[], mounts?: { setup: MountSetup; overlay?: string }): Promise<number> {
  const args = ['run'];
  if (where.kind === 'chroot') {
    args.push('--namespaces', '--root', where.root, '--proc', '--dev', '--sys', '--hostname', where.hostname);
    args.push('--bind', `${where.hostsFile}:etc/hosts`, '--bind', `${where.resolvFile}:etc/resolv.conf`);
    const overlay = mounts?.overlay ?? where.overlay;
    if (overlay) args.push('--overlay', overlay);
  }
  args.push(...mounts?.setup.args ?? []);
  if (step.noNetwork) args.push('--no-network');
  for (const lock of step.locks ?? []) args.push('--lock', lock);
  for (const file of step.files ?? []) {
    if (!file.target.startsWith('/dev/')) throw new Error(`internal error: step file ${file.target} is not under /dev`);
    // chroot: a file of kiln's, bound into the step's own /dev tmpfs. container: "/" is the build root,
    // and its /dev is a mount point the snapshot never looks into.
    const host = where.kind === 'chroot' ? join(where.workDir, `heredoc-${randomBytes(6).toString('hex')}`) : file.target;
    if (where.kind === 'container') await mkdir(dirname(host), { recursive: true });
    await writeFile(host, file.content, { mode: 0o755 });
    placed.push(host);
    if (where.kind === 'chroot') args.push('--file', `${host}:${file.target.slice(1)}`);
  }
  args.push('--cwd', step.cwd, '--uid', String(step.uid), '--gid', String(step.gid));
  if (step.groups.length) args.push('--groups', step.groups.join(','));
  args.push('--', ...step.argv);
  const env: Record<string, string> = {};
  for (const kv of step.env) {
    const eq = kv.indexOf('=');
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const child = spawn(sandboxBinary(), args, {
    env, cwd: where.kind === 'chroot' ? where.workDir : '/', stdio: ['ignore', 'inherit', 'pipe'],
  });
  // The step's stderr goes to kiln's; the sandbox's own last words are kept to explain a failure.
  let tail = '';
  child.stderr.on('data', (chunk: Buffer) => {
    process.stderr.write(chunk);
    tail = (tail + chunk.toString('utf8')).slice(-4096);
  });
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c, signal) => resolve(c ?? 128 + (signal ? constants.signals[signal] : 0)));
  });
  if (code === 125) {
    const line = tail.split('\n').reverse().find((l) => l.startsWith('kiln-sandbox: '));
    if (line) throw new SandboxSetupError(line.slice('kiln-sandbox: '.length));
  }
  return code;
}
