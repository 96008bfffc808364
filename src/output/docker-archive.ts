// A docker-archive (the `docker save` format as go-containerregistry's tarball writer makes it, which
// is what kaniko's --tar-path writes): the config as "sha256:<hex>", each distinct layer blob as
// "<hex>.tar.gz", then a manifest.json naming them and the image's tags.
//
// Layers stay gzip-compressed as stored: `docker load` decompresses layer files by their magic bytes,
// and containers/image (skopeo, podman load) detects compressed layers in docker-archives too.
// The archive is streamed to disk; a layer is never held in memory.
//
// The tar is written with kiln's own header encoder (src/layer/tar-format.ts), the one layers use:
// plain regular files with fixed fields, so there is nothing tar-stream would add but a second format.
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { BuiltImage } from '../image/image.js';
import { END_OF_ARCHIVE, encodeHeader, padding } from '../layer/tar-format.js';

/** manifest.json of a docker-archive: one record per image. */
export interface DockerArchiveManifestEntry {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

/** Writes the archive to a temporary name beside `path` and renames it into place when complete. */
export async function writeDockerArchive(image: BuiltImage, repoTags: string[], path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await pipeline(Readable.from(archiveContent(image, repoTags), { objectMode: false }), createWriteStream(tmp));
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

async function* archiveContent(image: BuiltImage, repoTags: string[]): AsyncGenerator<Buffer> {
  const configName = image.configDescriptor.digest;
  yield* fileEntry(configName, image.configBytes);
  const layerFiles: string[] = [];
  const written = new Set<string>();
  for (const layer of image.manifest.layers) {
    const name = `${layer.digest.slice(layer.digest.indexOf(':') + 1)}.tar.gz`;
    layerFiles.push(name);
    if (written.has(name)) continue; // the same layer twice in an image is stored once
    written.add(name);
    yield fileHeader(name, layer.size);
    let size = 0;
    for await (const chunk of image.store.openVerified(layer.digest) as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > layer.size) break;
      yield chunk;
    }
    if (size !== layer.size) throw new Error(`layer ${layer.digest} has ${size > layer.size ? 'more' : size} bytes in the blob store, its descriptor says ${layer.size}`);
    const pad = padding(size);
    if (pad.length) yield pad;
  }
  const manifest: DockerArchiveManifestEntry[] = [{ Config: configName, RepoTags: repoTags, Layers: layerFiles }];
  yield* fileEntry('manifest.json', Buffer.from(JSON.stringify(manifest)));
  yield END_OF_ARCHIVE;
}

function fileHeader(name: string, size: number): Buffer {
  return encodeHeader({ name, type: 'file', mode: 0o644, uid: 0, gid: 0, size, mtime: 0 });
}

function* fileEntry(name: string, data: Buffer): Generator<Buffer> {
  yield fileHeader(name, data.length);
  yield data;
  const pad = padding(data.length);
  if (pad.length) yield pad;
}
