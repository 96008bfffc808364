// Temporary directories that outlive the step that made them (downloads, git checkouts, archive
// members a later step reads) and go when kiln exits, whatever the outcome: one exit hook for all.
import { rmSync } from 'node:fs';

const dirs = new Set<string>();
let hooked = false;

export function removeAtExit(dir: string): void {
  dirs.add(dir);
  if (hooked) return;
  hooked = true;
  process.once('exit', () => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });
}
