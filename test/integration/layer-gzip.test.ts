// kiln's parallel gzip (issue #8) writes a big layer as blocks deflated on every core, and blocks of
// incompressible bytes as stored blocks it frames itself. The consumers that matter read such a
// layer back: skopeo (digests verified), umoci (Go's compress/gzip), GNU tar and docker (pull, run).
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { docker, kiln, mustRun } from '../helpers/exec.js';
import { useBaseFixture } from '../helpers/fixture.js';

const TIMEOUT_MS = 180_000;
const MIB = 1 << 20;

interface Manifest { layers: { digest: string; size: number }[]; }

const fx = useBaseFixture('layer-gzip', { image: 'busybox', format: 'v2s2' });

describe('gzip layers with stored (incompressible) blocks', () => {
  it('are read back by skopeo, umoci, GNU tar and docker', async () => {
    // 3 MiB of random bytes (stored, not deflated), then 3 MiB of text (deflated): well above the
    // 2 MiB under which a layer is one zlib stream.
    const text = Buffer.from('kiln parallel gzip, text that deflate shrinks\n'.repeat(Math.ceil((3 * MIB) / 46))).subarray(0, 3 * MIB);
    const data = Buffer.concat([randomBytes(3 * MIB), text]);
    const sum = createHash('sha256').update(data).digest('hex');
    const ctx = join(fx.dir, 'ctx');
    await mkdir(ctx);
    await writeFile(join(ctx, 'mixed.bin'), data);
    await writeFile(join(ctx, 'Dockerfile'), `FROM ${fx.base}\nCOPY mixed.bin /data/mixed.bin\nCMD ["/bin/busybox", "sha256sum", "/data/mixed.bin"]\n`);
    const image = `${fx.registry.host}/gzip/mixed:1`;
    const built = await kiln(['executor', '-c', ctx, '-d', image, '--insecure', '--insecure-pull'], { timeoutMs: TIMEOUT_MS });
    assert.equal(built.code, 0, built.stderr);

    const layout = join(fx.dir, 'layout');
    await mustRun('skopeo', ['copy', '--quiet', ...fx.registry.skopeoArgs('src'), `docker://${image}`, `oci:${layout}:1`], { timeoutMs: TIMEOUT_MS });
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
    const blob = (digest: string): string => join(layout, 'blobs', 'sha256', digest.slice('sha256:'.length));
    const manifest = JSON.parse(await readFile(blob(index.manifests[0]!.digest), 'utf8')) as Manifest;
    const layer = manifest.layers[manifest.layers.length - 1]!;
    // The random half is kept as it is, the text half shrinks.
    assert.ok(layer.size > 3 * MIB && layer.size < 4 * MIB, `layer of ${layer.size} bytes`);
    assert.ok(gunzipSync(await readFile(blob(layer.digest))).includes(text));
    await mustRun('gzip', ['-t', blob(layer.digest)]);
    const tar = await mustRun('tar', ['-tzvf', blob(layer.digest)]);
    assert.match(tar, /data\/mixed\.bin/);

    const bundle = join(fx.dir, 'bundle');
    await mustRun('umoci', ['unpack', '--rootless', '--image', `${layout}:1`, bundle], { timeoutMs: TIMEOUT_MS });
    assert.ok((await readFile(join(bundle, 'rootfs', 'data', 'mixed.bin'))).equals(data), 'umoci unpacks the same bytes');

    try {
      await docker(['pull', '-q', image], { timeoutMs: TIMEOUT_MS });
      const out = await docker(['run', '--rm', '--network', 'none', image], { timeoutMs: TIMEOUT_MS });
      assert.equal(out.trim().split(/\s+/)[0], sum, 'docker runs the image and reads the same bytes');
    } finally {
      await docker(['rmi', '-f', image]).catch(() => undefined);
    }
  });
});
