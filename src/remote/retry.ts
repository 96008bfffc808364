// How remote work is repeated and spread: kaniko's retry flags (--push-retry, --image-download-retry)
// as extra attempts with exponential backoff, and a bound on blobs moving at once.
import { log } from '../log/logger.js';
import { RegistryError } from '../registry/types.js';

/** Runs `attempt`, and up to `retries` more times while the failure may pass (not a RegistryError that says otherwise). */
export async function withRetries<T>(retries: number, attempt: () => Promise<T>, what?: string): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await attempt();
    } catch (e) {
      const retryable = !(e instanceof RegistryError) || e.retryable;
      if (i >= retries || !retryable) throw e;
      log.warn(`${what ? what + ' failed: ' : ''}${(e as Error).message}; retrying (${i + 1}/${retries})`);
      await new Promise((r) => setTimeout(r, 1000 * 2 ** i));
    }
  }
}

/** Runs `work` on every item, at most `limit` at a time. */
export async function forEachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await work(items[next++]!);
  });
  await Promise.all(workers);
}
