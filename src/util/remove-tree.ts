// Deletes a directory tree kiln made (a build root, layer directories, unpacked COPY --from sources).
// On the host (chroot isolation) rm(1) does it in a child process: its thousands of unlinks then
// neither queue in Node's thread pool ahead of a push's blob reads nor cost fs.rm's JavaScript walk
// (GNU rm takes a third of the CPU). In container isolation "/" is the image being built, so its rm is
// never run: fs.rm does it, as it does where rm is missing or fails (busybox's lacks --one-file-system).
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';

export type RemoveWith = 'rm-program' | 'fs';

export async function removeTree(path: string, how: RemoveWith): Promise<void> {
  if (how === 'rm-program' && (await rmProgram(path))) return;
  await rm(path, { recursive: true, force: true });
}

/** `rm -rf --one-file-system` (a mount left inside by mistake is not deleted through); false when it did not succeed. */
function rmProgram(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn('rm', ['-rf', '--one-file-system', '--', path], { stdio: 'ignore' });
    child.on('error', () => resolve(false));
    child.on('close', (code) => resolve(code === 0));
  });
}
