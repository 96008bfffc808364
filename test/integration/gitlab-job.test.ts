// The GitLab CI job of DESIGN.md, verbatim but for its image line, run by gitlab-ci-local (GitLab's
// job semantics on the local Docker engine: entrypoint "", the script through the image's shell,
// CI_* variables, no --privileged, default seccomp) with kiln's debug image, against a registry with
// TLS (the test CA, appended by the job) and htpasswd auth. The project is multi-stage with RUN
// steps; what the job pushed is pulled back and run.
import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { docker, dockerEnv, mustRun, runCommand } from '../helpers/exec.js';
import { buildKilnTestImage } from '../helpers/kiln-image.js';
import { pushBusyboxImage } from '../helpers/base-images.js';
import { repoRoot } from '../helpers/paths.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';

const KILN_DEBUG = 'kiln-test/kiln:debug';
/** gitlab-ci-local's helper container only needs a shell. */
const HELPER = 'kiln-test/helper:latest';
const GITLAB_CI_LOCAL = join(repoRoot, '.cache', 'gitlab-ci-local', 'node_modules', '.bin', 'gitlab-ci-local');
let registry: TestRegistry;
let dir: string;

before(async () => {
  if (!existsSync(GITLAB_CI_LOCAL)) throw new Error(`${GITLAB_CI_LOCAL} is missing: scripts/test.sh installs it`);
  dir = await mkdtemp(join(tmpdir(), 'kiln-gitlab-'));
  registry = await startRegistry('htpasswd');
  await pushBusyboxImage(registry, 'base/busybox', 'latest', 'v2s2');
  const plain = await startRegistry('http');
  try {
    await pushBusyboxImage(plain, 'helper', 'latest', 'v2s2');
    await docker(['pull', '-q', `${plain.host}/helper:latest`]);
    await docker(['tag', `${plain.host}/helper:latest`, HELPER]);
    await docker(['rmi', `${plain.host}/helper:latest`]);
  } finally {
    await plain.stop();
  }
  await buildKilnTestImage(dir, KILN_DEBUG, true);
});
after(async () => {
  await docker(['rmi', KILN_DEBUG, HELPER]).catch(() => undefined);
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** DESIGN.md's job with kiln's image and the test CA in place of "..."; `flags` are added to the executor's. */
function gitlabCiYml(caPem: string, flags = '', after: string[] = []): string {
  const body = caPem.trim().split('\n').slice(1, -1).map((l) => '      ' + l).join('\n');
  return `build:
  stage: build
  image:
    name: ${KILN_DEBUG}
    entrypoint: [""]
  before_script:
    - mkdir -p /kaniko/.docker
    - echo "{\\"auths\\":{\\"$CI_REGISTRY\\":{\\"username\\":\\"$CI_REGISTRY_USER\\",\\"password\\":\\"$CI_REGISTRY_PASSWORD\\"}}}" > /kaniko/.docker/config.json
    - |
      echo "-----BEGIN CERTIFICATE-----
${body}
      -----END CERTIFICATE-----" >> /kaniko/ssl/certs/additional-ca-cert-bundle.crt
  script:
    - /kaniko/executor --context $CI_PROJECT_DIR --dockerfile $CI_PROJECT_DIR/Dockerfile --destination $CI_REGISTRY_IMAGE:$CI_COMMIT_TAG${flags}
${after.map((l) => `    - ${l}\n`).join('')}  only:
    - tags
`;
}

/** Runs the `build` job of the project with gitlab-ci-local; returns its output. */
async function runJob(project: string, image: string): Promise<string> {
  const job = await runCommand(GITLAB_CI_LOCAL, [
    '--network', 'host', '--helper-image', HELPER, '--pull-policy', 'if-not-present',
    '--variable', `CI_REGISTRY=${registry.host}`, '--variable', `CI_REGISTRY_USER=${registry.username}`,
    '--variable', `CI_REGISTRY_PASSWORD=${registry.password}`, '--variable', `CI_REGISTRY_IMAGE=${image}`,
    '--variable', 'CI_COMMIT_TAG=v1.0.0', 'build',
  ], { cwd: project, env: dockerEnv(), timeoutMs: 300_000 });
  const output = job.stdout + job.stderr;
  assert.equal(job.code, 0, output);
  assert.match(output, /PASS\s+build/);
  assert.ok(!output.includes(registry.password!), 'the password was printed');
  return output;
}

describe('the GitLab CI job with kiln\'s debug image (gitlab-ci-local)', () => {
  it('with --cache=true, the second run of the job reuses every RUN layer, and kiln.env names the digest', async () => {
    const project = join(dir, 'cached-project');
    await mkdir(project, { recursive: true });
    await writeFile(join(project, 'Dockerfile'), [
      `FROM ${registry.host}/base/busybox:latest`,
      'RUN echo one > /one',
      'RUN echo two > /two',
    ].join('\n') + '\n');
    await writeFile(join(project, '.gitlab-ci.yml'), gitlabCiYml(await readFile(registry.caFile!, 'utf8'), ' --cache=true', ['cat kiln.env']));
    await mustRun('sh', ['-c', 'git init -q && git add -A && git -c user.name=kiln -c user.email=kiln@test commit -qm project && git tag v1.0.0'], { cwd: project });
    const image = `${registry.host}/group/cached`;
    const first = await runJob(project, image);
    assert.match(first, /No cached layer found for cmd RUN/);
    const second = await runJob(project, image);
    assert.equal((second.match(/Using caching version of cmd: RUN/g) ?? []).length, 2, second);
    assert.doesNotMatch(second, /Running: /);
    const digest = /KILN_IMAGE_DIGEST=(sha256:[0-9a-f]{64})/.exec(second)?.[1];
    assert.ok(digest, second);
    const pushed = JSON.parse(await mustRun('skopeo', ['inspect', ...registry.skopeoArgs('inspect'), `docker://${image}:v1.0.0`])) as { Digest: string };
    assert.equal(pushed.Digest, digest);
  });

  it('builds and pushes a multi-stage project with RUN steps, unprivileged', async () => {
    const project = join(dir, 'project');
    await mkdir(project, { recursive: true });
    await writeFile(join(project, 'message.txt'), 'hello from the project\n');
    await writeFile(join(project, 'Dockerfile'), [
      `FROM ${registry.host}/base/busybox:latest AS build`,
      'COPY message.txt /src/',
      'RUN mkdir /out && tr a-z A-Z < /src/message.txt > /out/MESSAGE && echo "built by $(id -un)" >> /out/MESSAGE',
      `FROM ${registry.host}/base/busybox:latest`,
      'COPY --from=build /out/MESSAGE /MESSAGE',
      'RUN echo "runner:x:1234:1234::/home/runner:/bin/sh" >> /etc/passwd',
      'USER 1234',
      'CMD ["cat", "/MESSAGE"]',
    ].join('\n') + '\n');
    await writeFile(join(project, '.gitlab-ci.yml'), gitlabCiYml(await readFile(registry.caFile!, 'utf8')));
    await mustRun('sh', ['-c', 'git init -q && git add -A && git -c user.name=kiln -c user.email=kiln@test commit -qm project && git tag v1.0.0'], { cwd: project });
    const image = `${registry.host}/group/project`;
    const output = await runJob(project, image);
    assert.match(output, /RUN steps use container isolation/);

    const archive = join(dir, 'pushed.tar');
    await mustRun('skopeo', ['copy', ...registry.skopeoArgs('src'), `docker://${image}:v1.0.0`, `docker-archive:${archive}:kiln-test/pushed:v1`]);
    await docker(['load', '-q', '-i', archive]);
    try {
      assert.equal(await docker(['run', '--rm', 'kiln-test/pushed:v1']), 'HELLO FROM THE PROJECT\nbuilt by root\n');
      assert.equal((await docker(['run', '--rm', '--entrypoint', 'id', 'kiln-test/pushed:v1', '-u'])).trim(), '1234');
    } finally {
      await docker(['rmi', 'kiln-test/pushed:v1']);
    }
  });
});
