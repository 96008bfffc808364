// The GitLab CI job of DESIGN.md, verbatim but for its image: kiln's debug image, in an unprivileged
// container (no --privileged, default seccomp), as GitLab Runner's docker executor starts it
// (entrypoint "", the job's script through the image's sh, CI_* variables), against a registry with
// TLS (the test CA, added by the job) and htpasswd auth. The project is multi-stage with RUN steps;
// the pushed image is pulled back and run.
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { docker, dockerEnv, mustRun, runCommand } from '../helpers/exec.js';
import { buildKilnTestImage } from '../helpers/kiln-image.js';
import { pushBusyboxImage } from '../helpers/base-images.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';

const KILN_DEBUG = 'kiln-test/kiln:debug';
let registry: TestRegistry;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-gitlab-'));
  registry = await startRegistry('htpasswd');
  await pushBusyboxImage(registry, 'base/busybox', 'latest', 'v2s2');
  await buildKilnTestImage(dir, KILN_DEBUG, true);
});
after(async () => {
  await docker(['rmi', KILN_DEBUG]).catch(() => undefined);
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** The job's before_script and script, as in DESIGN.md, with the test CA in place of "...". */
function jobScript(caPem: string): string {
  const body = caPem.trim().split('\n').slice(1, -1).join('\n');
  return [
    'mkdir -p /kaniko/.docker',
    'echo "{\\"auths\\":{\\"$CI_REGISTRY\\":{\\"username\\":\\"$CI_REGISTRY_USER\\",\\"password\\":\\"$CI_REGISTRY_PASSWORD\\"}}}" > /kaniko/.docker/config.json',
    `echo "-----BEGIN CERTIFICATE-----\n${body}\n-----END CERTIFICATE-----" >> /kaniko/ssl/certs/additional-ca-cert-bundle.crt`,
    '/kaniko/executor --context $CI_PROJECT_DIR --dockerfile $CI_PROJECT_DIR/Dockerfile --destination $CI_REGISTRY_IMAGE:$CI_COMMIT_TAG',
  ].join('\n');
}

describe('the GitLab CI job with kiln\'s debug image', () => {
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
      'RUN adduser -D -u 1234 runner 2>/dev/null || echo "runner:x:1234:1234::/home/runner:/bin/sh" >> /etc/passwd',
      'USER 1234',
      'CMD ["cat", "/MESSAGE"]',
    ].join('\n') + '\n');
    const ca = await readFile(registry.caFile!, 'utf8');
    const image = `${registry.host}/group/project`;
    const job = await runCommand('docker', [
      'run', '--rm', '--network', 'host', '--entrypoint', '',
      '-v', `${project}:/builds/group/project`, '-w', '/builds/group/project',
      '-e', `CI_REGISTRY=${registry.host}`, '-e', `CI_REGISTRY_USER=${registry.username}`, '-e', `CI_REGISTRY_PASSWORD=${registry.password}`,
      '-e', `CI_REGISTRY_IMAGE=${image}`, '-e', 'CI_COMMIT_TAG=v1.0.0', '-e', 'CI_PROJECT_DIR=/builds/group/project',
      KILN_DEBUG, 'sh', '-c', jobScript(ca),
    ], { env: dockerEnv(), timeoutMs: 300_000 });
    assert.equal(job.code, 0, job.stdout + job.stderr);
    assert.ok(!(job.stdout + job.stderr).includes(registry.password!), 'the password was printed');

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
