// Where the build context comes from, in kaniko's syntax (pkg/buildcontext), and getting it onto disk:
//   /path, dir://path          a directory, used in place
//   tar://path.tar[.gz]        a tar archive, gzip or not, unpacked
//   tar://stdin                a tar archive (gzip or not) read from standard input, unpacked
//   https://host/ctx.tar.gz    a tar archive downloaded and unpacked (kaniko's HTTPSTar)
//   git://host/repo[#ref[#commit]]  a repository cloned as kaniko does: over https (or http when
//                              GIT_PULL_METHOD=http; kaniko's git:// never speaks the git protocol),
//                              GIT_USERNAME/GIT_PASSWORD or GIT_TOKEN as credentials, .git kept
//   s3://, gs://, Azure blob URLs   refused: cloud-storage contexts are not built yet
// --git branch=..,single-branch=..,recurse-submodules=..,insecure-skip-tls=.. tunes git contexts, and
// --context-sub-path picks a directory of a fetched context (kaniko applies it only to "://" contexts).
import { mkdir, mkdtemp, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix, resolve } from 'node:path';
import { ContextError } from './build-context.js';
import { gitCheckout, writeCaBundle } from './git-source.js';
import { downloadFile, trustedCertificates } from './remote-file.js';
import { redactUrl } from './remote-source.js';
import { unpackTarContext } from './tar-context.js';
import { removeAtExit } from '../util/remove-at-exit.js';

export interface GitContextOptions {
  branch?: string;
  singleBranch: boolean;
  recurseSubmodules: boolean;
  insecureSkipTls: boolean;
}

export type ContextSource =
  | { kind: 'dir'; path: string }
  | { kind: 'tar'; path: string | 'stdin' }
  | { kind: 'https-tar'; url: string }
  | { kind: 'git'; remote: string; ref?: string; commit?: string; options: GitContextOptions };

/** The one place cloud-storage contexts are refused. */
const CLOUD_CONTEXTS = /^(s3|gs):\/\//;
const AZURE_BLOB_HOST = /^https:\/\/[^/]+\.blob\.core\.(windows\.net|chinacloudapi\.cn|cloudapi\.de|usgovcloudapi\.net)\//;

/** Parses --context (and --git); throws ContextError for what cannot be a context. */
export function parseContextSource(context: string, gitFlags: readonly string[], env: NodeJS.ProcessEnv): ContextSource {
  if (CLOUD_CONTEXTS.test(context) || AZURE_BLOB_HOST.test(context)) {
    throw new ContextError(`context "${context}": S3, GCS and Azure Blob Storage contexts are not built yet in kiln; give a directory, tar://, https:// or git:// context`);
  }
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(context)?.[1];
  if (scheme === undefined) return { kind: 'dir', path: context };
  const rest = context.slice(scheme.length + 3);
  switch (scheme) {
    case 'dir': return { kind: 'dir', path: rest };
    case 'tar': return { kind: 'tar', path: rest === 'stdin' ? 'stdin' : rest };
    case 'https': return { kind: 'https-tar', url: context };
    case 'git': {
      const [repo = '', ref, commit] = rest.split('#');
      const method = env.GIT_PULL_METHOD === 'http' ? 'http' : 'https';
      return { kind: 'git', remote: `${method}://${repo}`, ref: ref || undefined, commit: commit || undefined, options: parseGitFlags(gitFlags) };
    }
    default:
      throw new ContextError(`unknown build context prefix "${scheme}://": use a directory, dir://, tar://, https:// or git://`);
  }
}

/**
 * kaniko's --git: key=value pairs. kaniko's own parser takes one pair per --git flag; kiln also
 * splits on commas, as kaniko's help text writes them (branch=,single-branch=false,...).
 */
export function parseGitFlags(flags: readonly string[]): GitContextOptions {
  const out: GitContextOptions = { singleBranch: false, recurseSubmodules: false, insecureSkipTls: false };
  const bool = (key: string, value: string): boolean => {
    const v = value.toLowerCase();
    if (['1', 't', 'true'].includes(v)) return true;
    if (['0', 'f', 'false'].includes(v)) return false;
    throw new ContextError(`invalid --git ${key}=${value}: expected true or false`);
  };
  for (const pair of flags.flatMap((f) => f.split(','))) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq < 0) throw new ContextError(`invalid git flag, must be in the key=value format: ${pair}`);
    const key = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    switch (key) {
      case 'branch': out.branch = value || undefined; break;
      case 'single-branch': out.singleBranch = bool(key, value); break;
      case 'recurse-submodules': out.recurseSubmodules = bool(key, value); break;
      case 'insecure-skip-tls': out.insecureSkipTls = bool(key, value); break;
      default: throw new ContextError(`invalid --git key "${key}": use branch, single-branch, recurse-submodules or insecure-skip-tls`);
    }
  }
  return out;
}

/**
 * Puts the context on disk and returns its directory, with --context-sub-path applied. Fetched
 * contexts go to a new directory under `workDir` (removed when kiln exits).
 */
export async function materializeContext(source: ContextSource, subPath: string | undefined, workDir: string, env: NodeJS.ProcessEnv, input: NodeJS.ReadableStream = process.stdin): Promise<string> {
  if (source.kind === 'dir') return resolve(source.path);
  await mkdir(workDir, { recursive: true });
  let root: string;
  switch (source.kind) {
    case 'tar': {
      root = await newDir(workDir);
      if (source.path === 'stdin') {
        if ((input as { isTTY?: boolean }).isTTY) throw new ContextError('tar://stdin: no data on standard input; pipe a tar archive into kiln (docker run -i ...)');
        await unpackTarContext(input as import('node:stream').Readable, root, 'tar://stdin');
      } else {
        const path = resolve(source.path);
        if (!(await stat(path).catch(() => undefined))?.isFile()) throw new ContextError(`context tar://${source.path}: ${path} is not a file`);
        await unpackTarContext(path, root, `tar://${source.path}`);
      }
      break;
    }
    case 'https-tar': {
      const file = await downloadFile(source.url);
      root = await newDir(workDir);
      await unpackTarContext(file.path, root, redactUrl(source.url));
      break;
    }
    case 'git':
      root = (await gitCheckout({
        remote: source.remote,
        ref: gitContextRef(source),
        commit: source.commit,
        submodules: source.options.recurseSubmodules,
        insecureSkipTls: source.options.insecureSkipTls,
        auth: gitCredentials(env),
        caFile: await caFileForGit(),
      })).dir;
      break;
  }
  if (!subPath) return root;
  const sub = join(root, posix.normalize('/' + subPath));
  if (!(await stat(sub).catch(() => undefined))?.isDirectory()) throw new ContextError(`--context-sub-path ${subPath}: no such directory in the context`);
  return sub;
}

/** kaniko: --git branch= wins over the URL's ref; a "refs/heads/x" or "refs/tags/x" ref is fetched by name. */
function gitContextRef(source: Extract<ContextSource, { kind: 'git' }>): string | undefined {
  return source.options.branch ?? source.ref;
}

/** kaniko's GIT_TOKEN (as the user name), else GIT_USERNAME and GIT_PASSWORD. */
function gitCredentials(env: NodeJS.ProcessEnv): { username: string; password: string } | undefined {
  if (env.GIT_TOKEN) return { username: env.GIT_TOKEN, password: '' };
  if (env.GIT_USERNAME || env.GIT_PASSWORD) return { username: env.GIT_USERNAME ?? '', password: env.GIT_PASSWORD ?? '' };
  return undefined;
}

let caFile: Promise<string | undefined> | undefined;
/** kiln's extra CAs, for git too: a bundle file with every trusted certificate, when there are extra ones (written once). */
export function caFileForGit(): Promise<string | undefined> {
  caFile ??= trustedCertificates().then((pems) => (pems ? writeCaBundle(pems) : undefined));
  return caFile;
}

async function newDir(workDir: string): Promise<string> {
  const dir = await mkdtemp(join(workDir, 'context-'));
  removeAtExit(dir);
  return dir;
}

/** Where fetched contexts go: kaniko's <kaniko-dir>/buildcontext in container isolation, else the temp dir. */
export function contextWorkDir(isolation: 'chroot' | 'container', kanikoDir: string): string {
  return isolation === 'container' ? join(kanikoDir, 'buildcontext') : tmpdir();
}
