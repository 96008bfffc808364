// Files fetched over HTTP(S): ADD <url> sources and https:// tar contexts. BuildKit's rules for ADD:
// redirects are followed, the file is written 0600 with the Last-Modified time (else the epoch), its
// name is the last segment of the URL path (the Dockerfile frontend names it so; Content-Disposition
// is not read there), and it is never extracted. Connections use kiln's undici dispatcher with the
// trust kiln gives registries (system CAs, SSL_CERT_DIR / /kaniko/ssl/certs, SSL_CERT_FILE, proxies);
// the registry-only flags (--skip-tls-verify*, --insecure*, --registry-certificate) do not apply, as in
// BuildKit. A URL is fetched once per build: the cache key and the copy read the same download.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdtemp, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Dispatcher } from 'undici';
import { createDispatcher } from '../registry/dispatcher.js';
import { errorCode, explainTlsError, registryTls } from '../registry/tls.js';
import type { RegistryOptions } from '../registry/types.js';
import { ContextError } from './build-context.js';
import { redactUrl } from './remote-source.js';
import { OncePerKey } from '../util/once-per-key.js';
import { removeAtExit } from '../util/remove-at-exit.js';

export interface RemoteFile {
  /** Where the download is on disk (kept until kiln exits). */
  path: string;
  /** The file's name in the image when the destination is a directory. */
  name: string;
  mtime: Date;
  size: number;
  /** "sha256:<hex>" of the content. */
  digest: string;
}

const MAX_REDIRECTS = 10;
const USER_AGENT = 'kiln';

/** The CA settings of the build (set once from the executor's flags); without them, the system CAs only. */
let trust: Pick<RegistryOptions, 'certificateDirectories' | 'certificateFiles'> = { certificateDirectories: [], certificateFiles: [] };
let dispatcher: Promise<Dispatcher> | undefined;

export function useRemoteTrust(options: Pick<RegistryOptions, 'certificateDirectories' | 'certificateFiles'>): void {
  trust = { certificateDirectories: [...options.certificateDirectories], certificateFiles: [...options.certificateFiles] };
  dispatcher = undefined;
}

/** Registry options carrying only the shared trust: the registry-only flags do not apply to remote sources. */
function trustOnly(): RegistryOptions {
  return {
    insecure: false, insecurePull: false, insecureRegistries: [], skipTlsVerify: false, skipTlsVerifyPull: false,
    skipTlsVerifyRegistries: [], registryCertificates: new Map(), registryClientCertificates: new Map(),
    ...trust, pushRetry: 0, imageDownloadRetry: 0,
  };
}

function connections(): Promise<Dispatcher> {
  dispatcher ??= (async () => {
    const tls = await registryTls('remote sources', 'pull', trustOnly());
    return createDispatcher(tls, { headersTimeout: 60_000, bodyTimeout: 120_000 });
  })();
  return dispatcher;
}

const downloads = new OncePerKey<RemoteFile>();

/** Downloads `url` once per process; a failure is one line naming the URL and the status or network error. */
export function downloadFile(url: string): Promise<RemoteFile> {
  return downloads.get(url, () => fetchToDisk(url));
}

/** BuildKit's file name for a URL: the last path segment, else "__unnamed__". */
export function urlFileName(url: string): string {
  let base = '';
  try {
    base = posix.basename(decodeURIComponent(new URL(url).pathname));
  } catch { /* an unparsable URL has no name */ }
  return base === '' || base === '.' || base === '/' || base === '..' ? '__unnamed__' : base;
}

async function fetchToDisk(url: string): Promise<RemoteFile> {
  const shown = redactUrl(url);
  const agent = await connections();
  let current = new URL(url);
  for (let hop = 0; ; hop++) {
    let res: Dispatcher.ResponseData;
    try {
      res = await agent.request({
        origin: current.origin, path: current.pathname + current.search, method: 'GET',
        headers: { 'user-agent': USER_AGENT, ...basicAuth(current) },
      });
    } catch (e) {
      throw new ContextError(`failed to download ${shown}: ${describe(e, current.host)}`);
    }
    if (res.statusCode >= 300 && res.statusCode < 400 && typeof res.headers.location === 'string') {
      await res.body.dump();
      if (hop >= MAX_REDIRECTS) throw new ContextError(`failed to download ${shown}: more than ${MAX_REDIRECTS} redirects`);
      current = new URL(res.headers.location, current);
      continue;
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      throw new ContextError(`failed to download ${shown}: HTTP ${res.statusCode}${statusText(res.statusCode)}`);
    }
    const dir = await mkdtemp(join(tmpdir(), 'kiln-url-'));
    removeAtExit(dir); // the layer is written from the download after planning
    const path = join(dir, 'content');
    const hash = createHash('sha256');
    let size = 0;
    try {
      await pipeline(res.body, async function* (chunks: AsyncIterable<Buffer>) {
        for await (const chunk of chunks) {
          hash.update(chunk);
          size += chunk.length;
          yield chunk;
        }
      }, createWriteStream(path, { mode: 0o600 }));
    } catch (e) {
      throw new ContextError(`failed to download ${shown}: ${describe(e, current.host)}`);
    }
    const lastModified = typeof res.headers['last-modified'] === 'string' ? new Date(res.headers['last-modified']) : undefined;
    const mtime = lastModified && !Number.isNaN(lastModified.getTime()) ? lastModified : new Date(0);
    await chmod(path, 0o600);
    await utimes(path, mtime, mtime);
    return { path, name: urlFileName(url), mtime, size, digest: `sha256:${hash.digest('hex')}` };
  }
}

/** Checks a download against ADD --checksum (sha256, sha384 or sha512, as BuildKit's digest.Parse takes). */
export async function verifyChecksum(file: RemoteFile, checksum: string, url: string): Promise<void> {
  const m = /^(sha256|sha384|sha512):([0-9a-f]+)$/.exec(checksum);
  const lengths: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };
  if (!m || m[2]!.length !== lengths[m[1]!]) throw new ContextError(`invalid checksum "${checksum}": expected sha256:<64 hex digits> (or sha384:, sha512:)`);
  const actual = m[1] === 'sha256' ? file.digest : `${m[1]}:${await hashFile(file.path, m[1]!)}`;
  if (actual !== checksum) throw new ContextError(`checksum mismatch for ${redactUrl(url)}: expected ${checksum}, got ${actual}`);
}

function hashFile(path: string, algorithm: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash(algorithm);
    createReadStream(path).on('data', (c) => h.update(c)).on('error', reject).on('end', () => resolve(h.digest('hex')));
  });
}

function basicAuth(url: URL): Record<string, string> {
  if (url.username === '' && url.password === '') return {};
  const user = decodeURIComponent(url.username);
  const password = decodeURIComponent(url.password);
  return { authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` };
}

function describe(error: unknown, host: string): string {
  const tls = explainTlsError(error, host, host);
  // Its advice names registry flags, which do not apply here: only the CA files do.
  if (tls) return `${tls.message.split('; ')[0]}; add its CA to /kaniko/ssl/certs/additional-ca-cert-bundle.crt (or SSL_CERT_DIR)`;
  const code = errorCode(error);
  if (code === 'ECONNREFUSED') return `connection refused by ${host}`;
  if (code === 'ENOTFOUND') return `cannot resolve the host name ${host.replace(/:\d+$/, '')}`;
  const message = error instanceof Error ? error.message : String(error);
  return code ? `${message} (${code})` : message;
}

const STATUS_TEXT: Record<number, string> = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable' };
function statusText(code: number): string {
  return STATUS_TEXT[code] ? ` ${STATUS_TEXT[code]}` : '';
}


/**
 * Every CA certificate kiln trusts (Node's roots, the system's, the extra ones), when extra ones are
 * configured: what other clients (git) must be told to trust. Undefined when only the system's apply.
 */
export async function trustedCertificates(): Promise<string[] | undefined> {
  if (trust.certificateDirectories.length === 0 && trust.certificateFiles.length === 0) return undefined;
  return (await (await registryTls('remote sources', 'pull', trustOnly()))()).ca;
}
