// A real CNCF distribution registry (Debian's docker-registry, 2.8) for tests, on 127.0.0.1 only,
// with its storage and log in a temp dir that stop() removes. Four setups:
//   http      plain HTTP, no auth
//   tls       HTTPS with a certificate from a per-registry test CA, no auth
//   htpasswd  HTTPS + basic auth from a bcrypt htpasswd file
//   token     HTTPS + bearer tokens from the test token server (itself on HTTPS with the same CA)
// The registry would accept htpasswd over plain HTTP (its docs only say "must be used under TLS"),
// but Docker-style clients refuse to send basic credentials in clear text except to localhost,
// so the auth modes serve TLS: it is the setup users have.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { request as requestHttp, type IncomingHttpHeaders } from 'node:http';
import { request as requestHttps } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mustRun } from './exec.js';
import { createTestCa } from './test-ca.js';
import { startTokenServer, type TokenServer } from './token-server.js';

export type RegistryMode = 'http' | 'tls' | 'htpasswd' | 'token';
/** 'src'/'dest' give skopeo copy's prefixed flags; 'inspect' the unprefixed ones of inspect, delete, list-tags. */
export type SkopeoRole = 'src' | 'dest' | 'inspect';

export interface TestRegistry {
  mode: RegistryMode;
  /** "127.0.0.1:PORT" */
  host: string;
  /** "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT" */
  url: string;
  /** htpasswd and token modes (the same user for both). */
  username?: string;
  password?: string;
  /** PEM of the test CA that issued the registry's (and the token server's) certificate; not in http mode. */
  caFile?: string;
  /** The registry's filesystem storage (rootdirectory), for fault tests. */
  dataDir: string;
  /** The registry's stdout and stderr; removed by stop(). */
  logFile: string;
  /** token mode: the authorization server, with the requests it saw. */
  tokenServer?: TokenServer;
  /** skopeo flags to talk to this registry. */
  skopeoArgs(direction: SkopeoRole): string[];
  /** Writes (or updates) dir/config.json with credentials for this registry, for kiln's DOCKER_CONFIG. */
  writeDockerConfig(dir: string): Promise<void>;
  /** Kills the registry, stops the token server and removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

export interface StartRegistryOptions {
  /** token mode: lifetime of issued tokens (default 300). The registry honours `exp` with 60 s leeway. */
  tokenExpiresInSeconds?: number;
}

/** Upper bound on a registry's life even if the test process dies without calling stop(). */
const MAX_LIFETIME_SECONDS = 1800;
const STARTUP_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;
const USERNAME = 'kiln-test';
/** The registry's auth.token.service: the tokens' audience. */
const TOKEN_SERVICE = 'kiln-test-registry';

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** A bounded HTTP(S) request that trusts caFile; resolves whatever the status. */
export async function httpRequest(url: string, options: {
  method?: string; headers?: Record<string, string>; body?: string | Buffer; caFile?: string; timeoutMs?: number;
} = {}): Promise<HttpResponse> {
  const ca = options.caFile ? await readFile(options.caFile) : undefined;
  const send = url.startsWith('https:') ? requestHttps : requestHttp;
  return new Promise((resolve, reject) => {
    const req = send(url, { method: options.method ?? 'GET', headers: options.headers, ca, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.setTimeout(options.timeoutMs ?? 10_000, () => req.destroy(new Error(`timeout: ${url}`)));
    req.on('error', reject);
    req.end(options.body);
  });
}

/**
 * Temp dirs of registries not stopped yet, with their process while it runs: if the test process
 * exits without stop(), the processes are killed (by process group) and the dirs removed.
 */
const unstopped = new Map<string, ChildProcess | undefined>();
process.on('exit', () => {
  for (const [root, child] of unstopped) {
    if (child) killGroup(child, 'SIGKILL');
    try { rmSync(root, { recursive: true, force: true }); } catch { /* best effort at exit */ }
  }
});
function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  // `timeout` makes itself a process group leader, so the group holds it and the registry.
  try { process.kill(-child.pid!, signal); } catch { /* already gone */ }
}

/** SIGTERM (which `timeout` passes on and waits for), then SIGKILL if the group lingers. */
async function terminate(child: ChildProcess, exited: Promise<void>): Promise<void> {
  killGroup(child, 'SIGTERM');
  const timer = setTimeout(() => killGroup(child, 'SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
  killGroup(child, 'SIGKILL'); // the registry itself, should `timeout` have gone first
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function logTail(logFile: string, lines = 40): Promise<string> {
  try {
    return (await readFile(logFile, 'utf8')).split('\n').slice(-lines).join('\n');
  } catch (e) {
    return `(no log: ${String(e)})`;
  }
}

export async function startRegistry(mode: RegistryMode, options: StartRegistryOptions = {}): Promise<TestRegistry> {
  const root = await mkdtemp(join(tmpdir(), `kiln-registry-${mode}-`));
  unstopped.set(root, undefined);
  const dataDir = join(root, 'data');
  const logFile = join(root, 'registry.log');
  const configFile = join(root, 'config.yml');
  let child: ChildProcess | undefined;
  let tokenServer: TokenServer | undefined;
  let exited: Promise<void> = Promise.resolve();
  try {
    await mkdir(dataDir);
    const secure = mode !== 'http';
    const withAuth = mode === 'htpasswd' || mode === 'token';
    const password = withAuth ? randomBytes(12).toString('hex') : undefined;

    let caFile: string | undefined;
    let skopeoCertDir: string | undefined;
    let tls: { certFile: string; keyFile: string } | undefined;
    if (secure) {
      const ca = await createTestCa(root);
      caFile = ca.caFile;
      tls = await ca.issue(['localhost'], ['127.0.0.1']);
      // skopeo reads every *.crt in its cert dir as a CA and pairs *.cert with *.key, so the CA key
      // must not be in it: a directory with the CA certificate alone.
      skopeoCertDir = join(root, 'skopeo-certs');
      await mkdir(skopeoCertDir);
      await copyFile(caFile, join(skopeoCertDir, 'ca.crt'));
      if (mode === 'token') {
        const signer = await ca.issue(['kiln-test-token-signer'], []);
        tokenServer = await startTokenServer({
          username: USERNAME, password: password!, service: TOKEN_SERVICE,
          signingCertFile: signer.certFile, signingKeyFile: signer.keyFile, tls,
          expiresInSeconds: options.tokenExpiresInSeconds,
        });
      }
    }

    let auth: Record<string, unknown> | undefined;
    if (mode === 'htpasswd') {
      const htpasswdFile = join(root, 'htpasswd');
      // The registry only accepts bcrypt entries.
      await writeFile(htpasswdFile, await mustRun('htpasswd', ['-Bbn', USERNAME, password!], { timeoutMs: 30_000 }));
      auth = { htpasswd: { realm: 'kiln-test-registry', path: htpasswdFile } };
    } else if (mode === 'token') {
      auth = {
        token: { realm: tokenServer!.realm, service: tokenServer!.service, issuer: tokenServer!.issuer, rootcertbundle: caFile },
      };
    }
    // JSON is YAML, and it spares quoting paths. Port 0: the registry logs the port it got.
    const config = {
      version: '0.1',
      log: { level: 'info', formatter: 'text' },
      storage: {
        filesystem: { rootdirectory: dataDir },
        delete: { enabled: true },
        maintenance: { uploadpurging: { enabled: false } },
      },
      http: {
        addr: '127.0.0.1:0',
        secret: randomBytes(16).toString('hex'),
        ...(tls ? { tls: { certificate: tls.certFile, key: tls.keyFile } } : {}),
      },
      ...(auth ? { auth } : {}),
    };
    await writeFile(configFile, JSON.stringify(config, null, 2));

    // REGISTRY_* variables override the config file: keep the caller's out.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_')));
    const log = await open(logFile, 'w');
    try {
      child = spawn('timeout', ['--kill-after=5', String(MAX_LIFETIME_SECONDS), 'docker-registry', 'serve', configFile],
        { env, stdio: ['ignore', log.fd, log.fd] });
    } finally {
      await log.close();
    }
    const started = child;
    unstopped.set(root, started);
    let hasExited = false;
    exited = new Promise<void>((resolve) => {
      const onEnd = (): void => { hasExited = true; if (unstopped.has(root)) unstopped.set(root, undefined); resolve(); };
      started.on('exit', onEnd);
      started.on('error', onEnd);
    });

    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    let port: string | undefined;
    while (port === undefined) {
      if (hasExited) throw new Error('the registry exited during startup');
      if (Date.now() > deadline) throw new Error('the registry did not log its address in time');
      port = /listening on 127\.0\.0\.1:(\d+)/.exec(await readFile(logFile, 'utf8'))?.[1];
      if (port === undefined) await sleep(50);
    }
    const host = `127.0.0.1:${port}`;
    const url = `${secure ? 'https' : 'http'}://${host}`;
    for (;;) {
      if (hasExited) throw new Error('the registry exited during startup');
      const status = await httpRequest(`${url}/v2/`, { caFile, timeoutMs: 2_000 }).then((r) => r.status, () => 0);
      if (status === (withAuth ? 401 : 200)) break;
      if (Date.now() > deadline) throw new Error(`the registry did not answer /v2/ in time (last status ${status})`);
      await sleep(50);
    }

    let stopped: Promise<void> | undefined;
    const stop = (): Promise<void> => {
      stopped ??= (async () => {
        if (!hasExited) await terminate(started, exited);
        await tokenServer?.stop();
        await rm(root, { recursive: true, force: true });
        unstopped.delete(root);
      })();
      return stopped;
    };

    return {
      mode, host, url, dataDir, logFile, tokenServer, caFile,
      ...(withAuth ? { username: USERNAME, password } : {}),
      skopeoArgs(direction: SkopeoRole): string[] {
        const prefix = direction === 'inspect' ? '--' : `--${direction}-`;
        if (!secure) return [`${prefix}tls-verify=false`];
        const args = [`${prefix}cert-dir`, skopeoCertDir!];
        if (withAuth) args.push(`${prefix}creds`, `${USERNAME}:${password}`);
        return args;
      },
      async writeDockerConfig(dir: string): Promise<void> {
        await mkdir(dir, { recursive: true });
        const file = join(dir, 'config.json');
        let existing: { auths?: Record<string, unknown> } = {};
        try { existing = JSON.parse(await readFile(file, 'utf8')) as typeof existing; } catch { /* none yet */ }
        const auths = { ...(existing.auths ?? {}) };
        if (withAuth) auths[host] = { auth: Buffer.from(`${USERNAME}:${password}`).toString('base64') };
        await writeFile(file, JSON.stringify({ ...existing, auths }, null, 2) + '\n');
      },
      stop,
    };
  } catch (e) {
    const tail = await logTail(logFile);
    if (child) await terminate(child, exited);
    await tokenServer?.stop();
    await rm(root, { recursive: true, force: true });
    unstopped.delete(root);
    throw new Error(`starting the ${mode} registry failed: ${e instanceof Error ? e.message : String(e)}\n--- registry log (tail) ---\n${tail}`);
  }
}
