// Running kiln and the peer tools from tests: every command has a time limit, and a failing peer
// fails the test with its stderr (no silent skips).
import { spawn } from 'node:child_process';
import { kilnBin } from './paths.js';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command and resolves with its exit code and output, whatever the code. */
export function runCommand(
  file: string, args: readonly string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    child.stdin.on('error', () => {}); // a child that exits without reading stdin must not crash the run
    child.stdin.end(options.input ?? '');
  });
}

/** Runs a command that must succeed; returns its stdout. */
export async function mustRun(file: string, args: readonly string[], options: Parameters<typeof runCommand>[2] = {}): Promise<string> {
  const r = await runCommand(file, args, options);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} exited ${r.code}\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

export function kiln(args: readonly string[], options: Parameters<typeof runCommand>[2] = {}): Promise<CommandResult> {
  return runCommand(kilnBin, args, options);
}

/** The test script exports DOCKER_HOST for its private dockerd; without it docker tests must fail loudly. */
export function dockerEnv(): NodeJS.ProcessEnv {
  if (!process.env.DOCKER_HOST) throw new Error('DOCKER_HOST is not set: run the tests through scripts/test.sh, which starts a private dockerd');
  return { ...process.env, DOCKER_BUILDKIT: '0' };
}

export function docker(args: readonly string[], options: Parameters<typeof runCommand>[2] = {}): Promise<string> {
  return mustRun('docker', args, { ...options, env: { ...dockerEnv(), ...(options.env ?? {}) } });
}

