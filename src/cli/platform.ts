// --custom-platform as the CLI reads it: a bad value is a usage error.
import { InvalidPlatformError, parsePlatform } from '../image/platform.js';
import type { Platform } from '../image/types.js';
import { UsageError } from './errors.js';

export { hostPlatform } from '../image/platform.js';

export function parsePlatformFlag(text: string): Platform {
  try {
    return parsePlatform(text);
  } catch (e) {
    if (e instanceof InvalidPlatformError) throw new UsageError(e.message);
    throw e;
  }
}
