// kiln's own executor image for tests that run kiln inside a container: the image `npm run image`
// makes (image/build-images.ts), loaded into the test dockerd.
import { join } from 'node:path';
import { buildKilnImage } from '../../image/build-images.js';
import { docker } from './exec.js';

/** Builds kiln's image (the debug variant: it has a shell for job scripts) into the test dockerd as `tag`. */
export async function buildKilnTestImage(workDir: string, tag: string, debug = true): Promise<void> {
  const tarPath = join(workDir, 'kiln-image.tar');
  await buildKilnImage({ debug, tag, tarPath });
  await docker(['load', '-q', '-i', tarPath]);
}
