// The bundled example built FROM scratch to a docker-archive and an OCI layout, then read back with
// the real consumers: skopeo, umoci, podman and docker. Digest files must say what the tools see.
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { docker, kiln, mustRun } from '../helpers/exec.js';
import { repoRoot } from '../helpers/paths.js';

const example = join(repoRoot, 'examples', 'hello');

describe('executor outputs for the bundled example', () => {
  let dir: string;
  let digest: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-outputs-'));
    const r = await kiln([
      'executor', '--context', example, '--no-push',
      '--destination', 'registry.example.com:5000/team/hello:1.0', '-d', 'busybox',
      '--tar-path', join(dir, 'image.tar'), '--oci-layout-path', join(dir, 'layout'),
      '--digest-file', join(dir, 'out', 'digest'),
      '--image-name-with-digest-file', join(dir, 'out', 'name-digest'),
      '--image-name-tag-with-digest-file', join(dir, 'out', 'name-tag-digest'),
      '--build-arg', 'VERSION=2.5', '--label', 'extra=from-flag',
    ]);
    assert.equal(r.code, 0, r.stderr);
    digest = await readFile(join(dir, 'out', 'digest'), 'utf8');
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('writes digest files exactly as kaniko does', async () => {
    assert.match(digest, /^sha256:[0-9a-f]{64}$/);
    assert.equal(await readFile(join(dir, 'out', 'name-digest'), 'utf8'),
      `registry.example.com:5000/team/hello@${digest}\nindex.docker.io/library/busybox@${digest}\n`);
    assert.equal(await readFile(join(dir, 'out', 'name-tag-digest'), 'utf8'),
      `registry.example.com:5000/team/hello:1.0@${digest}\nindex.docker.io/library/busybox:latest@${digest}\n`);
  });

  it('writes an OCI layout that skopeo reads, with the digest of the digest file', async () => {
    const raw = await mustRun('skopeo', ['inspect', '--raw', `oci:${join(dir, 'layout')}:1.0`]);
    assert.equal('sha256:' + createHash('sha256').update(raw).digest('hex'), digest);
    const manifest = JSON.parse(raw);
    assert.equal(manifest.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    const config = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', '--config', `oci:${join(dir, 'layout')}:1.0`]));
    assert.equal(manifest.layers.length, config.rootfs.diff_ids.length);
    assert.equal(config.history.filter((h: { empty_layer?: boolean }) => !h.empty_layer).length, manifest.layers.length);
    const c = config.config;
    assert.deepEqual(c.Env, ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'SITE_ROOT=/srv/site', 'GREETING=hello from kiln']);
    assert.equal(c.WorkingDir, '/srv/site');
    assert.equal(c.User, '1000:1000');
    assert.deepEqual(c.ExposedPorts, { '8080/tcp': {}, '8443/tcp': {} });
    assert.deepEqual(c.Volumes, { '/var/cache/example': {} });
    assert.deepEqual(c.Labels, { 'org.opencontainers.image.title': 'kiln example', 'org.opencontainers.image.version': '2.5', extra: 'from-flag' });
    assert.equal(c.StopSignal, 'SIGTERM');
    assert.deepEqual(c.Healthcheck, { Test: ['CMD', '/bin/check'], Interval: 30e9, Timeout: 3e9 });
    assert.deepEqual(c.Entrypoint, ['/bin/serve']);
    assert.deepEqual(c.Cmd, ['--port', '8080']);
    assert.deepEqual(config.history.map((h: { created_by: string }) => h.created_by), [
      'ARG VERSION=2.5',
      'LABEL org.opencontainers.image.title=kiln example org.opencontainers.image.version=2.5',
      'ENV SITE_ROOT=/srv/site GREETING=hello from kiln',
      'WORKDIR /srv/site',
      'COPY site/ ./ # buildkit',
      'COPY --chown=1000:1000 --chmod=600 secret.txt /etc/example/secret.txt # buildkit',
      'COPY <<EOF /etc/example/build-info # buildkit',
      'EXPOSE [8080/tcp 8443/tcp]',
      'VOLUME [/var/cache/example]',
      'USER 1000:1000',
      'STOPSIGNAL SIGTERM',
      'HEALTHCHECK {Test:[CMD /bin/check] Interval:30s Timeout:3s StartPeriod:0s StartInterval:0s Retries:0}',
      'ENTRYPOINT ["/bin/serve"]',
      'CMD ["--port" "8080"]',
    ]);
  });

  it('unpacks with umoci into the expected files, modes and owners', async () => {
    const bundle = join(dir, 'bundle');
    await mustRun('umoci', ['unpack', '--image', `${join(dir, 'layout')}:1.0`, bundle]);
    const rootfs = join(bundle, 'rootfs');
    assert.equal(await readFile(join(rootfs, 'srv/site/index.html'), 'utf8'), '<h1>hello from kiln</h1>\n');
    assert.equal(await readFile(join(rootfs, 'etc/example/build-info'), 'utf8'), 'version=2.5\ngreeting=hello from kiln\n');
    const secret = await lstat(join(rootfs, 'etc/example/secret.txt'));
    assert.equal(secret.mode & 0o7777, 0o600);
    assert.equal(secret.uid, 1000);
    assert.equal(secret.gid, 1000);
    await assert.rejects(lstat(join(rootfs, 'srv/site/README.md')), { code: 'ENOENT' });
    await assert.rejects(lstat(join(rootfs, 'srv/site/Dockerfile')), { code: 'ENOENT' });
    await assert.rejects(lstat(join(rootfs, 'srv/site/secret.txt')), { code: 'ENOENT' });
  });

  it('writes a docker-archive that skopeo, podman and docker load', async () => {
    const tar = join(dir, 'image.tar');
    const inspected = JSON.parse(await mustRun('skopeo', ['inspect', `docker-archive:${tar}`]));
    assert.equal(inspected.Labels.extra, 'from-flag');
    assert.equal(inspected.Layers.length, 4);

    const store = join(dir, 'podman');
    const podman = ['--root', join(store, 'root'), '--runroot', join(store, 'run'), '--storage-driver', 'vfs'];
    await mustRun('podman', [...podman, 'load', '-i', tar]);
    const podmanImage = JSON.parse(await mustRun('podman', [...podman, 'image', 'inspect', 'registry.example.com:5000/team/hello:1.0']))[0];
    assert.deepEqual(podmanImage.Config.Entrypoint, ['/bin/serve']);

    const loaded = await docker(['load', '-i', tar]);
    assert.match(loaded, /registry\.example\.com:5000\/team\/hello:1\.0/);
    const dockerImage = JSON.parse(await docker(['image', 'inspect', 'registry.example.com:5000/team/hello:1.0']))[0];
    assert.equal(dockerImage.Config.WorkingDir, '/srv/site');
    assert.deepEqual(dockerImage.Config.Cmd, ['--port', '8080']);
    await docker(['rmi', 'registry.example.com:5000/team/hello:1.0', 'busybox:latest']);
  });
});

describe('--reproducible', () => {
  it('gives the same digest on two runs', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-repro-'));
    try {
      const digests: string[] = [];
      for (const n of [1, 2]) {
        const file = join(dir, `digest-${n}`);
        const r = await kiln(['executor', '-c', example, '--no-push', '--reproducible', '--digest-file', file, '--oci-layout-path', join(dir, `layout-${n}`)]);
        assert.equal(r.code, 0, r.stderr);
        digests.push(await readFile(file, 'utf8'));
        await new Promise((resolve) => setTimeout(resolve, 1100)); // a second apart, so timestamps would differ
      }
      assert.equal(digests[0], digests[1]);
      const config = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', '--config', `oci:${join(dir, 'layout-1')}:latest`]));
      assert.equal(config.created, '1970-01-01T00:00:00Z');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('SOURCE_DATE_EPOCH', () => {
  it('dates the config and history from the build arg or the environment, and reaches ARG SOURCE_DATE_EPOCH', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-epoch-'));
    try {
      const ctx = join(dir, 'ctx');
      await mkdir(ctx);
      await writeFile(join(ctx, 'f'), 'f\n');
      await writeFile(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY f /f\nARG SOURCE_DATE_EPOCH\nLABEL epoch=$SOURCE_DATE_EPOCH\n');
      const configOf = async (name: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ created: string; history: { created: string }[]; config: { Labels: Record<string, string> } }> => {
        const r = await kiln(['executor', '-c', ctx, '--no-push', '--oci-layout-path', join(dir, name), ...args], { env });
        assert.equal(r.code, 0, r.stderr);
        assert.doesNotMatch(r.stderr, /not consumed/);
        return JSON.parse(await mustRun('skopeo', ['inspect', '--raw', '--config', `oci:${join(dir, name)}:latest`]));
      };
      for (const config of [
        await configOf('arg', ['--build-arg', 'SOURCE_DATE_EPOCH=1700000000']),
        await configOf('env', [], { ...process.env, SOURCE_DATE_EPOCH: '1700000000' }),
      ]) {
        assert.equal(config.created, '2023-11-14T22:13:20Z');
        assert.deepEqual(new Set(config.history.map((h) => h.created)), new Set(['2023-11-14T22:13:20Z']));
        assert.equal(config.config.Labels.epoch, '1700000000');
      }
      const bad = await kiln(['executor', '-c', ctx, '--no-push', '--build-arg', 'SOURCE_DATE_EPOCH=yesterday']);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /SOURCE_DATE_EPOCH must be a Unix time in seconds, not "yesterday"/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
