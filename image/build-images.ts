// `npm run image`: kiln's executor images, built by kiln itself (FROM scratch + COPY), laid out as
// kaniko's so a GitLab job only changes its `image:` line: /kaniko/executor, /kaniko/warmer,
// /kaniko/.docker/, /kaniko/ssl/certs/ca-certificates.crt. Node.js, the libraries it links with and
// their dynamic loader live under /kaniko too, so kiln keeps running after a build in container
// isolation has replaced /lib, /usr and /etc. The debug image adds busybox at /busybox.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, cp, link, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const BUSYBOX = '/bin/busybox';
const ZSTD = '/usr/bin/zstd';
const CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
const GIT = '/usr/bin/git';
const GIT_REMOTE_HTTP = '/usr/lib/git-core/git-remote-http';
const PATCHELF = '/usr/bin/patchelf';

export interface KilnImage {
  debug: boolean;
  /** Name the image gets in the archive, e.g. kiln:debug. */
  tag: string;
  /** Where the docker-archive is written. */
  tarPath: string;
}

function run(file: string, args: string[], cwd = repoRoot): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${file} ${args.join(' ')} exited ${code}:\n${err}`))));
  });
}

/** Every library `program` links with, under the name the loader looks for, and the loader as ld.so. */
async function copyLibraries(program: string, libDir: string): Promise<void> {
  for (const line of (await run('ldd', [program])).split('\n')) {
    const linked = /^\s*(\S+)\s+=>\s+(\/\S+)/.exec(line);
    const loader = /^\s*(\/\S+)\s+\(/.exec(line);
    if (linked) await copyFile(linked[2]!, join(libDir, basename(linked[1]!)));
    else if (loader) await copyFile(loader[1]!, join(libDir, 'ld.so'));
  }
}

/**
 * Debian's git, for git:// contexts and ADD of git repositories (kaniko's image has them through
 * go-git). git starts its own helpers (git-remote-http for http and https, itself for index-pack),
 * so unlike node and zstd it cannot be started through lib/ld.so: patchelf points its interpreter
 * and library path at /kaniko/lib instead. GIT_EXEC_PATH (the image's ENV) names /kaniko/git-core.
 * Not there: ssh remotes (no ssh) and submodules (git-submodule is a shell script, and the image has no /bin/sh).
 */
async function addGit(kaniko: string): Promise<void> {
  for (const needed of [GIT, GIT_REMOTE_HTTP, PATCHELF]) {
    if (!existsSync(needed)) throw new Error(`kiln's image needs ${needed}: apt-get install git patchelf (scripts/test.sh installs both)`);
  }
  const core = join(kaniko, 'git-core');
  // An empty template directory: git init copies nothing, and does not warn that /usr/share/git-core is missing.
  await mkdir(join(core, 'templates'), { recursive: true });
  for (const [program, name] of [[GIT, 'git'], [GIT_REMOTE_HTTP, 'git-remote-http']] as const) {
    const copy = join(core, name);
    await copyFile(program, copy);
    await copyLibraries(program, join(kaniko, 'lib'));
    // RPATH rather than RUNPATH: it also serves the libraries' own dependencies (libcurl's).
    await run(PATCHELF, ['--set-interpreter', '/kaniko/lib/ld.so', '--force-rpath', '--set-rpath', '/kaniko/lib', copy]);
  }
  await link(join(core, 'git-remote-http'), join(core, 'git-remote-https'));
  await symlink('git-core/git', join(kaniko, 'git'));
}

/**
 * Whether a file of an npm package is needed when kiln runs. Native addons (fs-xattr, zstd-napi)
 * keep their sources and compiler output next to the loaded binding; only build/Release/*.node counts.
 */
function neededAtRunTime(packageDir: string, path: string): boolean {
  const inPackage = relative(packageDir, path);
  if (inPackage.startsWith('node_modules/')) return false; // nested packages are copied on their own
  if (!existsSync(join(packageDir, 'binding.gyp'))) return true;
  const [top, release, file] = inPackage.split('/');
  if (top === 'deps' || top === 'src' || top === 'binding.gyp') return false;
  if (top !== 'build') return true;
  return release === undefined || (release === 'Release' && (file === undefined || file.endsWith('.node')));
}

/** The files of the image, under ctx/kaniko (and ctx/busybox for debug), and its Dockerfile. */
async function prepareContext(ctx: string, debug: boolean): Promise<void> {
  const kaniko = join(ctx, 'kaniko');
  await mkdir(join(kaniko, 'lib'), { recursive: true });
  // Node.js, and Debian's zstd for --compression=zstd and zstd base layers (src/layer/zstd.ts starts
  // it through lib/ld.so as kiln-launch starts node), each with the libraries it links with.
  for (const [program, name] of [[process.execPath, 'node'], [ZSTD, 'zstd']] as const) {
    await copyFile(program, join(kaniko, name));
    await copyLibraries(program, join(kaniko, 'lib'));
  }
  for (const command of ['executor', 'warmer']) await copyFile(join(repoRoot, 'dist', 'native', 'kiln-launch'), join(kaniko, command));
  const app = join(kaniko, 'kiln');
  await mkdir(app, { recursive: true });
  await copyFile(join(repoRoot, 'package.json'), join(app, 'package.json'));
  await cp(join(repoRoot, 'dist', 'src'), join(app, 'dist', 'src'), { recursive: true });
  await mkdir(join(app, 'dist', 'native'), { recursive: true });
  await copyFile(join(repoRoot, 'dist', 'native', 'kiln-sandbox'), join(app, 'dist', 'native', 'kiln-sandbox'));
  const production = (await run('npm', ['ls', '--omit=dev', '--all', '--parseable'])).split('\n').filter((p) => p.includes('node_modules'));
  for (const dir of production) await cp(dir, join(app, relative(repoRoot, dir)), { recursive: true, filter: (path) => neededAtRunTime(dir, path) });
  await addGit(kaniko);
  await mkdir(join(kaniko, '.docker'), { recursive: true });
  await mkdir(join(kaniko, 'ssl', 'certs'), { recursive: true });
  await copyFile(CA_BUNDLE, join(kaniko, 'ssl', 'certs', 'ca-certificates.crt'));
  const path = ['/usr/local/bin', '/kaniko', ...(debug ? ['/busybox'] : [])].join(':');
  const lines = ['FROM scratch', 'COPY kaniko /kaniko'];
  if (debug) {
    const busybox = join(ctx, 'busybox');
    await mkdir(busybox);
    await copyFile(BUSYBOX, join(busybox, 'busybox'));
    await chmod(join(busybox, 'busybox'), 0o755);
    for (const applet of (await run(BUSYBOX, ['--list'])).split('\n').filter(Boolean)) {
      if (applet !== 'busybox') await symlink('busybox', join(busybox, applet));
    }
    // kaniko's debug image: a volume is a mount point, so container isolation never touches it.
    lines.push('COPY busybox /busybox', 'VOLUME /busybox');
  }
  lines.push(
    `ENV PATH=${path} HOME=/root USER=root SSL_CERT_DIR=/kaniko/ssl/certs DOCKER_CONFIG=/kaniko/.docker/ KILN_ISOLATION=container`
      + ' GIT_EXEC_PATH=/kaniko/git-core GIT_TEMPLATE_DIR=/kaniko/git-core/templates',
    'WORKDIR /workspace',
    'ENTRYPOINT ["/kaniko/executor"]',
  );
  await writeFile(join(ctx, 'Dockerfile'), lines.join('\n') + '\n');
}

/** Builds one image with kiln (bin/kiln, already built) into a docker-archive. */
export async function buildKilnImage(image: KilnImage): Promise<void> {
  const ctx = await mkdtemp(join(tmpdir(), 'kiln-image-'));
  try {
    await prepareContext(ctx, image.debug);
    await run(join(repoRoot, 'bin', 'kiln'), ['executor', '--context', ctx, '--no-push', '--destination', image.tag, '--tar-path', image.tarPath, '--reproducible', '-v', 'warn']);
  } finally {
    await rm(ctx, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const version = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')).version as string;
  for (const [debug, tag, file] of [[false, 'kiln:latest', 'kiln.tar'], [true, 'kiln:debug', 'kiln-debug.tar']] as const) {
    const tarPath = join(repoRoot, 'dist', file);
    await buildKilnImage({ debug, tag, tarPath });
    const { size } = await import('node:fs/promises').then((fs) => fs.stat(tarPath));
    console.log(`${tarPath}: ${tag} (kiln ${version}), ${(size / 1e6).toFixed(1)} MB compressed layers in a docker-archive`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exitCode = 1;
  });
}
