// Where COPY --from reads: an earlier stage's or another image's files, unpacked once per build into
// a directory of kiln's own (under the temporary directory, which container isolation keeps out of
// the build root) and then read like a build context without ignore rules.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BuildContext } from '../context/build-context.js';
import type { BlobStore } from '../image/blob-store.js';
import type { Descriptor } from '../image/types.js';

export class CopySources {
  private readonly unpacked = new Map<string, Promise<BuildContext>>();
  private readonly dirs: string[] = [];

  constructor(private readonly store: BlobStore) {}

  /** The files of `key` (a stage or an image), whose layers `layers()` makes present in the blob store. */
  files(key: string, layers: () => Promise<readonly Descriptor[]>): Promise<BuildContext> {
    let files = this.unpacked.get(key);
    if (!files) {
      files = this.unpack(layers);
      this.unpacked.set(key, files);
    }
    return files;
  }

  private async unpack(layers: () => Promise<readonly Descriptor[]>): Promise<BuildContext> {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-from-'));
    this.dirs.push(dir);
    for (const layer of await layers()) {
      const { extractLayer } = await import('../rootfs/extract-layer.js'); // only builds with COPY --from need it
      await extractLayer(this.store.openVerified(layer.digest), dir, { whiteouts: 'apply', layerName: layer.digest });
    }
    return BuildContext.plain(dir);
  }

  async dispose(): Promise<void> {
    await Promise.all(this.dirs.map((d) => rm(d, { recursive: true, force: true })));
  }
}
