// kiln's temporary files (blob store, build roots, COPY --from trees, ADD archives) all live under
// TMPDIR and are gone when kiln exits, whether the build succeeded or failed: CI runners that build
// many images must not fill their disk.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { kiln } from '../helpers/exec.js';
import { useBaseFixture } from '../helpers/fixture.js';

const fx = useBaseFixture('temp-files', { image: 'busybox', format: 'oci' });

/** A context whose Dockerfile uses every kind of temporary file kiln makes on the host. */
async function context(name: string, lastStep: string): Promise<string> {
  const ctx = join(fx.dir, name);
  await mkdir(join(ctx, 'files'), { recursive: true });
  await writeFile(join(ctx, 'files', 'a.txt'), 'a\n');
  execFileSync('tar', ['-czf', join(ctx, 'files.tar.gz'), '-C', ctx, 'files']);
  await writeFile(join(ctx, 'Dockerfile'), [
    `FROM ${fx.base} AS build`,
    'RUN mkdir -p /out && echo built > /out/built.txt',
    `FROM ${fx.base}`,
    'ADD files.tar.gz /unpacked/',
    'COPY --from=build /out /out',
    'RUN --mount=type=bind,source=files,target=/mnt cat /mnt/a.txt > /copied.txt',
    lastStep,
  ].join('\n') + '\n');
  return ctx;
}

describe('temporary files', () => {
  for (const [outcome, lastStep] of [['succeeds', 'RUN echo done > /done.txt'], ['fails', 'RUN echo failing && exit 7']] as const) {
    it(`are all removed when a chroot build with RUN, ADD and COPY --from ${outcome}`, async () => {
      const temp = join(fx.dir, `tmp-${outcome}`);
      await mkdir(temp);
      const ctx = await context(`ctx-${outcome}`, lastStep);
      // Watched while kiln runs: the test means something only if kiln used this TMPDIR.
      const seen = new Set<string>();
      const watch = setInterval(() => {
        readdir(temp).then((names) => names.forEach((n) => seen.add(n.replace(/-[^-]*$/, '-'))), () => undefined);
      }, 20);
      const r = await kiln(['executor', '-c', ctx, '-d', `${fx.registry.host}/apps/temp-${outcome}:1`], { env: { ...process.env, TMPDIR: temp } })
        .finally(() => clearInterval(watch));
      for (const prefix of ['kiln-build-', 'kiln-root-']) assert.ok(seen.has(prefix), `kiln made ${prefix}* in TMPDIR (saw ${[...seen].join(', ')})`);
      if (outcome === 'succeeds') assert.equal(r.code, 0, r.stderr);
      else assert.notEqual(r.code, 0, 'the last RUN fails the build');
      assert.match(r.stderr, /RUN --mount=type=bind/, 'the build got as far as the bind mount');
      assert.deepEqual(await readdir(temp), [], `left in TMPDIR after the build ${outcome === 'succeeds' ? 'succeeded' : 'failed'}`);
    });
  }
});
