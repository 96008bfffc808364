import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { log } from '../../src/log/logger.js';
import { createAuthenticator, scopesCover } from '../../src/registry/auth/authenticator.js';
import { parseWwwAuthenticate } from '../../src/registry/auth/challenge.js';
import { registryHost } from '../../src/registry/auth/docker-config.js';
import { createKeychain } from '../../src/registry/auth/keychain.js';
import { RegistryError, type Credential, type Keychain, type TokenHttp } from '../../src/registry/types.js';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

let root: string;
let binDir: string;
let helperLog: string;
let caseNo = 0;

// A fake credential helper: answers by the server URL it reads on stdin, logging each call.
const FAKE_HELPER = `#!/bin/sh
server=$(cat)
echo "$0 $1 $server" >> "$FAKE_HELPER_LOG"
case "$server" in
  registry.example.com) echo '{"ServerURL":"registry.example.com","Username":"helper-user","Secret":"helper-pass"}' ;;
  token.example.com) echo '{"ServerURL":"token.example.com","Username":"<token>","Secret":"helper-refresh"}' ;;
  https://index.docker.io/v1/) echo '{"ServerURL":"https://index.docker.io/v1/","Username":"hub-helper","Secret":"hub-pass"}' ;;
  broken.example.com) echo "keychain is locked" >&2; exit 3 ;;
  slow.example.com) exec sleep 5 ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
`;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'kiln-auth-'));
  binDir = join(root, 'bin');
  helperLog = join(root, 'helper.log');
  await mkdir(binDir);
  await writeFile(join(binDir, 'docker-credential-fake'), FAKE_HELPER);
  await writeFile(join(binDir, 'docker-credential-other'),
    '#!/bin/sh\ncat >/dev/null\necho \'{"Username":"other-user","Secret":"other-pass"}\'\n');
  await chmod(join(binDir, 'docker-credential-fake'), 0o755);
  await chmod(join(binDir, 'docker-credential-other'), 0o755);
});
after(() => rm(root, { recursive: true, force: true }));

/** A fresh home with ~/.docker/config.json (when given) and an environment pointing at the fake helpers. */
async function setup(config?: unknown, extraEnv: NodeJS.ProcessEnv = {}): Promise<{ home: string; env: NodeJS.ProcessEnv }> {
  const home = join(root, `home${++caseNo}`);
  await mkdir(join(home, '.docker'), { recursive: true });
  if (config !== undefined) {
    await writeFile(join(home, '.docker', 'config.json'), typeof config === 'string' ? config : JSON.stringify(config));
  }
  const env = { PATH: `${binDir}:${process.env.PATH ?? ''}`, FAKE_HELPER_LOG: helperLog, ...extraEnv };
  return { home, env };
}

async function resolveWith(config: unknown, registry: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<Credential | undefined> {
  const { home, env } = await setup(config, extraEnv);
  return createKeychain({ env, homeDir: home }).resolve(registry);
}

describe('docker config.json', () => {
  it('reads each entry form, matching keys by host[:port]', async () => {
    const config = {
      auths: {
        'https://registry.example.com': { auth: b64('alice:s3cret:with:colons') },
        'registry.example.com:5000': { username: 'bob', password: 'pw5000' },
        'https://legacy.example.com/v1/': { auth: b64('carol:legacy') },
        'acr.example.com': { auth: b64('00000000-0000:'), identitytoken: 'refresh-abc' },
        'bearer.example.com': { registrytoken: 'reg-token-xyz' },
        'email-only.example.com': { email: 'x@example.com' },
      },
    };
    assert.deepEqual(await resolveWith(config, 'registry.example.com'), { username: 'alice', password: 's3cret:with:colons' });
    assert.deepEqual(await resolveWith(config, 'registry.example.com:5000'), { username: 'bob', password: 'pw5000' });
    assert.deepEqual(await resolveWith(config, 'legacy.example.com'), { username: 'carol', password: 'legacy' });
    assert.deepEqual(await resolveWith(config, 'acr.example.com'), { username: '00000000-0000', identityToken: 'refresh-abc' });
    assert.deepEqual(await resolveWith(config, 'bearer.example.com'), { registryToken: 'reg-token-xyz' });
    assert.equal(await resolveWith(config, 'email-only.example.com'), undefined);
    assert.equal(await resolveWith(config, 'registry.example.com:443'), undefined);
    assert.equal(await resolveWith(config, 'other.example.com'), undefined);
  });

  it('treats every Docker Hub alias as docker.io', async () => {
    for (const key of ['https://index.docker.io/v1/', 'docker.io', 'index.docker.io', 'registry-1.docker.io']) {
      const config = { auths: { [key]: { username: 'hubuser', password: 'hubpass' } } };
      for (const name of ['docker.io', 'index.docker.io', 'registry-1.docker.io', 'https://index.docker.io/v1/']) {
        assert.deepEqual(await resolveWith(config, name), { username: 'hubuser', password: 'hubpass' }, `${key} / ${name}`);
      }
    }
    assert.equal(registryHost('HTTPS://Registry-1.Docker.IO/v2/'), 'docker.io');
    // docker/cli's own key wins over an alias written elsewhere in the file.
    const both = { auths: { 'docker.io': { username: 'alias', password: 'a' }, 'https://index.docker.io/v1/': { username: 'canonical', password: 'c' } } };
    assert.equal((await resolveWith(both, 'docker.io'))?.username, 'canonical');
  });

  it('reads $DOCKER_CONFIG when set, otherwise ~/.docker', async () => {
    const { home, env } = await setup({ auths: { 'registry.example.com': { username: 'from-home', password: 'h' } } });
    const dockerConfig = join(home, 'kaniko-docker');
    await mkdir(dockerConfig);
    await writeFile(join(dockerConfig, 'config.json'), JSON.stringify({ auths: { 'registry.example.com': { username: 'from-env', password: 'e' } } }));
    const viaHome = await createKeychain({ env, homeDir: home }).resolve('registry.example.com');
    assert.equal(viaHome?.username, 'from-home');
    const viaEnv = await createKeychain({ env: { ...env, DOCKER_CONFIG: dockerConfig }, homeDir: home }).resolve('registry.example.com');
    assert.equal(viaEnv?.username, 'from-env');
    // DOCKER_CONFIG naming a directory without config.json means no docker credentials, not ~/.docker's.
    const empty = await createKeychain({ env: { ...env, DOCKER_CONFIG: join(home, 'nowhere') }, homeDir: home }).resolve('registry.example.com');
    assert.equal(empty, undefined);
  });

  it('falls back to podman auth.json only when there is no docker config', async () => {
    const { home, env } = await setup();
    const authFile = join(home, 'auth.json');
    await writeFile(authFile, JSON.stringify({ auths: { 'quay.io/org': { auth: b64('podman:pw') } } }));
    const cred = await createKeychain({ env: { ...env, REGISTRY_AUTH_FILE: authFile }, homeDir: home }).resolve('quay.io');
    assert.deepEqual(cred, { username: 'podman', password: 'pw' });
  });

  it('treats a missing file as no credentials and a malformed one as an error naming it', async () => {
    assert.equal(await resolveWith(undefined, 'registry.example.com'), undefined);
    const { home, env } = await setup('{"auths": {\n  "x": {} ,}}');
    await assert.rejects(createKeychain({ env, homeDir: home }).resolve('registry.example.com'), (err: unknown) => {
      assert.ok(err instanceof RegistryError);
      assert.equal(err.message, `docker config ${join(home, '.docker', 'config.json')} is not valid JSON (at line 2, column 12)`);
      return true;
    });
    await assert.rejects(resolveWith('{"auths": hunter2-in-plain-sight}', 'r.example.com'), (err: unknown) => {
      assert.match((err as Error).message, /config\.json is not valid JSON/);
      assert.ok(!(err as Error).message.includes('hunter2'));
      return true;
    });
    await assert.rejects(resolveWith({ auths: { 'r.example.com': { auth: '!!!not base64' } } }, 'r.example.com'), /config\.json: auths\["r\.example\.com"\]\.auth/);
    await assert.rejects(resolveWith({ auths: [] }, 'r.example.com'), /"auths" must be an object/);
  });
});

describe('credential helpers', () => {
  const helperCalls = async (): Promise<string[]> => (await readFile(helperLog, 'utf8').catch(() => '')).split('\n').filter(Boolean);

  it('uses credHelpers for its host, then credsStore, and never auths once a helper applies', async () => {
    const config = {
      credsStore: 'fake',
      credHelpers: { 'registry.example.com': 'other', 'exempt.example.com': '' },
      auths: {
        'registry.example.com': { username: 'file', password: 'f' },
        'unknown.example.com': { username: 'file', password: 'f' },
        'exempt.example.com': { username: 'file-exempt', password: 'f' },
      },
    };
    assert.deepEqual(await resolveWith(config, 'registry.example.com'), { username: 'other-user', password: 'other-pass' });
    assert.deepEqual(await resolveWith({ ...config, credHelpers: {} }, 'registry.example.com'), { username: 'helper-user', password: 'helper-pass' });
    // credsStore answered "not found": docker/cli does not fall back to auths.
    assert.equal(await resolveWith(config, 'unknown.example.com'), undefined);
    // An empty credHelpers entry exempts the registry from credsStore.
    assert.equal((await resolveWith(config, 'exempt.example.com'))?.username, 'file-exempt');
  });

  it('maps "<token>" to an identity token and asks for Docker Hub by its historical key', async () => {
    assert.deepEqual(await resolveWith({ credsStore: 'fake' }, 'token.example.com'), { identityToken: 'helper-refresh' });
    assert.deepEqual(await resolveWith({ credHelpers: { 'https://index.docker.io/v1/': 'fake' } }, 'registry-1.docker.io'),
      { username: 'hub-helper', password: 'hub-pass' });
    assert.ok((await helperCalls()).some((line) => line.endsWith('docker-credential-fake get https://index.docker.io/v1/')));
  });

  it('lets GitLab variables apply when the helper has nothing', async () => {
    const gitlab = { CI_REGISTRY: 'nothing.example.com', CI_REGISTRY_USER: 'gitlab-ci-token', CI_REGISTRY_PASSWORD: 'job-token' };
    assert.deepEqual(await resolveWith({ credsStore: 'fake' }, 'nothing.example.com', gitlab), { username: 'gitlab-ci-token', password: 'job-token' });
  });

  it('runs the helper once per registry', async () => {
    const { home, env } = await setup({ credsStore: 'fake' });
    const before = (await helperCalls()).length;
    const keychain = createKeychain({ env, homeDir: home });
    await Promise.all([keychain.resolve('registry.example.com'), keychain.resolve('https://registry.example.com')]);
    await keychain.resolve('registry.example.com');
    assert.equal((await helperCalls()).length - before, 1);
  });

  it('reports a missing, failing or hanging helper by name', async () => {
    await assert.rejects(resolveWith({ credsStore: 'missing' }, 'registry.example.com'),
      (err: unknown) => err instanceof RegistryError && /docker-credential-missing .*not found on PATH/.test(err.message));
    await assert.rejects(resolveWith({ credsStore: 'fake' }, 'broken.example.com'),
      (err: unknown) => err instanceof RegistryError && /docker-credential-fake .*exited with status 3: keychain is locked/.test(err.message));
    const { home, env } = await setup({ credsStore: 'fake' });
    await assert.rejects(createKeychain({ env, homeDir: home, helperTimeoutMs: 200 }).resolve('slow.example.com'),
      /docker-credential-fake .*did not answer/);
  });
});

describe('GitLab CI variables', () => {
  const gitlab = { CI_REGISTRY: 'gitlab.example.com:5050', CI_REGISTRY_USER: 'gitlab-ci-token', CI_REGISTRY_PASSWORD: 'job-token-123' };

  it('apply to CI_REGISTRY only, by host[:port]', async () => {
    assert.deepEqual(await resolveWith(undefined, 'gitlab.example.com:5050', gitlab), { username: 'gitlab-ci-token', password: 'job-token-123' });
    assert.equal(await resolveWith(undefined, 'gitlab.example.com', gitlab), undefined);
    assert.equal((await resolveWith(undefined, 'gitlab.example.com:5050', { ...gitlab, CI_REGISTRY: 'https://gitlab.example.com:5050' }))?.username, 'gitlab-ci-token');
    assert.equal(await resolveWith(undefined, 'gitlab.example.com:5050', { ...gitlab, CI_REGISTRY_PASSWORD: '' }), undefined);
  });

  it('do not override a config.json entry', async () => {
    const config = { auths: { 'gitlab.example.com:5050': { username: 'deploy', password: 'deploy-token' } } };
    assert.equal((await resolveWith(config, 'gitlab.example.com:5050', gitlab))?.username, 'deploy');
  });
});

describe('parseWwwAuthenticate', () => {
  it('parses a registry Bearer challenge', () => {
    assert.deepEqual(parseWwwAuthenticate('Bearer realm="https://gitlab.example.com/jwt/auth",service="container_registry",scope="repository:group/app:push,pull"'), [
      { scheme: 'bearer', params: { realm: 'https://gitlab.example.com/jwt/auth', service: 'container_registry', scope: 'repository:group/app:push,pull' } },
    ]);
  });

  it('handles several challenges, escapes, commas in quotes, case and spacing', () => {
    const header = 'Newauth realm="apps", type=1, title="Login to \\"apps\\", please", BASIC Realm = "simple,realm" , charset=UTF-8,Bearer realm=https://auth.example.com/token';
    assert.deepEqual(parseWwwAuthenticate(header), [
      { scheme: 'newauth', params: { realm: 'apps', type: '1', title: 'Login to "apps", please' } },
      { scheme: 'basic', params: { realm: 'simple,realm', charset: 'UTF-8' } },
      { scheme: 'bearer', params: { realm: 'https://auth.example.com/token' } },
    ]);
  });

  it('accepts token68, bare schemes, empty and odd input', () => {
    assert.deepEqual(parseWwwAuthenticate('Negotiate abc+/def==, Basic realm="x"'), [
      { scheme: 'negotiate', params: {} }, { scheme: 'basic', params: { realm: 'x' } },
    ]);
    assert.deepEqual(parseWwwAuthenticate('Basic'), [{ scheme: 'basic', params: {} }]);
    assert.deepEqual(parseWwwAuthenticate(''), []);
    assert.deepEqual(parseWwwAuthenticate('Bearer realm="unterminated'), [{ scheme: 'bearer', params: { realm: 'unterminated' } }]);
    assert.deepEqual(parseWwwAuthenticate('Bearer error="insufficient_scope",scope="a:b:pull",scope="c:d:push"'),
      [{ scheme: 'bearer', params: { error: 'insufficient_scope', scope: 'a:b:pull c:d:push' } }]);
  });
});

describe('scopesCover', () => {
  it('compares actions per resource', () => {
    assert.ok(scopesCover(['repository:g/app:push,pull'], ['repository:g/app:pull']));
    assert.ok(scopesCover(['repository:g/app:pull', 'repository:g/app:push'], ['repository:g/app:pull,push']));
    assert.ok(scopesCover(['repository:g/app:*'], ['repository:g/app:delete']));
    assert.ok(!scopesCover(['repository:g/app:pull'], ['repository:g/app:pull,push']));
    assert.ok(!scopesCover(['repository:g/app:pull'], ['repository:g/other:pull']));
    assert.ok(scopesCover(['repository:g/app:pull'], []));
  });
});

describe('authenticator', () => {
  interface Seen { method: string; url: URL; authorization?: string; body: string }
  let seen: Seen[] = [];
  let respond: (req: Seen, res: ServerResponse) => void = () => undefined;
  let base = '';
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const entry: Seen = { method: req.method ?? '', url: new URL(req.url ?? '/', base), body: Buffer.concat(chunks).toString() };
      if (req.headers.authorization) entry.authorization = req.headers.authorization;
      seen.push(entry);
      respond(entry, res);
    });
  });
  const json = (res: ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { 'Content-Type': 'application/json' }).end(JSON.stringify(body));
  };
  const http: TokenHttp = {
    async request(url, init) {
      const response = await fetch(url, { method: init.method, headers: init.headers, body: init.body ?? null });
      return { status: response.status, body: await response.text() };
    },
  };
  const keychainOf = (cred?: Credential): Keychain => ({ resolve: async () => cred });
  const challengeFor = (scope?: string): string =>
    `Bearer realm="${base}/token",service="test-registry"${scope ? `,scope="${scope}"` : ''}`;
  const decodeBasic = (header?: string): string => Buffer.from((header ?? '').replace(/^Basic /, ''), 'base64').toString();
  let issued = 0;
  const issueToken = (extra: Record<string, unknown> = {}) => (_req: Seen, res: ServerResponse): void =>
    json(res, 200, { token: `tok-${++issued}`, expires_in: 300, ...extra });

  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });
  const reset = (handler: (req: Seen, res: ServerResponse) => void): void => {
    seen = [];
    respond = handler;
  };

  it('answers Basic challenges with the credentials, and refuses without them', async () => {
    const auth = createAuthenticator('registry.example.com', http, keychainOf({ username: 'alice', password: 'pa:ss' }));
    assert.equal(auth.cached([]), undefined);
    const header = await auth.challenge('Basic realm="registry"', ['repository:app:pull']);
    assert.equal(decodeBasic(header), 'alice:pa:ss');
    assert.equal(auth.cached(['repository:other:push']), header);
    const anonymous = createAuthenticator('registry.example.com', http, keychainOf(undefined));
    await assert.rejects(anonymous.challenge('Basic realm="registry"', []), {
      message: 'registry.example.com requires authentication; add credentials to $DOCKER_CONFIG/config.json, or set CI_REGISTRY_USER/CI_REGISTRY_PASSWORD',
    });
  });

  it('gets a token with Basic credentials, the service and the merged scopes in the query', async () => {
    reset(issueToken());
    const auth = createAuthenticator('registry.example.com', http, keychainOf({ username: 'bob', password: 'hunter2' }));
    const header = await auth.challenge(challengeFor('repository:group/app:pull'), ['repository:group/app:pull,push', 'repository:base/img:pull']);
    assert.match(header, /^Bearer tok-\d+$/);
    assert.equal(seen.length, 1);
    const [request] = seen;
    assert.equal(request?.method, 'GET');
    assert.equal(decodeBasic(request?.authorization), 'bob:hunter2');
    assert.equal(request?.url.searchParams.get('service'), 'test-registry');
    assert.deepEqual(request?.url.searchParams.getAll('scope'),
      ['repository:group/app:pull', 'repository:group/app:pull,push', 'repository:base/img:pull']);
    assert.equal(log.redact('pw hunter2 token ' + header.slice(7)), 'pw *** token ***');
  });

  it('exchanges an identity token by POST, falling back to GET on 404, and keeps a new refresh token', async () => {
    reset((req, res) => json(res, 200, { access_token: `oauth-${seen.length}`, refresh_token: `refresh-${seen.length}`, expires_in: 300 }));
    const auth = createAuthenticator('registry.example.com', http, keychainOf({ identityToken: 'idtoken-1' }));
    assert.equal(await auth.challenge(challengeFor(), ['repository:app:push,pull', 'repository:lib:pull']), 'Bearer oauth-1');
    const form = new URLSearchParams(seen[0]?.body);
    assert.equal(seen[0]?.method, 'POST');
    assert.deepEqual(Object.fromEntries(form), {
      grant_type: 'refresh_token', refresh_token: 'idtoken-1', client_id: 'kiln', service: 'test-registry',
      scope: 'repository:app:push,pull repository:lib:pull',
    });
    await auth.challenge(challengeFor(), ['repository:other:pull']);
    assert.equal(new URLSearchParams(seen[1]?.body).get('refresh_token'), 'refresh-1');

    reset((req, res) => (req.method === 'POST' ? json(res, 404, {}) : json(res, 200, { token: 'via-get' })));
    const fallback = createAuthenticator('registry.example.com', http, keychainOf({ identityToken: 'idtoken-2' }));
    assert.equal(await fallback.challenge(challengeFor('repository:app:pull'), []), 'Bearer via-get');
    assert.deepEqual(seen.map((s) => s.method), ['POST', 'GET']);
    assert.equal(seen[1]?.authorization, undefined);
  });

  it('caches tokens by scope until shortly before they expire', async () => {
    reset(issueToken());
    let clock = 1_000_000;
    const auth = createAuthenticator('registry.example.com', http, keychainOf({ username: 'u', password: 'p' }), { now: () => clock });
    const push = ['repository:app:pull,push'];
    const header = await auth.challenge(challengeFor(), push);
    assert.equal(auth.cached(push), header);
    assert.equal(auth.cached(['repository:app:pull']), header);
    assert.equal(auth.cached(['repository:app:pull,push', 'repository:base:pull']), undefined);
    clock += 289_000;
    assert.equal(auth.cached(push), header);
    clock += 2_000; // within 10 s of expiry
    assert.equal(auth.cached(push), undefined);
    const renewed = await auth.challenge(challengeFor(), push);
    assert.notEqual(renewed, header);
    assert.equal(auth.cached(push), renewed);
  });

  it('honours short and missing lifetimes and issued_at', async () => {
    reset(issueToken({ expires_in: 5 }));
    const auth = createAuthenticator('registry.example.com', http, keychainOf(undefined));
    await auth.challenge(challengeFor(), ['repository:a:pull']);
    assert.equal(auth.cached(['repository:a:pull']), undefined, 'a 5 s token is never offered from the cache');
    await auth.challenge(challengeFor(), ['repository:a:pull']);
    assert.equal(seen.length, 2);

    let clock = Date.parse('2030-01-01T00:00:00Z');
    reset((_req, res) => json(res, 200, { token: 'default-lifetime' }));
    const withClock = createAuthenticator('r', http, keychainOf(undefined), { now: () => clock });
    await withClock.challenge(challengeFor(), ['repository:b:pull']);
    clock += 49_000;
    assert.equal(withClock.cached(['repository:b:pull']), 'Bearer default-lifetime');
    clock += 2_000;
    assert.equal(withClock.cached(['repository:b:pull']), undefined);

    reset((_req, res) => json(res, 200, { token: 'issued-earlier', expires_in: 100, issued_at: new Date(clock - 80_000).toISOString() }));
    await withClock.challenge(challengeFor(), ['repository:c:pull']);
    clock += 11_000; // 91 s after issue: within the margin
    assert.equal(withClock.cached(['repository:c:pull']), undefined);
  });

  it('fetches anonymous tokens without an Authorization header, once for concurrent challenges', async () => {
    reset((req, res) => setTimeout(() => issueToken()(req, res), 20));
    const auth = createAuthenticator('docker.io', http, keychainOf(undefined));
    const [a, b] = await Promise.all([
      auth.challenge(challengeFor('repository:library/alpine:pull'), ['repository:library/alpine:pull']),
      auth.challenge(challengeFor('repository:library/alpine:pull'), ['repository:library/alpine:pull']),
    ]);
    assert.equal(a, b);
    assert.equal(seen.length, 1);
    assert.equal(seen[0]?.authorization, undefined);
  });

  it('sends a registry token as is', async () => {
    reset(issueToken());
    const auth = createAuthenticator('r', http, keychainOf({ registryToken: 'static-token' }));
    assert.equal(await auth.challenge(challengeFor(), ['repository:a:pull']), 'Bearer static-token');
    assert.equal(auth.cached(['repository:b:push']), 'Bearer static-token');
    assert.equal(seen.length, 0);
  });

  it('reports refused credentials without the password, and 5xx or unreachable servers as retryable', async () => {
    reset((_req, res) => json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] }));
    const auth = createAuthenticator('registry.example.com', http, keychainOf({ username: 'carol', password: 'topsecret-pw' }));
    await assert.rejects(auth.challenge(challengeFor(), ['repository:app:push']), (err: unknown) => {
      assert.ok(err instanceof RegistryError);
      assert.equal(err.status, 401);
      assert.equal(err.retryable, false);
      assert.match(err.message, new RegExp(`registry\\.example\\.com.*token server 127\\.0\\.0\\.1:\\d+ refused.*"carol".*check`));
      assert.ok(!err.message.includes('topsecret-pw') && !err.message.includes(b64('carol:topsecret-pw')));
      return true;
    });
    const anonymous = createAuthenticator('registry.example.com', http, keychainOf(undefined));
    await assert.rejects(anonymous.challenge(challengeFor(), []), /requires authentication .*HTTP 401.*CI_REGISTRY_USER/);

    reset((_req, res) => json(res, 503, {}));
    await assert.rejects(auth.challenge(challengeFor(), []), (err: unknown) => err instanceof RegistryError && err.retryable && err.status === 503);
    const unreachable = createAuthenticator('r', http, keychainOf(undefined));
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    await assert.rejects(unreachable.challenge(`Bearer realm="http://127.0.0.1:${port}/token"`, []),
      (err: unknown) => err instanceof RegistryError && err.retryable && /cannot reach the token server/.test(err.message));
  });

  it('rejects challenges it cannot answer', async () => {
    const auth = createAuthenticator('r', http, keychainOf(undefined));
    await assert.rejects(auth.challenge('Negotiate', []), /Negotiate|negotiate/);
    await assert.rejects(auth.challenge('Bearer service="x"', []), /without a usable token realm/);
    reset((_req, res) => json(res, 200, { nothing: true }));
    await assert.rejects(auth.challenge(challengeFor(), []), /without a token/);
  });
});
