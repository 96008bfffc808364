// kiln against the real distribution registry: pull a base image made by the tests, build on top of
// it without RUN, push to one or more destinations, and read the result back with skopeo and umoci.
// Four setups: plain HTTP, TLS with a test CA, htpasswd basic auth, and token auth.
import { strict as assert } from 'node:assert';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { kiln, mustRun, runCommand } from '../helpers/exec.js';
import { pushBusyboxImage, } from '../helpers/base-images.js';
import { startRegistry, type RegistryMode, type TestRegistry } from '../helpers/registry.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';

let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'kiln-registry-build-')); });
after(async () => rm(dir, { recursive: true, force: true }));

/** Environment that lets kiln reach the registry the way a kaniko user would configure it. */
async function kilnEnvFor(registry: TestRegistry, name: string): Promise<NodeJS.ProcessEnv> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  const docker = join(dir, name, 'docker');
  await mkdir(docker, { recursive: true });
  env.DOCKER_CONFIG = docker;
  if (registry.username) await registry.writeDockerConfig(docker);
  if (registry.caFile) {
    // As GitLab users do: the CA appended to a bundle in kiln's certificate directory.
    const certs = join(dir, name, 'certs');
    await mkdir(certs, { recursive: true });
    await copyFile(registry.caFile, join(certs, 'additional-ca-cert-bundle.crt'));
    env.SSL_CERT_DIR = certs;
  }
  return env;
}

async function writeContext(name: string, dockerfile: string): Promise<string> {
  const ctx = join(dir, name, 'context');
  await mkdir(ctx, { recursive: true });
  await writeFile(join(ctx, 'Dockerfile'), dockerfile);
  await writeFile(join(ctx, 'hello.txt'), `hello from ${name}\n`);
  return ctx;
}

for (const mode of ['http', 'tls', 'htpasswd', 'token'] as RegistryMode[]) {
  describe(`build on a pulled base and push (${mode})`, () => {
    let registry: TestRegistry;
    before(async () => { registry = await startRegistry(mode); });
    after(async () => registry.stop());

    for (const format of ['v2s2', 'oci'] as const) {
      it(`FROM a ${format} base, pushed to two tags, read back with skopeo and umoci`, async () => {
        const name = `${mode}-${format}`;
        const baseDigest = await pushBusyboxImage(registry, 'base/busybox', format, format);
        const ctx = await writeContext(name, [
          `FROM ${registry.host}/base/busybox:${format}`,
          'COPY --chown=app:app hello.txt /home/app/hello.txt',
          'ENV GREETING=hi',
          'CMD ["/bin/sh", "-c", "cat /home/app/hello.txt"]',
        ].join('\n') + '\n');
        const env = await kilnEnvFor(registry, name);
        const digestFile = join(dir, name, 'digest');
        const r = await kiln([
          'executor', '-c', ctx, '-d', `${registry.host}/apps/${name}:1`, '-d', `${registry.host}/apps/${name}:latest`,
          '--digest-file', digestFile, '--image-name-tag-with-digest-file', join(dir, name, 'names'),
        ], { env });
        assert.equal(r.code, 0, r.stderr);
        const digest = await readFile(digestFile, 'utf8');
        assert.equal(await readFile(join(dir, name, 'names'), 'utf8'),
          `${registry.host}/apps/${name}:1@${digest}\n${registry.host}/apps/${name}:latest@${digest}\n`);

        const skopeo = registry.skopeoArgs('inspect');
        for (const tag of ['1', 'latest']) {
          const raw = await mustRun('skopeo', ['inspect', '--raw', ...skopeo, `docker://${registry.host}/apps/${name}:${tag}`]);
          assert.equal('sha256:' + createHash('sha256').update(raw).digest('hex'), digest, `tag ${tag}`);
        }
        const manifest = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', ...skopeo, `docker://${registry.host}/apps/${name}:1`]));
        const baseManifest = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', ...skopeo, `docker://${registry.host}/base/busybox@${baseDigest}`]));
        assert.equal(manifest.mediaType, baseManifest.mediaType, 'the image keeps its base image\'s media type family');
        assert.equal(manifest.layers.length, baseManifest.layers.length + 1);
        assert.deepEqual(manifest.layers.slice(0, -1), baseManifest.layers);
        const config = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', '--config', ...skopeo, `docker://${registry.host}/apps/${name}:1`]));
        assert.ok(config.config.Env.includes('GREETING=hi'));
        assert.deepEqual(config.config.Cmd, ['/bin/sh', '-c', 'cat /home/app/hello.txt']);

        const layout = join(dir, name, 'layout');
        await mustRun('skopeo', ['copy', ...registry.skopeoArgs('src'), `docker://${registry.host}/apps/${name}:1`, `oci:${layout}:1`]);
        const bundle = join(dir, name, 'bundle');
        await mustRun('umoci', ['unpack', '--image', `${layout}:1`, bundle]);
        assert.equal(await readFile(join(bundle, 'rootfs/home/app/hello.txt'), 'utf8'), `hello from ${name}\n`);
        const busybox = await readFile(join(bundle, 'rootfs/bin/busybox'));
        assert.ok(busybox.length > 100_000, 'the base image\'s busybox is in the image');
      });
    }
  });
}

describe('a metadata-only build on a base from another registry', () => {
  it('copies every base layer across and pushes a whole image', async () => {
    const [source, target] = await Promise.all([startRegistry('http'), startRegistry('http')]);
    try {
      await pushBusyboxImage(source, 'base/busybox', 'latest', 'v2s2');
      const ctx = await writeContext('metadata-only', `FROM ${source.host}/base/busybox\nLABEL only=metadata\n`);
      const r = await kiln(['executor', '-c', ctx, '-d', `${target.host}/apps/metadata:1`, '--digest-file', join(dir, 'metadata-only', 'digest')]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /Pushed 127\.0\.0\.1:\d+\/apps\/metadata@sha256:/);
      const copy = join(dir, 'metadata-only', 'copy');
      await mustRun('skopeo', ['copy', ...target.skopeoArgs('src'), `docker://${target.host}/apps/metadata:1`, `dir:${copy}`]);
      const raw = await readFile(join(copy, 'manifest.json'));
      assert.equal('sha256:' + createHash('sha256').update(raw).digest('hex'), await readFile(join(dir, 'metadata-only', 'digest'), 'utf8'));
    } finally {
      await Promise.all([source.stop(), target.stop()]);
    }
  });
});

describe('a CA given only through NODE_EXTRA_CA_CERTS', () => {
  it('is trusted, though bin/kiln keeps Node.js from parsing it at start-up', async () => {
    const registry = await startRegistry('tls');
    try {
      await pushBusyboxImage(registry, 'base/busybox', 'latest', 'oci');
      const ctx = await writeContext('extra-ca', `FROM ${registry.host}/base/busybox\nLABEL trusted=extra-ca\n`);
      const emptyCertDir = join(dir, 'extra-ca', 'no-certs');
      await mkdir(emptyCertDir, { recursive: true });
      const env: NodeJS.ProcessEnv = { ...process.env, SSL_CERT_DIR: emptyCertDir, DOCKER_CONFIG: join(dir, 'extra-ca') };
      delete env.SSL_CERT_FILE;
      delete env.NODE_EXTRA_CA_CERTS;
      const args = ['executor', '-c', ctx, '-d', `${registry.host}/apps/extra-ca:1`];
      const untrusted = await kiln(args, { env });
      assert.notEqual(untrusted.code, 0, 'without the CA the registry is not trusted');
      assert.match(untrusted.stderr, /certificate/i);
      const r = await kiln(args, { env: { ...env, NODE_EXTRA_CA_CERTS: registry.caFile } });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /Pushed 127\.0\.0\.1:\d+\/apps\/extra-ca@sha256:/);
    } finally {
      await registry.stop();
    }
  });
});

describe('uploads during the build', () => {
  it('sends the base and each finished layer of the target stage before the push, which then skips them', async () => {
    const [source, target] = await Promise.all([startRegistry('http'), startRegistry('http')]);
    try {
      await pushBusyboxImage(source, 'base/busybox', 'latest', 'oci');
      const ctx = await writeContext('early', [
        'FROM ' + source.host + '/base/busybox AS unrelated',
        'RUN echo not in the image > /unrelated.txt',
        `FROM ${source.host}/base/busybox`,
        'COPY hello.txt /hello.txt',
        'RUN sleep 1 && echo built > /built.txt',
      ].join('\n') + '\n');
      const digestFile = join(dir, 'early', 'digest');
      const r = await kiln(['executor', '-c', ctx, '-d', `${target.host}/apps/early:1`, '--digest-file', digestFile, '-v', 'debug']);
      assert.equal(r.code, 0, r.stderr);
      const pushing = r.stderr.indexOf('Pushing image to');
      assert.ok(pushing > 0, r.stderr);
      const early = [...r.stderr.slice(0, pushing).matchAll(/blob (sha256:[0-9a-f]{64}): uploaded to [^ ]+\/apps\/early while the image was built/g)].map((m) => m[1]);
      const layout = join(dir, 'early', 'layout');
      await mustRun('skopeo', ['copy', ...target.skopeoArgs('src'), `docker://${target.host}/apps/early:1`, `oci:${layout}:1`]);
      const manifest = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', `oci:${layout}:1`])) as { layers: { digest: string }[] };
      const [base, copied, run] = manifest.layers.map((l) => l.digest);
      // The base layer (downloaded for the RUN) and the COPY's layer went up while the RUN ran; the
      // RUN's own layer is the last, finished when the push begins.
      assert.deepEqual(early.sort(), [base, copied].sort(), `early uploads: ${early.join(', ')}`);
      assert.equal(manifest.layers.length, 3);
      for (const digest of [base, copied]) assert.match(r.stderr.slice(pushing), new RegExp(`blob ${digest}: uploaded while the image was built`));
      assert.match(r.stderr.slice(pushing), new RegExp(`blob ${run}: uploaded`));
      const raw = await mustRun('skopeo', ['inspect', '--raw', ...target.skopeoArgs('inspect'), `docker://${target.host}/apps/early:1`]);
      assert.equal('sha256:' + createHash('sha256').update(raw).digest('hex'), await readFile(digestFile, 'utf8'));
    } finally {
      await Promise.all([source.stop(), target.stop()]);
    }
  });

  it('streams the base of a stage that writes no files from its registry while the stage builds', async () => {
    const [source, target] = await Promise.all([startRegistry('http'), startRegistry('http')]);
    try {
      await pushBusyboxImage(source, 'base/busybox', 'latest', 'oci');
      const ctx = await writeContext('early-metadata', `FROM ${source.host}/base/busybox\nENV PROMOTED=1\nLABEL stage=metadata\n`);
      const digestFile = join(dir, 'early-metadata', 'digest');
      const r = await kiln(['executor', '-c', ctx, '-d', `${target.host}/apps/promoted:1`, '--digest-file', digestFile, '-v', 'debug']);
      assert.equal(r.code, 0, r.stderr);
      const raw = await mustRun('skopeo', ['inspect', '--raw', ...target.skopeoArgs('inspect'), `docker://${target.host}/apps/promoted:1`]);
      assert.equal('sha256:' + createHash('sha256').update(raw).digest('hex'), await readFile(digestFile, 'utf8'));
      const [base] = (JSON.parse(raw) as { layers: { digest: string }[] }).layers.map((l) => l.digest);
      // The push found the base layer already sent by the early upload, which read it from the source.
      assert.match(r.stderr, new RegExp(`blob ${base}: uploaded to [^ ]+/apps/promoted while the image was built`));
      assert.match(r.stderr, new RegExp(`blob ${base}: uploaded while the image was built`));
    } finally {
      await Promise.all([source.stop(), target.stop()]);
    }
  });

  it('starts streaming that base once its manifest is read, before its config arrives', async () => {
    const [source, target] = await Promise.all([startRegistry('http'), startRegistry('http')]);
    let proxy: FaultProxy | undefined;
    try {
      await pushBusyboxImage(source, 'base/busybox', 'latest', 'oci');
      const manifest = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', ...source.skopeoArgs('inspect'), `docker://${source.host}/base/busybox:latest`])) as { config: { digest: string }; layers: { digest: string }[] };
      const [layer] = manifest.layers.map((l) => l.digest);
      // The config's answer waits until the layer is asked for (10 s at most): a build that waited
      // for the config before streaming the layer would be held for the whole 10 s.
      proxy = await startFaultProxy(source.host, { every: 0, hold: { held: new RegExp(`/blobs/${manifest.config.digest}$`), until: new RegExp(`/blobs/${layer}$`), timeoutMs: 10_000 } });
      const ctx = await writeContext('relay-ahead', `FROM ${proxy.host}/base/busybox\nENV PROMOTED=1\n`);
      const r = await kiln(['executor', '-c', ctx, '-d', `${target.host}/apps/relayed:1`, '-v', 'debug']);
      assert.equal(r.code, 0, r.stderr);
      const config = proxy.log.find((e) => e.url.endsWith(`/blobs/${manifest.config.digest}`));
      assert.equal(config?.held, 'until-seen', proxy.log.map((e) => `${e.method} ${e.url} ${e.held ?? ''}`).join('\n'));
      assert.match(r.stderr, new RegExp(`blob ${layer}: uploaded to [^ ]+/apps/relayed while the image was built`));
      const pushed = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', ...target.skopeoArgs('inspect'), `docker://${target.host}/apps/relayed:1`])) as { layers: { digest: string }[] };
      assert.deepEqual(pushed.layers.map((l) => l.digest), [layer]);
    } finally {
      await Promise.all([source.stop(), target.stop(), proxy?.stop()]);
    }
  });

  it('runs the ONBUILD trigger of a base whose layers already went ahead, and pushes them with its layer', async () => {
    const [source, target] = await Promise.all([startRegistry('http'), startRegistry('http')]);
    try {
      await pushBusyboxImage(source, 'base/busybox', 'latest', 'oci');
      const baseCtx = await writeContext('onbuild-base', `FROM ${source.host}/base/busybox\nONBUILD COPY hello.txt /from-trigger.txt\n`);
      const built = await kiln(['executor', '-c', baseCtx, '-d', `${source.host}/base/onbuild:1`]);
      assert.equal(built.code, 0, built.stderr);
      const base = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', ...source.skopeoArgs('inspect'), `docker://${source.host}/base/onbuild:1`])) as { layers: { digest: string }[] };
      // Only ENV of its own: the base's layers go ahead before its config shows the trigger, which writes a file.
      const ctx = await writeContext('onbuild-child', `FROM ${source.host}/base/onbuild:1\nENV CHILD=1\n`);
      const r = await kiln(['executor', '-c', ctx, '-d', `${target.host}/apps/onbuild-child:1`, '-v', 'debug']);
      assert.equal(r.code, 0, r.stderr);
      const layout = join(dir, 'onbuild-child', 'layout');
      await mustRun('skopeo', ['copy', ...target.skopeoArgs('src'), `docker://${target.host}/apps/onbuild-child:1`, `oci:${layout}:1`]);
      const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
      const manifest = JSON.parse(await readFile(join(layout, 'blobs', ...index.manifests[0]!.digest.split(':')), 'utf8')) as { layers: { digest: string }[] };
      assert.deepEqual(manifest.layers.slice(0, -1).map((l) => l.digest), base.layers.map((l) => l.digest));
      const trigger = manifest.layers.at(-1)!.digest;
      const listing = await mustRun('tar', ['-tzf', join(layout, 'blobs', ...trigger.split(':'))]);
      assert.deepEqual(listing.trim().split('\n'), ['from-trigger.txt']);
    } finally {
      await Promise.all([source.stop(), target.stop()]);
    }
  });

  it('streams a big layer of the target stage to the registry as it is written, and the image reads back whole', async () => {
    const registry = await startRegistry('http');
    try {
      await pushBusyboxImage(registry, 'base/busybox', 'latest', 'oci');
      // 12 MB of random bytes: past the size at which a layer streams, and not compressible below it.
      const ctx = await writeContext('streamed', `FROM ${registry.host}/base/busybox\nRUN head -c 12000000 /dev/urandom > /random.bin && md5sum /random.bin > /random.md5\n`);
      const r = await kiln(['executor', '-c', ctx, '-d', `${registry.host}/apps/streamed:1`, '-v', 'debug']);
      assert.equal(r.code, 0, r.stderr);
      const layout = join(dir, 'streamed', 'layout');
      await mustRun('skopeo', ['copy', ...registry.skopeoArgs('src'), `docker://${registry.host}/apps/streamed:1`, `oci:${layout}:1`]);
      const manifest = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', `oci:${layout}:1`])) as { layers: { digest: string; size: number }[] };
      const run = manifest.layers.at(-1)!;
      assert.ok(run.size > 12_000_000);
      assert.match(r.stderr, new RegExp(`blob ${run.digest}: streamed to [^ ]+/apps/streamed as it was written`));
      assert.match(r.stderr, new RegExp(`blob ${run.digest}: uploaded while the image was built`), 'the push found it there');
      // skopeo verified every blob against its digest; the file is the one the RUN wrote.
      const tree = join(dir, 'streamed', 'tree');
      await mustRun('umoci', ['raw', 'unpack', '--rootless', '--image', `${layout}:1`, tree]);
      const [sum] = (await readFile(join(tree, 'random.md5'), 'utf8')).split(' ');
      assert.equal(createHash('md5').update(await readFile(join(tree, 'random.bin'))).digest('hex'), sum);
    } finally {
      await registry.stop();
    }
  });

  it('leaves no tag when a later step fails, though a finished layer went up', async () => {
    const registry = await startRegistry('http');
    try {
      await pushBusyboxImage(registry, 'base/busybox', 'latest', 'oci');
      const ctx = await writeContext('early-fail', `FROM ${registry.host}/base/busybox\nCOPY hello.txt /hello.txt\nRUN sleep 1 && exit 3\n`);
      const r = await kiln(['executor', '-c', ctx, '-d', `${registry.host}/apps/early-fail:1`, '-v', 'debug']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /blob sha256:[0-9a-f]{64}: uploaded to [^ ]+\/apps\/early-fail while the image was built/, 'the COPY layer went up during the RUN');
      const tag = await runCommand('skopeo', ['inspect', '--raw', ...registry.skopeoArgs('inspect'), `docker://${registry.host}/apps/early-fail:1`]);
      assert.notEqual(tag.code, 0, `the tag must not exist: ${tag.stdout}`);
      assert.match(tag.stderr, /manifest unknown|not found|name unknown/i);
    } finally {
      await registry.stop();
    }
  });
});
