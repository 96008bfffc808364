// Where things are, for tests: the repository root and the shared BuildKit conformance data beside it.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('package.json not found above ' + fileURLToPath(import.meta.url));
    dir = parent;
  }
  return dir;
}

export const repoRoot = findRepoRoot();
/** BuildKit's parser and expander test data (../shared in the workspace and in CI). */
export const conformanceDir = resolve(repoRoot, '..', 'shared', 'conformance', 'buildkit');
export const kilnBin = join(repoRoot, 'bin', 'kiln');
