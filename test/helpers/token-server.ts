// A small authorization server for the distribution token spec, written for the tests
// (https://distribution.github.io/distribution/spec/auth/token/ and .../oauth/):
//   GET  /token?service=S&scope=T:NAME:ACTIONS[&scope=...][&offline_token=true]   with Basic auth or none
//   POST /token  form: grant_type=password|refresh_token, service, scope (space separated),
//                client_id, username/password or refresh_token, access_type=offline
// It issues RS256 JWTs the distribution registry accepts: `aud` is the registry's service name (a
// string, not an array: registry 2.8 fails to parse an array), `iss` its configured issuer, and the
// header carries the signing certificate as `x5c`, which the registry verifies against the CA in its
// auth.token.rootcertbundle (x5c is tried before `kid`, which 2.8 would want as a libtrust key ID).
import { createPrivateKey, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

export interface TokenRequest {
  method: string;
  /** URL query parameters; for POST, the form fields too (form values win). Repeated keys give arrays. */
  query: Record<string, string | string[]>;
  authorization?: string;
}

export interface TokenServer {
  /** The URL for the registry's auth.token.realm, e.g. "https://127.0.0.1:PORT/token". */
  realm: string;
  service: string;
  issuer: string;
  /** Every request the server saw, in order (wrong passwords included), for tests asserting scopes. */
  requests: TokenRequest[];
  stop(): Promise<void>;
}

export interface TokenServerOptions {
  username: string;
  password: string;
  /** The registry's auth.token.service; also the tokens' audience. */
  service: string;
  issuer?: string;
  /** RSA key and certificate that sign the tokens; the certificate must chain to the registry's rootcertbundle. */
  signingCertFile: string;
  signingKeyFile: string;
  /** Serve HTTPS with this certificate (clients then need the test CA); plain HTTP without it. */
  tls?: { certFile: string; keyFile: string };
  /** Lifetime of issued tokens (default 300). The registry allows 60 s of leeway past `exp`. */
  expiresInSeconds?: number;
}

/** One requested scope, "type:name:action,action": the name is everything between the first and last colon. */
interface ResourceScope { type: string; name: string; actions: string[] }

function parseScope(scope: string): ResourceScope | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last === first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(',').filter((a) => a !== ''),
  };
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

function parseBasicAuth(header: string | undefined): { username: string; password: string } | undefined {
  const match = /^basic\s+(\S+)$/i.exec(header ?? '');
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

function collectParams(params: URLSearchParams, into: Record<string, string | string[]>): void {
  for (const key of new Set(params.keys())) {
    const values = params.getAll(key);
    into[key] = values.length === 1 ? values[0]! : values;
  }
}

function valuesOf(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startTokenServer(options: TokenServerOptions): Promise<TokenServer> {
  const service = options.service;
  const issuer = options.issuer ?? 'kiln-test-token-server';
  const expiresIn = options.expiresInSeconds ?? 300;
  const signingKey: KeyObject = createPrivateKey(await readFile(options.signingKeyFile));
  const signingCert = new X509Certificate(await readFile(options.signingCertFile));
  if (signingKey.asymmetricKeyType !== 'rsa') throw new Error('the token signing key must be RSA (RS256)');
  const x5c = [signingCert.raw.toString('base64')]; // standard base64 DER, as JWS x5c requires
  const requests: TokenRequest[] = [];
  const refreshTokens = new Map<string, string>(); // refresh token -> username

  function issueToken(subject: string, scopes: string[]): { token: string; issuedAt: Date } {
    const now = Math.floor(Date.now() / 1000);
    // Anonymous callers get a token without access, as Docker Hub does for private repositories.
    const access = subject === '' ? [] : scopes.flatMap((s) => {
      const parsed = parseScope(s);
      return parsed ? [parsed] : [];
    });
    const header = { typ: 'JWT', alg: 'RS256', x5c };
    const claims = {
      iss: issuer, sub: subject, aud: service, exp: now + expiresIn, nbf: now, iat: now,
      jti: randomBytes(16).toString('hex'), access,
    };
    const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const signature = sign('sha256', Buffer.from(signingInput), signingKey); // RSASSA-PKCS1-v1_5 = RS256
    return { token: `${signingInput}.${base64url(signature)}`, issuedAt: new Date(now * 1000) };
  }

  function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  }

  function unauthorized(res: ServerResponse, message: string): void {
    sendJson(res, 401, { errors: [{ code: 'UNAUTHORIZED', message }] },
      { 'www-authenticate': 'Basic realm="kiln-test-token-server"' });
  }

  function grant(res: ServerResponse, subject: string, scopes: string[], refreshToken?: string): void {
    const { token, issuedAt } = issueToken(subject, scopes);
    const body: Record<string, unknown> = { token, access_token: token, expires_in: expiresIn, issued_at: issuedAt.toISOString() };
    if (refreshToken) body.refresh_token = refreshToken;
    sendJson(res, 200, body);
  }

  function newRefreshToken(username: string): string {
    const token = randomBytes(24).toString('hex');
    refreshTokens.set(token, username);
    return token;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://token-server');
    const query: Record<string, string | string[]> = {};
    collectParams(url.searchParams, query);
    const form = req.method === 'POST' ? new URLSearchParams(await readBody(req)) : undefined;
    if (form) collectParams(form, query);
    requests.push({ method: req.method ?? '', query, authorization: req.headers.authorization });

    if (url.pathname !== '/token') return sendJson(res, 404, { errors: [{ code: 'NOT_FOUND', message: url.pathname }] });
    const first = (key: string): string | undefined => valuesOf(query[key])[0];
    if (first('service') !== undefined && first('service') !== service) {
      return sendJson(res, 400, { errors: [{ code: 'DENIED', message: `unknown service ${first('service')}` }] });
    }

    if (req.method === 'GET') {
      const scopes = valuesOf(query.scope).flatMap((s) => s.split(' ')).filter((s) => s !== '');
      if (req.headers.authorization === undefined) return grant(res, '', scopes);
      const credentials = parseBasicAuth(req.headers.authorization);
      if (!credentials || credentials.username !== options.username || credentials.password !== options.password) {
        return unauthorized(res, 'wrong username or password');
      }
      const refresh = first('offline_token') === 'true' ? newRefreshToken(credentials.username) : undefined;
      return grant(res, credentials.username, scopes, refresh);
    }

    if (req.method === 'POST') {
      // OAuth2 form: scopes are space separated within one field.
      const scopes = valuesOf(query.scope).flatMap((s) => s.split(' ')).filter((s) => s !== '');
      switch (first('grant_type')) {
        case 'password': {
          if (first('username') !== options.username || first('password') !== options.password) {
            return unauthorized(res, 'wrong username or password');
          }
          const refresh = first('access_type') === 'offline' ? newRefreshToken(options.username) : undefined;
          return grant(res, options.username, scopes, refresh);
        }
        case 'refresh_token': {
          const presented = first('refresh_token') ?? '';
          const username = refreshTokens.get(presented);
          if (username === undefined) return unauthorized(res, 'unknown refresh token');
          return grant(res, username, scopes, presented);
        }
        default:
          return sendJson(res, 400, { error: 'unsupported_grant_type' });
      }
    }
    res.writeHead(405, { allow: 'GET, POST' });
    res.end();
  }

  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    handle(req, res).catch((e: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { errors: [{ code: 'UNKNOWN', message: String(e) }] });
      else res.destroy();
    });
  };
  const server: Server = options.tls
    ? createHttpsServer({ cert: await readFile(options.tls.certFile), key: await readFile(options.tls.keyFile) }, listener)
    : createHttpServer(listener);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  const { port } = server.address() as AddressInfo;
  const realm = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}/token`;

  let stopped: Promise<void> | undefined;
  return {
    realm, service, issuer, requests,
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections(); // keep-alive connections would hold close() open
      });
      return stopped;
    },
  };
}
