// HTTP to one registry for one purpose (pull or push): TLS from kaniko's flags, https with an http
// fallback only where kaniko allows it, auth challenges, redirects, and retries of what is safe to
// repeat. Every failure becomes a RegistryError that names the registry and says what to do.
import { Readable } from 'node:stream';
import { EnvHttpProxyAgent, type Dispatcher } from 'undici';
import { log } from '../log/logger.js';
import { registryApiHost } from '../reference/reference.js';
import { createSecureContext } from 'node:tls';
import { connectionError, isLocalRegistry, plainHttpAllowed, registryLookup, registryTlsOptions } from './tls.js';
import { RegistryError, type Authenticator, type AuthenticatorFactory, type RegistryOptions, type RegistryPurpose, type TokenHttp } from './types.js';

export type ResponseBody = NodeJS.ReadableStream & { text(): Promise<string>; json(): Promise<unknown>; dump(): Promise<void> };
export type Headers = Record<string, string | string[] | undefined>;

export interface TransportRequest {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** `/v2/...`, or an absolute URL the registry handed out (an upload Location). */
  path: string;
  scopes: string[];
  headers?: Record<string, string>;
  body?: Buffer | (() => NodeJS.ReadableStream);
  retries?: number;
  expectStatus?: number[];
  /** What the request does, for error messages ("fetching manifest x:y"); default "METHOD path". */
  operation?: string;
}

export interface TransportResponse {
  status: number;
  headers: Headers;
  body: ResponseBody;
}

export interface RegistryTransport {
  /** "host:port" as written; "docker.io" for Docker Hub. */
  readonly registry: string;
  readonly purpose?: RegistryPurpose;
  request(req: TransportRequest): Promise<TransportResponse>;
  close(): Promise<void>;
}

/** Tuning for tests; production uses the defaults (go-containerregistry's: 3 attempts, 1 s then 3 s apart). */
export interface TransportSettings {
  retries?: number;
  retryDelayMs?: number;
}

const DEFAULT_RETRIES = 2;
const DEFAULT_RETRY_DELAY_MS = 1000;
const MAX_RETRY_AFTER_MS = 30_000;
const MAX_REDIRECTS = 10;
const USER_AGENT = 'kiln';
/** A registry may take minutes to answer a large PUT while it hashes and moves the blob. */
const HEADERS_TIMEOUT_MS = 10 * 60_000;
const BODY_TIMEOUT_MS = 5 * 60_000;
const MAX_ERROR_BODY = 64 * 1024;

const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE']);
const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);

/** docker.io → registry-1.docker.io; anything else unchanged (reference's rule, named for the transport). */
export const apiHost = registryApiHost;

export function createTransport(
  registry: string, purpose: RegistryPurpose, options: RegistryOptions, authenticatorFactory: AuthenticatorFactory, settings: TransportSettings = {},
): RegistryTransport {
  return new HttpTransport(registry, purpose, options, authenticatorFactory, settings);
}

export function headerValue(headers: Headers, name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}

/** Strips the query: upload URLs carry opaque state and redirect URLs carry signatures. */
function displayPath(path: string): string {
  return path.replace(/\?.*$/, '');
}

/** The distribution error list of a body (`{"errors":[{"code","message"}]}`), or a short plain-text body. */
function describeErrorBody(text: string): { codes: string[]; summary: string } {
  try {
    const parsed = JSON.parse(text) as { errors?: { code?: unknown; message?: unknown }[] };
    if (Array.isArray(parsed.errors)) {
      const items = parsed.errors.map((e) => [e.code, e.message].filter((v) => typeof v === 'string' && v !== '').join(': '));
      return { codes: parsed.errors.map((e) => String(e.code ?? '')), summary: items.filter(Boolean).join('; ') };
    }
  } catch {
    // not JSON: fall through
  }
  const trimmed = text.trim();
  return { codes: [], summary: trimmed.length > 0 && trimmed.length <= 200 && !trimmed.startsWith('<') ? trimmed : '' };
}

function statusAdvice(status: number, codes: string[], path: string, registry: string, purpose: RegistryPurpose | undefined): string {
  const kind = /\/manifests\//.test(path) ? 'manifest' : /\/blobs\/uploads\//.test(path) ? 'upload' : /\/blobs\//.test(path) ? 'blob' : 'other';
  if (status === 401) return `authentication failed: check the credentials kiln has for ${registry} (DOCKER_CONFIG's config.json, a credential helper, or CI_REGISTRY_USER/CI_REGISTRY_PASSWORD)`;
  if (status === 403) return `access denied: check that these credentials may ${purpose === 'pull' ? 'pull from' : 'push to'} this repository and that the repository path is right`;
  if (status === 404) {
    if (codes.includes('NAME_UNKNOWN')) return `the repository does not exist on ${registry}: check the repository path`;
    if (kind === 'manifest') return 'image not found: check the name and tag';
    if (kind === 'upload') return 'the upload session expired or was lost; a new push starts another';
    if (kind === 'blob') return 'the blob is not in this repository';
    return 'not found';
  }
  if (status === 405) return 'the registry does not allow this operation here (read-only, or a pull-through mirror?)';
  if (status === 413) return 'too large: the registry or a proxy in front of it limits request size (e.g. nginx client_max_body_size)';
  if (status === 429) return 'too many requests: the registry is rate limiting (Docker Hub pull limits: log in or use --registry-mirror); retrying later may help';
  if (status >= 500) return 'a server error on the registry side; retrying may help';
  return '';
}

/** A RegistryError for an unexpected response: status, the registry's error codes and messages, and advice. */
export async function responseError(
  registry: string, purpose: RegistryPurpose | undefined, operation: string, path: string, status: number, body: ResponseBody,
): Promise<RegistryError> {
  const text = await readText(body, MAX_ERROR_BODY).catch(() => '');
  const { codes, summary } = describeErrorBody(text);
  const advice = statusAdvice(status, codes, path, registry, purpose);
  const message = `${operation} on ${registry} failed: HTTP ${status}${summary ? ` (${summary})` : ''}${advice ? `; ${advice}` : ''}`;
  return new RegistryError(message, registry, status, RETRYABLE_STATUS.has(status));
}

/** Reads up to `limit` bytes of a body as text, discarding the rest. */
export async function readText(body: NodeJS.ReadableStream, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    if (size < limit) chunks.push(buf.subarray(0, limit - size));
    size += buf.length;
    if (size >= limit) break;
  }
  return Buffer.concat(chunks).toString('utf8');
}

function withMethods(stream: Readable): ResponseBody {
  return Object.assign(stream, {
    text: async () => readText(stream, Number.MAX_SAFE_INTEGER),
    json: async (): Promise<unknown> => JSON.parse(await readText(stream, Number.MAX_SAFE_INTEGER)),
    dump: async () => { stream.destroy(); },
  });
}

/** Opens a request body for one attempt; functions give a fresh stream each time. */
function openBody(source: TransportRequest['body']): { body: Buffer | Readable | undefined; dispose(): void } {
  if (source === undefined || Buffer.isBuffer(source)) return { body: source, dispose: () => undefined };
  const opened = source();
  const body = opened instanceof Readable ? opened : Readable.from(opened as AsyncIterable<Buffer>);
  return {
    body,
    dispose: () => {
      body.destroy();
      if ((opened as unknown) !== body) (opened as Partial<Readable>).destroy?.();
    },
  };
}

class HttpTransport implements RegistryTransport {
  private readonly host: string;
  private readonly authenticator: Authenticator;
  private readonly retries: number;
  private readonly retryDelayMs: number;
  private agentPromise?: Promise<Dispatcher>;
  private originPromise?: Promise<string>;
  private closed = false;

  constructor(
    readonly registry: string,
    readonly purpose: RegistryPurpose,
    private readonly options: RegistryOptions,
    authenticatorFactory: AuthenticatorFactory,
    settings: TransportSettings,
  ) {
    this.host = apiHost(registry);
    this.retries = settings.retries ?? DEFAULT_RETRIES;
    this.retryDelayMs = settings.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;
    this.authenticator = authenticatorFactory(registry, this.tokenHttp());
  }

  async request(req: TransportRequest): Promise<TransportResponse> {
    const maxRetries = IDEMPOTENT.has(req.method) ? (req.retries ?? this.retries) : 0;
    const res = await this.send(req, maxRetries);
    const ok = res.statusCode >= 200 && res.statusCode < 300;
    const body = req.method === 'GET' && ok ? this.resumable(req, res, maxRetries) : (res.body as unknown as ResponseBody);
    return { status: res.statusCode, headers: res.headers, body };
  }

  async close(): Promise<void> {
    this.closed = true;
    const agent = await this.agentPromise?.catch(() => undefined);
    if (!agent) return;
    let timer: NodeJS.Timeout | undefined;
    // A body nobody consumed would keep close() waiting forever; destroy after a grace period.
    const closed = await Promise.race([agent.close().then(() => true), new Promise<boolean>((resolve) => { timer = setTimeout(resolve, 2000, false); })]);
    clearTimeout(timer);
    if (!closed) await agent.destroy();
  }

  /** One logical request with retries of failed attempts (connection errors, 5xx, 429) while allowed. */
  private async send(req: TransportRequest, maxRetries: number): Promise<Dispatcher.ResponseData> {
    if (this.closed) throw new RegistryError(`the connection to ${this.registry} is already closed`, this.registry);
    const agent = await this.agent();
    for (let attempt = 0; ; attempt++) {
      let res: Dispatcher.ResponseData;
      try {
        res = await this.exchange(agent, await this.origin(), req);
      } catch (e) {
        if (e instanceof RegistryError && e.retryable && attempt < maxRetries) {
          log.debug(`${e.message}; retrying (${attempt + 1}/${maxRetries})`);
          await this.backoff(attempt);
          continue;
        }
        throw e;
      }
      if (RETRYABLE_STATUS.has(res.statusCode) && attempt < maxRetries) {
        await res.body.dump().catch(() => undefined);
        log.debug(`${req.method} ${displayPath(req.path)} on ${this.registry}: HTTP ${res.statusCode}; retrying (${attempt + 1}/${maxRetries})`);
        await this.backoff(attempt, headerValue(res.headers, 'retry-after'));
        continue;
      }
      if (req.expectStatus && !req.expectStatus.includes(res.statusCode)) {
        const operation = req.operation ?? `${req.method} ${displayPath(req.path)}`;
        throw await responseError(this.registry, this.purpose, operation, req.path, res.statusCode, res.body as unknown as ResponseBody);
      }
      return res;
    }
  }

  /** One attempt: answers one auth challenge and follows redirects, sending Authorization only to the registry itself. */
  private async exchange(agent: Dispatcher, origin: string, req: TransportRequest): Promise<Dispatcher.ResponseData> {
    const registryOrigin = new URL(origin);
    let url = new URL(req.path, origin);
    let method: string = req.method;
    let body = req.body;
    let authorization = this.authenticator.cached(req.scopes);
    let challenged = false;
    for (let hop = 0; ; hop++) {
      // A registry behind a TLS-terminating proxy may hand out http:// Locations for itself.
      if (url.host === registryOrigin.host) url.protocol = registryOrigin.protocol;
      const toRegistry = url.origin === registryOrigin.origin;
      const headers: Record<string, string> = { 'user-agent': USER_AGENT, ...req.headers };
      if (authorization && toRegistry) headers.authorization = authorization;
      const opened = openBody(body);
      let res: Dispatcher.ResponseData;
      try {
        res = await agent.request({ origin: url.origin, path: url.pathname + url.search, method: method as Dispatcher.HttpMethod, headers, body: opened.body });
      } catch (e) {
        opened.dispose();
        throw this.networkError(e, req.method, req.path, url.host, url.protocol === 'https:');
      }
      const status = res.statusCode;
      const challenge = headerValue(res.headers, 'www-authenticate');
      const location = headerValue(res.headers, 'location');
      const again = (status === 401 && toRegistry && !challenged && challenge !== undefined) || (REDIRECT_STATUS.has(status) && location !== undefined);
      if (!again) {
        res.body.once('close', () => opened.dispose());
        return res;
      }
      await res.body.dump().catch(() => undefined);
      opened.dispose();
      if (status === 401) {
        challenged = true;
        authorization = await this.authenticator.challenge(challenge!, req.scopes);
        log.addSecret(authorization.replace(/^\S+\s+/, ''));
        continue;
      }
      if (hop >= MAX_REDIRECTS) throw new RegistryError(`${req.method} ${displayPath(req.path)} on ${this.registry}: more than ${MAX_REDIRECTS} redirects`, this.registry, status);
      url = new URL(location!, url);
      if (status === 303 || ((status === 301 || status === 302) && method !== 'GET' && method !== 'HEAD')) {
        method = method === 'HEAD' ? 'HEAD' : 'GET';
        body = undefined;
      }
    }
  }

  /**
   * A GET body that survives a connection dropped mid-transfer: it asks again for the remaining
   * bytes (Range), or skips what it already has when the server ignores ranges.
   */
  private resumable(req: TransportRequest, first: Dispatcher.ResponseData, maxRetries: number): ResponseBody {
    let current: NodeJS.ReadableStream & { destroy(): void } = first.body;
    let cancelled = false;
    const chunks = async function* (this: HttpTransport): AsyncGenerator<Buffer> {
      let received = 0;
      let skip = 0;
      for (let attempt = 0; ; attempt++) {
        try {
          for await (const chunk of current) {
            let buf = chunk as Buffer;
            if (skip > 0) {
              const dropped = Math.min(skip, buf.length);
              skip -= dropped;
              buf = buf.subarray(dropped);
              if (buf.length === 0) continue;
            }
            received += buf.length;
            yield buf;
          }
          return;
        } catch (e) {
          if (cancelled) return;
          const error = e instanceof RegistryError ? e : this.networkError(e, req.method, req.path, this.host);
          if (!error.retryable || attempt >= maxRetries) throw error;
          log.debug(`${error.message}; resuming ${displayPath(req.path)} at byte ${received}`);
          await this.backoff(attempt);
          const res = await this.send({ ...req, headers: { ...req.headers, range: `bytes=${received}-` }, expectStatus: [200, 206] }, maxRetries - attempt - 1);
          const start = /^bytes (\d+)-/.exec(headerValue(res.headers, 'content-range') ?? '')?.[1];
          if (res.statusCode === 206 && Number(start) !== received) {
            res.body.destroy();
            throw new RegistryError(`${this.registry} resumed ${displayPath(req.path)} at the wrong offset`, this.registry, 206);
          }
          skip = res.statusCode === 200 ? received : 0;
          current = res.body;
        }
      }
    }.call(this);
    const stream = Readable.from(chunks, { objectMode: false });
    stream.once('close', () => {
      cancelled = true;
      current.destroy();
    });
    return withMethods(stream);
  }

  /**
   * One dispatcher for every host this transport reaches (registry, blob storage, token realm), so
   * all get the same trust. HTTPS_PROXY/HTTP_PROXY/NO_PROXY apply as in Go; like Go, local hosts
   * are never proxied.
   */
  private agent(): Promise<Dispatcher> {
    this.agentPromise ??= registryTlsOptions(this.registry, this.purpose, this.options).then(
      (tls) => {
        // One secure context for every connection of this transport: building one from a few hundred
        // CA certificates per connection costs more than the handshake.
        const secureContext = createSecureContext({ ca: tls.ca, cert: tls.cert, key: tls.key });
        const connect = { secureContext, rejectUnauthorized: tls.rejectUnauthorized };
        return new EnvHttpProxyAgent({
        connect, requestTls: connect, proxyTls: { ca: tls.ca, rejectUnauthorized: tls.rejectUnauthorized },
        noProxy: [process.env.no_proxy ?? process.env.NO_PROXY, 'localhost', '127.0.0.1', '[::1]'].filter(Boolean).join(','),
        headersTimeout: HEADERS_TIMEOUT_MS, bodyTimeout: BODY_TIMEOUT_MS,
        });
      },
      (e: unknown) => {
        this.agentPromise = undefined;
        throw e;
      },
    );
    return this.agentPromise;
  }

  /** https, unless plain HTTP is allowed and a /v2/ ping over https fails while one over http works; decided once. */
  private origin(): Promise<string> {
    if (!plainHttpAllowed(this.registry, this.purpose, this.options)) return Promise.resolve(`https://${this.host}`);
    this.originPromise ??= this.ping().catch((e: unknown) => {
      this.originPromise = undefined;
      throw e;
    });
    return this.originPromise;
  }

  private async ping(): Promise<string> {
    const agent = await this.agent();
    const get = (scheme: string): Promise<Dispatcher.ResponseData> =>
      agent.request({ origin: `${scheme}://${this.host}`, path: '/v2/', method: 'GET', headers: { 'user-agent': USER_AGENT } });
    let httpsError: unknown;
    try {
      // Any answer over TLS proves https works (the certificate was verified), whatever the status.
      await (await get('https')).body.dump();
      return `https://${this.host}`;
    } catch (e) {
      httpsError = e;
    }
    try {
      const res = await get('http');
      await res.body.dump();
      // Any HTTP answer but 400 means plain HTTP is spoken (a TLS server answers plain HTTP with 400);
      // a 5xx here is the registry being unwell, which the request's own retries deal with.
      if (res.statusCode !== 400) {
        log.debug(`${this.registry} does not answer https (${(httpsError as Error).message}); using plain HTTP`);
        return `http://${this.host}`;
      }
    } catch {
      // report the https failure: it says more
    }
    throw this.networkError(httpsError, 'GET', '/v2/', this.host, true);
  }

  private networkError(error: unknown, method: string, path: string, host: string, secure = false): RegistryError {
    if (error instanceof RegistryError) return error;
    const where = host === this.host ? this.registry : `${host} (for ${this.registry})`;
    const clientCertificate = registryLookup(this.options.registryClientCertificates, this.registry) !== undefined;
    return connectionError(error, `${method} ${displayPath(path)} on ${where}`, host, this.registry, { secure, clientCertificate });
  }

  private async backoff(attempt: number, retryAfter?: string): Promise<void> {
    const seconds = retryAfter !== undefined && /^\d+$/.test(retryAfter) ? Number(retryAfter) : undefined;
    const delay = seconds !== undefined ? Math.min(seconds * 1000, MAX_RETRY_AFTER_MS) : this.retryDelayMs * 3 ** attempt * (1 + Math.random() * 0.1);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }

  /** Token endpoints (maybe on another host) with the same TLS trust as the registry. */
  private tokenHttp(): TokenHttp {
    return {
      request: async (url, init) => {
        const agent = await this.agent();
        const target = new URL(url);
        // Credentials go to the realm: never in clear text for a registry reached over TLS.
        if (target.protocol === 'http:' && (await this.origin()).startsWith('https:') && !isLocalRegistry(target.host)) {
          throw new RegistryError(`${this.registry} sent its token requests to plain-HTTP ${target.host}; kiln will not send credentials there unencrypted (ask the registry's operator to serve the token realm over https)`, this.registry);
        }
        for (let attempt = 0; ; attempt++) {
          try {
            const res = await agent.request({
              origin: target.origin, path: target.pathname + target.search, method: init.method,
              headers: { 'user-agent': USER_AGENT, ...init.headers }, body: init.body,
            });
            if (RETRYABLE_STATUS.has(res.statusCode) && attempt < this.retries) {
              await res.body.dump().catch(() => undefined);
              await this.backoff(attempt, headerValue(res.headers, 'retry-after'));
              continue;
            }
            return { status: res.statusCode, body: await readText(res.body, 1 << 20) };
          } catch (e) {
            const error = this.networkError(e, init.method, target.pathname, target.host, target.protocol === 'https:');
            if (!error.retryable || attempt >= this.retries) throw error;
            await this.backoff(attempt);
          }
        }
      },
    };
  }
}
