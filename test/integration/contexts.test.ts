// Build contexts in kaniko's syntax: the same Dockerfile built from a directory, a tar.gz (tar://),
// a plain tar on standard input (tar://stdin) and a git repository (git://, served over smart HTTP by
// `git http-backend`, which kaniko's git:// reaches with GIT_PULL_METHOD=http) gives the same layers
// in the registry; --context-sub-path, --git branch= and kaniko's #ref#commit pick what is built;
// .dockerignore is case-sensitive and "COPY ../x" means "x", as in BuildKit.
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { kiln, mustRun, type CommandResult } from '../helpers/exec.js';
import { useBaseFixture } from '../helpers/fixture.js';
import { startGitHttpServer, type GitHttpServer } from '../helpers/git-http-server.js';
import { createTestRepo } from '../helpers/git-repo.js';
import { kilnBin } from '../helpers/paths.js';
import { httpRequest } from '../helpers/registry.js';

const fx = useBaseFixture('contexts', { image: 'busybox', format: 'oci' });

const DOCKERFILE = `ARG BASE
FROM \${BASE}
COPY app /app/
COPY ../top.txt /top.txt
COPY Readme.md /
`;
const FILES: Record<string, string> = {
  'app/main.sh': '#!/bin/sh\necho main\n',
  'app/lib/util.sh': 'util\n',
  'top.txt': 'top\n',
  'Readme.md': 'kept: .dockerignore says README.md, and matching is case-sensitive\n',
  '.dockerignore': '.git\nREADME.md\napp/lib/*.tmp\n',
  'app/lib/scratch.tmp': 'ignored\n',
  'sub/Dockerfile': 'ARG BASE\nFROM ${BASE}\nCOPY only.txt /\n',
  'sub/only.txt': 'only in sub\n',
};

/** The manifest's layer digests and its config's labels, read from the registry. */
async function pushed(repository: string): Promise<{ layers: string[]; labels: Record<string, string> }> {
  const accept = 'application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json';
  const manifest = await httpRequest(`${fx.registry.url}/v2/${repository}/manifests/1`, { headers: { accept } });
  assert.equal(manifest.status, 200, `${repository}: ${manifest.body.toString()}`);
  const m = JSON.parse(manifest.body.toString()) as { layers: { digest: string }[]; config: { digest: string } };
  const config = await httpRequest(`${fx.registry.url}/v2/${repository}/blobs/${m.config.digest}`);
  const labels = (JSON.parse(config.body.toString()) as { config: { Labels?: Record<string, string> } }).config.Labels ?? {};
  return { layers: m.layers.map((l) => l.digest), labels };
}

/** kiln with a file on standard input (runCommand's input is text; a tar is bytes). */
function kilnWithStdin(args: string[], file: string): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(kilnBin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
    createReadStream(file).pipe(child.stdin).on('error', () => undefined);
  });
}

describe('build contexts', () => {
  let ctx: string;
  let gitServer: GitHttpServer;
  let gitHost: string;
  const commits: Record<string, string> = {};
  const gitEnv = (): NodeJS.ProcessEnv => ({ ...process.env, GIT_PULL_METHOD: 'http' });
  const build = (context: string, repository: string, extra: string[] = [], env?: NodeJS.ProcessEnv): Promise<CommandResult> =>
    kiln(['executor', '-c', context, '-d', `${fx.registry.host}/${repository}:1`, '--build-arg', `BASE=${fx.base}`, ...extra], env ? { env } : {});

  before(async () => {
    ctx = join(fx.dir, 'ctx');
    for (const [path, content] of Object.entries({ ...FILES, Dockerfile: DOCKERFILE })) {
      await mkdir(join(ctx, path, '..'), { recursive: true });
      await writeFile(join(ctx, path), content);
    }
    await mustRun('chmod', ['0755', join(ctx, 'app/main.sh')]);
    await mustRun('tar', ['-C', ctx, '-czf', join(fx.dir, 'ctx.tar.gz'), '.']);
    await mustRun('tar', ['-C', ctx, '-cf', join(fx.dir, 'ctx.tar'), '.']);
    const repos = join(fx.dir, 'repos');
    await mkdir(repos, { recursive: true });
    const repo = await createTestRepo(repos, 'ctx');
    commits.first = await repo.commit({ ...FILES, Dockerfile: DOCKERFILE + 'LABEL version=1\n' }, 'first', ['app/main.sh']);
    commits.second = await repo.commit({ Dockerfile: DOCKERFILE }, 'second');
    await repo.branch('feature');
    commits.feature = await repo.commit({ Dockerfile: DOCKERFILE + 'LABEL branch=feature\n' }, 'feature');
    gitServer = await startGitHttpServer(repos);
    gitHost = gitServer.host;
  });
  after(async () => { await gitServer?.stop(); });

  it('a directory, a tar.gz, a plain tar on stdin and (with --reproducible) a git repository give the same layers', async () => {
    for (const [context, repository] of [[ctx, 'ctx/dir'], [`tar://${join(fx.dir, 'ctx.tar.gz')}`, 'ctx/targz']] as const) {
      const r = await build(context, repository);
      assert.equal(r.code, 0, r.stderr);
    }
    const stdin = await kilnWithStdin(['executor', '-c', 'tar://stdin', '-d', `${fx.registry.host}/ctx/stdin:1`, '--build-arg', `BASE=${fx.base}`], join(fx.dir, 'ctx.tar'));
    assert.equal(stdin.code, 0, stdin.stderr);
    const [dir, targz, fromStdin] = await Promise.all(['ctx/dir', 'ctx/targz', 'ctx/stdin'].map(pushed));
    assert.deepEqual(targz!.layers, dir!.layers);
    assert.deepEqual(fromStdin!.layers, dir!.layers);
    // A checkout's files have the checkout's time (as BuildKit's and kaniko's): only --reproducible,
    // which drops every time, makes a git context's layers comparable with a directory's.
    const reproducible = ['--reproducible'];
    assert.equal((await build(ctx, 'ctx/dir-r', reproducible)).code, 0);
    const viaGit = await build(`git://${gitHost}/ctx.git#refs/heads/main`, 'ctx/git-r', reproducible, gitEnv());
    assert.equal(viaGit.code, 0, viaGit.stderr);
    assert.deepEqual((await pushed('ctx/git-r')).layers, (await pushed('ctx/dir-r')).layers);
  });

  it('git contexts: --git branch=, kaniko\'s #ref#commit, --context-sub-path with the Dockerfile found inside', async () => {
    const branch = await build(`git://${gitHost}/ctx.git`, 'ctx/git-branch', ['--git', 'branch=feature,single-branch=true'], gitEnv());
    assert.equal(branch.code, 0, branch.stderr);
    assert.equal((await pushed('ctx/git-branch')).labels['branch'], 'feature');
    const commit = await build(`git://${gitHost}/ctx.git#refs/heads/main#${commits.first}`, 'ctx/git-commit', [], gitEnv());
    assert.equal(commit.code, 0, commit.stderr);
    assert.equal((await pushed('ctx/git-commit')).labels['version'], '1');
    const sub = await build(`git://${gitHost}/ctx.git`, 'ctx/git-sub', ['--context-sub-path', 'sub', '--reproducible'], gitEnv());
    assert.equal(sub.code, 0, sub.stderr);
    const subDir = await build(join(ctx, 'sub'), 'ctx/dir-sub', ['--reproducible']);
    assert.equal(subDir.code, 0, subDir.stderr);
    assert.deepEqual((await pushed('ctx/git-sub')).layers, (await pushed('ctx/dir-sub')).layers);
    const subTar = await build(`tar://${join(fx.dir, 'ctx.tar.gz')}`, 'ctx/tar-sub', ['--context-sub-path', 'sub', '--reproducible']);
    assert.equal(subTar.code, 0, subTar.stderr);
    assert.deepEqual((await pushed('ctx/tar-sub')).layers, (await pushed('ctx/dir-sub')).layers);
  });

  it('refuses what it cannot fetch, in one line', async () => {
    const s3 = await build('s3://bucket/ctx.tar.gz', 'ctx/s3');
    assert.equal(s3.code, 1);
    assert.match(s3.stderr, /S3, GCS and Azure Blob Storage contexts are not built yet in kiln/);
    const missingBranch = await build(`git://${gitHost}/ctx.git`, 'ctx/nobranch', ['--git', 'branch=nope'], gitEnv());
    assert.equal(missingBranch.code, 1);
    assert.match(missingBranch.stderr, /build context git:\/\/127\.0\.0\.1:\d+\/ctx\.git: fetching "nope" of http:\/\/127\.0\.0\.1:\d+\/ctx\.git failed/);
    const badGit = await build(`git://${gitHost}/ctx.git`, 'ctx/badgit', ['--git', 'branch'], gitEnv());
    assert.match(badGit.stderr, /invalid git flag, must be in the key=value format: branch/);
    const missingSub = await build(`tar://${join(fx.dir, 'ctx.tar.gz')}`, 'ctx/nosub', ['--context-sub-path', 'nope']);
    assert.match(missingSub.stderr, /--context-sub-path nope: no such directory in the context/);
  });
});
