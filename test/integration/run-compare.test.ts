// RUN against `docker build` (Debian's dockerd, legacy builder) on a busybox base pushed by the
// tests: the same file tree and config after steps that create, change and delete files, links,
// setuid bits, users and groups, and replace directories by files and links; then the image runs.
import { strict as assert } from 'node:assert';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import { goArch, pushOciLayout, sha256, writeLayoutIndex } from '../helpers/base-images.js';
import { useBaseFixture } from '../helpers/fixture.js';
import { docker, kiln, runCommand } from '../helpers/exec.js';
import { compareWithDocker } from '../helpers/docker-compare.js';
import { dockerImageTree } from '../helpers/image-tree.js';

interface Case {
  name: string;
  /** Lines after FROM. */
  steps: string[];
  buildArgs?: string[];
  /** A command to run in both images; their outputs must match. */
  check?: string;
  /** Context files. */
  files?: Record<string, string>;
}

const cases: Case[] = [
  {
    name: 'files-links-modes',
    steps: [
      'RUN mkdir -p /app/sub /app/gone && echo hi > /app/a && ln -s a /app/link && ln /app/a /app/hard && chmod 4755 /app/a && chown 1000:1000 /app/sub && touch /app/sub/x /app/gone/y && chmod 1777 /app/sub',
      'RUN echo more >> /app/a && rm /app/link && rm -rf /app/gone /home/app && chmod 700 /tmp && ln -s /app/a /app/abs && chmod 2750 /app/sub',
    ],
    check: 'cat /app/a /app/hard && ls -la /app',
  },
  {
    name: 'replace-dirs',
    steps: [
      'RUN mkdir -p /d1/x /d2/y /d3 && touch /d1/x/f /d2/y/g && echo plain > /d3/file',
      'RUN rm -rf /d1 && echo file > /d1 && rm -rf /d2 && ln -s /tmp /d2 && rm -rf /d3 && mkdir /d3 && touch /d3/new',
      'RUN rm /d1 && mkdir /d1 && touch /d1/again && rm /d2 && mkdir -p /d2/back',
    ],
    check: 'ls -la /d1 /d2 /d3',
  },
  {
    name: 'copy-from-stages-and-images',
    steps: [
      'RUN mkdir -p /out/bin /opt/real && echo tool > /out/bin/tool && chmod 750 /out/bin/tool && ln -s tool /out/bin/link && ln -s /opt/real /opt/abs && echo r > /opt/real/f && chown -R 1000:1000 /out',
      'FROM BASE',
      'COPY --from=0 /out/bin/ /usr/local/bin/',
      'COPY --from=0 /out /copied-out',
      'COPY --from=0 /out/bin/tool /tool-by-index',
      'COPY --from=0 --chown=app:app /opt/abs/f /f-through-abs-link',
      'COPY --from=BASE /etc/passwd /from-image/',
      'RUN cat /usr/local/bin/tool /f-through-abs-link > /seen',
    ],
    check: 'cat /seen && ls -la /usr/local/bin /copied-out /copied-out/bin',
  },
  {
    name: 'copy-through-symlinks',
    steps: [
      'RUN mkdir -p /usr/lib/real /opt/target && ln -s usr/lib /lib && ln -s /opt/target /opt/link && echo old > /usr/lib/real/over',
      'COPY one.txt /lib/real/',
      'COPY one.txt /lib/new/deeper/file',
      'COPY dir /opt/link',
      'COPY one.txt /lib/real/over',
      'RUN cat /lib/real/one.txt /opt/target/sub/two.txt /usr/lib/real/over > /seen',
    ],
    files: { 'one.txt': 'one\n', 'dir/sub/two.txt': 'two\n' },
    check: 'cat /seen && ls -la /lib /opt',
  },
  {
    name: 'users-env-workdir',
    steps: [
      'ARG VERSION=1.0',
      'ENV GREETING="hello world"',
      'RUN echo "bob:x:1500:1500:bob:/home/bob:/bin/sh" >> /etc/passwd && echo "bob:x:1500:" >> /etc/group && echo "devs:x:1600:app,bob" >> /etc/group && mkdir -p /home/bob /out && chown bob /home/bob && chmod 1777 /out',
      'WORKDIR /work/here',
      'USER bob',
      'RUN id > /out/id-bob && echo "$HOME $PWD $VERSION $GREETING" > /out/env-bob && touch /home/bob/mine',
      'USER app:devs',
      'RUN id > /out/id-app && echo "$HOME" > /out/home-app',
      'USER 4321',
      'RUN id > /out/id-numeric && echo "$HOME" > /out/home-numeric',
      'USER root',
      'SHELL ["/bin/sh", "-ec"]',
      'RUN echo "shell $0" > /out/shell',
      'RUN ["/bin/sh", "-c", "echo exec > /out/exec"]',
    ],
    buildArgs: ['VERSION=2.0'],
    check: 'cat /out/id-bob /out/env-bob /out/id-app /out/home-app /out/id-numeric /out/home-numeric /out/shell /out/exec',
  },
];

const fx = useBaseFixture('run-compare', { image: 'busybox', format: 'v2s2', dockerPull: true });

describe('RUN matches docker build (busybox base)', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const lines = [`FROM ${fx.base}`, ...c.steps].map((l) => l.replaceAll('BASE', fx.base));
      await compareWithDocker({ ...c, dockerfile: lines.join('\n') + '\n' }, fx.dir);
    });
  }
});

describe('RUN steps behave as Docker says', () => {
  async function build(name: string, steps: string[], extra: string[] = []): Promise<{ code: number; stdout: string; stderr: string; tar: string }> {
    const ctx = join(fx.dir, name);
    await mkdir(ctx, { recursive: true });
    const lines = steps[0]?.startsWith('FROM ') ? steps : [`FROM ${fx.base}`, ...steps];
    await writeFile(join(ctx, 'Dockerfile'), lines.join('\n') + '\n');
    const tar = join(fx.dir, `${name}.tar`);
    const r = await kiln(['executor', '-c', ctx, '--no-push', '-d', `kiln-run/${name}:kiln`, '--tar-path', tar, ...extra]);
    return { ...r, tar };
  }

  it('fails with the exit code and the line of a failing step, writing nothing', async () => {
    const r = await build('fails', ['RUN true', 'RUN echo before && exit 3', 'RUN echo never']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Dockerfile:3/);
    assert.match(r.stderr, /returned a non-zero code: 3/);
    assert.doesNotMatch(r.stdout + r.stderr, /never/);
    await assert.rejects(readFile(r.tar));
  });

  it('kills background processes a step leaves behind', async () => {
    const marker = `kiln-bg-${process.pid}-${Date.now()}`;
    const r = await build('background', [`RUN (sleep 300; echo ${marker}) > /dev/null 2>&1 & echo started`]);
    assert.equal(r.code, 0, r.stderr);
    const ps = await runCommand('pgrep', ['-f', marker]);
    assert.equal(ps.stdout.trim(), '', 'a process of the step survived it');
  });

  it('runs heredocs, reports a missing command, and uses SHELL for shell form', async () => {
    const ok = await build('heredoc', ['RUN <<EOF', 'echo one > /h1', 'echo two >> /h1', 'EOF', 'RUN cat > /h2 <<EOT', 'fed $HOME', 'EOT']);
    assert.equal(ok.code, 0, ok.stderr);
    await docker(['load', '-i', ok.tar]);
    try {
      const out = await docker(['run', '--rm', 'kiln-run/heredoc:kiln', 'cat', '/h1', '/h2']);
      assert.equal(out, 'one\ntwo\nfed /root\n');
    } finally {
      await docker(['rmi', 'kiln-run/heredoc:kiln']);
    }
    // A #! heredoc is a file run from /dev/pipes, which stays out of the image.
    const script = await build('heredoc-script', ['RUN <<EOF', '#!/bin/sh -e', 'echo "script $0 $HOME" > /s1', 'ls /dev/pipes >> /s1', 'EOF']);
    assert.equal(script.code, 0, script.stderr);
    await docker(['load', '-i', script.tar]);
    try {
      assert.equal(await docker(['run', '--rm', 'kiln-run/heredoc-script:kiln', 'cat', '/s1']), 'script /dev/pipes/EOF /root\nEOF\n');
      assert.deepEqual(Object.keys(await dockerImageTree('kiln-run/heredoc-script:kiln')).filter((p) => p.includes('pipes')), []);
    } finally {
      await docker(['rmi', 'kiln-run/heredoc-script:kiln']);
    }
    const missing = await build('missing', ['RUN ["/no/such/tool"]']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /no\/such\/tool/);
    assert.match(missing.stderr, /Dockerfile:2/);
  });

  it('COPY --from names what is missing, refuses later stages, and keeps needed stages with --skip-unused-stages', async () => {
    const missing = await build('from-missing', [`FROM ${fx.base} AS build`, 'RUN echo x > /x', `FROM ${fx.base}`, 'COPY --from=build /nothing /n']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /Dockerfile:4: COPY failed: "\/nothing" not found in stage build/);
    const later = await build('from-later', [`FROM ${fx.base}`, 'COPY --from=after /x /x', `FROM ${fx.base} AS after`]);
    assert.equal(later.code, 1);
    assert.match(later.stderr, /Dockerfile:2: COPY --from=after: stage after is not defined before this one/);
    const skip = await build('from-skip', [
      `FROM ${fx.base} AS unused`, 'RUN exit 1', `FROM ${fx.base} AS needed`, 'RUN echo needed > /n', `FROM ${fx.base}`, 'ARG SRC=needed', 'COPY --from=${SRC} /n /n',
    ], ['--skip-unused-stages']);
    assert.equal(skip.code, 0, skip.stderr);
  });

  it('--single-snapshot gives one layer with the same files as one layer per step', async () => {
    const steps = [
      'RUN mkdir -p /s/d && echo a > /s/a && echo b > /s/b && echo gone > /s/d/gone',
      'COPY Dockerfile /s/copied',
      'RUN rm /s/a /s/d/gone && echo b2 >> /s/b && rm -rf /home/app && mkdir /home/app && touch /home/app/new',
      'USER app',
      'RUN echo mine > /tmp/mine',
    ];
    const layered = await build('layered', steps);
    const single = await build('single', steps, ['--single-snapshot']);
    assert.equal(layered.code, 0, layered.stderr);
    assert.equal(single.code, 0, single.stderr);
    await docker(['load', '-i', layered.tar]);
    await docker(['load', '-i', single.tar]);
    try {
      const [l, s1] = await Promise.all(['kiln-run/layered:kiln', 'kiln-run/single:kiln'].map(async (t) => JSON.parse(await docker(['image', 'inspect', t]))[0]));
      assert.equal(s1.RootFS.Layers.length, 2, 'the base layer and one more');
      assert.equal(l.RootFS.Layers.length, 5);
      assert.deepEqual(await dockerImageTree('kiln-run/single:kiln'), await dockerImageTree('kiln-run/layered:kiln'));
    } finally {
      await docker(['rmi', 'kiln-run/layered:kiln', 'kiln-run/single:kiln']);
    }
  });

  it('runs steps in a stage FROM an earlier stage that ran steps', async () => {
    const r = await build('stages', [`FROM ${fx.base} AS one`, 'RUN echo first > /first', 'FROM scratch AS other', 'COPY Dockerfile /', 'FROM one', 'RUN test -f /first && ! test -e /Dockerfile && cat /first > /second']);
    assert.equal(r.code, 0, r.stderr);
    await docker(['load', '-i', r.tar]);
    try {
      assert.equal(await docker(['run', '--rm', 'kiln-run/stages:kiln', 'cat', '/second']), 'first\n');
    } finally {
      await docker(['rmi', 'kiln-run/stages:kiln']);
    }
  });

  it('refuses a base layer that links to a file outside the root, unpacked early on a worker, touching nothing outside', async () => {
    // The layer: a hard link whose target is a file outside any root.
    const outside = join(fx.dir, 'outside-target');
    await mkdir(outside);
    await writeFile(join(outside, 'secret'), 'host file\n');
    const tar = pack();
    tar.entry({ name: 'ok', mode: 0o644 }, 'fine\n');
    tar.entry({ name: 'stolen', type: 'link', linkname: join(outside, 'secret'), mode: 0o644 });
    tar.finalize();
    const chunks: Buffer[] = [];
    for await (const c of tar) chunks.push(c as Buffer);
    const rootfs = Buffer.concat(chunks);
    const layer = gzipSync(rootfs);
    const config = JSON.stringify({ architecture: goArch(), os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha256(rootfs)] }, history: [{}] });
    const manifest = JSON.stringify({
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: Buffer.byteLength(config) },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256(layer), size: layer.length }],
    });
    const layout = join(fx.dir, 'hostile-layout');
    await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
    for (const blob of [layer, config, manifest]) await writeFile(join(layout, 'blobs', 'sha256', sha256(blob).slice(7)), blob);
    await writeLayoutIndex(layout, manifest);
    await pushOciLayout(layout, fx.registry, 'base/hostile', '1', 'oci', 60_000);

    const r = await build('hostile', [`FROM ${fx.registry.host}/base/hostile:1`, 'RUN true']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`layer ${sha256(layer)}`));
    assert.match(r.stderr, /"stolen".*absolute/);
    assert.deepEqual(await readdir(outside), ['secret']);
    assert.equal((await stat(join(outside, 'secret'))).nlink, 1, 'no link to the host file was made');
  });
});
