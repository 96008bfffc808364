// The connections of one transport: an undici dispatcher for every host it reaches (registry, blob
// storage, token realm) with the same trust, HTTPS_PROXY/HTTP_PROXY/NO_PROXY as in Go (local hosts
// never proxied), and a cheap check of whether https can work on a port at all.
import { isIPv4 } from 'node:net';
import { connect as tlsConnect, createSecureContext, type SecureContext } from 'node:tls';
import type { buildConnector as BuildConnector, Dispatcher } from 'undici';
import { errorCode, isPlainTextAnswer, type RegistryConnectOptions } from './tls.js';

/**
 * Only the parts of undici kiln uses, loaded on first use: its index also loads fetch, WebSocket,
 * caches and mocks, ~90 ms of every start-up on a slow machine, and proxies need more of it than
 * direct connections. The paths are undici's own layout (the same in v6 and v7; the registry unit
 * tests load both sets; undici-lib.d.ts types them), and the methods are attached to dispatchers as
 * its index attaches them. Literal import() paths let kiln's bundle (scripts/bundle.mjs) include them.
 */
async function attachApi(api: 'request' | 'all'): Promise<void> {
  const { prototype } = (await import('undici/lib/dispatcher/dispatcher.js')).default;
  const methods: Record<string, unknown> = api === 'request' ? { request: (await import('undici/lib/api/api-request.js')).default } : (await import('undici/lib/api/index.js')).default;
  for (const [name, method] of Object.entries(methods)) {
    if (!(name in prototype)) Object.defineProperty(prototype, name, { value: method, writable: true, configurable: true });
  }
}

export interface DispatcherTimeouts {
  headersTimeout: number;
  bodyTimeout: number;
}

function proxyConfigured(): boolean {
  return ['https_proxy', 'HTTPS_PROXY', 'http_proxy', 'HTTP_PROXY'].some((name) => process.env[name]);
}

const LOOPBACK = /^(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$/i;

/** Whether connections to `host` go straight to it (no proxy). */
export function reachedDirectly(host: string): boolean {
  return !proxyConfigured() || LOOPBACK.test(host);
}

/**
 * The trust (`tls`) is read and its secure context built only when an https connection is made:
 * with a system CA bundle that is ~100 ms, which plain-HTTP registries never need. Behind a proxy
 * it is needed at once, since undici builds the tunnel's connectors up front.
 */
export async function createDispatcher(tls: () => Promise<RegistryConnectOptions>, timeouts: DispatcherTimeouts): Promise<Dispatcher> {
  if (proxyConfigured()) {
    const noProxy = [process.env.no_proxy ?? process.env.NO_PROXY, 'localhost', '127.0.0.1', '[::1]'].filter(Boolean).join(',');
    await attachApi('all');
    const EnvHttpProxyAgent = (await import('undici/lib/dispatcher/env-http-proxy-agent.js')).default;
    const t = await tls();
    const connect = { secureContext: t.secureContext, rejectUnauthorized: t.rejectUnauthorized };
    return new EnvHttpProxyAgent({ ...timeouts, noProxy, connect, requestTls: connect, proxyTls: { ca: t.ca, rejectUnauthorized: t.rejectUnauthorized } });
  }
  const buildConnector = (await import('undici/lib/core/connect.js')).default;
  const plain = buildConnector({});
  let secure: Promise<BuildConnector.connector> | undefined;
  const connect: BuildConnector.connector = (options, callback) => {
    if (options.protocol !== 'https:') return plain(options, callback);
    secure ??= tls().then((t) => buildConnector({ secureContext: t.secureContext, rejectUnauthorized: t.rejectUnauthorized }));
    secure.then((connector) => connector(options, callback), (e: Error) => {
      secure = undefined; // a later connection tries again (and reports again)
      callback(e, null);
    });
  };
  // No proxy: what EnvHttpProxyAgent would be, without loading the proxy agents.
  await attachApi('request');
  const Agent = (await import('undici/lib/dispatcher/agent.js')).default;
  return new Agent({ ...timeouts, connect });
}

let helloContext: SecureContext | undefined;
const SNIFF_TIMEOUT_MS = 10_000;
/** Failures that an https request to the same address would meet just the same. */
const UNREACHABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ENOTFOUND', 'ETIMEDOUT']);

/**
 * Sends a TLS hello to `host` ("name:port") and resolves with the error when https cannot work
 * there: the server answered in plain text (an HTTP server), or could not be reached at all. Else
 * (TLS spoken, or no clear answer) undefined. Nothing is verified, and nothing but the hello is sent.
 */
export function httpsImpossible(host: string): Promise<Error | undefined> {
  const url = new URL(`https://${host}`);
  const hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
  // No CA at all: nothing is verified, so the CA store is not worth building.
  helloContext ??= createSecureContext({ ca: [] });
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host: hostname, port: Number(url.port || 443), servername: isIPv4(hostname) || hostname.includes(':') ? undefined : hostname,
      secureContext: helloContext, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'],
    });
    const done = (error: Error | undefined): void => {
      socket.destroy();
      resolve(error);
    };
    socket.setTimeout(SNIFF_TIMEOUT_MS, () => done(Object.assign(new Error(`connecting to ${host} timed out`), { code: 'ETIMEDOUT' })));
    socket.once('secureConnect', () => done(undefined));
    socket.once('error', (e: Error) => done(isPlainTextAnswer(e) || UNREACHABLE.has(errorCode(e)) ? e : undefined));
  });
}
