// RUN --mount, --network and --secret (BuildKit's semantics, which docker's legacy builder cannot
// run): kiln builds on a busybox base from the test registry in chroot isolation, then the image is
// loaded and run under docker, and its layers, config and history are read back from an OCI layout.
// Container isolation runs inside kiln's own image.
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { useBaseFixture } from '../helpers/fixture.js';
import { docker, dockerEnv, kiln, mustRun, runCommand, type CommandResult } from '../helpers/exec.js';
import { dockerImageTree, type Tree } from '../helpers/image-tree.js';
import { buildKilnTestImage } from '../helpers/kiln-image.js';

const fixture = useBaseFixture('run-mount', { image: 'busybox', format: 'oci' });
const SECRET = 'kiln-s3cr3t-value-4711';
const ENV_SECRET = 'kiln-env-s3cr3t-0815';

interface Built {
  result: CommandResult;
  tag: string;
  layout: string;
}

let counter = 0;

/** Builds `lines` (after FROM base) in a fresh context; `files` are context files. */
async function build(lines: string[], options: { files?: Record<string, string>; args?: string[]; env?: NodeJS.ProcessEnv; ctx?: string } = {}): Promise<Built> {
  const n = counter++;
  const ctx = options.ctx ?? join(fixture.dir, `ctx${n}`);
  await mkdir(ctx, { recursive: true });
  for (const [name, content] of Object.entries(options.files ?? {})) {
    await mkdir(join(ctx, name, '..'), { recursive: true });
    await writeFile(join(ctx, name), content);
  }
  await writeFile(join(ctx, 'Dockerfile'), lines.map((l) => l.replaceAll('BASE', fixture.base)).join('\n') + '\n');
  const tag = `kiln-test/run-mount-${n}:latest`;
  const layout = join(fixture.dir, `layout${n}`);
  const tar = join(fixture.dir, `image${n}.tar`);
  const result = await kiln(['executor', '-c', ctx, '--no-push', '-d', tag, '--tar-path', tar, '--oci-layout-path', layout,
    '--cache-dir', join(fixture.dir, 'cache'), ...(options.args ?? [])], { env: { ...process.env, ...options.env }, timeoutMs: 180_000 });
  if (result.code === 0) await docker(['load', '-q', '-i', tar]);
  await rm(tar, { force: true });
  return { result, tag, layout };
}

async function runImage(tag: string, command: string): Promise<string> {
  return docker(['run', '--rm', '--network', 'none', tag, 'sh', '-c', command]);
}

/** Every blob of the layout (layers uncompressed), as text. */
async function layoutText(layout: string): Promise<string> {
  const blobs = join(layout, 'blobs', 'sha256');
  const texts: string[] = [];
  for (const name of await readdir(blobs)) {
    const data = await readFile(join(blobs, name));
    texts.push((data[0] === 0x1f && data[1] === 0x8b ? gunzipSync(data) : data).toString('latin1'));
  }
  return texts.join('\n');
}

/** The entry names of each layer of the layout's image, bottom first. */
async function layerPaths(layout: string): Promise<string[][]> {
  const blob = (digest: string): string => join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length));
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const manifest = JSON.parse(await readFile(blob(index.manifests[0]!.digest), 'utf8')) as { layers: { digest: string }[] };
  const out: string[][] = [];
  for (const layer of manifest.layers) out.push((await mustRun('tar', ['-tzf', blob(layer.digest)])).split('\n').filter((l) => l !== '').map((l) => l.replace(/\/$/, '')));
  return out;
}

const userPaths = (tree: Tree): string[] => Object.keys(tree).filter((p) => !/^(proc|sys|dev|etc\/(hosts|hostname|resolv\.conf|mtab)|\.dockerenv)(\/|$)/.test(p));

describe('RUN --mount in chroot isolation', () => {
  const cleanup: string[] = [];
  after(async () => {
    for (const tag of cleanup) await docker(['rmi', tag]).catch(() => undefined);
  });

  it('keeps a cache mount between builds and out of the image, and leaves no mount stub behind', async () => {
    const lines = ['FROM BASE', 'RUN --mount=type=cache,target=/root/.cache/kiln,id=kiln-test-cache echo run >> /root/.cache/kiln/log && cat /root/.cache/kiln/log > /seen'];
    const first = await build(lines);
    assert.equal(first.result.code, 0, first.result.stderr);
    const second = await build(lines);
    assert.equal(second.result.code, 0, second.result.stderr);
    cleanup.push(first.tag, second.tag);
    assert.equal(await runImage(first.tag, 'cat /seen'), 'run\n');
    assert.equal(await runImage(second.tag, 'cat /seen'), 'run\nrun\n');
    const tree = await dockerImageTree(second.tag);
    assert.ok(!userPaths(tree).some((p) => p.startsWith('root/.cache')), 'the cache mount (or its stub) is in the image');
    // The step's layer holds its one file: not the stub, nor its parent /root (BuildKit removes empty stubs too).
    assert.deepEqual((await layerPaths(second.layout)).at(-1), ['seen']);
  });

  it('mounts a secret file and an env secret that reach no layer, config, history or log', async () => {
    const secretFile = join(fixture.dir, 'token.txt');
    await writeFile(secretFile, SECRET);
    const built = await build([
      'FROM BASE',
      // (the Dockerfile is history text: it must not hold the value, so the step records a digest of it)
      'RUN --mount=type=secret,id=token busybox sha256sum < /run/secrets/token > /sum && wc -c < /run/secrets/token > /len && stat -c %a /run/secrets/token > /mode',
      'RUN --mount=type=secret,id=token,target=/etc/app/token,mode=0444,uid=1000 --mount=type=secret,id=envtok,env=TOKEN,required '
        + 'echo ${#TOKEN} > /envlen && stat -c "%a %u" /etc/app/token > /custom && test ! -e /run/secrets/envtok',
      'RUN --mount=type=secret,id=absent,required=false test ! -e /run/secrets/absent && echo skipped > /absent',
    ], { args: ['--secret', `id=token,src=${secretFile}`, '--secret', 'id=envtok,env=KILN_TEST_ENV_SECRET', '-v', 'debug'], env: { KILN_TEST_ENV_SECRET: ENV_SECRET } });
    assert.equal(built.result.code, 0, built.result.stderr);
    cleanup.push(built.tag);
    const sum = createHash('sha256').update(SECRET).digest('hex');
    assert.equal(await runImage(built.tag, 'cat /sum /len /mode /envlen /custom /absent'), `${sum}  -\n${SECRET.length}\n400\n${ENV_SECRET.length}\n444 1000\nskipped\n`);
    const tree = await dockerImageTree(built.tag);
    assert.ok(!userPaths(tree).some((p) => p.startsWith('run') || p.startsWith('etc/app')), 'a secret target (or its stub) is in the image');
    const everything = await layoutText(built.layout);
    for (const value of [SECRET, ENV_SECRET]) {
      assert.ok(!everything.includes(value), 'a secret is in a layer or the config');
      assert.ok(!(built.result.stdout + built.result.stderr).includes(value), 'a secret is in the log');
      assert.ok(!(await docker(['history', '--no-trunc', built.tag])).includes(value), 'a secret is in the history');
    }
  });

  it('keeps every kind of mount and its stubs out of the layer on a plain directory root too (the walk, KILN_OVERLAY=0)', async () => {
    const secretFile = join(fixture.dir, 'walk-token');
    await writeFile(secretFile, SECRET);
    const built = await build([
      'FROM BASE',
      'RUN mkdir -p /var/cache/app && echo image > /var/cache/app/kept',
      'RUN --mount=type=cache,target=/var/cache/app --mount=type=secret,id=t --mount=type=tmpfs,target=/home/app/tmp --mount=type=bind,source=in,target=/opt/in '
        + 'echo c > /var/cache/app/new && test ! -e /var/cache/app/kept && cat /opt/in/x /run/secrets/t > /dev/null && touch /home/app/tmp/t && echo done > /done',
    ], { files: { 'in/x': 'x\n' }, args: ['--secret', `id=t,src=${secretFile}`], env: { KILN_OVERLAY: '0' } });
    assert.equal(built.result.code, 0, built.result.stderr);
    assert.match(built.result.stderr, /RUN snapshots compare the whole tree/);
    cleanup.push(built.tag);
    assert.deepEqual((await layerPaths(built.layout)).at(-1), ['done']);
    assert.equal(await runImage(built.tag, 'cat /done /var/cache/app/kept && ls -A /var/cache/app && ls -A /home/app'), 'done\nimage\nkept\n');
  });

  it('fails on a required secret that was not given, naming the line', async () => {
    const built = await build(['FROM BASE', 'RUN true', 'RUN --mount=type=secret,id=missing,required=true true']);
    assert.notEqual(built.result.code, 0);
    assert.match(built.result.stderr, /Dockerfile:3\b.*secret missing is required but was not given/);
  });

  it('binds from the context (read-only, .dockerignore applied) and from a stage (rw writes discarded), out of the image', async () => {
    const built = await build([
      'FROM BASE AS tools',
      'RUN mkdir -p /out && echo tool > /out/t',
      'FROM BASE',
      'RUN --mount=type=bind,source=data,target=/mnt/data cat /mnt/data/a.txt > /from-context && test ! -e /mnt/data/ignored.txt && ! touch /mnt/data/new 2>/dev/null',
      'RUN --mount=target=/ctx cat /ctx/data/a.txt > /whole-context',
      'RUN --mount=type=bind,from=tools,source=/out,target=/tools cat /tools/t > /from-stage',
      'RUN --mount=type=bind,from=tools,source=/out,target=/tools,rw echo changed > /tools/t && touch /tools/new',
      'RUN --mount=type=bind,from=tools,source=/out,target=/tools cat /tools/t > /after-rw && test ! -e /tools/new',
      'RUN --mount=type=bind,from=BASE,source=/etc/passwd,target=/etc/base-passwd grep -c : /etc/base-passwd > /from-image',
      'RUN --mount=type=cache,id=seeded,from=tools,source=/out,target=/seeded cat /seeded/t > /from-seed',
    ], { files: { 'data/a.txt': 'from the context\n', 'data/ignored.txt': 'ignored\n', '.dockerignore': 'data/ignored.txt\n' } });
    assert.equal(built.result.code, 0, built.result.stderr);
    cleanup.push(built.tag);
    assert.equal(await runImage(built.tag, 'cat /from-context /whole-context /from-stage /after-rw /from-image /from-seed'), 'from the context\nfrom the context\ntool\ntool\n2\ntool\n');
    const tree = await dockerImageTree(built.tag);
    assert.ok(!userPaths(tree).some((p) => /^(mnt|ctx|tools|seeded|etc\/base-passwd)(\/|$)/.test(p)), 'a bind target is in the image');
  });

  it('mounts an empty tmpfs that is discarded', async () => {
    const built = await build([
      'FROM BASE',
      'RUN --mount=type=tmpfs,target=/scratch,size=1m echo x > /scratch/f && grep " /scratch tmpfs " /proc/mounts > /mounted',
      'RUN --mount=type=tmpfs,target=/scratch test -z "$(ls -A /scratch)" && echo empty > /empty',
    ]);
    assert.equal(built.result.code, 0, built.result.stderr);
    cleanup.push(built.tag);
    assert.match(await runImage(built.tag, 'cat /mounted /empty'), /size=1024k.*\nempty\n$/);
    assert.ok(!userPaths(await dockerImageTree(built.tag)).some((p) => p.startsWith('scratch')));
  });

  it('--network=none cuts a step off a 127.0.0.1 listener that the default network reaches', async () => {
    const server: Server = createServer((_, res) => res.end('hello\n'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const url = `http://127.0.0.1:${port}/`;
      const built = await build([
        'FROM BASE',
        `RUN busybox wget -q -O /default ${url}`,
        `RUN --network=none ! busybox wget -q -O /dev/null ${url} && echo refused > /none`,
        `RUN --network=host busybox wget -q -O /host ${url}`,
      ]);
      assert.equal(built.result.code, 0, built.result.stderr);
      cleanup.push(built.tag);
      assert.equal(await runImage(built.tag, 'cat /default /none /host'), 'hello\nrefused\nhello\n');
    } finally {
      server.close();
    }
  });

  it('refuses ssh mounts and --security=insecure, saying why', async () => {
    for (const flag of ['--mount=type=ssh', '--security=insecure']) {
      const built = await build(['FROM BASE', `RUN ${flag} true`]);
      assert.notEqual(built.result.code, 0);
      assert.match(built.result.stderr, /Dockerfile:2\b.*(not built yet in kiln|never runs a step with extra privileges)/);
    }
  });

  it('keys the layer cache by bind sources\' content, not by secret values or cache contents', async () => {
    const ctx = join(fixture.dir, 'keyed');
    const secretFile = join(fixture.dir, 'keyed-secret');
    const cacheRepo = `oci:${join(fixture.dir, 'layer-cache')}`;
    const lines = ['FROM BASE', 'RUN --mount=type=bind,source=in.txt,target=/in.txt --mount=type=secret,id=s --mount=type=cache,target=/c date >> /c/d && cat /in.txt > /out'];
    const go = async (input: string, secret: string): Promise<CommandResult> => {
      await writeFile(secretFile, secret);
      const built = await build(lines, { ctx, files: { 'in.txt': input }, args: ['--cache', '--cache-repo', cacheRepo, '--secret', `id=s,src=${secretFile}`] });
      await docker(['rmi', built.tag]).catch(() => undefined);
      return built.result;
    };
    const first = await go('one\n', 'first-secret-value');
    assert.equal(first.code, 0, first.stderr);
    const again = await go('one\n', 'second-secret-value');
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr + again.stdout, /Using caching version of cmd/);
    const changed = await go('two\n', 'second-secret-value');
    assert.equal(changed.code, 0, changed.stderr);
    assert.match(changed.stderr + changed.stdout, /No cached layer found for cmd/);
  });
});

describe('RUN --mount in container isolation (inside kiln\'s image)', () => {
  const KILN_IMAGE = 'kiln-test/run-mount-executor:latest';
  before(async () => {
    await buildKilnTestImage(fixture.dir, KILN_IMAGE);
  });
  after(async () => {
    await docker(['rmi', KILN_IMAGE]).catch(() => undefined);
  });

  it('mounts secrets and caches (emulated without mount(2)), keeping them out of the image', async () => {
    const ctx = join(fixture.dir, 'container');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'token'), SECRET);
    await writeFile(join(ctx, 'Dockerfile'), [
      `FROM ${fixture.base}`,
      'RUN mkdir -p /var/cache/app && echo image > /var/cache/app/kept',
      'RUN --mount=type=secret,id=token --mount=type=cache,target=/var/cache/app echo build >> /var/cache/app/log && cat /var/cache/app/log > /seen && test ! -e /var/cache/app/kept && wc -c < /run/secrets/token > /len',
      'RUN --mount=type=secret,id=token,env=TOKEN echo ${#TOKEN} > /envlen',
    ].join('\n') + '\n');
    const run = async (tag: string): Promise<CommandResult> => runCommand('docker', ['run', '--rm', '--network', 'host', '-v', `${ctx}:/workspace`,
      '-v', `${join(fixture.dir, 'container-cache')}:/cache`, KILN_IMAGE, '--context=dir:///workspace', '--secret', 'id=token,src=/workspace/token',
      `--destination=${fixture.registry.host}/out/${tag}:latest`], { env: dockerEnv(), timeoutMs: 180_000 });
    const first = await run('mount1');
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /RUN steps use container isolation/);
    const second = await run('mount2');
    assert.equal(second.code, 0, second.stderr);
    assert.ok(!(first.stdout + first.stderr + second.stdout + second.stderr).includes(SECRET), 'the secret is in the log');
    const image = `${fixture.registry.host}/out/mount2:latest`;
    await docker(['pull', '-q', image]);
    try {
      assert.equal(await runImage(image, 'cat /seen /len /envlen /var/cache/app/kept'), `build\nbuild\n${SECRET.length}\n${SECRET.length}\nimage\n`);
      const tree = await dockerImageTree(image);
      assert.ok(!userPaths(tree).some((p) => p.startsWith('run') || p === 'var/cache/app/log' || p.startsWith('kaniko') || p.startsWith('cache')), 'a mount leaked into the image');
      assert.ok(!(await docker(['history', '--no-trunc', image])).includes(SECRET));
    } finally {
      await docker(['rmi', image]).catch(() => undefined);
    }
  });

  const containerBuild = async (name: string, lines: string[], dockerArgs: string[] = []): Promise<{ result: CommandResult; image: string }> => {
    const ctx = join(fixture.dir, name);
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'Dockerfile'), [`FROM ${fixture.base}`, ...lines].join('\n') + '\n');
    const image = `${fixture.registry.host}/out/${name}:latest`;
    const result = await runCommand('docker', ['run', '--rm', '--network', 'host', ...dockerArgs, '-v', `${ctx}:/workspace`, KILN_IMAGE,
      '--context=dir:///workspace', `--destination=${image}`], { env: dockerEnv(), timeoutMs: 180_000 });
    return { result, image };
  };

  it('refuses --network=none clearly where the container allows no network namespace', async () => {
    const { result } = await containerBuild('nonet', ['RUN --network=none true']);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /Dockerfile:2: RUN could not start: RUN --network=none needs a new network namespace/);
  });

  it('mounts for real, and cuts the network, where the container may (CAP_SYS_ADMIN)', async () => {
    const { result, image } = await containerBuild('privileged', [
      'RUN --mount=type=tmpfs,target=/scratch --mount=type=bind,target=/ctx grep -q " /scratch tmpfs " /proc/mounts && grep -q " /ctx " /proc/mounts && test -e /ctx/Dockerfile && echo mounted > /mounted',
      // Only lo (down: docker gives no CAP_NET_ADMIN), where the container has its own eth0 too.
      'RUN --network=none test "$(cat /proc/net/dev | tail -n +3 | wc -l)" = 1 && grep -q "^ *lo:" /proc/net/dev && echo isolated > /isolated',
    ], ['--cap-add', 'SYS_ADMIN', '--security-opt', 'seccomp=unconfined', '--security-opt', 'apparmor=unconfined']);
    assert.equal(result.code, 0, result.stderr);
    await docker(['pull', '-q', image]);
    try {
      assert.equal(await runImage(image, 'cat /mounted /isolated'), 'mounted\nisolated\n');
      assert.ok(!userPaths(await dockerImageTree(image)).some((p) => /^(scratch|ctx)(\/|$)/.test(p)));
    } finally {
      await docker(['rmi', image]).catch(() => undefined);
    }
  });
});
