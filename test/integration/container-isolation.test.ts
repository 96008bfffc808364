// Container isolation, kaniko's model, always inside a container (never on the host): kiln runs in
// its own image with "/" as the build root, builds a multi-stage Dockerfile with RUN steps on a
// busybox base, and pushes; the image must match `docker build` and hold nothing of kiln's.
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { docker, dockerEnv, kiln, runCommand } from '../helpers/exec.js';
import { dockerImageTree } from '../helpers/image-tree.js';
import { startGitHttpServer } from '../helpers/git-http-server.js';
import { createTestRepo } from '../helpers/git-repo.js';
import { createTestCa } from '../helpers/test-ca.js';
import { buildKilnTestImage } from '../helpers/kiln-image.js';
import { pushBusyboxImage } from '../helpers/base-images.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';

const KILN_IMAGE = 'kiln-test/executor:latest';
let registry: TestRegistry;
let base: string;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-container-'));
  registry = await startRegistry('http');
  await pushBusyboxImage(registry, 'base/busybox', 'latest', 'oci');
  base = `${registry.host}/base/busybox:latest`;
  await docker(['pull', '-q', base]);
  await buildKilnTestImage(dir, KILN_IMAGE);
});
after(async () => {
  await docker(['rmi', KILN_IMAGE]).catch(() => undefined);
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('container isolation', () => {
  it('builds a multi-stage Dockerfile with RUN inside kiln\'s image, as docker build does', async () => {
    const ctx = join(dir, 'project');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'app.txt'), 'from the context\n');
    await writeFile(join(ctx, 'Dockerfile'), [
      `FROM ${base} AS first`,
      'RUN echo first > /first && rm -rf /home/app',
      `FROM ${base}`,
      'COPY app.txt /app/',
      'RUN test ! -e /first && test -d /home/app && echo final > /final && ln -s /final /final-link && ln /final /final-hard && chmod 4755 /final',
      'RUN rm -rf /home && mkdir -p /var/lib/data && echo data > /var/lib/data/x && cat /app/app.txt > /app/copy.txt',
      'USER app',
      'RUN id > /tmp/id',
      // What a step writes under a VOLUME declared before it is left out (kaniko; Docker's builder too).
      'USER root',
      'VOLUME /var/lib/data',
      'RUN echo lost > /var/lib/data/x && echo new > /var/lib/data/new && echo kept > /kept',
      'USER app',
    ].join('\n') + '\n');
    const target = `${registry.host}/out/container:latest`;
    const run = await runCommand('docker', ['run', '--rm', '--network', 'host', '-v', `${ctx}:/workspace`, KILN_IMAGE, '--context=dir:///workspace', `--destination=${target}`], { env: dockerEnv() });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /RUN steps use container isolation/);
    await docker(['pull', '-q', target]);
    const dockerTag = 'kiln-test/container-docker:latest';
    await docker(['build', '-q', '--network', 'host', '-t', dockerTag, ctx]);
    try {
      const [kTree, dTree] = await Promise.all([dockerImageTree(target), dockerImageTree(dockerTag)]);
      assert.ok(!Object.keys(kTree).some((p) => p === 'kaniko' || p.startsWith('kaniko/') || p.startsWith('workspace')), 'kiln\'s own files leaked into the image');
      assert.deepEqual(kTree, dTree);
      assert.equal(await docker(['run', '--rm', target, 'cat', '/final', '/app/copy.txt', '/tmp/id', '/var/lib/data/x', '/kept']), 'final\nfrom the context\nuid=1000(app) gid=1000(app) groups=1000(app)\ndata\nkept\n');
      assert.ok(!('var/lib/data/new' in kTree));
    } finally {
      await docker(['rmi', target, dockerTag]);
    }
  });

  it('applies a multi-layer base onto "/" as it downloads: a big layer, whiteouts and an opaque directory', async () => {
    // The base: three layers made by docker build (the busybox one, a 3 MB one, one that deletes).
    const baseCtx = join(dir, 'layered-base');
    await mkdir(baseCtx, { recursive: true });
    await writeFile(join(baseCtx, 'Dockerfile'), [
      `FROM ${base}`,
      'RUN head -c 3000000 /dev/urandom > /big.bin && mkdir -p /opt/keep && echo keep > /opt/keep/a && echo gone > /opt/keep/b',
      'RUN rm /opt/keep/b && rm -rf /home/app && mkdir /home/app && echo fresh > /home/app/new',
    ].join('\n') + '\n');
    const layered = `${registry.host}/base/layered:latest`;
    await docker(['build', '-q', '--network', 'host', '-t', layered, baseCtx]);
    await docker(['push', '-q', layered]);
    const ctx = join(dir, 'layered');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'Dockerfile'), [
      `FROM ${layered}`,
      'RUN test ! -e /opt/keep/b && test "$(ls -A /home/app)" = new && md5sum /big.bin > /big.md5 && echo run > /opt/keep/c',
    ].join('\n') + '\n');
    const target = `${registry.host}/out/layered:latest`;
    // Without the layer cache the stage's base is applied while the stage starts; with it (all
    // misses here) when the first RUN needs the root, which then downloads the layers.
    const cachedTarget = `${registry.host}/out/layered-cache:latest`;
    for (const [dest, extra] of [[target, []], [cachedTarget, ['--cache=true', `--cache-repo=${registry.host}/out/layered-cache/cache`]]] as const) {
      const run = await runCommand('docker', ['run', '--rm', '--network', 'host', '-v', `${ctx}:/workspace`, KILN_IMAGE, '--context=dir:///workspace',
        `--destination=${dest}`, ...extra, '-v', 'debug'], { env: dockerEnv() });
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stderr.match(/Applying layer sha256:\w+ to \/ for the stage's first RUN/g)?.length, 3, run.stderr);
      await docker(['pull', '-q', dest]);
    }
    const dockerTag = 'kiln-test/layered-docker:latest';
    await docker(['build', '-q', '--network', 'host', '-t', dockerTag, ctx]);
    try {
      const [kTree, cTree, dTree] = await Promise.all([dockerImageTree(target), dockerImageTree(cachedTarget), dockerImageTree(dockerTag)]);
      assert.deepEqual(kTree, dTree);
      assert.deepEqual(cTree, dTree);
      assert.equal(await docker(['run', '--rm', target, 'cat', '/big.md5']), await docker(['run', '--rm', layered, 'sh', '-c', 'md5sum /big.bin']));
    } finally {
      await docker(['rmi', target, cachedTarget, dockerTag, layered]);
    }
  });

  it('runs a #! heredoc from /dev/pipes, which stays out of the image', async () => {
    const ctx = join(dir, 'script');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'Dockerfile'), `FROM ${base}\nRUN <<EOF\n#!/bin/sh -e\necho "in container $0" > /s\nEOF\n`);
    const target = `${registry.host}/out/script:latest`;
    const run = await runCommand('docker', ['run', '--rm', '--network', 'host', '-v', `${ctx}:/workspace`, KILN_IMAGE, '--context=dir:///workspace', `--destination=${target}`], { env: dockerEnv() });
    assert.equal(run.code, 0, run.stderr);
    await docker(['pull', '-q', target]);
    try {
      assert.equal(await docker(['run', '--rm', target, 'cat', '/s']), 'in container /dev/pipes/EOF\n');
      assert.ok(!Object.keys(await dockerImageTree(target)).some((p) => p.includes('pipes')));
    } finally {
      await docker(['rmi', target]);
    }
  });

  it('--cleanup leaves the container as it found it', async () => {
    const ctx = join(dir, 'cleanup');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'Dockerfile'), `FROM ${base}\nRUN echo x > /made-by-run\n`);
    const changes = async (extra: string[]): Promise<string> => {
      const id = (await docker(['create', '--network', 'host', '-v', `${ctx}:/workspace`, KILN_IMAGE, '--context=dir:///workspace', '--no-push', ...extra])).trim();
      try {
        const run = await runCommand('docker', ['start', '-a', id], { env: dockerEnv() });
        assert.equal(run.code, 0, run.stderr);
        return await docker(['diff', id]);
      } finally {
        await docker(['rm', id]);
      }
    };
    assert.match(await changes([]), /^A \/made-by-run$/m, 'without --cleanup the build root keeps the build');
    const cleaned = await changes(['--cleanup']);
    assert.doesNotMatch(cleaned, /made-by-run|^A \/bin/m);
  });

  it('builds from a git:// context and ADDs a git repository with the git in kiln\'s image', async () => {
    const repos = join(dir, 'repos');
    await mkdir(repos, { recursive: true });
    const server = await startGitHttpServer(repos);
    const ca = await createTestCa(dir);
    const secure = await startGitHttpServer(repos, await ca.issue([], ['127.0.0.1']));
    try {
      const lib = await createTestRepo(repos, 'lib');
      await lib.commit({ 'lib.txt': 'from the lib repository\n' }, 'lib');
      const app = await createTestRepo(repos, 'app');
      await app.commit({
        'app.txt': 'from the git context\n',
        'Dockerfile': `FROM ${base}\nCOPY app.txt /app/\nADD ${server.url}/lib.git#main /lib/\nRUN cat /app/app.txt /lib/lib.txt > /app/both\n`,
      }, 'app');
      const target = `${registry.host}/out/git:latest`;
      // kaniko's git:// context goes over https, or over http with GIT_PULL_METHOD=http.
      const run = await runCommand('docker', ['run', '--rm', '--network', 'host', '-e', 'GIT_PULL_METHOD=http', KILN_IMAGE,
        `--context=git://${server.host}/app.git#refs/heads/main`, `--destination=${target}`], { env: dockerEnv() });
      assert.equal(run.code, 0, run.stderr);
      await docker(['pull', '-q', target]);
      try {
        assert.equal(await docker(['run', '--rm', target, 'cat', '/app/both']), 'from the git context\nfrom the lib repository\n');
      } finally {
        await docker(['rmi', target]);
      }
      // kaniko's default: git:// over https, with a CA added as GitLab's docs add one to kaniko's image.
      const overHttps = await runCommand('docker', ['run', '--rm', '--network', 'host', '-v', `${ca.caFile}:/kaniko/ssl/certs/additional-ca-cert-bundle.crt:ro`,
        KILN_IMAGE, `--context=git://${secure.host}/app.git#refs/heads/main`, '--no-push'], { env: dockerEnv() });
      assert.equal(overHttps.code, 0, overHttps.stderr);
    } finally {
      await Promise.all([server.stop(), secure.stop()]);
    }
  });

  it('is refused on a host where kiln does not run from its own directory', async () => {
    const ctx = join(dir, 'refused');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'Dockerfile'), 'FROM scratch\nRUN ["/nothing"]\n');
    const r = await kiln(['executor', '-c', ctx, '--no-push', '--isolation=container']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /container isolation makes "\/" the build root/);
  });
});
