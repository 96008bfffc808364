import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { createServer as createHttpServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, type Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { log } from '../../src/log/logger.js';
import { explainTlsError, isLocalRegistry, plainHttpAllowed } from '../../src/registry/tls.js';
import { apiHost, createTransport, type RegistryTransport } from '../../src/registry/transport.js';
import { RegistryError, type AuthenticatorFactory, type RegistryOptions, type TokenHttp } from '../../src/registry/types.js';

const run = promisify(execFile);

function registryOptions(over: Partial<RegistryOptions> = {}): RegistryOptions {
  return {
    insecure: false, insecurePull: false, insecureRegistries: [], skipTlsVerify: false, skipTlsVerifyPull: false,
    skipTlsVerifyRegistries: [], registryCertificates: new Map(), registryClientCertificates: new Map(),
    certificateDirectories: [], certificateFiles: [], pushRetry: 0, imageDownloadRetry: 0, ...over,
  };
}

/** A fake authenticator: answers every challenge with `token` and remembers it. */
function fakeAuth(token = 'Bearer good-token'): { factory: AuthenticatorFactory; challenges: { header: string; scopes: string[] }[]; http(): TokenHttp } {
  const challenges: { header: string; scopes: string[] }[] = [];
  let cached: string | undefined;
  let tokenHttp: TokenHttp | undefined;
  return {
    challenges,
    http: () => tokenHttp!,
    factory: (_registry, http) => {
      tokenHttp = http;
      return {
        cached: () => cached,
        challenge: async (header, scopes) => {
          challenges.push({ header, scopes });
          cached = token;
          return token;
        },
      };
    },
  };
}

interface Seen { method: string; url: string; headers: IncomingHttpHeaders; body: Buffer; encrypted: boolean }
interface FakeServer { host: string; port: number; seen: Seen[]; /** TCP connections accepted so far. */ connections(): number; close(): Promise<void> }
type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

/** An HTTP(S) server on 127.0.0.1 that records every request with its body before handling it. */
async function serve(handler: Handler, tls?: ServerOptions): Promise<FakeServer> {
  const seen: Seen[] = [];
  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body, encrypted: (req.socket as TLSSocket).encrypted === true });
      handler(req, res, body);
    });
  };
  const server = tls ? createHttpsServer(tls, listener) : createHttpServer(listener);
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    host: `127.0.0.1:${port}`, port, seen, connections: () => connections,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

const v2Ok: Handler = (req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(req.url === '/v2/' ? '{}' : `hello ${req.url}`);
};

async function openssl(args: string[]): Promise<void> {
  await run('openssl', args, { timeout: 30_000 });
}

/** A CA and certificates issued by it, with EC keys (fast), made by the openssl CLI. */
async function makeCa(dir: string, name: string): Promise<{ cert: string; key: string; issue(leaf: string, sans: string, usage: 'serverAuth' | 'clientAuth'): Promise<{ cert: string; key: string }> }> {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-keyout', key, '-out', cert,
    '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return {
    cert, key,
    issue: async (leaf, sans, usage) => {
      const base = join(dir, leaf);
      await writeFile(`${base}.ext`, `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=${usage}\nsubjectAltName=${sans}\n`);
      await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', `/CN=${leaf}`]);
      await openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', cert, '-CAkey', key, '-CAcreateserial', '-days', '2', '-extfile', `${base}.ext`, '-out', `${base}.crt`]);
      return { cert: `${base}.crt`, key: `${base}.key` };
    },
  };
}

describe('scheme rules', () => {
  it('allows plain HTTP only for insecure flags of the purpose, listed registries and local addresses', () => {
    const none = registryOptions();
    assert.equal(plainHttpAllowed('registry.example.com', 'pull', none), false);
    assert.equal(plainHttpAllowed('registry.example.com', 'pull', registryOptions({ insecurePull: true })), true);
    assert.equal(plainHttpAllowed('registry.example.com', 'push', registryOptions({ insecurePull: true })), false);
    assert.equal(plainHttpAllowed('registry.example.com', 'push', registryOptions({ insecure: true })), true);
    assert.equal(plainHttpAllowed('registry.example.com', 'pull', registryOptions({ insecure: true })), false);
    const listed = registryOptions({ insecureRegistries: ['registry.example.com:5000'] });
    assert.equal(plainHttpAllowed('registry.example.com:5000', 'pull', listed), true);
    assert.equal(plainHttpAllowed('registry.example.com:5000', 'push', listed), true);
    assert.equal(plainHttpAllowed('registry.example.com', 'push', listed), false);
    for (const local of ['localhost', 'localhost:5000', 'reg.localhost:443', '127.0.0.1:5000', '127.1.2.3', '[::1]:5000', '::1', '10.0.0.5:5000', '172.20.1.1', '192.168.1.10:80']) {
      assert.equal(isLocalRegistry(local), true, local);
    }
    for (const remote of ['gcr.io', 'docker.io', '172.32.0.1', '8.8.8.8:5000', 'localhost.example.com', '[2001:db8::1]:5000']) {
      assert.equal(isLocalRegistry(remote), false, remote);
    }
    assert.equal(apiHost('docker.io'), 'registry-1.docker.io');
    assert.equal(apiHost('ghcr.io'), 'ghcr.io');
  });
});

describe('RegistryTransport', () => {
  let dir: string;
  let serverCert: { cert: string; key: string };
  let otherHostCert: { cert: string; key: string };
  let proxiedCert: { cert: string; key: string };
  let clientCert: { cert: string; key: string };
  let caFile: string;
  let clientCaFile: string;
  const transports: RegistryTransport[] = [];
  const servers: FakeServer[] = [];

  const transport = (registry: string, purpose: 'pull' | 'push', options = registryOptions(), auth = fakeAuth()): RegistryTransport => {
    const t = createTransport(registry, purpose, options, auth.factory, { retryDelayMs: 1 });
    transports.push(t);
    return t;
  };
  const server = async (handler: Handler, tls?: ServerOptions): Promise<FakeServer> => {
    const s = await serve(handler, tls);
    servers.push(s);
    return s;
  };
  const tlsServer = async (handler: Handler, cert = serverCert, extra: ServerOptions = {}): Promise<FakeServer> =>
    server(handler, { cert: await readFile(cert.cert), key: await readFile(cert.key), ...extra });
  const get = async (t: RegistryTransport, path = '/v2/foo/manifests/latest'): Promise<string> =>
    (await t.request({ method: 'GET', path, scopes: ['repository:foo:pull'], expectStatus: [200] })).body.text();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-transport-test-'));
    const ca = await makeCa(dir, 'server-ca');
    caFile = ca.cert;
    serverCert = await ca.issue('server', 'IP:127.0.0.1,DNS:localhost', 'serverAuth');
    otherHostCert = await ca.issue('other', 'DNS:registry.example.com', 'serverAuth');
    proxiedCert = await ca.issue('proxied', 'DNS:registry.example.test', 'serverAuth');
    const clientCa = await makeCa(dir, 'client-ca');
    clientCaFile = clientCa.cert;
    clientCert = await clientCa.issue('kiln-client', 'DNS:kiln-client', 'clientAuth');
  });
  after(async () => {
    await Promise.all(transports.map((t) => t.close()));
    await Promise.all(servers.map((s) => s.close()));
    await rm(dir, { recursive: true, force: true });
  });

  it('falls back to plain HTTP for a loopback registry and pings only once', async () => {
    const s = await server(v2Ok);
    const t = transport(s.host, 'pull');
    assert.equal(await get(t), 'hello /v2/foo/manifests/latest');
    await get(t);
    assert.deepEqual(s.seen.map((r) => r.url), ['/v2/', '/v2/foo/manifests/latest', '/v2/foo/manifests/latest']);
  });

  it('probes a plain-HTTP registry once for the pull and the push of one session', async () => {
    const s = await server(v2Ok);
    const plainHttpHosts = new Map<string, Promise<boolean>>();
    const [pull, push] = (['pull', 'push'] as const).map((purpose) => {
      const t = createTransport(s.host, purpose, registryOptions(), fakeAuth().factory, { retryDelayMs: 1, plainHttpHosts });
      transports.push(t);
      return t;
    });
    // At once, as a build's permission check and base pull start: the second waits for the first's probe.
    await Promise.all([get(pull!), get(push!)]);
    assert.deepEqual(s.seen.map((r) => r.url).sort(), ['/v2/', '/v2/foo/manifests/latest', '/v2/foo/manifests/latest']);
  });

  it('reads no TLS trust for a plain-HTTP registry, but fails at once on a missing --registry-certificate', async () => {
    const lines: string[] = [];
    log.configure({ level: 'debug', write: (line) => lines.push(line) });
    try {
      const s = await server(v2Ok);
      // The bundle would be reported unreadable if kiln read the shared trust.
      const t = transport(s.host, 'pull', registryOptions({ certificateFiles: [join(dir, 'absent-bundle.crt')] }));
      assert.equal(await get(t), 'hello /v2/foo/manifests/latest');
      // The TLS hello that finds the port speaks plain text is no HTTP request.
      assert.deepEqual(s.seen.map((r) => r.url), ['/v2/', '/v2/foo/manifests/latest']);
      assert.deepEqual(lines.filter((l) => /CA bundle/.test(l)), []);
      await assert.rejects(get(transport(s.host, 'pull', registryOptions({ registryCertificates: new Map([[s.host, join(dir, 'absent.crt')]]) }))),
        /--registry-certificate for 127\.0\.0\.1:\d+: cannot read .*absent\.crt: ENOENT/);
      assert.deepEqual(s.seen.map((r) => r.url), ['/v2/', '/v2/foo/manifests/latest']);
    } finally {
      log.configure({ level: 'info', write: (line) => process.stderr.write(line) });
    }
  });

  it('keeps one TLS connection through blob checks, uploads and their bodies', async () => {
    const s = await tlsServer((req, res) => {
      if (req.method === 'POST') res.writeHead(202, { location: '/v2/foo/blobs/uploads/1' }).end();
      else if (req.method === 'PUT') res.writeHead(201).end();
      else if (req.method === 'HEAD') res.writeHead(200, { 'content-length': '5' }).end();
      else v2Ok(req, res, Buffer.alloc(0));
    });
    const t = transport(s.host, 'push', registryOptions({ certificateFiles: [caFile] }));
    const send = async (method: 'HEAD' | 'POST' | 'PUT', path: string): Promise<void> => {
      await (await t.request({ method, path, scopes: ['repository:foo:push'], expectStatus: [200, 201, 202] })).body.dump();
    };
    await get(t);
    for (let i = 0; i < 3; i++) {
      await send('HEAD', '/v2/foo/blobs/sha256:abc');
      await send('POST', '/v2/foo/blobs/uploads/');
      await send('PUT', '/v2/foo/blobs/uploads/1?digest=sha256:abc');
    }
    assert.equal(s.seen.length, 11);
    // The https probe of a loopback registry (a bare TLS hello), then one connection for everything.
    assert.equal(s.connections(), 2);
  });

  it('prefers https when the registry speaks it, trusting a CA from a certificate directory', async () => {
    const certDir = join(dir, 'certs');
    await mkdir(certDir);
    await writeFile(join(certDir, 'additional-ca-cert-bundle.crt'), await readFile(caFile));
    await writeFile(join(certDir, 'broken.pem'), '-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n');
    await writeFile(join(certDir, 'README'), 'not a certificate');
    const s = await tlsServer(v2Ok);
    const t = transport(s.host, 'pull', registryOptions({ certificateDirectories: [certDir, join(dir, 'missing')] }));
    await get(t);
    await get(t);
    assert.deepEqual(s.seen.map((r) => [r.url, r.encrypted]), [['/v2/', true], ['/v2/foo/manifests/latest', true], ['/v2/foo/manifests/latest', true]]);
  });

  it('trusts a CA bundle file and a --registry-certificate for that registry', async () => {
    const s = await tlsServer(v2Ok);
    await get(transport(s.host, 'pull', registryOptions({ certificateFiles: [caFile] })));
    await get(transport(s.host, 'push', registryOptions({ registryCertificates: new Map([[s.host, caFile]]) })));
    await assert.rejects(get(transport(s.host, 'push', registryOptions({ registryCertificates: new Map([['elsewhere:5000', caFile]]) }))), /unknown authority/);
    await assert.rejects(get(transport(s.host, 'push', registryOptions({ registryCertificates: new Map([[s.host, join(dir, 'nope.crt')]]) }))),
      /--registry-certificate for 127\.0\.0\.1:\d+: cannot read .*nope\.crt: ENOENT/);
  });

  it('explains a certificate from an unknown authority and which flags fix it', async () => {
    const s = await tlsServer(v2Ok);
    await assert.rejects(get(transport(s.host, 'pull')), (e: unknown) => {
      assert.ok(e instanceof RegistryError);
      assert.equal(e.registry, s.host);
      assert.equal(e.message, `TLS handshake with ${s.host} failed: the certificate is signed by an unknown authority; `
        + `add your CA to /kaniko/ssl/certs/additional-ca-cert-bundle.crt (or SSL_CERT_DIR), pass --registry-certificate ${s.host}=/path/ca.crt, `
        + `or --skip-tls-verify-registry ${s.host}`);
      return true;
    });
  });

  it('explains a certificate for another host, and other verification codes', async () => {
    const s = await tlsServer(v2Ok, otherHostCert);
    await assert.rejects(get(transport(s.host, 'pull', registryOptions({ certificateFiles: [caFile] }))), /TLS handshake with 127\.0\.0\.1:\d+ failed: the certificate is for another host \(it names DNS:registry\.example\.com\); add your CA/);
    const expired = Object.assign(new Error('certificate has expired'), { code: 'CERT_HAS_EXPIRED' });
    assert.match(explainTlsError(new Error('fetch failed', { cause: expired }), 'auth.example.com', 'reg.example.com')!.message,
      /^TLS handshake with auth\.example\.com \(for reg\.example\.com\) failed: the certificate has expired; .*--skip-tls-verify-registry reg\.example\.com$/);
    assert.equal(explainTlsError(Object.assign(new Error('x'), { code: 'ECONNRESET' }), 'a', 'a'), undefined);
  });

  it('skips verification for the flags of its purpose only, and for listed registries', async () => {
    const s = await tlsServer(v2Ok);
    await get(transport(s.host, 'pull', registryOptions({ skipTlsVerifyPull: true })));
    await get(transport(s.host, 'push', registryOptions({ skipTlsVerify: true })));
    await get(transport(s.host, 'push', registryOptions({ skipTlsVerifyRegistries: [s.host] })));
    await assert.rejects(get(transport(s.host, 'push', registryOptions({ skipTlsVerifyPull: true }))), /unknown authority/);
  });

  it('presents a client certificate for mutual TLS', async () => {
    const s = await tlsServer((req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      res.end(`client ${peer.subject?.CN}`);
    }, serverCert, { requestCert: true, rejectUnauthorized: true, ca: await readFile(clientCaFile) });
    const trusted = { certificateFiles: [caFile] };
    const withCert = registryOptions({ ...trusted, registryClientCertificates: new Map([[s.host, clientCert]]) });
    assert.equal(await get(transport(s.host, 'push', withCert)), 'client kiln-client');
    await assert.rejects(get(transport(s.host, 'push', registryOptions(trusted))), /pass --registry-client-cert 127\.0\.0\.1:\d+=\/path\/client\.crt,\/path\/client\.key/);
  });

  it('reaches a remote registry through HTTPS_PROXY, with the registry CA trusted inside the tunnel', async () => {
    const s = await tlsServer(v2Ok, proxiedCert);
    const tunnels: string[] = [];
    // A CONNECT proxy that sends every host to 127.0.0.1, so a non-local registry name can be served here.
    const proxy = createHttpServer().on('connect', (req: IncomingMessage, client: Duplex, head: Buffer) => {
      tunnels.push(req.url!);
      const upstream = netConnect(Number(req.url!.split(':')[1]), '127.0.0.1', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        upstream.write(head);
        upstream.pipe(client).pipe(upstream);
      });
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const registry = `registry.example.test:${s.port}`;
    process.env.HTTPS_PROXY = `http://127.0.0.1:${(proxy.address() as { port: number }).port}`;
    try {
      assert.equal(await get(transport(registry, 'pull', registryOptions({ certificateFiles: [caFile] }))), 'hello /v2/foo/manifests/latest');
    } finally {
      delete process.env.HTTPS_PROXY;
      proxy.closeAllConnections();
      proxy.close();
    }
    // No /v2/ ping: a remote registry is https only, so there is nothing to choose.
    assert.deepEqual(tunnels, [registry]);
    assert.deepEqual(s.seen.map((r) => r.url), ['/v2/foo/manifests/latest']);
  });

  it('answers a 401 challenge through the authenticator and retries with its header', async () => {
    const s = await server((req, res) => {
      if (req.url !== '/v2/' && req.headers.authorization !== 'Bearer good-token') {
        res.writeHead(401, { 'www-authenticate': 'Bearer realm="http://auth.example/token",service="reg"', 'content-type': 'application/json' });
        res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
        return;
      }
      v2Ok(req, res, Buffer.alloc(0));
    });
    const auth = fakeAuth();
    const t = transport(s.host, 'push', registryOptions(), auth);
    await get(t);
    await get(t);
    assert.deepEqual(auth.challenges, [{ header: 'Bearer realm="http://auth.example/token",service="reg"', scopes: ['repository:foo:pull'] }]);
    assert.deepEqual(s.seen.map((r) => [r.url, r.headers.authorization]), [
      ['/v2/', undefined], ['/v2/foo/manifests/latest', undefined], ['/v2/foo/manifests/latest', 'Bearer good-token'], ['/v2/foo/manifests/latest', 'Bearer good-token'],
    ]);
  });

  it('reports refused credentials without the Authorization value', async () => {
    const s = await server((req, res) => {
      if (req.url === '/v2/') return v2Ok(req, res, Buffer.alloc(0));
      res.writeHead(401, { 'www-authenticate': 'Bearer realm="x"' });
      res.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
    });
    await assert.rejects(get(transport(s.host, 'pull', registryOptions(), fakeAuth('Bearer s3cr3t'))), (e: unknown) => {
      assert.ok(e instanceof RegistryError);
      assert.equal(e.status, 401);
      assert.match(e.message, /^GET \/v2\/foo\/manifests\/latest on 127\.0\.0\.1:\d+ failed: HTTP 401 \(UNAUTHORIZED: authentication required\); authentication failed: check the credentials/);
      assert.doesNotMatch(e.message, /s3cr3t/);
      return true;
    });
  });

  it('follows redirects, dropping Authorization when the host changes', async () => {
    const storage = await server((req, res) => res.end('blob bytes'));
    const s = await server((req, res) => {
      if (req.url === '/v2/') return v2Ok(req, res, Buffer.alloc(0));
      if (req.headers.authorization !== 'Bearer good-token') {
        res.writeHead(401, { 'www-authenticate': 'Bearer realm="x"' });
        return res.end();
      }
      if (req.url === '/v2/foo/blobs/sha256:1') {
        res.writeHead(307, { location: '/v2/foo/blobs/sha256:2' });
        return res.end();
      }
      res.writeHead(302, { location: `http://localhost:${storage.port}/bucket/blob?X-Signature=abc` });
      res.end();
    });
    assert.equal(await get(transport(s.host, 'pull'), '/v2/foo/blobs/sha256:1'), 'blob bytes');
    assert.deepEqual(s.seen.slice(-2).map((r) => [r.url, r.headers.authorization]), [['/v2/foo/blobs/sha256:1', 'Bearer good-token'], ['/v2/foo/blobs/sha256:2', 'Bearer good-token']]);
    assert.deepEqual(storage.seen.map((r) => [r.url, r.headers.authorization]), [['/bucket/blob?X-Signature=abc', undefined]]);
  });

  it('retries idempotent requests on 503 and gives up with a retryable error', async () => {
    let failures = 2;
    const s = await server((req, res) => {
      if (req.url !== '/v2/' && failures-- > 0) {
        res.writeHead(503);
        return res.end('{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}');
      }
      v2Ok(req, res, Buffer.alloc(0));
    });
    const t = transport(s.host, 'pull');
    await get(t);
    assert.equal(s.seen.filter((r) => r.url !== '/v2/').length, 3);
    failures = 10;
    await assert.rejects(get(t), (e: unknown) => {
      assert.ok(e instanceof RegistryError && e.retryable && e.status === 503);
      assert.match(e.message, /HTTP 503 \(UNAVAILABLE: try later\); a server error on the registry side; retrying may help/);
      return true;
    });
  });

  it('reopens a streamed PUT body for each attempt', async () => {
    let failures = 1;
    const s = await server((req, res) => {
      res.writeHead(req.url === '/v2/' ? 200 : failures-- > 0 ? 503 : 201);
      res.end();
    });
    let opened = 0;
    const res = await transport(s.host, 'push').request({
      method: 'PUT', path: '/v2/foo/manifests/v1', scopes: [], expectStatus: [201],
      headers: { 'content-length': '5' }, body: () => { opened++; return Readable.from([Buffer.from('he'), Buffer.from('llo')]); },
    });
    await res.body.dump();
    assert.equal(opened, 2);
    assert.deepEqual(s.seen.filter((r) => r.method === 'PUT').map((r) => r.body.toString()), ['hello', 'hello']);
  });

  it('cuts an upload still running when closed to abandon it, rather than waiting for it', async () => {
    let arrived!: () => void;
    const uploadArrived = new Promise<void>((resolve) => { arrived = resolve; });
    const raw = createHttpServer((req, res) => {
      if (req.method === 'PATCH') arrived(); // and never answered: the body never ends
      else v2Ok(req, res, Buffer.alloc(0));
    });
    await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
    try {
      const host = `127.0.0.1:${(raw.address() as { port: number }).port}`;
      const t = createTransport(host, 'push', registryOptions(), fakeAuth().factory, { retryDelayMs: 1 });
      const upload = t.request({
        method: 'PATCH', path: '/v2/foo/blobs/uploads/1', scopes: [], expectStatus: [202],
        // Five of its ten bytes, then nothing: the body never ends.
        headers: { 'content-length': '10' }, body: () => { const r = new Readable({ read() { /* no more */ } }); r.push(Buffer.from('12345')); return r; },
      });
      upload.catch(() => undefined);
      await uploadArrived;
      // A graceful close would wait its 2 s grace period for the upload before destroying it.
      const closed = await Promise.race([t.close({ abandon: true }).then(() => 'closed'), sleep(1500).then(() => 'waited')]);
      assert.equal(closed, 'closed');
      await assert.rejects(upload);
    } finally {
      raw.closeAllConnections();
      await new Promise((resolve) => raw.close(resolve));
    }
  });

  it('does not repeat a POST blindly', async () => {
    const s = await server((req, res) => {
      if (req.url === '/v2/') return v2Ok(req, res, Buffer.alloc(0));
      if (req.url === '/v2/foo/blobs/uploads/') {
        res.writeHead(503);
        return res.end();
      }
      req.socket.destroy();
    });
    const t = transport(s.host, 'push');
    await assert.rejects(t.request({ method: 'POST', path: '/v2/foo/blobs/uploads/', scopes: [], expectStatus: [202] }), (e: unknown) => e instanceof RegistryError && e.status === 503);
    await assert.rejects(t.request({ method: 'POST', path: '/v2/foo/blobs/uploads/?reset', scopes: [], expectStatus: [202] }), (e: unknown) => e instanceof RegistryError && e.retryable);
    assert.deepEqual(s.seen.filter((r) => r.method === 'POST').map((r) => r.url), ['/v2/foo/blobs/uploads/', '/v2/foo/blobs/uploads/?reset']);
  });

  it('resumes a GET whose connection dropped mid-body, with or without Range support', async () => {
    const content = Buffer.alloc(200_000, 'abcdefghij');
    for (const honoursRange of [true, false]) {
      let cut = true;
      const s = await server((req, res) => {
        if (req.url === '/v2/') return v2Ok(req, res, Buffer.alloc(0));
        const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
        if (range && honoursRange) {
          const start = Number(range[1]);
          res.writeHead(206, { 'content-range': `bytes ${start}-${content.length - 1}/${content.length}`, 'content-length': content.length - start });
          return res.end(content.subarray(start));
        }
        res.writeHead(200, { 'content-length': content.length });
        if (!cut) return res.end(content);
        cut = false;
        res.write(content.subarray(0, 70_000), () => setTimeout(() => req.socket.destroy(), 20));
      });
      const res = await transport(s.host, 'pull').request({ method: 'GET', path: '/v2/foo/blobs/sha256:x', scopes: [], expectStatus: [200] });
      const chunks: Buffer[] = [];
      for await (const chunk of res.body) chunks.push(chunk as Buffer);
      assert.ok(Buffer.concat(chunks).equals(content), `honoursRange=${honoursRange}`);
      const gets = s.seen.filter((r) => r.url !== '/v2/');
      assert.equal(gets.length, 2);
      assert.match(gets[1]!.headers.range ?? '', /^bytes=\d+-$/);
    }
  });

  it('turns registry error bodies into messages with codes and advice', async () => {
    const replies: Record<string, [number, string]> = {
      '/v2/foo/manifests/nope': [404, '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"nope"}}]}'],
      '/v2/missing/manifests/latest': [404, '{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}'],
      '/v2/foo/blobs/uploads/': [403, '{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}'],
      '/v2/foo/blobs/uploads/big': [413, '<html><body>413 Request Entity Too Large</body></html>'],
    };
    const s = await server((req, res, _body) => {
      const reply = replies[req.url!.replace(/\?.*/, '')];
      if (!reply) return v2Ok(req, res, Buffer.alloc(0));
      res.writeHead(reply[0], { 'content-type': 'application/json' });
      res.end(reply[1]);
    });
    const t = transport(s.host, 'push');
    const failure = async (method: 'GET' | 'POST' | 'PUT', path: string): Promise<string> => {
      const e = await t.request({ method, path, scopes: [], expectStatus: [200], operation: method === 'GET' ? `fetching ${path}` : undefined }).then(() => undefined, (err: unknown) => err);
      assert.ok(e instanceof RegistryError);
      return e.message;
    };
    assert.equal(await failure('GET', '/v2/foo/manifests/nope'), `fetching /v2/foo/manifests/nope on ${s.host} failed: HTTP 404 (MANIFEST_UNKNOWN: manifest unknown); image not found: check the name and tag`);
    assert.match(await failure('GET', '/v2/missing/manifests/latest'), /HTTP 404 \(NAME_UNKNOWN: repository name not known to registry\); the repository does not exist on 127\.0\.0\.1:\d+: check the repository path$/);
    assert.match(await failure('POST', '/v2/foo/blobs/uploads/'), /^POST \/v2\/foo\/blobs\/uploads\/ on .* HTTP 403 \(DENIED: requested access to the resource is denied\); access denied: check that these credentials may push to this repository and that the repository path is right$/);
    assert.match(await failure('PUT', '/v2/foo/blobs/uploads/big?_state=secret'), /^PUT \/v2\/foo\/blobs\/uploads\/big on .* HTTP 413; too large: /);
  });

  it('reports an unreachable registry as a retryable connection error', async () => {
    const s = await server(v2Ok);
    await s.close();
    await assert.rejects(get(transport(s.host, 'pull')), (e: unknown) => {
      assert.ok(e instanceof RegistryError && e.retryable);
      assert.match(e.message, /connection refused by 127\.0\.0\.1:\d+/);
      return true;
    });
  });

  it('gives the authenticator HTTP with the same TLS trust', async () => {
    const s = await tlsServer((req, res) => res.end(JSON.stringify({ token: 't', method: req.method, body: req.headers['content-type'] })));
    const trusting = fakeAuth();
    await get(transport(s.host, 'pull', registryOptions({ registryCertificates: new Map([[s.host, caFile]]) }), trusting));
    const reply = await trusting.http().request(`https://localhost:${s.port}/token?scope=x`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=b' });
    assert.deepEqual(reply, { status: 200, body: '{"token":"t","method":"POST","body":"application/x-www-form-urlencoded"}' });
    // A registry reached over TLS may not send kiln's credentials to a plain-HTTP realm elsewhere.
    await assert.rejects(trusting.http().request('http://token.example.com/token', { method: 'GET', headers: { authorization: 'Basic c2VjcmV0' } }),
      /sent its token requests to plain-HTTP token\.example\.com; kiln will not send credentials there unencrypted/);
    const plain = fakeAuth();
    transport(s.host, 'pull', registryOptions(), plain);
    await assert.rejects(plain.http().request(`https://localhost:${s.port}/token`, { method: 'GET', headers: {} }),
      new RegExp(`TLS handshake with localhost:${s.port} \\(for 127\\.0\\.0\\.1:${s.port}\\) failed: the certificate is signed by an unknown authority`));
  });
});
