// Writes what kaniko writes after a build, in kaniko's order: the digest file, the OCI layout,
// the name@digest files, then the docker-archive tarball. Pushing comes with the registry client.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { BuiltImage } from '../image/image.js';
import { familiarString, parseReference, type ImageReference } from '../reference/reference.js';
import { log } from '../log/logger.js';

export interface OutputOptions {
  destinations: string[];
  tarPath?: string;
  ociLayoutPath?: string;
  digestFile?: string;
  imageNameWithDigestFile?: string;
  imageNameTagWithDigestFile?: string;
}

/** kaniko names a tarball built without --destination with this placeholder. */
export const PLACEHOLDER_DESTINATION = 'docker.io/unset-repo/unset-image-name';

export async function writeOutputs(image: BuiltImage, options: OutputOptions): Promise<void> {
  const digest = image.manifestDescriptor.digest;
  if (options.digestFile) await writeTextFile(options.digestFile, digest);
  if (options.ociLayoutPath) {
    const first = options.destinations[0] ? parseReference(options.destinations[0]) : undefined;
    // Loaded when asked for, like the tarball's writer: most builds only push.
    const { writeOciLayout } = await import('./oci-layout.js');
    await writeOciLayout(image, options.ociLayoutPath, { refName: first?.tag ?? 'latest' });
    log.info(`Wrote OCI layout to ${options.ociLayoutPath}`);
  }
  const destinations = options.destinations.length ? options.destinations : options.tarPath ? [PLACEHOLDER_DESTINATION] : [];
  const refs = destinations.map((d) => parseReference(d));
  if (options.imageNameWithDigestFile) {
    await writeTextFile(options.imageNameWithDigestFile, refs.map((r) => `${digestFileName(r)}@${digest}\n`).join(''));
  }
  if (options.imageNameTagWithDigestFile) {
    await writeTextFile(options.imageNameTagWithDigestFile, refs.map((r) => `${digestFileName(r)}${r.tag ? ':' + r.tag : ''}@${digest}\n`).join(''));
  }
  if (options.tarPath) {
    const { writeDockerArchive } = await import('./docker-archive.js');
    await writeDockerArchive(image, refs.map(familiarString), options.tarPath);
    log.info(`Wrote image tarball to ${options.tarPath}`);
  }
}

/** The repository as kaniko's digest files spell it (go-containerregistry names Docker Hub index.docker.io). */
function digestFileName(ref: ImageReference): string {
  return `${ref.registry === 'docker.io' ? 'index.docker.io' : ref.registry}/${ref.repository}`;
}

/** kaniko creates missing parent directories (mode 0700) and writes the file 0644. */
async function writeTextFile(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeFile(path, text, { mode: 0o644 });
}
