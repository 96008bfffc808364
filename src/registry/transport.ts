// HTTP to one registry for one purpose (pull or push): TLS from kaniko's flags, https with an http
// fallback only where kaniko allows it, auth challenges, redirects, and retries of what is safe to
// repeat. Every failure becomes a RegistryError that names the registry and says what to do.
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { log } from '../log/logger.js';
import { registryApiHost } from '../reference/reference.js';
import { createDispatcher, httpsImpossible, reachedDirectly } from './dispatcher.js';
import { displayPath, readText, responseError, RETRYABLE_STATUS } from './http-errors.js';
import { ResumableBody, type BodyCheck } from './resumable-body.js';
import { connectionError, isLocalRegistry, plainHttpAllowed, registryLookup, registryTls } from './tls.js';
import { RegistryError, type Authenticator, type AuthenticatorFactory, type RegistryOptions, type RegistryPurpose, type TokenHttp } from './types.js';

export type ResponseBody = NodeJS.ReadableStream & { text(): Promise<string>; json(): Promise<unknown>; dump(): Promise<void> };
export type Headers = Record<string, string | string[] | undefined>;

export interface TransportRequest {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** `/v2/...`, or an absolute URL the registry handed out (an upload Location). */
  path: string;
  scopes: string[];
  headers?: Record<string, string>;
  /** A function gives a fresh stream for each attempt (and may wait for it, e.g. a download). */
  body?: Buffer | (() => NodeJS.ReadableStream | Promise<NodeJS.ReadableStream>);
  /** Checks a successful GET's body as it streams (a digest), resumed parts included. */
  check?: BodyCheck;
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
  /**
   * Lets requests in flight finish (for up to 2 s), then closes the connections; `abandon` (the
   * build failed) cuts them at once instead, since an upload nobody will use is not worth waiting for.
   */
  close(options?: { abandon?: boolean }): Promise<void>;
}

/** Tuning for tests; production uses the defaults (go-containerregistry's: 3 attempts, 1 s then 3 s apart). */
export interface TransportSettings {
  retries?: number;
  retryDelayMs?: number;
  /**
   * Hosts whose port was found to speak plain HTTP, shared by a session's transports: the pull and the
   * push of one registry then probe it once. Only that verdict is shared; whether https works depends
   * on each purpose's trust, so it is learned by each.
   */
  plainHttpHosts?: Map<string, Promise<boolean>>;
}

const DEFAULT_RETRIES = 2;
const DEFAULT_RETRY_DELAY_MS = 1000;
const MAX_RETRY_AFTER_MS = 30_000;
const MAX_REDIRECTS = 10;
const USER_AGENT = 'kiln';
/** A registry may take minutes to answer a large PUT while it hashes and moves the blob. */
const HEADERS_TIMEOUT_MS = 10 * 60_000;
const BODY_TIMEOUT_MS = 5 * 60_000;

const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE']);
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

function withMethods(stream: Readable): ResponseBody {
  return Object.assign(stream, {
    text: async () => readText(stream, Number.MAX_SAFE_INTEGER),
    json: async (): Promise<unknown> => JSON.parse(await readText(stream, Number.MAX_SAFE_INTEGER)),
    dump: async () => { stream.destroy(); },
  });
}

/** Opens a request body for one attempt; functions give a fresh stream each time. */
async function openBody(source: TransportRequest['body']): Promise<{ body: Buffer | Readable | undefined; dispose(): void }> {
  if (source === undefined || Buffer.isBuffer(source)) return { body: source, dispose: () => undefined };
  const opened = await source();
  const body = opened instanceof Readable ? opened : Readable.from(opened as AsyncIterable<Buffer>);
  // undici listens while it sends; a failure after the answer came (a check at the very end of a
  // stream) has nothing left to fail and must not crash kiln.
  body.on('error', () => undefined);
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
  /** Whether plain HTTP may be tried (kaniko's flags, or a local address); the options do not change. */
  private readonly plainHttp: boolean;
  private readonly plainHttpHosts?: Map<string, Promise<boolean>>;
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
    this.plainHttp = plainHttpAllowed(registry, purpose, options);
    this.retries = settings.retries ?? DEFAULT_RETRIES;
    this.retryDelayMs = settings.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;
    this.plainHttpHosts = settings.plainHttpHosts;
    this.authenticator = authenticatorFactory(registry, this.tokenHttp());
  }

  async request(req: TransportRequest): Promise<TransportResponse> {
    const maxRetries = IDEMPOTENT.has(req.method) ? (req.retries ?? this.retries) : 0;
    const res = await this.send(req, maxRetries);
    const ok = res.statusCode >= 200 && res.statusCode < 300;
    const body = req.method === 'GET' && ok ? withMethods(this.resumable(req, res, maxRetries)) : (res.body as unknown as ResponseBody);
    return { status: res.statusCode, headers: res.headers, body };
  }

  async close(options: { abandon?: boolean } = {}): Promise<void> {
    this.closed = true;
    const agent = await this.agentPromise?.catch(() => undefined);
    if (!agent) return;
    if (options.abandon) return agent.destroy();
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
      let opened: Awaited<ReturnType<typeof openBody>> | undefined;
      let res: Dispatcher.ResponseData;
      try {
        opened = await openBody(body);
        // undici gives a connection back to its pool a full event-loop turn after the response ends
        // (a setImmediate); a request sent sooner (an upload's PUT after its POST, the retry after a
        // 401) finds none free and opens another, a TLS handshake on a remote registry. One turn here
        // lets it reuse the connection.
        await new Promise((resolve) => setImmediate(resolve));
        // undici closes the connection after a HEAD unless told otherwise, in case a broken server
        // sends a body anyway; registries and their storage do not, and a registry reached over TLS
        // would otherwise pay a handshake for the request after every blob or manifest check.
        res = await agent.request({
          origin: url.origin, path: url.pathname + url.search, method: method as Dispatcher.HttpMethod, headers, body: opened.body,
          ...(method === 'HEAD' ? { reset: false } : {}),
        });
      } catch (e) {
        opened?.dispose();
        throw this.networkError(e, req.method, req.path, url.host, url.protocol === 'https:');
      }
      const sent = opened;
      const status = res.statusCode;
      const challenge = headerValue(res.headers, 'www-authenticate');
      const location = headerValue(res.headers, 'location');
      const again = (status === 401 && toRegistry && !challenged && challenge !== undefined) || (REDIRECT_STATUS.has(status) && location !== undefined);
      if (!again) {
        res.body.once('close', () => sent.dispose());
        return res;
      }
      await res.body.dump().catch(() => undefined);
      sent.dispose();
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

  /** A successful GET's body, resumed where it broke off and checked as it streams. */
  private resumable(req: TransportRequest, first: Dispatcher.ResponseData, maxRetries: number): Readable {
    return new ResumableBody(first.body, {
      maxRetries, check: req.check,
      failure: (e) => this.networkError(e, req.method, req.path, this.host),
      resume: async (received, attempt) => {
        log.debug(`${displayPath(req.path)} on ${this.registry} broke off; resuming at byte ${received}`);
        await this.backoff(attempt);
        const res = await this.send({ ...req, headers: { ...req.headers, range: `bytes=${received}-` }, expectStatus: [200, 206] }, maxRetries - attempt - 1);
        const start = /^bytes (\d+)-/.exec(headerValue(res.headers, 'content-range') ?? '')?.[1];
        if (res.statusCode === 206 && Number(start) !== received) {
          res.body.destroy();
          throw new RegistryError(`${this.registry} resumed ${displayPath(req.path)} at the wrong offset`, this.registry, 206);
        }
        // A server that ignores Range sends everything again: skip what was delivered.
        return { body: res.body, skip: res.statusCode === 200 ? received : 0 };
      },
    });
  }

  private agent(): Promise<Dispatcher> {
    this.agentPromise ??= registryTls(this.registry, this.purpose, this.options).then((tls) => createDispatcher(tls, {
      headersTimeout: HEADERS_TIMEOUT_MS, bodyTimeout: BODY_TIMEOUT_MS,
    })).catch((e: unknown) => {
      this.agentPromise = undefined;
      throw e;
    });
    return this.agentPromise;
  }

  /** https, unless plain HTTP is allowed and a /v2/ ping over https fails while one over http works; decided once. */
  private origin(): Promise<string> {
    if (!this.plainHttp) return Promise.resolve(`https://${this.host}`);
    this.originPromise ??= this.sharedPing().catch((e: unknown) => {
      this.originPromise = undefined;
      throw e;
    });
    return this.originPromise;
  }

  /** ping(), unless another transport of the session is learning, or has learned, that the host speaks plain HTTP. */
  private async sharedPing(): Promise<string> {
    const known = this.plainHttpHosts?.get(this.host);
    if (known && (await known)) return `http://${this.host}`;
    const origin = this.ping();
    if (!known) this.plainHttpHosts?.set(this.host, origin.then((o) => o.startsWith('http:'), () => false));
    return origin;
  }

  private async ping(): Promise<string> {
    const agent = await this.agent();
    const get = (scheme: string): Promise<Dispatcher.ResponseData> =>
      agent.request({ origin: `${scheme}://${this.host}`, path: '/v2/', method: 'GET', headers: { 'user-agent': USER_AGENT } });
    // A port that answers a TLS hello in plain text (or not at all) cannot speak https, whatever
    // the trust: no need to build it (the costly part of an https attempt) to learn that.
    let httpsError: unknown = reachedDirectly(this.host) ? await httpsImpossible(this.host) : undefined;
    if (httpsError === undefined) {
      try {
        // Any answer over TLS proves https works (the certificate was verified), whatever the status.
        await (await get('https')).body.dump();
        return `https://${this.host}`;
      } catch (e) {
        httpsError = e;
      }
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
