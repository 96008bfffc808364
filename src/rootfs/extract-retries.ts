// kaniko's --image-fs-extract-retry: a failed layer extraction is tried again, with a warning.
import { log } from '../log/logger.js';
import { UnsafeLayerError } from './extract-layer.js';

export async function withExtractRetries(retries: number, layerName: string, extract: () => Promise<void>): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await extract();
    } catch (e) {
      // A layer that tries to escape the root does so every time.
      if (attempt >= retries || e instanceof UnsafeLayerError) throw e;
      log.warn(`Extracting layer ${layerName} failed (${(e as Error).message}); retrying (${attempt + 1} of ${retries})`);
    }
  }
}
