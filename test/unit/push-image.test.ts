import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { BlobStore } from '../../src/image/blob-store.js';
import type { BuiltImage } from '../../src/image/image.js';
import { MediaType, type Descriptor } from '../../src/image/types.js';
import { parseReference } from '../../src/reference/reference.js';
import type { OpenBlob } from '../../src/registry/range-reader.js';
import { RegistryError } from '../../src/registry/types.js';
import { EarlyUploads, pushImage } from '../../src/remote/push-image.js';
import type { RegistrySession } from '../../src/remote/session.js';

const digest = (c: string): string => `sha256:${c.repeat(64)}`;

/** What pushImage reads of a built image, every blob in the store. */
function builtImage(layers: Descriptor[], config: Descriptor, manifestDigest: string): BuiltImage {
  return {
    manifest: { schemaVersion: 2, mediaType: MediaType.ociManifest, config, layers },
    manifestBytes: Buffer.from('{}'),
    manifestDescriptor: { mediaType: MediaType.ociManifest, digest: manifestDigest, size: 2 },
    configDescriptor: config,
    store: { has: async () => true, openVerified: () => Readable.from([Buffer.from('{}')]) },
  } as unknown as BuiltImage;
}

describe('pushImage', () => {
  it('uploads the config while early uploads of more layers than it has slots are still running', { timeout: 10_000 }, async () => {
    const layers: Descriptor[] = ['1', '2', '3', '4', '5'].map((c) => ({ mediaType: MediaType.ociLayerGzip, digest: digest(c), size: 10 }));
    const config: Descriptor = { mediaType: MediaType.ociConfig, digest: digest('c'), size: 2 };
    const manifestDigest = digest('m');
    let configUp!: () => void;
    const configDone = new Promise<void>((resolve) => { configUp = resolve; });
    const pushed: string[] = [];
    const client = {
      pushBlob: async (blob: Descriptor, open: OpenBlob) => {
        await open();
        pushed.push(blob.digest);
        if (blob.digest === config.digest) configUp();
        return 'uploaded';
      },
      putManifest: async () => manifestDigest,
    };
    // The layers' early uploads end only once the config is up: had the config to wait for a slot
    // behind them, the push would never end.
    const early = {
      hurry: () => undefined,
      present: async () => false,
      uploaded: async (_dest: unknown, d: string) => (d === config.digest ? false : (await configDone, true)),
    } as unknown as EarlyUploads;
    const image = builtImage(layers, config, manifestDigest);
    const session = { client: () => client } as unknown as RegistrySession;
    await pushImage(image, [parseReference('127.0.0.1:5000/app:1')], session, { blobSources: [], retries: 0, ignoreImmutableTagErrors: false, early });
    assert.deepEqual(pushed, [config.digest]);
  });

  it('checks no blob the image its tag named before has, and checks them after all when the registry lost one', async () => {
    const [kept, gone, fresh] = ['1', '2', '3'].map((c): Descriptor => ({ mediaType: MediaType.ociLayerGzip, digest: digest(c), size: 10 }));
    const config: Descriptor = { mediaType: MediaType.ociConfig, digest: digest('c'), size: 2 };
    const oldConfig: Descriptor = { mediaType: MediaType.ociConfig, digest: digest('o'), size: 2 };
    const manifestDigest = digest('m');
    const before = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.ociManifest, config: oldConfig, layers: [kept, gone] }));
    for (const registryLostOne of [false, true]) {
      const checked: string[] = [];
      let puts = 0;
      const client = {
        getManifest: async (reference: string) => {
          assert.equal(reference, '1');
          return { bytes: before, mediaType: MediaType.ociManifest, digest: digest('b') };
        },
        pushBlob: async (blob: Descriptor) => {
          checked.push(blob.digest);
          return 'uploaded';
        },
        putManifest: async () => {
          if (puts++ === 0 && registryLostOne && !checked.includes(gone!.digest)) {
            throw new RegistryError('HTTP 400 (MANIFEST_BLOB_UNKNOWN: blob unknown to registry)', '127.0.0.1:5000', 400);
          }
          return manifestDigest;
        },
      };
      const session = { client: () => client } as unknown as RegistrySession;
      const dest = parseReference('127.0.0.1:5000/app:1');
      const early = new EarlyUploads([dest], session);
      early.lookAtDestinations();
      await pushImage(builtImage([kept!, gone!, fresh!], config, manifestDigest), [dest], session, { blobSources: [], retries: 0, ignoreImmutableTagErrors: false, early });
      if (registryLostOne) assert.deepEqual(checked.sort(), [fresh!.digest, config.digest, kept!.digest, gone!.digest].sort());
      else assert.deepEqual(checked.sort(), [fresh!.digest, config.digest].sort(), 'only what the earlier image lacks');
    }
  });

  it('streams a big layer of the final image as it is written; a small one goes up once written', async () => {
    const store = await BlobStore.createTemp();
    try {
      const streamed = new Map<string, Buffer>();
      const pushed: string[] = [];
      const client = {
        streamBlob: async (open: () => NodeJS.ReadableStream, finished: Promise<{ digest: string } | undefined>) => {
          const chunks: Buffer[] = [];
          for await (const c of open()) chunks.push(c as Buffer);
          const blob = await finished;
          if (!blob) return 'cancelled';
          streamed.set(blob.digest, Buffer.concat(chunks));
          return 'uploaded';
        },
        pushBlob: async (blob: Descriptor) => { pushed.push(blob.digest); return 'uploaded'; },
      };
      const session = { client: () => client } as unknown as RegistrySession;
      const dest = parseReference('127.0.0.1:5000/app:1');
      const early = new EarlyUploads([dest], session);
      const write = async (bytes: Buffer): Promise<Descriptor> => {
        const writer = await store.createWriter({ growing: true });
        await writer.growth!.opened;
        const finished = early.offerGrowing(writer.growth!);
        for (let i = 0; i < bytes.length; i += 1 << 20) {
          writer.stream.write(bytes.subarray(i, i + (1 << 20)));
          await new Promise((resolve) => setTimeout(resolve, 2));
        }
        const { digest, size } = await writer.commit();
        const layer: Descriptor = { mediaType: MediaType.ociLayerGzip, digest, size };
        finished(layer);
        early.offer(layer, () => store.openVerified(digest), []);
        return layer;
      };
      const big = randomBytes(9 << 20);
      const bigLayer = await write(big);
      const smallLayer = await write(randomBytes(1 << 20));
      assert.equal(await early.uploaded(dest, bigLayer.digest), true);
      assert.equal(await early.uploaded(dest, smallLayer.digest), true);
      assert.ok(streamed.get(bigLayer.digest)?.equals(big), 'the big layer streamed whole');
      assert.deepEqual(pushed, [smallLayer.digest], 'only the small one went up after it was written');
    } finally {
      await store.dispose();
    }
  });

  it('offers a mount only from where a blob can be: never the config, a cache hit from its cache repository', async () => {
    const [base, hit, fresh] = ['1', '2', '3'].map((c): Descriptor => ({ mediaType: MediaType.ociLayerGzip, digest: digest(c), size: 10 }));
    const config: Descriptor = { mediaType: MediaType.ociConfig, digest: digest('c'), size: 2 };
    const manifestDigest = digest('m');
    const mounts = new Map<string, string[] | undefined>();
    const client = {
      pushBlob: async (blob: Descriptor, _open: OpenBlob, options: { mountFrom?: string[] }) => {
        mounts.set(blob.digest, options.mountFrom);
        return 'uploaded';
      },
      putManifest: async () => manifestDigest,
    };
    const image = builtImage([base!, hit!, fresh!], config, manifestDigest);
    const session = { client: () => client } as unknown as RegistrySession;
    const registry = '127.0.0.1:5000';
    await pushImage(image, [parseReference(`${registry}/app:1`)], session, {
      blobSources: [{ registry, repository: 'library/base' }, { registry, repository: 'app/cache' }],
      remoteLayers: new Map([[hit!.digest, { registry, repository: 'app/cache' }]]),
      retries: 0, ignoreImmutableTagErrors: false,
    });
    assert.deepEqual(mounts.get(config.digest), []);
    assert.deepEqual(mounts.get(hit!.digest), ['app/cache']);
    assert.deepEqual(mounts.get(base!.digest), ['library/base', 'app/cache']);
    assert.deepEqual(mounts.get(fresh!.digest), ['library/base', 'app/cache']);
  });

  it('sends a cache hit early only to destinations that can mount it', async () => {
    const layer: Descriptor = { mediaType: MediaType.ociLayerGzip, digest: digest('h'), size: 10 };
    const calls: { dest: string; mountFrom?: string[] }[] = [];
    const session = {
      client: (registry: string, repository: string) => ({
        pushBlob: async (_blob: Descriptor, _open: OpenBlob, options: { mountFrom?: string[] }) => {
          calls.push({ dest: `${registry}/${repository}`, mountFrom: options.mountFrom });
          return 'mounted';
        },
      }),
    } as unknown as RegistrySession;
    const near = parseReference('127.0.0.1:5000/app:1');
    const far = parseReference('127.0.0.1:6000/app:1');
    const early = new EarlyUploads([near, far], session);
    early.offer(layer, () => Readable.from([]), [{ registry: '127.0.0.1:5000', repository: 'app/cache' }], { mountableOnly: true });
    assert.equal(await early.uploaded(near, layer.digest), true);
    assert.equal(await early.uploaded(far, layer.digest), false);
    assert.deepEqual(calls, [{ dest: '127.0.0.1:5000/app', mountFrom: ['app/cache'] }]);
  });
});
