// Bad input and faults between kiln and a real registry: refused credentials, missing images,
// corrupt blobs, a flaky network, platforms, mirrors and GitLab's zero-config variables. Each
// failure must be one clear line naming the registry, with no secret in it and no tag left
// pointing at a partial image.
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { kiln, mustRun, runCommand } from '../helpers/exec.js';
import { pushBusyboxImage } from '../helpers/base-images.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';

let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'kiln-registry-faults-')); });
after(async () => rm(dir, { recursive: true, force: true }));

async function context(name: string, dockerfile: string): Promise<string> {
  const ctx = join(dir, name);
  await mkdir(ctx, { recursive: true });
  await writeFile(join(ctx, 'Dockerfile'), dockerfile);
  await writeFile(join(ctx, 'data.bin'), createHash('sha256').update(name).digest().toString('hex').repeat(20000));
  return ctx;
}

/** Env with the registry's CA trusted and DOCKER_CONFIG pointing at an empty (or given) config dir. */
async function envFor(registry: TestRegistry, name: string, config?: object): Promise<NodeJS.ProcessEnv> {
  const docker = join(dir, `${name}-docker`);
  await mkdir(docker, { recursive: true });
  if (config) await writeFile(join(docker, 'config.json'), JSON.stringify(config));
  const env: NodeJS.ProcessEnv = { ...process.env, DOCKER_CONFIG: docker };
  delete env.CI_REGISTRY; delete env.CI_REGISTRY_USER; delete env.CI_REGISTRY_PASSWORD;
  if (registry.caFile) env.SSL_CERT_FILE = registry.caFile;
  return env;
}

describe('authentication failures and GitLab zero-config (token auth)', () => {
  let registry: TestRegistry;
  before(async () => {
    registry = await startRegistry('token');
    await pushBusyboxImage(registry, 'base/busybox', 'latest', 'oci');
  });
  after(async () => registry.stop());

  it('uses CI_REGISTRY_USER/CI_REGISTRY_PASSWORD for CI_REGISTRY when no config.json matches', async () => {
    const ctx = await context('gitlab', `FROM ${registry.host}/base/busybox\nCOPY data.bin /data.bin\n`);
    const env = { ...(await envFor(registry, 'gitlab')), CI_REGISTRY: registry.host, CI_REGISTRY_USER: registry.username!, CI_REGISTRY_PASSWORD: registry.password! };
    const r = await kiln(['executor', '-c', ctx, '-d', `${registry.host}/group/project:v1`], { env });
    assert.equal(r.code, 0, r.stderr);
    // The token server also saw the base's push in before(). kiln asks for "push,pull"; the registry's
    // challenge says "pull,push", and is only seen when kiln's first request there meets a 401.
    const basic = `Basic ${Buffer.from(`${registry.username}:${registry.password}`).toString('base64')}`;
    const pushTokens = registry.tokenServer!.requests.filter((q) => [q.query.scope].flat().some((s) => /^repository:group\/project:(pull,push|push,pull)$/.test(s ?? '')));
    assert.ok(pushTokens.length > 0 && pushTokens.every((q) => q.authorization === basic), JSON.stringify(pushTokens.map((q) => [q.query.scope, q.authorization?.slice(0, 6)])));
    assert.doesNotMatch(r.stderr, new RegExp(registry.password!));
  });

  it('fails before building on a wrong password, naming the registry, never printing the password', async () => {
    const ctx = await context('wrong-password', `FROM ${registry.host}/base/busybox\nCOPY data.bin /data.bin\n`);
    const wrong = 'not-the-password-' + Date.now();
    const env = await envFor(registry, 'wrong', { auths: { [registry.host]: { auth: Buffer.from(`${registry.username}:${wrong}`).toString('base64') } } });
    const r = await kiln(['executor', '-c', ctx, '-d', `${registry.host}/group/denied:v1`, '--verbosity=trace'], { env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(registry.host.replace(/\./g, '\\.')));
    assert.match(r.stderr, /401|credentials|denied/i);
    assert.doesNotMatch(r.stderr + r.stdout, new RegExp(wrong));
    assert.doesNotMatch(r.stderr + r.stdout, new RegExp(Buffer.from(`${registry.username}:${wrong}`).toString('base64')));
    assert.doesNotMatch(r.stderr, /Building stage/);
  });

  it('names a missing base image', async () => {
    const ctx = await context('missing', `FROM ${registry.host}/base/nothing-here:1\n`);
    const env = await envFor(registry, 'missing', { auths: { [registry.host]: { username: registry.username, password: registry.password } } });
    const r = await kiln(['executor', '-c', ctx, '--no-push'], { env });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Dockerfile:1: FROM 127\.0\.0\.1:\d+\/base\/nothing-here:1: .*(not found|unknown)/i);
  });
});

describe('platforms, mirrors and corrupt blobs (plain HTTP)', () => {
  let registry: TestRegistry;
  let mirror: TestRegistry;
  before(async () => {
    [registry, mirror] = await Promise.all([startRegistry('http'), startRegistry('http')]);
  });
  after(async () => { await Promise.all([registry.stop(), mirror.stop()]); });

  it('picks the --custom-platform image from an index, and lists the platforms when none matches', async () => {
    // Two scratch images for two platforms, built by kiln, joined in one OCI index and pushed by skopeo.
    const layout = join(dir, 'multi-layout');
    const platforms = ['linux/amd64', 'linux/arm64'];
    const manifests = [];
    for (const platform of platforms) {
      const ctx = await context(`platform-${platform.replace('/', '-')}`, `FROM scratch\nLABEL built.for=${platform}\n`);
      const r = await kiln(['executor', '-c', ctx, '--no-push', '--custom-platform', platform, '--oci-layout-path', layout]);
      assert.equal(r.code, 0, r.stderr);
      const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
      const [os, architecture] = platform.split('/');
      manifests.push({ ...index.manifests[0], annotations: undefined, platform: { os, architecture } });
    }
    // The multi-platform index is a blob; the layout's index.json names it, as skopeo expects.
    const indexBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }));
    const indexHex = createHash('sha256').update(indexBytes).digest('hex');
    await writeFile(join(layout, 'blobs', 'sha256', indexHex), indexBytes);
    await writeFile(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{
      mediaType: 'application/vnd.oci.image.index.v1+json', digest: `sha256:${indexHex}`, size: indexBytes.length,
      annotations: { 'org.opencontainers.image.ref.name': 'multi' },
    }] }));
    await mustRun('skopeo', ['copy', '--all', ...registry.skopeoArgs('dest'), `oci:${layout}:multi`, `docker://${registry.host}/multi/base:1`]);

    const ctx = await context('pick-platform', `FROM ${registry.host}/multi/base:1\nLABEL child=yes\n`);
    const out = join(dir, 'picked');
    const r = await kiln(['executor', '-c', ctx, '--no-push', '--custom-platform=linux/arm64', '--oci-layout-path', out]);
    assert.equal(r.code, 0, r.stderr);
    const config = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', '--config', `oci:${out}:latest`]));
    assert.equal(config.architecture, 'arm64');
    assert.equal(config.config.Labels['built.for'], 'linux/arm64');
    const none = await kiln(['executor', '-c', ctx, '--no-push', '--custom-platform=linux/s390x']);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /has no image for platform linux\/s390x; it has: linux\/amd64, linux\/arm64/);

    // FROM --platform picks the base alone; TARGET* still name the build's target, BUILD* this machine.
    const host = process.arch === 'x64' ? 'amd64' : 'arm64';
    const other = host === 'amd64' ? 'arm64' : 'amd64';
    const staged = await context('from-platform', [
      `FROM --platform=linux/${other} ${registry.host}/multi/base:1 AS foreign`,
      `FROM --platform=$BUILDPLATFORM ${registry.host}/multi/base:1`,
      'ARG TARGETPLATFORM TARGETARCH BUILDPLATFORM',
      'LABEL target=$TARGETPLATFORM arch=$TARGETARCH build=$BUILDPLATFORM',
      '',
    ].join('\n'));
    const fromOut = join(dir, 'from-platform');
    const f = await kiln(['executor', '-c', staged, '--no-push', '--custom-platform=linux/s390x', '--oci-layout-path', fromOut]);
    assert.equal(f.code, 0, f.stderr);
    const picked = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', '--config', `oci:${fromOut}:latest`]));
    assert.equal(picked.config.Labels['built.for'], `linux/${host}`);
    assert.deepEqual(
      { target: picked.config.Labels.target, arch: picked.config.Labels.arch, build: picked.config.Labels.build },
      { target: 'linux/s390x', arch: 's390x', build: `linux/${host}` },
    );
    const foreign = await context('from-platform-foreign', `FROM --platform=linux/${other} ${registry.host}/multi/base:1\n`);
    const foreignOut = join(dir, 'from-platform-foreign');
    const g = await kiln(['executor', '-c', foreign, '--no-push', '--oci-layout-path', foreignOut]);
    assert.equal(g.code, 0, g.stderr);
    const foreignConfig = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', '--config', `oci:${foreignOut}:latest`]));
    assert.equal(foreignConfig.architecture, other);
    const bad = await context('from-platform-bad', `FROM --platform=linux ${registry.host}/multi/base:1\n`);
    const b = await kiln(['executor', '-c', bad, '--no-push']);
    assert.equal(b.code, 1);
    assert.match(b.stderr, /Dockerfile:1: FROM --platform=linux: invalid platform "linux"/);
  });

  it('pulls Docker Hub images through --registry-mirror, never from Docker Hub with --skip-default-registry-fallback', async () => {
    await pushBusyboxImage(mirror, 'library/busybox', '1.36', 'v2s2');
    const ctx = await context('mirror', 'FROM busybox:1.36\nCOPY data.bin /data.bin\n');
    const r = await kiln(['executor', '-c', ctx, '--no-push', '--registry-mirror', mirror.host, '--skip-default-registry-fallback', '--oci-layout-path', join(dir, 'mirrored')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /Retrieved docker\.io\/library\/busybox@sha256:[0-9a-f]{64} from 127\.0\.0\.1/);
    const missing = await context('mirror-missing', 'FROM alpine:3\n');
    const m = await kiln(['executor', '-c', missing, '--no-push', '--registry-map', `index.docker.io=${mirror.host}/hub`, '--skip-default-registry-fallback']);
    assert.equal(m.code, 1);
    assert.match(m.stderr, /not found on any configured mirror or mapped registry/);
  });

  it('refuses a base layer whose bytes do not match its digest', async () => {
    await pushBusyboxImage(registry, 'corrupt/busybox', 'latest', 'oci');
    // Corrupt every layer-sized blob in the registry's storage; the digests in the manifest stay.
    const blobsRoot = join(registry.dataDir, 'docker/registry/v2/blobs/sha256');
    for (const prefix of await readdir(blobsRoot)) {
      for (const hex of await readdir(join(blobsRoot, prefix))) {
        const file = join(blobsRoot, prefix, hex, 'data');
        const bytes = await readFile(file);
        if (bytes.length > 100_000) { bytes.writeUInt8(bytes.readUInt8(bytes.length - 100) ^ 0xff, bytes.length - 100); await writeFile(file, bytes); }
      }
    }
    // Read because COPY needs the base's files.
    const ctx = await context('corrupt', `FROM ${registry.host}/corrupt/busybox\nCOPY data.bin /data.bin\n`);
    const r = await kiln(['executor', '-c', ctx, '--no-push']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Dockerfile:1: .*(corrupt|does not match|digest)/i);
    // Streamed to another registry without a local copy: the push fails, and no tag appears.
    const target = await startRegistry('http');
    try {
      const meta = await context('corrupt-metadata', `FROM ${registry.host}/corrupt/busybox\nLABEL x=y\n`);
      const p = await kiln(['executor', '-c', meta, '-d', `${target.host}/apps/corrupt:1`]);
      assert.equal(p.code, 1);
      assert.match(p.stderr, /hashes to sha256:|corrupt|does not match/i);
      const inspect = await runCommand('skopeo', ['inspect', '--raw', ...target.skopeoArgs('inspect'), `docker://${target.host}/apps/corrupt:1`]);
      assert.notEqual(inspect.code, 0);
    } finally {
      await target.stop();
    }
  });
});

describe('a flaky network between kiln and the registry', () => {
  let registry: TestRegistry;
  before(async () => {
    registry = await startRegistry('http');
    await pushBusyboxImage(registry, 'base/busybox', 'latest', 'v2s2');
  });
  after(async () => registry.stop());

  it('completes a pull and a push when one request in four fails, and the pushed image is whole', async () => {
    const proxy = await startFaultProxy(registry.host, { every: 4 });
    try {
      const ctx = await context('flaky', `FROM ${proxy.host}/base/busybox\nCOPY data.bin /data.bin\nENV X=1\n`);
      const r = await kiln(['executor', '-c', ctx, '-d', `${proxy.host}/apps/flaky:1`, '--push-retry=3', '--image-download-retry=3', '--digest-file', join(dir, 'flaky-digest')]);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(proxy.log.filter((e) => e.fault).length >= 3, 'faults were injected');
      // Read it back directly from the registry: every blob must be there and verify.
      const copy = join(dir, 'flaky-copy');
      await mustRun('skopeo', ['copy', ...registry.skopeoArgs('src'), `docker://${registry.host}/apps/flaky:1`, `dir:${copy}`]);
      const raw = await readFile(join(copy, 'manifest.json'));
      assert.equal('sha256:' + createHash('sha256').update(raw).digest('hex'), await readFile(join(dir, 'flaky-digest'), 'utf8'));
    } finally {
      await proxy.stop();
    }
  });

  it('fails cleanly when the manifest can never be written, leaving no tag behind', async () => {
    const proxy = await startFaultProxy(registry.host, { every: 0, refuseManifestPuts: true });
    try {
      const ctx = await context('no-manifest', `FROM ${proxy.host}/base/busybox\nCOPY data.bin /data.bin\n`);
      const r = await kiln(['executor', '-c', ctx, '-d', `${proxy.host}/apps/never:1`, '--push-retry=1']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /500|injected failure/);
      const inspect = await runCommand('skopeo', ['inspect', '--raw', ...registry.skopeoArgs('inspect'), `docker://${registry.host}/apps/never:1`]);
      assert.notEqual(inspect.code, 0, 'no tag may exist for an image whose push failed');
    } finally {
      await proxy.stop();
    }
  });
});
