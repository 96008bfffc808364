// How securely to connect to one registry, from kaniko's flags (trusted CAs, client certificate,
// skip-verify, when plain HTTP may be tried), and plain-words explanations of connections that
// failed, TLS failures above all, saying which flag fixes them.
import { X509Certificate } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { isIPv4 } from 'node:net';
import { join } from 'node:path';
import { createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import { log } from '../log/logger.js';
import { canonicalRegistryName } from '../reference/reference.js';
import { RegistryError, type RegistryOptions, type RegistryPurpose } from './types.js';

/** What undici's `connect` needs; `ca` always starts with Node's bundled roots, since `ca` replaces them. */
export interface RegistryTlsOptions {
  ca: string[];
  cert?: string;
  key?: string;
  rejectUnauthorized: boolean;
}

/** The options with their secure context, which is what connections use. */
export interface RegistryConnectOptions extends RegistryTlsOptions {
  secureContext: SecureContext;
}

/** Docker Hub's spellings all mean Docker Hub, so a flag given for one applies to all. */
function normalizeRegistry(name: string): string {
  return canonicalRegistryName(name.replace(/^https?:\/\//, '').replace(/\/+$/, '').toLowerCase());
}

export function registryListed(list: readonly string[], registry: string): boolean {
  const wanted = normalizeRegistry(registry);
  return list.some((r) => normalizeRegistry(r) === wanted);
}

export function registryLookup<T>(map: ReadonlyMap<string, T>, registry: string): T | undefined {
  const wanted = normalizeRegistry(registry);
  for (const [name, value] of map) if (normalizeRegistry(name) === wanted) return value;
  return undefined;
}

export function skipsTlsVerify(registry: string, purpose: RegistryPurpose, options: RegistryOptions): boolean {
  const global = purpose === 'push' ? options.skipTlsVerify : options.skipTlsVerifyPull;
  return global || registryListed(options.skipTlsVerifyRegistries, registry);
}

/** Whether plain HTTP may be tried after https fails: kaniko's insecure flags, or a local address (go-containerregistry's rule). */
export function plainHttpAllowed(registry: string, purpose: RegistryPurpose, options: RegistryOptions): boolean {
  if (purpose === 'push' ? options.insecure : options.insecurePull) return true;
  return registryListed(options.insecureRegistries, registry) || isLocalRegistry(registry);
}

/** localhost, *.localhost, loopback and RFC 1918 private addresses, as go-containerregistry treats them. */
export function isLocalRegistry(registry: string): boolean {
  // Colons tell IPv6 apart without node's IPv6 pattern, whose first use costs milliseconds of start-up.
  const bareIpv6 = !registry.startsWith('[') && registry.indexOf(':') !== registry.lastIndexOf(':');
  const host = registry.startsWith('[') ? registry.slice(1, registry.indexOf(']')) : bareIpv6 ? registry : registry.replace(/:\d+$/, '');
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  if (host.includes(':')) return host === '::1';
  if (!isIPv4(host)) return false;
  const [a, b] = host.split('.').map(Number) as [number, number];
  return a === 127 || a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168);
}

const warnedSkipVerify = new Set<string>();

/**
 * How connections to a registry are secured, in two steps. The registry's own files
 * (--registry-certificate, --registry-client-cert) are read at once, so a wrong path fails before
 * anything is sent, as in kaniko. The returned function gives the full options: the shared trust
 * (system bundles, SSL_CERT_DIR) and the secure context, built on first call, since only https
 * connections need them and with a system bundle they cost ~100 ms.
 */
export async function registryTls(registry: string, purpose: RegistryPurpose, options: RegistryOptions): Promise<() => Promise<RegistryConnectOptions>> {
  const own: { ca: string[]; cert?: string; key?: string } = { ca: [] };
  const registryCa = registryLookup(options.registryCertificates, registry);
  if (registryCa !== undefined) {
    const pem = await readOrFail(registryCa, registry, '--registry-certificate');
    const certs = new Map<string, string>();
    splitCertificates(pem, registryCa, certs);
    if (certs.size === 0) throw new RegistryError(`--registry-certificate for ${registry}: ${registryCa} holds no PEM certificate`, registry);
    own.ca.push(...certs.values());
  }
  const client = registryLookup(options.registryClientCertificates, registry);
  if (client) {
    own.cert = await readOrFail(client.cert, registry, '--registry-client-cert');
    own.key = await readOrFail(client.key, registry, '--registry-client-cert');
  }
  const rejectUnauthorized = !skipsTlsVerify(registry, purpose, options);
  if (!rejectUnauthorized && !warnedSkipVerify.has(registry)) {
    warnedSkipVerify.add(registry);
    log.warn(`TLS certificate verification is disabled for ${registry}: anyone on the network path can read and alter what is pulled and pushed`);
  }
  const contextKey = JSON.stringify([registryCa, client?.cert, client?.key]);
  let loaded: Promise<RegistryConnectOptions> | undefined;
  return () => {
    loaded ??= sharedTrust(options).then((trust) => {
      const ca = [...trust.all, ...own.ca];
      const extra = [...trust.extra, ...own.ca];
      return { ca, cert: own.cert, key: own.key, rejectUnauthorized, secureContext: secureContext(options, contextKey, () => newSecureContext(extra, own.cert, own.key)) };
    }).catch((e: unknown) => {
      loaded = undefined;
      throw e;
    });
    return loaded;
  };
}

/**
 * Secure contexts by trust (the registry's own CA and client certificate; the rest is the same for
 * every registry of a build): building one from a few hundred CA certificates costs ~50 ms, more than
 * a handshake, so the pull and push transports of a registry share one.
 */
const secureContexts = new WeakMap<RegistryOptions, Map<string, SecureContext>>();

function secureContext(options: RegistryOptions, key: string, make: () => SecureContext): SecureContext {
  let contexts = secureContexts.get(options);
  if (!contexts) secureContexts.set(options, (contexts = new Map()));
  let context = contexts.get(key);
  if (!context) contexts.set(key, (context = make()));
  return context;
}

/**
 * Node's roots plus `extra`. A context made without a `ca` list starts from the root store Node
 * parses once per process (~16 ms); a `ca` list holding those same ~140 roots is parsed again for
 * every context (~30 ms). The extra certificates go into the context's own copy of that store.
 */
function newSecureContext(extra: readonly string[], cert?: string, key?: string): SecureContext {
  const context = createSecureContext({ cert, key });
  for (const pem of extra) (context.context as { addCACert(pem: string): void }).addCACert(pem);
  return context;
}

/**
 * The certificates every registry trusts, read once per build and deduplicated: SSL_CERT_DIR and
 * SSL_CERT_FILE usually hold the system bundle again, and each certificate costs parsing time in
 * every TLS context.
 */
const sharedTrustCache = new WeakMap<RegistryOptions, Promise<SharedTrust>>();

interface SharedTrust {
  all: string[];
  /** Those not among Node's own roots. */
  extra: string[];
}

function sharedTrust(options: RegistryOptions): Promise<SharedTrust> {
  let trust = sharedTrustCache.get(options);
  if (!trust) {
    trust = (async () => {
      const ca = new Map<string, string>(rootCertificates.map((c) => [certificateKey(c), c.trim()]));
      const roots = ca.size;
      for (const dir of options.certificateDirectories) await certificatesInDirectory(dir, ca);
      for (const file of options.certificateFiles) {
        try {
          splitCertificates(await readFile(file, 'utf8'), file, ca);
        } catch (e) {
          log.warn(`Cannot read CA bundle ${file}: ${(e as Error).message}; continuing without it`);
        }
      }
      const all = [...ca.values()];
      // A Map keeps insertion order: Node's roots come first.
      return { all, extra: all.slice(roots) };
    })();
    sharedTrustCache.set(options, trust);
  }
  return trust;
}

async function readOrFail(path: string, registry: string, flag: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new RegistryError(`${flag} for ${registry}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, registry);
  }
}

/** Adds the certificates of the *.crt and *.pem files of a directory (kaniko's /kaniko/ssl/certs, SSL_CERT_DIR) to `into`; absent directories are skipped. */
async function certificatesInDirectory(dir: string, into: Map<string, string>): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  for (const name of names.filter((n) => /\.(crt|pem)$/i.test(n)).sort()) {
    const path = join(dir, name);
    try {
      splitCertificates(await readFile(path, 'utf8'), path, into);
    } catch (e) {
      log.debug(`Skipping ${path}: ${(e as Error).message}`);
    }
  }
}

/** A certificate's base64 body: the same certificate is often wrapped or spaced differently. */
function certificateKey(pem: string): string {
  return pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, '');
}

const PEM_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/**
 * Adds a bundle's PEM certificates to `into`; unparsable blocks are dropped with a warning, since one
 * bad block would break every handshake. Certificates already there are not parsed again: the
 * system bundle and the directory beside it repeat each other and Node's own roots (~1 ms each).
 */
function splitCertificates(text: string, source: string, into: Map<string, string>): void {
  for (const block of text.match(PEM_BLOCK) ?? []) {
    const pem = block.trim();
    const key = certificateKey(pem);
    if (into.has(key)) continue;
    try {
      new X509Certificate(pem);
      into.set(key, pem);
    } catch {
      log.warn(`Ignoring a malformed certificate in ${source}`);
    }
  }
}

/** OpenSSL/Node error codes of a failed verification, in words. */
const CERTIFICATE_PROBLEMS: Record<string, string> = {
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'the certificate is signed by an unknown authority',
  UNABLE_TO_GET_ISSUER_CERT: 'the certificate is signed by an unknown authority',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'the certificate is signed by an unknown authority',
  SELF_SIGNED_CERT_IN_CHAIN: 'the certificate chain ends in a self-signed CA that is not trusted',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'the certificate is self-signed and not trusted',
  CERT_UNTRUSTED: 'the certificate is not trusted',
  CERT_HAS_EXPIRED: 'the certificate has expired',
  CERT_NOT_YET_VALID: 'the certificate is not yet valid (check the clock)',
  ERR_TLS_CERT_ALTNAME_INVALID: 'the certificate is for another host',
  HOSTNAME_MISMATCH: 'the certificate is for another host',
  CERT_REVOKED: 'the certificate has been revoked',
  CERT_SIGNATURE_FAILURE: 'the certificate signature is invalid',
  INVALID_CA: 'a certificate in the chain is not a valid CA',
  CERT_CHAIN_TOO_LONG: 'the certificate chain is too long',
  INVALID_PURPOSE: 'the certificate may not be used for a TLS server',
};

const TRUST_ADVICE = 'add your CA to /kaniko/ssl/certs/additional-ca-cert-bundle.crt (or SSL_CERT_DIR), '
  + 'pass --registry-certificate REGISTRY=/path/ca.crt, or --skip-tls-verify-registry REGISTRY';

function errorChain(error: unknown): (Error & { code?: string })[] {
  const chain: (Error & { code?: string })[] = [];
  for (let e = error; e instanceof Error && chain.length < 5; e = e.cause) chain.push(e);
  return chain;
}

/**
 * A RegistryError saying why a TLS handshake failed and which flag fixes it, or undefined when
 * the error is not about TLS. `host` is who we talked to (a token server perhaps), `registry` whose flags apply.
 */
export function explainTlsError(error: unknown, host: string, registry: string): RegistryError | undefined {
  const who = host === registry ? registry : `${host} (for ${registry})`;
  for (const e of errorChain(error)) {
    const code = e.code ?? '';
    const problem = CERTIFICATE_PROBLEMS[code];
    if (problem) {
      const names = (e as { cert?: { subjectaltname?: string } }).cert?.subjectaltname;
      const detail = code === 'ERR_TLS_CERT_ALTNAME_INVALID' && names ? ` (it names ${names})` : '';
      return new RegistryError(`TLS handshake with ${who} failed: ${problem}${detail}; ${TRUST_ADVICE.replaceAll('REGISTRY', registry)}`, registry);
    }
    if (plainTextAnswer(e)) {
      return new RegistryError(`TLS handshake with ${who} failed: the server does not speak TLS on this port (plain HTTP?); if it is meant to serve HTTP, pass --insecure-registry ${registry}`, registry);
    }
    if (/ALERT_(CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|HANDSHAKE_FAILURE)/.test(code)) {
      return new RegistryError(`TLS handshake with ${who} failed: the server refused the connection during the handshake (${code}); if it requires a client certificate, pass --registry-client-cert ${registry}=/path/client.crt,/path/client.key`, registry);
    }
    if (code.startsWith('ERR_SSL_') || code === 'EPROTO') {
      return new RegistryError(`TLS handshake with ${who} failed: ${e.message}`, registry);
    }
  }
  return undefined;
}

/** Whether a handshake failed because the server answered in plain text (an HTTP server on that port). */
export function isPlainTextAnswer(error: unknown): boolean {
  return errorChain(error).some(plainTextAnswer);
}

function plainTextAnswer(e: Error & { code?: string }): boolean {
  return /WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|HTTP_REQUEST/.test(e.code ?? '') || /wrong version number|packet length too long/.test(e.message);
}

const RETRYABLE_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH',
  'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CLOSED',
]);

export function errorCode(error: unknown): string {
  for (let e = error; e instanceof Error; e = e.cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return '';
}

function describeNetworkError(error: unknown, host: string): string {
  const code = errorCode(error);
  const message = error instanceof Error ? error.message : String(error);
  switch (code) {
    case 'ECONNREFUSED': return `connection refused by ${host} (is the registry running and the port right?)`;
    case 'ENOTFOUND': return `cannot resolve the host name ${host.replace(/:\d+$/, '')}`;
    case 'ECONNRESET': case 'UND_ERR_SOCKET': return `the connection to ${host} was closed unexpectedly (${message})`;
    case 'ETIMEDOUT': case 'UND_ERR_CONNECT_TIMEOUT': return `connecting to ${host} timed out`;
    case 'UND_ERR_HEADERS_TIMEOUT': return `${host} did not answer in time`;
    case 'UND_ERR_BODY_TIMEOUT': return `${host} stopped sending data`;
    default: return code ? `${message} (${code})` : message;
  }
}

/** A RegistryError for a request that got no HTTP answer: the TLS failure explained, or what became of the connection. */
export function connectionError(
  error: unknown, request: string, host: string, registry: string, context: { secure: boolean; clientCertificate: boolean },
): RegistryError {
  const tls = explainTlsError(error, host, registry);
  if (tls) return tls;
  const code = errorCode(error);
  // Under TLS 1.3 a server that wants a client certificate just hangs up after the handshake.
  const hint = context.secure && code === 'UND_ERR_SOCKET' && !context.clientCertificate
    ? `; if ${host} requires a client certificate, pass --registry-client-cert ${registry}=/path/client.crt,/path/client.key` : '';
  return new RegistryError(`${request} failed: ${describeNetworkError(error, host)}${hint}`, registry, undefined, RETRYABLE_CODES.has(code));
}
