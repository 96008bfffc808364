// GitLab CI hand-off: after a push, the image digest as a dotenv file that a job can publish with
// `artifacts: reports: dotenv: kiln.env`, so later jobs see $KILN_IMAGE_DIGEST and $KILN_IMAGE.
// Written by default only inside GitLab CI (GITLAB_CI and CI_PROJECT_DIR set), to
// $CI_PROJECT_DIR/kiln.env; KILN_DOTENV=<path> chooses another file, KILN_DOTENV= (empty) turns it off.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { referenceString, type ImageReference } from '../reference/reference.js';
import { log } from '../log/logger.js';

export function dotenvPath(env: NodeJS.ProcessEnv): string | undefined {
  if (env.KILN_DOTENV !== undefined) return env.KILN_DOTENV === '' ? undefined : env.KILN_DOTENV;
  if (env.GITLAB_CI && env.CI_PROJECT_DIR) return join(env.CI_PROJECT_DIR, 'kiln.env');
  return undefined;
}

export async function writeDotenv(path: string, digest: string, destinations: readonly ImageReference[]): Promise<void> {
  const first = destinations[0];
  const lines = [`KILN_IMAGE_DIGEST=${digest}`];
  if (first) {
    lines.push(`KILN_IMAGE=${first.registry}/${first.repository}@${digest}`);
    lines.push(`KILN_IMAGE_TAGGED=${referenceString(first)}`);
  }
  await writeFile(path, lines.join('\n') + '\n', { mode: 0o644 });
  log.info(`Wrote the image digest to ${path} (a dotenv file for GitLab's artifacts:reports:dotenv)`);
}
