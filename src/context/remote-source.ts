// What an ADD source names, as BuildKit's Dockerfile frontend tells them apart: a local path, an HTTP(S)
// URL, or a git repository (dfgitutil.ParseGitRef), and the parts of a git reference:
//   <remote>[#<ref>[:<subdir>]]            the fragment form, e.g. https://host/repo.git#v1.2:docs
//   <remote>?ref=..&subdir=..&tag=..&branch=..&checksum=..&keep-git-dir=..&submodules=..   the query form
// Remotes: https://, http:// (a path ending in .git), git://, ssh://, and scp-like user@host:path.

export class GitRefError extends Error {}

export type SourceKind = 'local' | 'url' | 'git';

export function sourceKind(source: string): SourceKind {
  if (source.startsWith('./') || source.startsWith('../') || source.startsWith('github.com/')) return 'local';
  const scheme = /^([a-zA-Z0-9]+):\/\//.exec(source)?.[1]?.toLowerCase();
  if (scheme !== undefined) {
    if (scheme === 'ssh' || scheme === 'git') return 'git';
    if (scheme !== 'http' && scheme !== 'https') return 'local'; // an unknown scheme is a (strange) local path
    let path = '';
    try {
      path = new URL(source).pathname;
    } catch { /* not a URL git accepts: an HTTP source */ }
    if (path.endsWith('.git')) return 'git';
    return source.startsWith('http://') || source.startsWith('https://') ? 'url' : 'local';
  }
  return SCP_LIKE.test(source) ? 'git' : 'local';
}

const SCP_LIKE = /^[a-zA-Z0-9-_]+@[a-zA-Z0-9-.]+:/;

export interface GitRef {
  /** What git fetches from (no fragment, no query). */
  remote: string;
  /** Branch, tag, full ref name or commit; undefined for the remote's HEAD. */
  ref?: string;
  /** Directory of the repository to copy ("" for all of it). */
  subdir: string;
  /** Commit the checkout must be (a full or abbreviated hash), from ?checksum= / ?commit=. */
  checksum?: string;
  keepGitDir?: boolean;
  /** false: submodules are not checked out (BuildKit checks them out by default). */
  submodules?: boolean;
}

/** Parses a git source the way BuildKit's Dockerfile frontend does. */
export function parseGitRef(source: string): GitRef {
  let rest = source;
  let fragment: string | undefined;
  const hash = rest.indexOf('#');
  if (hash >= 0) {
    fragment = rest.slice(hash + 1);
    rest = rest.slice(0, hash);
  }
  let query: URLSearchParams | undefined;
  const q = rest.indexOf('?');
  if (q >= 0 && !SCP_LIKE.test(rest)) {
    query = new URLSearchParams(rest.slice(q + 1));
    rest = rest.slice(0, q);
  }
  const out: GitRef = { remote: rest, subdir: '' };
  if (fragment !== undefined) {
    const colon = fragment.indexOf(':');
    const ref = colon >= 0 ? fragment.slice(0, colon) : fragment;
    if (ref !== '') out.ref = ref;
    if (colon >= 0) out.subdir = fragment.slice(colon + 1);
  }
  if (query) applyQuery(out, query);
  out.subdir = out.subdir.replace(/^\/+|\/+$/g, '');
  if (out.subdir.split('/').includes('..')) throw new GitRefError(`invalid subdir "${out.subdir}" in git source ${source}: it may not contain ".."`);
  return out;
}

function applyQuery(out: GitRef, query: URLSearchParams): void {
  let tag: string | undefined;
  let branch: string | undefined;
  const setRef = (value: string): void => {
    if (out.ref !== undefined && out.ref !== value) throw new GitRefError(`ref conflicts: "${out.ref}" vs "${value}"`);
    out.ref = value;
  };
  const flag = (key: string, value: string): boolean => {
    if (value === '' || value === 'true' || value === '1') return true;
    if (value === 'false' || value === '0') return false;
    throw new GitRefError(`invalid ${key} value: "${value}"`);
  };
  for (const key of new Set(query.keys())) {
    const values = query.getAll(key);
    if (values.length > 1) throw new GitRefError(`query "${key}" has multiple values`);
    const value = values[0] ?? '';
    if (value === '' && !['submodules', 'keep-git-dir'].includes(key)) throw new GitRefError(`query "${key}" has no value`);
    switch (key) {
      case 'ref': setRef(value); break;
      case 'tag': tag = value; break;
      case 'branch': branch = value; break;
      case 'subdir':
        if (out.subdir !== '' && out.subdir !== value) throw new GitRefError(`subdir conflicts: "${out.subdir}" vs "${value}"`);
        out.subdir = value;
        break;
      case 'checksum': case 'commit': out.checksum = value; break;
      case 'keep-git-dir': out.keepGitDir = flag(key, value); break;
      case 'submodules': out.submodules = flag(key, value); break;
      default: throw new GitRefError(`unexpected query "${key}"`);
    }
  }
  if (tag !== undefined && branch !== undefined) throw new GitRefError('branch conflicts with tag');
  if (tag !== undefined) setRef(tag.startsWith('refs/tags/') ? tag : `refs/tags/${tag}`);
  if (branch !== undefined) setRef(branch.startsWith('refs/heads/') ? branch : `refs/heads/${branch}`);
}

/** A full SHA-1 or SHA-256 commit name. */
export function isCommitHash(ref: string): boolean {
  return /^([0-9a-f]{40}|[0-9a-f]{64})$/.test(ref);
}

/** The URL without credentials, for messages and logs. */
export function redactUrl(url: string): string {
  return url.replace(/^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)[^/@]*@/, '$1');
}
