// The Dockerfile comparison suite (issue #5): every directory under test/data/dockerfile-suite/ is one
// Dockerfile, built by kiln and by `docker build` (legacy builder) from the same base images, whose
// config and file trees must match (see test/helpers/dockerfile-suite.ts for a case's files). The base
// images (busybox, Debian, and Node.js on Debian) are pushed once to one registry and pulled into the
// test dockerd; cases name them with @BUSYBOX@, @DEBIAN@, @NODE@, and @REGISTRY@ for images that
// published cases push there.
import { strict as assert } from 'node:assert';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pushBusyboxImage } from '../helpers/base-images.js';
import { pushDebianImage } from '../helpers/debian-base.js';
import { compareImages, dockerBuild, kilnBuild, loadSuiteCases, prepareContext, runCheck, type SuiteCase } from '../helpers/dockerfile-suite.js';
import { docker } from '../helpers/exec.js';
import { pushNodeImage } from '../helpers/node-base.js';
import { repoRoot } from '../helpers/paths.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';

const casesRoot = join(repoRoot, 'test', 'data', 'dockerfile-suite');
const allCases = await loadSuiteCases(casesRoot);
/** KILN_SUITE_ONLY=a,b runs those cases (and the published ones they may build FROM); for working on cases. */
const only = process.env.KILN_SUITE_ONLY?.split(',').filter(Boolean);
const cases = only ? allCases.filter((c) => c.publish || only.includes(c.name)) : allCases;
/** KILN_SUITE_KNOWN=1 runs the known divergences too, to see them fail (or pass once fixed). */
const runKnown = process.env.KILN_SUITE_KNOWN === '1';

let registry: TestRegistry;
let dir: string;
let tokens: Record<string, string>;
/** Tags left in the test dockerd by published cases, removed after the suite. */
const published: string[] = [];

const texts = new Map(await Promise.all(cases.map(async (c) => [c.name, await readFile(join(c.dir, 'Dockerfile'), 'utf8')] as const)));
const uses = (c: SuiteCase, token: RegExp): boolean => token.test(texts.get(c.name) ?? '');

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-dockerfile-suite-'));
  registry = await startRegistry('http');
  tokens = {
    '@BUSYBOX@': `${registry.host}/base/busybox:latest`,
    '@DEBIAN@': `${registry.host}/base/debian:bookworm`,
    '@NODE@': `${registry.host}/base/node:20`,
    '@REGISTRY@': registry.host,
  };
  // Only the bases some case uses: Debian and Node.js cost a push and a pull each.
  const node = cases.some((c) => uses(c, /@NODE@/));
  await pushBusyboxImage(registry, 'base/busybox', 'latest', 'v2s2');
  await docker(['pull', '-q', tokens['@BUSYBOX@']!]);
  if (node || cases.some((c) => uses(c, /@DEBIAN@/))) {
    await pushDebianImage(registry, 'base/debian', 'bookworm', 'v2s2');
    await docker(['pull', '-q', tokens['@DEBIAN@']!], { timeoutMs: 300_000 });
  }
  if (node) {
    await pushNodeImage(registry, 'base/node', '20', 'v2s2');
    await docker(['pull', '-q', tokens['@NODE@']!], { timeoutMs: 300_000 });
  }
});

after(async () => {
  const bases = [tokens['@BUSYBOX@'], tokens['@DEBIAN@'], tokens['@NODE@']].filter((t): t is string => t !== undefined);
  for (const tag of [...published, ...bases]) await docker(['rmi', '-f', tag]).catch(() => undefined);
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function runCase(c: SuiteCase): Promise<void> {
  const ctx = await prepareContext(c, dir, tokens);
  const kilnTag = c.publish ? `${registry.host}/suite/${c.name}:latest` : `kiln-suite/${c.name}:kiln`;
  const dockerTag = `kiln-suite/${c.name}:docker`;
  await kilnBuild(c, ctx, kilnTag, join(dir, `${c.name}.tar`), c.publish);
  if (c.publish) published.push(kilnTag);
  try {
    if (c.dockerUnsupported) {
      assert.ok(c.check, `${c.name}: a case docker cannot build needs a check`);
      assert.equal(await runCheck(c, kilnTag), await readFile(join(c.dir, 'expected-output.txt'), 'utf8'));
      return;
    }
    await dockerBuild(c, ctx, dockerTag);
    try {
      await compareImages(c, kilnTag, dockerTag);
    } finally {
      await docker(['rmi', dockerTag]);
    }
  } finally {
    if (!c.publish) await docker(['rmi', kilnTag]);
  }
}

/** Cases on the Debian and Node.js bases take longest: they start first, so the small ones run beside them. */
const heavy = (c: SuiteCase): number => Number(uses(c, /@(DEBIAN|NODE)@/));
const byWeight = (list: SuiteCase[]): SuiteCase[] => [...list].sort((a, b) => heavy(b) - heavy(a));

function caseTest(c: SuiteCase): void {
  const title = c.name + (c.dockerUnsupported ? ` (kiln only: ${c.dockerUnsupported})` : '');
  it(title, { skip: c.knownDivergence && !runKnown ? `known divergence: ${c.knownDivergence}` : false }, () => runCase(c));
}

describe('Dockerfile suite: published bases (built before the cases that start FROM them)', () => {
  it('has the cases', () => assert.ok(allCases.length >= 40, `only ${allCases.length} cases under ${casesRoot}`));
  for (const c of cases.filter((c) => c.publish)) caseTest(c);
});

// Two at a time: a build mostly waits on docker, the registry or the disk.
describe(`Dockerfile suite: kiln matches docker build (${cases.length} Dockerfiles)`, { concurrency: 2 }, () => {
  for (const c of byWeight(cases.filter((c) => !c.publish))) caseTest(c);
});
