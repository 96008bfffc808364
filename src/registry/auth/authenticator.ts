// Authorization for one registry, as go-containerregistry's transports do it: Basic credentials for
// a Basic challenge; for a Bearer challenge a token from the realm (distribution token spec), fetched
// with GET and Basic credentials, or with an OAuth2 refresh-token POST when there is an identity token.
import { log } from '../../log/logger.js';
import {
  RegistryError, type Authenticator, type AuthenticatorFactory, type Credential, type Keychain, type TokenHttp,
} from '../types.js';
import { parseWwwAuthenticate, type AuthChallenge } from './challenge.js';

/** Token lifetime when the server gives none (distribution token spec). */
const DEFAULT_TOKEN_LIFETIME_S = 60;
/** cached() stops offering a token this long before it expires, so requests do not race the expiry. */
const DEFAULT_EXPIRY_MARGIN_MS = 10_000;
/** go-containerregistry sends its user agent as client_id; kiln sends its name. */
const CLIENT_ID = 'kiln';

export interface AuthenticatorOptions {
  /** Clock in milliseconds (tests). */
  now?: () => number;
  expiryMarginMs?: number;
}

interface CachedToken {
  scopes: string[];
  header: string;
  expiresAt: number;
}

interface TokenResponse {
  token: string;
  expiresAt: number;
}

/** The factory the transports take, over one keychain. */
export function authenticatorFactory(keychain: Keychain, options: AuthenticatorOptions = {}): AuthenticatorFactory {
  return (registry, http) => createAuthenticator(registry, http, keychain, options);
}

export function createAuthenticator(
  registry: string,
  http: TokenHttp,
  keychain: Keychain,
  options: AuthenticatorOptions = {},
): Authenticator {
  const now = options.now ?? Date.now;
  const margin = options.expiryMarginMs ?? DEFAULT_EXPIRY_MARGIN_MS;
  let credential: Promise<Credential | undefined> | undefined;
  /** Set once the registry has asked for Basic, or once a `registrytoken` credential applies. */
  let fixedHeader: string | undefined;
  /** A refresh token handed out by the token server replaces the configured identity token. */
  let refreshToken: string | undefined;
  let tokens: CachedToken[] = [];
  const inflight = new Map<string, Promise<string>>();

  // Secrets are registered here too: a keychain from elsewhere need not have done it.
  const getCredential = (): Promise<Credential | undefined> =>
    (credential ??= keychain.resolve(registry).then((cred) => {
      if (cred) registerSecrets(cred);
      return cred;
    }));

  function cached(scopes: string[]): string | undefined {
    if (fixedHeader) return fixedHeader;
    const t = now();
    tokens = tokens.filter((token) => token.expiresAt > t);
    return tokens.find((token) => token.expiresAt - t > margin && scopesCover(token.scopes, scopes))?.header;
  }

  async function challenge(wwwAuthenticate: string, scopes: string[]): Promise<string> {
    const all = parseWwwAuthenticate(wwwAuthenticate);
    const chosen = all.find((c) => c.scheme === 'basic' || c.scheme === 'bearer');
    if (!chosen) {
      const offered = all.map((c) => c.scheme).join(', ') || 'none';
      throw new RegistryError(
        `${registry} asks for an authentication scheme kiln does not support (offered: ${offered}); kiln supports Basic and Bearer`,
        registry, 401);
    }
    const cred = await getCredential();
    if (cred?.registryToken) {
      // A registry token is sent as is, whatever the challenge (as go-containerregistry does).
      fixedHeader = `Bearer ${cred.registryToken}`;
      return fixedHeader;
    }
    if (chosen.scheme === 'basic') {
      if (!cred?.username || !cred.password) throw needsCredentials();
      const encoded = Buffer.from(`${cred.username}:${cred.password}`).toString('base64');
      log.addSecret(encoded);
      fixedHeader = `Basic ${encoded}`;
      return fixedHeader;
    }
    return bearer(chosen, scopes, cred);
  }

  function bearer(chosen: AuthChallenge, requestScopes: string[], cred: Credential | undefined): Promise<string> {
    const realm = chosen.params.realm;
    let realmUrl: URL;
    try {
      realmUrl = new URL(realm ?? '');
      if (realmUrl.protocol !== 'https:' && realmUrl.protocol !== 'http:') throw new Error('not http(s)');
    } catch {
      throw new RegistryError(
        `${registry} sent a Bearer challenge without a usable token realm (${realm === undefined ? 'none' : JSON.stringify(realm)})`,
        registry, 401);
    }
    const service = chosen.params.service;
    // Scopes the registry names come first: some token servers only read the first scope.
    const challengeScopes = (chosen.params.scope ?? '').split(' ').filter((s) => s !== '');
    const scopes = unique([...challengeScopes.filter((s) => !requestScopes.includes(s)), ...requestScopes]);
    const key = `${realmUrl.href} ${service ?? ''} ${[...scopes].sort().join(' ')}`;
    let pending = inflight.get(key);
    if (!pending) {
      // The request was refused, so whatever is cached for these scopes is not good enough: fetch anew.
      pending = fetchToken(realmUrl, service, scopes, cred).then((response) => {
        const header = `Bearer ${response.token}`;
        tokens = tokens.filter((t) => !scopesCover(scopes, t.scopes));
        tokens.unshift({ scopes, header, expiresAt: response.expiresAt });
        return header;
      }).finally(() => inflight.delete(key));
      inflight.set(key, pending);
    }
    return pending;
  }

  async function fetchToken(realm: URL, service: string | undefined, scopes: string[], cred: Credential | undefined): Promise<TokenResponse> {
    const identityToken = refreshToken ?? cred?.identityToken;
    log.debug(`Requesting a token for ${registry} from ${realm.host} (scopes: ${scopes.join(' ') || 'none'})`);
    if (identityToken) {
      // OAuth2 refresh-token grant (distribution's oauth spec); token servers without it answer 404.
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: identityToken, client_id: CLIENT_ID });
      if (service) form.set('service', service);
      form.set('scope', scopes.join(' '));
      const response = await send(realm, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
        body: form.toString(),
      });
      if (response.status !== 404) return tokenFrom(realm, response, cred);
      log.debug(`Token server ${realm.host} has no OAuth2 endpoint; falling back to GET`);
    }
    const url = new URL(realm.href);
    url.searchParams.delete('scope');
    if (service) url.searchParams.set('service', service);
    for (const scope of scopes) url.searchParams.append('scope', scope);
    const headers: Record<string, string> = { Accept: 'application/json' };
    if (cred?.username && cred.password) {
      headers.Authorization = `Basic ${Buffer.from(`${cred.username}:${cred.password}`).toString('base64')}`;
    }
    return tokenFrom(realm, await send(url, { method: 'GET', headers }), cred);
  }

  async function send(url: URL, init: Parameters<TokenHttp['request']>[1]): Promise<{ status: number; body: string }> {
    try {
      return await http.request(url.href, init);
    } catch (err) {
      if (err instanceof RegistryError) throw err;
      const reason = log.redact(err instanceof Error ? err.message : String(err));
      throw new RegistryError(`${registry}: cannot reach the token server ${url.host}: ${reason}`, registry, undefined, true);
    }
  }

  function tokenFrom(realm: URL, response: { status: number; body: string }, cred: Credential | undefined): TokenResponse {
    const { status, body } = response;
    if (status === 401 || status === 403) {
      if (!cred) throw needsCredentials(` (the token server ${realm.host} answered HTTP ${status})`, status);
      const who = cred.username ? `user "${cred.username}"` : 'the identity token';
      throw new RegistryError(
        `${registry}: the token server ${realm.host} refused the credentials for ${who} (HTTP ${status})${detail(body)}; ` +
        `check the credentials for ${registry} in $DOCKER_CONFIG/config.json, its credential helper, or CI_REGISTRY_USER/CI_REGISTRY_PASSWORD`,
        registry, status);
    }
    if (status >= 500 || status === 429) {
      throw new RegistryError(
        `${registry}: the token server ${realm.host} failed (HTTP ${status})${detail(body)}`, registry, status, true);
    }
    if (status < 200 || status >= 300) {
      throw new RegistryError(
        `${registry}: the token server ${realm.host} refused the token request (HTTP ${status})${detail(body)}`, registry, status);
    }
    let parsed: Record<string, unknown>;
    try {
      const value: unknown = JSON.parse(body);
      if (typeof value !== 'object' || value === null) throw new Error('not an object');
      parsed = value as Record<string, unknown>;
    } catch {
      throw new RegistryError(`${registry}: the token server ${realm.host} answered with something other than a JSON token`, registry, status);
    }
    // Some servers send only access_token (the OAuth2 name); go-containerregistry prefers it when present.
    const token = nonEmptyString(parsed.access_token) ?? nonEmptyString(parsed.token);
    if (!token) throw new RegistryError(`${registry}: the token server ${realm.host} answered without a token`, registry, status);
    log.addSecret(token);
    const newRefreshToken = nonEmptyString(parsed.refresh_token);
    if (newRefreshToken) {
      log.addSecret(newRefreshToken);
      refreshToken = newRefreshToken;
    }
    return { token, expiresAt: expiryOf(parsed) };
  }

  function expiryOf(parsed: Record<string, unknown>): number {
    const t = now();
    const seconds = typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : DEFAULT_TOKEN_LIFETIME_S;
    const lifetime = seconds * 1000;
    // Count from issued_at as docker does, unless the server's clock disagrees with ours so much that
    // the token would look issued in the future or already expired.
    const issuedAt = typeof parsed.issued_at === 'string' ? Date.parse(parsed.issued_at) : NaN;
    const start = Number.isFinite(issuedAt) && issuedAt <= t && issuedAt + lifetime > t ? issuedAt : t;
    return start + lifetime;
  }

  function needsCredentials(why = '', status = 401): RegistryError {
    return new RegistryError(
      `${registry} requires authentication${why}; add credentials to $DOCKER_CONFIG/config.json, or set CI_REGISTRY_USER/CI_REGISTRY_PASSWORD`,
      registry, status);
  }

  return { cached, challenge };
}

/** Masks every secret of a credential in log output, including the Basic header form of the password. */
export function registerSecrets(credential: Credential): void {
  if (credential.password) {
    log.addSecret(credential.password);
    log.addSecret(Buffer.from(`${credential.username ?? ''}:${credential.password}`).toString('base64'));
  }
  if (credential.identityToken) log.addSecret(credential.identityToken);
  if (credential.registryToken) log.addSecret(credential.registryToken);
}

/** The server's own explanation, short and with secrets masked (distribution errors or OAuth2 errors). */
function detail(body: string): string {
  let message: string | undefined;
  try {
    const parsed = JSON.parse(body) as { errors?: { message?: unknown }[]; error_description?: unknown; error?: unknown; details?: unknown };
    message = nonEmptyString(parsed.errors?.[0]?.message) ?? nonEmptyString(parsed.error_description)
      ?? nonEmptyString(parsed.details) ?? nonEmptyString(parsed.error);
  } catch {
    const text = body.trim();
    if (text !== '' && !text.startsWith('<')) message = text.split('\n')[0];
  }
  if (!message) return '';
  const short = message.length > 200 ? `${message.slice(0, 200)}…` : message;
  return `: ${log.redact(short)}`;
}

/**
 * Whether a token granted for `granted` serves a request needing `wanted`: every wanted scope
 * "type:name:actions" (the name is everything between the first and last colon) has its actions granted.
 */
export function scopesCover(granted: string[], wanted: string[]): boolean {
  const grants = new Map<string, Set<string>>();
  for (const scope of granted) {
    const parsed = parseScope(scope);
    if (!parsed) continue;
    const actions = grants.get(parsed.resource) ?? new Set<string>();
    for (const action of parsed.actions) actions.add(action);
    grants.set(parsed.resource, actions);
  }
  return wanted.every((scope) => {
    if (granted.includes(scope)) return true;
    const parsed = parseScope(scope);
    const actions = parsed && grants.get(parsed.resource);
    return Boolean(actions && (actions.has('*') || parsed.actions.every((a) => actions.has(a))));
  });
}

function parseScope(scope: string): { resource: string; actions: string[] } | undefined {
  const last = scope.lastIndexOf(':');
  if (last <= 0 || scope.indexOf(':') === last) return undefined;
  return { resource: scope.slice(0, last), actions: scope.slice(last + 1).split(',').filter((a) => a !== '') };
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

function nonEmptyString(value: unknown): string | undefined {
  return typeof value === 'string' && value !== '' ? value : undefined;
}
