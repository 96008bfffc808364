// Paths inside an image as kiln keeps them: relative to the image's root, normalized, no trailing "/".
import { posix } from 'node:path';

/** "/a/b/" → "a/b"; "./a/../b" → "b"; "/" → "". */
export function inImagePath(path: string): string {
  return posix.normalize('/' + path).replace(/^\/+/, '').replace(/\/+$/, '');
}
