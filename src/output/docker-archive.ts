// A docker-archive (the `docker save` format, as go-containerregistry's tarball writer makes it):
// the config, each layer blob as stored (gzip; docker, podman and skopeo all decompress it), and a
// manifest.json naming them and the image's tags. Written as a stream; layers are never in memory.
import { createWriteStream } from 'node:fs';
import { mkdir, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { pack as createPack } from 'tar-stream';
import type { BuiltImage } from '../image/image.js';

const FIXED_TIME = new Date(0);

export async function writeDockerArchive(image: BuiltImage, repoTags: string[], path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.kiln-tmp`;
  const tar = createPack();
  const done = pipeline(tar, createWriteStream(tmp));
  try {
    const configName = image.configDescriptor.digest;
    await addBuffer(tar, configName, image.configBytes);
    const layerNames: string[] = [];
    for (const layer of image.manifest.layers) {
      const name = `${layer.digest.slice('sha256:'.length)}.tar.gz`;
      layerNames.push(name);
      await addStream(tar, name, layer.size, image.store.openVerified(layer.digest));
    }
    const manifest = [{ Config: configName, RepoTags: repoTags, Layers: layerNames }];
    await addBuffer(tar, 'manifest.json', Buffer.from(JSON.stringify(manifest)));
    tar.finalize();
    await done;
    await rename(tmp, path);
  } catch (e) {
    tar.destroy();
    await done.catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

function header(name: string, size: number) {
  return { name, size, mode: 0o644, mtime: FIXED_TIME, uid: 0, gid: 0, uname: '', gname: '', type: 'file' as const, devmajor: 0, devminor: 0 };
}

function addBuffer(tar: ReturnType<typeof createPack>, name: string, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => tar.entry(header(name, data.length), data, (err) => (err ? reject(err) : resolve())));
}

async function addStream(tar: ReturnType<typeof createPack>, name: string, size: number, source: NodeJS.ReadableStream): Promise<void> {
  let finished!: Promise<void>;
  const sink = new Promise<ReturnType<typeof tar.entry>>((resolve) => {
    finished = new Promise<void>((ok, fail) => resolve(tar.entry(header(name, size), (err) => (err ? fail(err) : ok()))));
  });
  await pipeline(source, await sink);
  await finished;
}
