// kiln against `docker build` (Debian's dockerd, the legacy builder) on FROM-scratch Dockerfiles:
// the same file tree (path, type, mode, owner, size, content, link) and the same runtime config.
import { strict as assert } from 'node:assert';
import { chmod, link, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { docker, kiln } from '../helpers/exec.js';
import { dockerImageTree } from '../helpers/image-tree.js';

interface Case {
  name: string;
  dockerfile: string;
  files?: Record<string, string>;
  buildArgs?: string[];
  setup?: (ctx: string) => Promise<void>;
}

const passwd = 'root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/home/app:/bin/sh\n';
const group = 'root:x:0:\nstaff:x:50:\napp:x:2345:\n';

const cases: Case[] = [
  {
    name: 'copy-rules',
    dockerfile: [
      'FROM scratch',
      'COPY one.txt /file-target',
      'COPY one.txt two.txt /multi/',
      'COPY dir /dir-contents',
      'COPY dir/ /dir-slash/',
      'COPY *.txt /globbed/',
      'COPY dir/sub/deep.txt /multi',
      'COPY . /whole/',
    ].join('\n'),
    files: { 'one.txt': '1\n', 'two.txt': 'two\n', 'dir/a.txt': 'a', 'dir/sub/deep.txt': 'deep', 'skip.log': 'x', '.dockerignore': '*.log\n' },
    setup: async (ctx) => {
      await chmod(join(ctx, 'one.txt'), 0o755);
      await chmod(join(ctx, 'dir/sub'), 0o700);
      await symlink('a.txt', join(ctx, 'dir/link-to-a'));
      await link(join(ctx, 'dir/a.txt'), join(ctx, 'dir/hard-a'));
    },
  },
  {
    name: 'chown-and-workdir',
    dockerfile: [
      'FROM scratch',
      'COPY passwd group /etc/',
      'COPY --chown=app:staff one.txt /owned/by/name.txt',
      'COPY --chown=1234 one.txt /owned/by-uid.txt',
      'COPY --chown=app dir /owned/dir/',
      'WORKDIR /work/deeper',
      'COPY one.txt relative.txt',
      'WORKDIR ../other',
      'COPY one.txt .',
    ].join('\n'),
    files: { passwd, group, 'one.txt': '1\n', 'dir/x': 'x' },
  },
  {
    name: 'metadata',
    dockerfile: [
      'ARG BASE=scratch',
      'FROM ${BASE} AS first',
      'ARG PORT=80',
      'ENV APP=/app PORT=$PORT',
      'ENV OLD="$APP" APP=/changed WITH_OLD=$APP',
      'LABEL "quoted key"="v 1" plain=$APP',
      'EXPOSE $PORT 53/udp 9000-9002',
      'VOLUME /data $APP/cache',
      'USER 1000:1000',
      'STOPSIGNAL SIGKILL',
      'ENTRYPOINT /bin/app --flag',
      'CMD ["inherited"]',
      'FROM first',
      'ENTRYPOINT ["/bin/other"]',
      'ONBUILD COPY . /onbuild',
    ].join('\n'),
    buildArgs: ['PORT=8080'],
  },
  {
    name: 'shell-and-cmd',
    dockerfile: ['FROM scratch', 'SHELL ["/bin/bash", "-eu", "-c"]', 'CMD echo "$HOME"', 'HEALTHCHECK --interval=5m --retries=3 CMD check --now', 'WORKDIR /'].join('\n'),
  },
];

let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'kiln-compare-')); });
after(async () => rm(dir, { recursive: true, force: true }));

const configKeys = ['Env', 'Cmd', 'Entrypoint', 'WorkingDir', 'User', 'ExposedPorts', 'Volumes', 'Labels', 'StopSignal', 'Shell', 'Healthcheck', 'OnBuild'] as const;

describe('kiln matches docker build (FROM scratch)', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const ctx = join(dir, c.name);
      await mkdir(ctx, { recursive: true });
      await writeFile(join(ctx, 'Dockerfile'), c.dockerfile + '\n');
      for (const [path, content] of Object.entries(c.files ?? {})) {
        await mkdir(join(ctx, path, '..'), { recursive: true });
        await writeFile(join(ctx, path), content);
      }
      await c.setup?.(ctx);
      const args = (c.buildArgs ?? []).flatMap((a) => ['--build-arg', a]);
      const kilnTag = `kiln-compare/${c.name}:kiln`;
      const dockerTag = `kiln-compare/${c.name}:docker`;
      const tar = join(dir, `${c.name}.tar`);
      const r = await kiln(['executor', '-c', ctx, '--no-push', '-d', kilnTag, '--tar-path', tar, ...args]);
      assert.equal(r.code, 0, r.stderr);
      await docker(['load', '-i', tar]);
      await docker(['build', '-q', '-t', dockerTag, ...args, ctx]);
      try {
        const [k, d] = await Promise.all([kilnTag, dockerTag].map(async (t) => JSON.parse(await docker(['image', 'inspect', t]))[0]));
        for (const key of configKeys) assert.deepEqual(k.Config[key] ?? null, d.Config[key] ?? null, `Config.${key}`);
        assert.deepEqual(await dockerImageTree(kilnTag), await dockerImageTree(dockerTag));
      } finally {
        await docker(['rmi', kilnTag, dockerTag]);
      }
    });
  }
});
