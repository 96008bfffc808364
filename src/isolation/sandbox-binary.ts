// Where kiln-sandbox (native/kiln-sandbox.c, built into dist/native) is, and its small batch jobs.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** dist/src/isolation/ → dist/native/kiln-sandbox; KILN_SANDBOX overrides (kiln's own image). */
export function sandboxBinary(): string {
  const override = process.env['KILN_SANDBOX'];
  if (override) return override;
  const path = fileURLToPath(new URL('../../native/kiln-sandbox', import.meta.url));
  if (!existsSync(path)) throw new Error(`kiln-sandbox is missing at ${path}: run scripts/install.sh (it needs gcc)`);
  return path;
}

export interface NodeRecord {
  type: 'char' | 'block' | 'fifo';
  /** Permission bits (0o7777). */
  mode: number;
  major: number;
  minor: number;
  /** Absolute host path to create; its parent must exist. */
  path: string;
}

export class MknodError extends Error {
  constructor(message: string, readonly notPermitted: boolean) {
    super(message);
  }
}

/** Creates device nodes and fifos in one process (Node.js has no mknod). */
export async function makeNodes(records: readonly NodeRecord[]): Promise<void> {
  if (records.length === 0) return;
  const child = spawn(sandboxBinary(), ['mknod'], { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  const done = new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code ?? 1));
  });
  const type = { char: 'c', block: 'b', fifo: 'p' } as const;
  const input = records.map((r) => `${type[r.type]}\0${(r.mode & 0o7777).toString(8)}\0${r.major}\0${r.minor}\0${r.path}\0`).join('');
  child.stdin.on('error', () => { /* the exit code says what went wrong */ });
  child.stdin.end(input);
  const code = await done;
  if (code !== 0) throw new MknodError(stderr.trim().replace(/^kiln-sandbox: /, '') || `kiln-sandbox mknod exited with ${code}`, code === 2);
}
