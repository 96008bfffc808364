// Dockerfile semantics checked by running what kiln built: a static busybox copied into a scratch
// image runs under docker and shows the files, owners and environment the Dockerfile asked for.
import { strict as assert } from 'node:assert';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { docker, kiln, mustRun } from '../helpers/exec.js';

const BUSYBOX = '/bin/busybox'; // from Debian's busybox-static, installed by scripts/test.sh

let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'kiln-semantics-')); });
after(async () => rm(dir, { recursive: true, force: true }));

/** Builds a context (busybox included) with kiln, loads it into docker, runs it, returns stdout. */
async function buildAndRun(name: string, dockerfile: string, files: Record<string, string>, runArgs: string[] = []): Promise<string> {
  const ctx = join(dir, name);
  await mkdir(ctx, { recursive: true });
  await copyFile(BUSYBOX, join(ctx, 'busybox'));
  await writeFile(join(ctx, 'Dockerfile'), dockerfile);
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(ctx, path, '..'), { recursive: true });
    await writeFile(join(ctx, path), content);
  }
  const tag = `kiln-semantics/${name}:test`;
  const tar = join(dir, `${name}.tar`);
  const r = await kiln(['executor', '-c', ctx, '--no-push', '-d', tag, '--tar-path', tar]);
  assert.equal(r.code, 0, r.stderr);
  await docker(['load', '-i', tar]);
  try {
    return await docker(['run', '--rm', '--network', 'host', tag, ...runArgs]);
  } finally {
    await docker(['rmi', tag]);
  }
}

describe('images kiln builds run under docker', () => {
  it('runs ENTRYPOINT + CMD with the ENV, WORKDIR and USER of the Dockerfile', async () => {
    const out = await buildAndRun('runs', [
      'FROM scratch',
      'COPY busybox /bin/busybox',
      'COPY --chown=4242:4343 data/ /data/',
      'ENV GREETING="hello world" PATH=/bin',
      'WORKDIR /data',
      'USER 4242:4343',
      'ENTRYPOINT ["/bin/busybox", "sh", "-c"]',
      'CMD ["echo \\"$GREETING\\" $(pwd) $(/bin/busybox id -u):$(/bin/busybox id -g); /bin/busybox stat -c \'%u:%g %a %n\' msg.txt; /bin/busybox cat msg.txt"]',
    ].join('\n') + '\n', { 'data/msg.txt': 'from the context\n' });
    assert.equal(out, 'hello world /data 4242:4343\n4242:4343 644 msg.txt\nfrom the context\n');
  });

  it('runs ONBUILD triggers when a later stage starts FROM the stage, and does not inherit them', async () => {
    const out = await buildAndRun('onbuild', [
      'FROM scratch AS base',
      'COPY busybox /bin/busybox',
      'ONBUILD COPY trigger.txt /from-trigger.txt',
      'FROM base',
      'ENTRYPOINT ["/bin/busybox", "cat", "/from-trigger.txt"]',
    ].join('\n') + '\n', { 'trigger.txt': 'triggered\n' });
    assert.equal(out, 'triggered\n');
  });

  it('applies .dockerignore with exceptions and heredoc files', async () => {
    const out = await buildAndRun('ignore', [
      'FROM scratch',
      'COPY busybox /bin/busybox',
      'COPY . /ctx/',
      'COPY <<EOF /etc/motd',
      'made by a heredoc',
      'EOF',
      'ENTRYPOINT ["/bin/busybox", "sh", "-c", "cd /ctx && /bin/busybox find . -name \'*.log\' | /bin/busybox sort && /bin/busybox cat /etc/motd"]',
    ].join('\n') + '\n', { '.dockerignore': '*.log\n!keep.log\n', 'drop.log': 'x', 'keep.log': 'y', 'a.txt': 'z' });
    assert.equal(out, './keep.log\nmade by a heredoc\n');
  });
});

describe('docker sees the config kiln wrote', () => {
  it('resets an inherited CMD when a stage sets ENTRYPOINT, keeps it otherwise', async () => {
    const ctx = join(dir, 'entrypoint-reset');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'Dockerfile'), 'FROM scratch AS base\nCMD ["base-cmd"]\nFROM base AS keeps\nLABEL x=y\nFROM base\nENTRYPOINT ["/ep"]\n');
    const layout = join(dir, 'entrypoint-reset-layout');
    for (const [target, cmd] of [['keeps', ['base-cmd']], ['', null]] as const) {
      const r = await kiln(['executor', '-c', ctx, '--no-push', '--oci-layout-path', layout, ...(target ? ['--target', target] : [])]);
      assert.equal(r.code, 0, r.stderr);
      const config = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', '--config', `oci:${layout}:latest`]));
      assert.deepEqual(config.config.Cmd ?? null, cmd);
    }
  });
});

describe('--force-build-metadata', () => {
  it('adds an empty layer for each instruction that changes no files, as kaniko does, and the image still runs', async () => {
    const ctx = join(dir, 'force-metadata');
    await mkdir(ctx, { recursive: true });
    await copyFile(BUSYBOX, join(ctx, 'busybox'));
    await writeFile(join(ctx, 'Dockerfile'), 'FROM scratch\nCOPY busybox /bin/busybox\nENV A=1\nLABEL l=v\nRUN ["/bin/busybox", "true"]\nCMD ["/bin/busybox", "echo", "ran"]\n');
    const layouts: Record<string, { rootfs: { diff_ids: string[] }; history: { created_by: string; empty_layer?: boolean }[] }> = {};
    for (const force of [false, true]) {
      const layout = join(dir, `force-metadata-${force}`);
      const r = await kiln(['executor', '-c', ctx, '--no-push', '--oci-layout-path', layout, ...(force ? ['--force-build-metadata'] : [])]);
      assert.equal(r.code, 0, r.stderr);
      layouts[String(force)] = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', '--config', `oci:${layout}:latest`]));
    }
    const plain = layouts['false']!, forced = layouts['true']!;
    assert.equal(plain.rootfs.diff_ids.length, 1);
    // COPY's layer, then one empty layer each for ENV, LABEL, the RUN that wrote nothing, and CMD.
    assert.equal(forced.rootfs.diff_ids.length, 5);
    assert.equal(new Set(forced.rootfs.diff_ids.slice(1)).size, 1, 'the empty layers are one and the same blob');
    assert.deepEqual(forced.history.map((h) => h.empty_layer ?? false), [false, false, false, false, false]);
    const tar = join(dir, 'force-metadata.tar');
    const r = await kiln(['executor', '-c', ctx, '--no-push', '-d', 'kiln-semantics/force:test', '--tar-path', tar, '--force-build-metadata']);
    assert.equal(r.code, 0, r.stderr);
    await docker(['load', '-i', tar]);
    try {
      assert.equal(await docker(['run', '--rm', 'kiln-semantics/force:test']), 'ran\n');
    } finally {
      await docker(['rmi', 'kiln-semantics/force:test']);
    }
  });
});
