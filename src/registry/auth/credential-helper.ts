// Docker credential helpers (docker-credential-NAME): `get` reads a server URL on stdin and prints
// {"ServerURL","Username","Secret"} as JSON, or "credentials not found in native keychain" and fails.
import { spawn } from 'node:child_process';
import { log } from '../../log/logger.js';
import { RegistryError, type Credential } from '../types.js';

/** The username helpers report when the secret is an OAuth2 refresh (identity) token. */
export const IDENTITY_TOKEN_USERNAME = '<token>';
export const DEFAULT_HELPER_TIMEOUT_MS = 30_000;
const MAX_OUTPUT_BYTES = 1024 * 1024;

export interface CredentialHelperOptions {
  /** The registry as kiln names it, for error messages. */
  registry: string;
  /** The helper's environment (its PATH is searched for the program). */
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** Where the helper was configured, for error messages. */
  configFile?: string;
}

/**
 * Runs `docker-credential-<helper> get` for a server URL. Undefined when the helper has no credentials
 * for it; RegistryError naming the helper when it is missing, fails, times out or prints nonsense.
 */
export async function getHelperCredential(
  helper: string,
  serverUrl: string,
  options: CredentialHelperOptions,
): Promise<Credential | undefined> {
  const program = `docker-credential-${helper}`;
  const where = options.configFile ? ` (configured in ${options.configFile})` : '';
  const fail = (what: string): RegistryError =>
    new RegistryError(`${options.registry}: credential helper ${program}${where} ${what}`, options.registry);

  const result = await run(program, serverUrl, options.env ?? process.env, options.timeoutMs ?? DEFAULT_HELPER_TIMEOUT_MS);
  if (result.kind === 'missing') throw fail('was not found on PATH; install it or remove it from the docker config');
  if (result.kind === 'error') throw fail(`could not be run (${result.message})`);
  if (result.kind === 'timeout') throw fail(`did not answer within ${Math.round(result.afterMs / 1000)} s`);

  const stdout = result.stdout.trim();
  if (result.code !== 0 || result.signal) {
    const output = stdout || result.stderr.trim();
    if (/credentials not found/i.test(output)) return undefined;
    const status = result.signal ? `was killed by ${result.signal}` : `exited with status ${result.code}`;
    throw fail(`${status}${output ? `: ${summarize(output)}` : ''}`);
  }

  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout);
  } catch {
    throw fail('printed something other than JSON credentials');
  }
  if (typeof parsed !== 'object' || parsed === null) throw fail('printed something other than JSON credentials');
  const { Username: username, Secret: secret } = parsed as { Username?: unknown; Secret?: unknown };
  if (typeof secret !== 'string' || secret === '') return undefined;
  log.addSecret(secret);
  if (username === IDENTITY_TOKEN_USERNAME) return { identityToken: secret };
  return { username: typeof username === 'string' ? username : '', password: secret };
}

type RunResult =
  | { kind: 'exited'; code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }
  | { kind: 'missing' }
  | { kind: 'error'; message: string }
  | { kind: 'timeout'; afterMs: number };

function run(program: string, input: string, env: NodeJS.ProcessEnv, timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (result: RunResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(result);
    };
    const child = spawn(program, ['get'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let size = 0;
    const collect = (into: Buffer[]) => (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= MAX_OUTPUT_BYTES) into.push(chunk);
    };
    child.stdout.on('data', collect(stdout));
    child.stderr.on('data', collect(stderr));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish({ kind: 'timeout', afterMs: timeoutMs });
    }, timeoutMs);
    child.on('error', (err: NodeJS.ErrnoException) => {
      finish(err.code === 'ENOENT' ? { kind: 'missing' } : { kind: 'error', message: err.message });
    });
    child.on('close', (code, signal) => {
      finish({
        kind: 'exited', code, signal,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'),
      });
    });
    // A helper may exit without reading stdin; the broken pipe is not the failure to report.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

/** The first line of a helper's complaint, short and with known secrets masked. */
function summarize(output: string): string {
  const firstLine = output.split('\n')[0] ?? '';
  const short = firstLine.length > 200 ? `${firstLine.slice(0, 200)}…` : firstLine;
  return log.redact(short);
}
