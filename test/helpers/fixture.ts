// The fixture most integration suites start from: a temp dir, a plain-HTTP distribution registry
// holding a base image made by the tests, and (for suites that compare with docker) that image
// pulled into the private dockerd. The hooks are registered in the calling suite.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { pushBusyboxImage } from './base-images.js';
import { pushDebianImage } from './debian-base.js';
import { docker } from './exec.js';
import { startRegistry, type TestRegistry } from './registry.js';

export interface BaseFixture {
  /** Set once the suite's before() hooks have run. */
  registry: TestRegistry;
  /** The base image's reference in `registry`. */
  base: string;
  /** A temp dir, removed after the suite. */
  dir: string;
}

export interface BaseFixtureOptions {
  image: 'busybox' | 'debian';
  format: 'oci' | 'v2s2';
  /** Pull the base into docker, for suites that build the same Dockerfile with `docker build`. */
  dockerPull?: boolean;
}

export function useBaseFixture(name: string, options: BaseFixtureOptions): BaseFixture {
  const fixture = {} as BaseFixture;
  before(async () => {
    fixture.dir = await mkdtemp(join(tmpdir(), `kiln-${name}-`));
    fixture.registry = await startRegistry('http');
    fixture.base = options.image === 'busybox'
      ? (await pushBusyboxImage(fixture.registry, 'base/busybox', 'latest', options.format), `${fixture.registry.host}/base/busybox:latest`)
      : (await pushDebianImage(fixture.registry, 'base/debian', 'bookworm', options.format), `${fixture.registry.host}/base/debian:bookworm`);
    if (options.dockerPull) await docker(['pull', '-q', fixture.base]);
  });
  after(async () => {
    if (options.dockerPull && fixture.base) await docker(['rmi', fixture.base]).catch(() => undefined);
    await fixture.registry?.stop();
    if (fixture.dir) await rm(fixture.dir, { recursive: true, force: true });
  });
  return fixture;
}
