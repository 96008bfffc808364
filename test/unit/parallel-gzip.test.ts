// Parallel gzip is checked against independent decoders (zlib's gunzip and Debian's `gzip -d`),
// against zlib's own gzip below the threshold, and for what a stream owes its pipeline: order,
// bounded memory under a stalled consumer, and errors from either side.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { crc32, gunzipSync, gzipSync, inflateRawSync } from 'node:zlib';
import { createParallelGzip, ParallelGzip, sampledByteEntropy, storedDeflate, type ParallelGzipOptions } from '../../src/layer/parallel-gzip.js';

const BLOCK = 64 << 10;

/** Deterministic incompressible bytes (xorshift32), so a failure can be reproduced. */
function noise(n: number, seed = 1): Buffer {
  const out = Buffer.alloc(n + 3);
  let x = seed | 0 || 1;
  for (let i = 0; i < n; i += 4) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    out.writeInt32LE(x, i);
  }
  return out.subarray(0, n);
}

/** Deterministic text-like bytes: words from a small vocabulary. */
function text(n: number, seed = 7): Buffer {
  const words = ['layer', 'image', 'kiln', 'gzip', 'block', 'stream', 'digest', 'the', 'of', 'registry', 'manifest', '\n'];
  const r = noise(n, seed);
  const parts: string[] = [];
  let len = 0;
  for (let i = 0; len < n; i++) {
    const w = words[r[i % r.length]! % words.length]! + ' ';
    parts.push(w);
    len += w.length;
  }
  return Buffer.from(parts.join('')).subarray(0, n);
}

/** The input as writes of `chunk` bytes (or cycling through several sizes). */
function* pieces(input: Buffer, chunk: number | number[]): Generator<Buffer> {
  const sizes = Array.isArray(chunk) ? chunk : [chunk];
  for (let at = 0, i = 0; at < input.length; i++) {
    const n = sizes[i % sizes.length]!;
    yield input.subarray(at, at + n);
    at += n;
  }
}

async function compress(input: Buffer, options: ParallelGzipOptions, chunk: number | number[] = 100_000): Promise<{ out: Buffer; gz: ParallelGzip }> {
  const gz = createParallelGzip(options);
  const parts: Buffer[] = [];
  await pipeline(Readable.from(pieces(input, chunk)), gz, new Writable({
    write(c: Buffer, _e, cb) { parts.push(c); cb(); },
  }));
  return { out: Buffer.concat(parts), gz };
}

function gzipD(data: Buffer): Buffer {
  return execFileSync('gzip', ['-dc'], { input: data, maxBuffer: 1 << 28 });
}

describe('parallel gzip', () => {
  const sizes = [1, 100, 32 << 10, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK, 5 * BLOCK + 12_345];
  for (const level of [1, 6, 9]) {
    it(`round-trips random and text inputs at level ${level} through gunzip and gzip -d`, async () => {
      for (const [kind, make] of [['random', noise], ['text', text]] as const) {
        for (const size of sizes) {
          const input = make(size);
          // threshold 0: even tiny inputs take the parallel path.
          const { out, gz } = await compress(input, { level, blockSize: BLOCK, threshold: 0, maxInFlight: 3 }, [7_000, 65_536, 100_001]);
          const what = `${kind} ${size} bytes, level ${level}`;
          assert.equal(gz.blocks, Math.floor(size / BLOCK) + 1, what);
          assert.ok(gunzipSync(out).equals(input), `gunzip: ${what}`);
          assert.ok(gzipD(out).equals(input), `gzip -d: ${what}`);
          assert.equal(out.readUInt32LE(out.length - 8), crc32(input), `CRC-32: ${what}`);
          assert.equal(out.readUInt32LE(out.length - 4), size, `ISIZE: ${what}`);
        }
      }
    });
  }

  it('round-trips an empty input', async () => {
    for (const threshold of [0, 1 << 20]) {
      const { out } = await compress(Buffer.alloc(0), { level: 1, blockSize: BLOCK, threshold });
      assert.equal(gunzipSync(out).length, 0);
      assert.equal(gzipD(out).length, 0);
    }
  });

  it('writes exactly what zlib writes for inputs up to the threshold, and blocks above it', async () => {
    for (const level of [1, 6, 9]) {
      const input = text(300_000);
      const small = await compress(input, { level, blockSize: BLOCK, threshold: input.length });
      assert.deepEqual(small.out, gzipSync(input, { level }), `level ${level}`);
      assert.equal(small.gz.blocks, 0);
      const big = await compress(input, { level, blockSize: BLOCK, threshold: input.length - 1 });
      assert.equal(big.gz.blocks, 5);
      assert.notDeepEqual(big.out, small.out);
      assert.ok(gunzipSync(big.out).equals(input));
      // The same header as zlib's (XFL depends on the level).
      assert.deepEqual(big.out.subarray(0, 10), small.out.subarray(0, 10));
    }
  });

  it('gives the same bytes however the input is written and however many blocks are in flight', async () => {
    const input = Buffer.concat([noise(1 << 20), text(1 << 20), noise(300_001, 3)]);
    const options = { level: 6, blockSize: BLOCK, threshold: 0 };
    const a = await compress(input, { ...options, maxInFlight: 4 }, 1 << 20);
    const b = await compress(input, { ...options, maxInFlight: 1 }, [1, 4_095, 70_000, 333]);
    const c = await compress(input, { ...options, maxInFlight: 2 }, 65_536);
    assert.ok(a.gz.peakInFlight > 1, 'blocks overlapped');
    assert.deepEqual(b.out, a.out);
    assert.deepEqual(c.out, a.out);
    assert.ok(gunzipSync(a.out).equals(input));
  });

  it('primes each block with the tail of the one before, so matches reach across blocks', async () => {
    // A 16 KiB random pattern repeated: one stream stores it once; blocks without a dictionary
    // would store it again in each of the 64 blocks (over 1 MiB).
    const pattern = noise(16 << 10, 5);
    const input = Buffer.concat(Array.from({ length: 256 }, () => pattern));
    const { out, gz } = await compress(input, { level: 6, blockSize: BLOCK, threshold: 0 });
    assert.equal(gz.blocks, 65);
    assert.ok(out.length < 48 << 10, `${out.length} bytes`);
    assert.ok(gzipD(out).equals(input));
  });

  it('stores incompressible blocks instead of deflating them, and still round-trips', async () => {
    const MIB = 1 << 20;
    const input = Buffer.concat([noise(4 * MIB, 11), text(2 * MIB), noise(MIB, 12), text(MIB / 2)]);
    for (const level of [1, 6, 9]) {
      const { out, gz } = await compress(input, { level, blockSize: MIB, threshold: 0 });
      assert.equal(gz.blocks, 8, `level ${level}`);
      assert.equal(gz.storedBlocks, 5, `level ${level}: the five random blocks are stored`);
      // Stored costs 5 bytes per 64 KiB; the text still shrinks as much as on its own.
      const textAlone = gzipSync(Buffer.concat([text(2 * MIB), text(MIB / 2)]), { level }).length;
      assert.ok(out.length < 5 * MIB + 1_000 + textAlone * 1.05, `level ${level}: ${out.length} bytes`);
      assert.ok(gunzipSync(out).equals(input), `gunzip, level ${level}`);
      assert.ok(gzipD(out).equals(input), `gzip -d, level ${level}`);
    }
    const again = await compress(input, { level: 6, blockSize: MIB, threshold: 0, maxInFlight: 1 }, [4_095, 70_000]);
    assert.deepEqual(again.out, (await compress(input, { level: 6, blockSize: MIB, threshold: 0 })).out, 'the same bytes however written');
  });

  it('deflates high-entropy bytes that repeat, which deflate does shrink', async () => {
    // Each byte is as random as noise, but the 16 KiB pattern recurs within deflate's window.
    const pattern = noise(16 << 10, 9);
    const input = Buffer.concat(Array.from({ length: 256 }, () => pattern));
    const { out, gz } = await compress(input, { level: 1, blockSize: 1 << 20, threshold: 0 });
    assert.equal(gz.storedBlocks, 0);
    assert.ok(out.length < 256 << 10, `${out.length} bytes of 4 MiB`);
    assert.ok(gzipD(out).equals(input));
  });

  it('writes stored deflate blocks that inflate to their input, final only when last', () => {
    for (const size of [0, 1, 65_535, 65_536, 200_000]) {
      const input = noise(size, 21);
      assert.ok(inflateRawSync(storedDeflate(input, true)).equals(input), `${size} bytes, last`);
      // Not last: a final empty stored block must follow before the stream inflates.
      const open = Buffer.concat([storedDeflate(input, false), storedDeflate(Buffer.alloc(0), true)]);
      assert.ok(inflateRawSync(open).equals(input), `${size} bytes, then an empty last block`);
    }
  });

  it('samples entropy near 8 bits for random bytes and well below for text', () => {
    assert.ok(sampledByteEntropy(noise(1 << 20, 4)) > 7.98);
    assert.ok(sampledByteEntropy(text(1 << 20)) < 5);
    assert.equal(sampledByteEntropy(Buffer.alloc(1 << 20)), 0);
  });

  it('keeps a bounded number of blocks in flight and stops reading when the consumer stalls', async () => {
    const chunk = noise(1 << 20, 9);
    let produced = 0;
    const source = Readable.from((function* () {
      for (let i = 0; i < 256; i++) { produced += chunk.length; yield chunk; }
    })());
    const gz = createParallelGzip({ level: 1, blockSize: BLOCK, threshold: 0, maxInFlight: 3 });
    let received = 0;
    // Takes 4 chunks, then never calls back: the pipeline must stop pulling from the source.
    const sink = new Writable({
      write(c: Buffer, _e, cb) { received += c.length; if (received < 4 * BLOCK) cb(); },
    });
    const done = pipeline(source, gz, sink).catch((e: unknown) => e);
    let last = -1;
    for (let waited = 0; waited < 5000 && produced !== last; waited += 200) {
      last = produced;
      await sleep(200);
    }
    assert.equal(produced, last, 'the source was still being read after 5 s');
    assert.ok(produced <= 8 << 20, `read ${produced >> 20} MiB of 256 MiB with the consumer stalled`);
    assert.ok(gz.peakInFlight <= 3 && gz.inFlight <= 3, `${gz.peakInFlight} blocks in flight`);
    source.destroy(new Error('stop'));
    assert.match(String(await done), /stop/);
  });

  it('keeps the order with a slow consumer', async () => {
    const input = Buffer.concat([text(600_000), noise(600_000)]);
    const gz = createParallelGzip({ level: 1, blockSize: BLOCK, threshold: 0, maxInFlight: 4 });
    const parts: Buffer[] = [];
    await pipeline(Readable.from(pieces(input, 50_000)), gz, new Writable({
      highWaterMark: 1,
      write(c: Buffer, _e, cb) { parts.push(c); setTimeout(cb, 2); },
    }));
    assert.ok(gz.peakInFlight <= 4);
    assert.ok(gunzipSync(Buffer.concat(parts)).equals(input));
  });

  it('fails the pipeline when the source fails mid-stream, and writes nothing after', async () => {
    const gz = createParallelGzip({ level: 6, blockSize: BLOCK, threshold: 0, maxInFlight: 4 });
    const source = Readable.from((function* () {
      for (let i = 0; i < 20; i++) yield noise(50_000, i + 1);
      throw new Error('source broke');
    })());
    let after = 0;
    let failed = false;
    const sink = new Writable({ write(_c, _e, cb) { if (failed) after++; cb(); } });
    await assert.rejects(pipeline(source, gz, sink), /source broke/);
    failed = true;
    await sleep(300); // blocks still in the pool finish meanwhile
    assert.ok(gz.destroyed);
    assert.equal(after, 0);
  });

  it('reports its own destruction with blocks in flight, and emits nothing after', async () => {
    const gz = createParallelGzip({ level: 9, blockSize: BLOCK, threshold: 0, maxInFlight: 4 });
    let afterDestroy = 0;
    let destroyed = false;
    gz.on('data', () => { if (destroyed) afterDestroy++; });
    const failed = once(gz, 'error');
    gz.write(noise(4 * BLOCK + 1));
    // Microtasks only: blocks get submitted, but no deflate can report back before the event loop turns.
    for (let i = 0; i < 20 && gz.inFlight < 4; i++) await Promise.resolve();
    assert.equal(gz.inFlight, 4, 'blocks are in flight');
    destroyed = true;
    gz.destroy(new Error('aborted'));
    const [error] = await failed;
    assert.match(String(error), /aborted/);
    await sleep(300); // the blocks in the pool finish meanwhile
    assert.equal(afterDestroy, 0);
  });

  it('fails the pipeline when the consumer fails', async () => {
    const gz = createParallelGzip({ level: 1, blockSize: BLOCK, threshold: 0 });
    const sink = new Writable({ write(_c, _e, cb) { cb(new Error('disk full')); } });
    await assert.rejects(pipeline(Readable.from(pieces(noise(1 << 20), 100_000)), gz, sink), /disk full/);
  });

  it('refuses settings it cannot honour', () => {
    assert.throws(() => createParallelGzip({ level: 10 }), /level must be 0-9/);
    assert.throws(() => createParallelGzip({ blockSize: 1000 }), /block size must be at least 32768/);
    assert.throws(() => createParallelGzip({ maxInFlight: 0 }), /maxInFlight/);
  });
});
