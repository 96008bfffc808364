import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { access, readdir, readFile, writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { BlobStore, DigestMismatchError, openGrowingVerified, type BlobWriter } from '../../src/image/blob-store.js';

const sha256 = (data: Buffer | string): string => 'sha256:' + createHash('sha256').update(data).digest('hex');

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Everything under <store>/sha256 that is not a finished blob. */
async function leftovers(store: BlobStore): Promise<string[]> {
  return (await readdir(`${store.dir}/sha256`)).filter((name) => !/^[0-9a-f]{64}$/.test(name));
}

describe('BlobStore', () => {
  let store: BlobStore;
  before(async () => { store = await BlobStore.createTemp('kiln-blob-test-'); });
  after(async () => store.dispose());

  it('stores bytes under their sha256 and describes them', async () => {
    const data = Buffer.from('{"a":1}');
    const d = await store.putBytes(data, 'application/json');
    assert.deepEqual(d, { mediaType: 'application/json', digest: sha256(data), size: data.length });
    assert.equal(store.path(d.digest), `${store.dir}/sha256/${d.digest.slice(7)}`);
    assert.deepEqual(await readFile(store.path(d.digest)), data);
    assert.equal(await store.has(d.digest), true);
    assert.deepEqual(await store.putBytes(data, 'application/json'), d, 'storing the same bytes again is harmless');
    assert.equal(await store.has(sha256('never stored')), false);
    assert.deepEqual(await leftovers(store), []);
  });

  it('rejects digests that are not sha256', () => {
    assert.throws(() => store.path('md5:abc'), /unsupported digest/);
    assert.throws(() => store.path('sha256:../../etc/passwd'), /unsupported digest/);
    assert.throws(() => store.path('sha256:' + 'A'.repeat(64)), /unsupported digest/);
  });

  it('streams a blob of unknown digest into place on commit', async () => {
    const writer = await store.createWriter();
    const parts = [Buffer.from('hello '), Buffer.alloc(100_000, 7), Buffer.from(' world')];
    for (const part of parts) writer.stream.write(part);
    writer.stream.end();
    const { digest, size } = await writer.commit();
    const whole = Buffer.concat(parts);
    assert.equal(digest, sha256(whole));
    assert.equal(size, whole.length);
    assert.deepEqual(await readFile(store.path(digest)), whole);
    assert.deepEqual(await leftovers(store), []);
  });

  it('ends the stream itself when commit() comes first', async () => {
    const writer = await store.createWriter();
    writer.stream.write('unterminated');
    const { digest } = await writer.commit();
    assert.equal(digest, sha256('unterminated'));
  });

  it('leaves nothing behind when a write is aborted', async () => {
    const writer = await store.createWriter();
    writer.stream.write('half a blob');
    await writer.abort();
    assert.deepEqual(await leftovers(store), []);
    assert.equal(await store.has(sha256('half a blob')), false);
  });

  it('reads blobs back verified, and fails on tampered bytes', async () => {
    const d = await store.putBytes(Buffer.from('original content'), 'text/plain');
    assert.equal((await readAll(store.openVerified(d.digest))).toString(), 'original content');

    await writeFile(store.path(d.digest), 'tampered content');
    await assert.rejects(readAll(store.openVerified(d.digest)), (e: unknown) => {
      assert.ok(e instanceof DigestMismatchError);
      assert.match(e.message, new RegExp(`${d.digest}.*${sha256('tampered content')}`));
      return true;
    });
    await assert.rejects(store.readVerified(d.digest), DigestMismatchError, 'read whole, the same check');
    await writeFile(store.path(d.digest), 'original content\n');
    await assert.rejects(readAll(store.openVerified(d.digest)), DigestMismatchError, 'one byte more is tampering too');
    await writeFile(store.path(d.digest), 'original content');
    assert.equal((await store.readVerified(d.digest)).toString(), 'original content');
  });

  it('reports a missing blob by digest', async () => {
    const missing = sha256('not here');
    await assert.rejects(readAll(store.openVerified(missing)), new RegExp(`blob ${missing} is not in the blob store`));
    await assert.rejects(store.readVerified(missing), new RegExp(`blob ${missing} is not in the blob store`));
  });

  it('removes its directory on dispose', async () => {
    const temp = await BlobStore.createTemp();
    await temp.putBytes(Buffer.from('x'), 'text/plain');
    await temp.dispose();
    await assert.rejects(access(temp.dir), { code: 'ENOENT' });
  });
});

describe('a blob followed as it is written', () => {
  let store: BlobStore;
  before(async () => { store = await BlobStore.createTemp('kiln-blob-growth-'); });
  after(async () => store.dispose());

  const pieces = [randomBytes(300_000), randomBytes(5), randomBytes(1_500_000)];
  const whole = Buffer.concat(pieces);
  const pause = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20));

  /** Writes the pieces with pauses, so a reader keeps catching up with the writer. */
  async function writeSlowly(writer: BlobWriter, end: 'commit' | 'abort'): Promise<void> {
    for (const piece of pieces) {
      await new Promise<void>((resolve, reject) => writer.stream.write(piece, (e) => (e ? reject(e) : resolve())));
      await pause();
    }
    if (end === 'commit') await writer.commit();
    else await writer.abort();
  }

  it('hands out every byte while the writer goes on, then ends at the commit', async () => {
    const writer = await store.createWriter({ growing: true });
    const growth = writer.growth!;
    await growth.opened;
    const digest = sha256(whole);
    const [read] = await Promise.all([readAll(openGrowingVerified(growth.path, store.path(digest), digest, growth.shared)), writeSlowly(writer, 'commit')]);
    assert.ok(read.equals(whole));
  });

  it('reads the committed file under its final name when it starts late', async () => {
    const writer = await store.createWriter({ growing: true });
    const growth = writer.growth!;
    await writeSlowly(writer, 'commit');
    const digest = sha256(whole);
    assert.ok((await readAll(openGrowingVerified(growth.path, store.path(digest), digest, growth.shared))).equals(whole));
  });

  it('fails when the writer gives up, and when the bytes are not the digest\'s', async () => {
    const aborted = await store.createWriter({ growing: true });
    await aborted.growth!.opened;
    const digest = sha256(whole);
    await Promise.all([
      assert.rejects(readAll(openGrowingVerified(aborted.growth!.path, store.path(digest), digest, aborted.growth!.shared)), /the download of blob sha256:\w+ failed/),
      writeSlowly(aborted, 'abort'),
    ]);
    const wrong = await store.createWriter({ growing: true });
    await wrong.growth!.opened;
    const other = sha256('something else');
    await Promise.all([
      assert.rejects(readAll(openGrowingVerified(wrong.growth!.path, store.path(other), other, wrong.growth!.shared)), DigestMismatchError),
      writeSlowly(wrong, 'commit'),
    ]);
  });
});
