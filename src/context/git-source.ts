// Checkouts of git repositories, for ADD <git source> and git:// contexts, made with the git command
// (Debian's `git`), as BuildKit makes them: a fresh repository that fetches only the wanted ref with
// --depth=1 (a commit hash is fetched alone when the server allows it, else with the full history),
// then checks it out detached (.git is kept); submodules are updated the same shallow way. Files get git's modes
// (0644/0755 under umask 022) and the checkout time as mtime, as BuildKit's default (mtime=checkout).
// Credentials: a URL's user:password, or for contexts kaniko's GIT_USERNAME/GIT_PASSWORD/GIT_TOKEN;
// they are passed in the environment (GIT_CONFIG_*), never on a command line or in .git/config.
import { execFile } from 'node:child_process';
import { lstat, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ContextError } from './build-context.js';
import { isCommitHash, redactUrl } from './remote-source.js';
import { OncePerKey } from '../util/once-per-key.js';
import { removeAtExit } from '../util/remove-at-exit.js';

export interface GitCheckoutRequest {
  /** What git fetches from: https://, http://, git://, ssh:// or user@host:path. */
  remote: string;
  /** Branch, tag, full ref name or commit hash; undefined for the remote's HEAD. */
  ref?: string;
  /** kaniko's third "#" part: the commit to check out after fetching `ref`. */
  commit?: string;
  submodules: boolean;
  /** Skip TLS verification (kaniko's --git insecure-skip-tls=true). */
  insecureSkipTls?: boolean;
  /** Basic-auth credentials for http(s) remotes. */
  auth?: { username: string; password: string };
  /** A PEM bundle git should trust instead of its default (kiln's CA settings); undefined: git's own. */
  caFile?: string;
}

export interface GitCheckout {
  /** The checkout's root directory. */
  dir: string;
  /** The commit checked out (full hash). */
  commit: string;
}

const checkouts = new OncePerKey<GitCheckout>();

/** Checks a repository out once per process for the same request (the cache key and the copy share it). */
export function gitCheckout(request: GitCheckoutRequest): Promise<GitCheckout> {
  return checkouts.get(JSON.stringify(request), () => checkout(request));
}

async function checkout(request: GitCheckoutRequest): Promise<GitCheckout> {
  const shown = redactUrl(request.remote);
  const dir = await mkdtemp(join(tmpdir(), 'kiln-git-'));
  removeAtExit(dir);
  const git = gitRunner(dir, request);
  await git(['-c', 'init.defaultBranch=master', 'init', '-q'], `git init for ${shown}`);
  await git(['remote', 'add', 'origin', request.remote], `git remote add ${shown}`);
  const ref = request.ref ?? 'HEAD';
  if (isCommitHash(ref)) await fetchCommit(git, ref, shown, dir);
  else await git(['fetch', '-q', '--depth=1', '--no-tags', 'origin', ref], `fetching ${ref === 'HEAD' ? 'the default branch' : `"${ref}"`} of ${shown}`);
  const target = request.commit ?? (isCommitHash(ref) ? ref : 'FETCH_HEAD');
  if (request.commit !== undefined && !(await hasObject(git, request.commit))) await fetchCommit(git, request.commit, shown, dir);
  await git(['-c', 'advice.detachedHead=false', 'checkout', '-q', target], `checking out ${target === 'FETCH_HEAD' ? ref : target} of ${shown}`);
  const commit = (await git(['rev-parse', 'HEAD'], 'git rev-parse')).trim();
  await rm(join(dir, '.git', 'FETCH_HEAD'), { force: true }); // as BuildKit leaves a kept .git
  if (shown !== request.remote) await git(['remote', 'set-url', 'origin', shown], 'git remote set-url'); // no credentials in a kept .git
  if (request.submodules && await exists(join(dir, '.gitmodules'))) {
    await git(['submodule', 'update', '-q', '--init', '--recursive', '--depth=1'], `updating the submodules of ${shown}`);
  }
  // .git stays: kaniko's git contexts keep it, and ADD leaves it out while copying unless --keep-git-dir.
  return { dir, commit };
}

/** A commit alone when the server allows it (BuildKit's fetch-by-commit), else every ref with full history. */
async function fetchCommit(git: GitRunner, commit: string, shown: string, dir: string): Promise<void> {
  try {
    await git(['fetch', '-q', '--depth=1', 'origin', commit], '');
  } catch {
    const unshallow = (await exists(join(dir, '.git', 'shallow'))) ? ['--unshallow'] : [];
    await git(['fetch', '-q', ...unshallow, '--tags', 'origin', '+refs/heads/*:refs/remotes/origin/*'], `fetching ${shown} to find commit ${commit}`);
    if (!(await hasObject(git, commit))) throw new ContextError(`commit ${commit} not found in ${shown}`);
  }
}

async function hasObject(git: GitRunner, commit: string): Promise<boolean> {
  return git(['cat-file', '-e', `${commit}^{commit}`], '').then(() => true, () => false);
}

type GitRunner = (args: string[], what: string) => Promise<string>;

function gitRunner(dir: string, request: GitCheckoutRequest): GitRunner {
  // Settings through the environment keep them out of .git/config (kept with --keep-git-dir) and ps.
  const config: [string, string][] = [['protocol.file.allow', 'never'], ['core.autocrlf', 'false']];
  if (request.auth) {
    const token = Buffer.from(`${request.auth.username}:${request.auth.password}`).toString('base64');
    config.push(['http.extraHeader', `Authorization: Basic ${token}`]);
  }
  if (request.insecureSkipTls) config.push(['http.sslVerify', 'false']);
  const env: NodeJS.ProcessEnv = {
    ...process.env, GIT_TERMINAL_PROMPT: '0', GIT_CONFIG_NOSYSTEM: '1', GIT_CONFIG_COUNT: String(config.length),
    // ssh remotes: never stop to ask about an unknown host key.
    GIT_SSH_COMMAND: process.env.GIT_SSH_COMMAND ?? 'ssh -o BatchMode=yes',
    // The environment variable, not http.sslCAInfo: GIT_SSL_CAINFO (set on many CI images) beats the config.
    ...(request.caFile ? { GIT_SSL_CAINFO: request.caFile } : {}),
  };
  config.forEach(([key, value], i) => {
    env[`GIT_CONFIG_KEY_${i}`] = key;
    env[`GIT_CONFIG_VALUE_${i}`] = value;
  });
  return (args, what) => new Promise((resolve, reject) => {
    execFile('git', args, { cwd: dir, env, maxBuffer: 16 << 20, timeout: 10 * 60_000 }, (error, stdout, stderr) => {
      if (!error) return resolve(stdout);
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        return reject(new ContextError('git sources need the git command, which is not installed (Debian package "git"; kiln\'s scripts/install.sh installs it)'));
      }
      const detail = redactUrl(stderr.trim().split('\n').filter((l) => l.trim() !== '').pop() ?? error.message);
      reject(new ContextError(`${what || `git ${args[0]}`} failed: ${detail}`));
    });
  });
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(() => true, () => false);
}

/** Writes PEM certificates to a file git can trust (http.sslCAInfo). */
export async function writeCaBundle(pems: readonly string[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-git-ca-'));
  removeAtExit(dir);
  const file = join(dir, 'ca.pem');
  await writeFile(file, pems.join('\n'));
  return file;
}

