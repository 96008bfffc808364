// Git repositories made by tests with Debian's git: a work tree whose commits are pushed to a bare
// repository under a root that test/helpers/git-http-server.ts serves.
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { mustRun } from './exec.js';

export interface TestRepo {
  /** The bare repository's name under the served root, e.g. "app.git". */
  name: string;
  /** Writes files (path → content; mode 0755 for paths in `executables`), commits them, pushes; returns the commit. */
  commit(files: Record<string, string>, message: string, executables?: string[]): Promise<string>;
  tag(name: string, annotated: boolean): Promise<void>;
  branch(name: string): Promise<void>;
}

const GIT_ENV = { GIT_AUTHOR_NAME: 'kiln test', GIT_AUTHOR_EMAIL: 'test@kiln.invalid', GIT_COMMITTER_NAME: 'kiln test', GIT_COMMITTER_EMAIL: 'test@kiln.invalid' };

export async function createTestRepo(root: string, name: string): Promise<TestRepo> {
  const work = join(root, `${name}.work`);
  const bare = join(root, `${name}.git`);
  const git = (args: string[], cwd = work): Promise<string> => mustRun('git', args, { cwd, env: { ...process.env, ...GIT_ENV }, timeoutMs: 30_000 });
  await mkdir(work, { recursive: true });
  await git(['init', '-q', '-b', 'main', '.']);
  await git(['init', '-q', '--bare', '-b', 'main', bare], root);
  await git(['remote', 'add', 'origin', bare]);
  return {
    name: `${name}.git`,
    async commit(files, message, executables = []) {
      for (const [path, content] of Object.entries(files)) {
        await mkdir(join(work, path, '..'), { recursive: true });
        await writeFile(join(work, path), content);
        await chmod(join(work, path), executables.includes(path) ? 0o755 : 0o644);
      }
      await git(['add', '-A']);
      await git(['commit', '-q', '-m', message]);
      await git(['push', '-q', '--all', 'origin']);
      return (await git(['rev-parse', 'HEAD'])).trim();
    },
    async tag(tagName, annotated) {
      await git(annotated ? ['tag', '-a', tagName, '-m', tagName] : ['tag', tagName]);
      await git(['push', '-q', 'origin', `refs/tags/${tagName}`]);
    },
    async branch(branchName) {
      await git(['checkout', '-q', '-B', branchName]);
    },
  };
}
