// How a failure reaches the user: one line on stderr naming the Dockerfile line where there is one,
// a non-zero exit, and a stack trace only at --verbosity debug or trace.
import { DockerfileSyntaxError } from '../dockerfile/ast.js';
import { BuildError } from '../build/errors.js';
import { log } from '../log/logger.js';

export class UsageError extends Error {}

export function reportFailure(error: unknown, dockerfilePath?: string): number {
  const err = error instanceof Error ? error : new Error(String(error));
  let message: string;
  if ((err instanceof DockerfileSyntaxError || err instanceof BuildError) && dockerfilePath) {
    message = err.line > 0 ? `${dockerfilePath}:${err.line}: ${err.message}` : `${dockerfilePath}: ${err.message}`;
  } else message = `kiln: ${err.message}`;
  process.stderr.write(log.redact(message) + '\n');
  if (log.enabled('debug') && err.stack) process.stderr.write(log.redact(err.stack) + '\n');
  return 1;
}
