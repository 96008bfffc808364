// Proves the registry harness with a peer client (skopeo) before kiln is tested against it: each of
// the four registry setups serves the busybox base image in both manifest formats, refuses anonymous
// and wrong-password access where it should, the token server sees the scopes clients ask for, and
// stop() really ends the registry.
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BUSYBOX_USER, pushBusyboxImage } from '../helpers/base-images.js';
import { mustRun, runCommand } from '../helpers/exec.js';
import { httpRequest, startRegistry, type RegistryMode, type TestRegistry } from '../helpers/registry.js';

const MODES: RegistryMode[] = ['http', 'tls', 'htpasswd', 'token'];
const FORMATS = ['oci', 'v2s2'] as const;
const MANIFEST_MEDIA_TYPES = {
  oci: 'application/vnd.oci.image.manifest.v1+json',
  v2s2: 'application/vnd.docker.distribution.manifest.v2+json',
};
const ACCEPT_MANIFESTS = Object.values(MANIFEST_MEDIA_TYPES).join(', ');
const REPOSITORY = 'harness/busybox';

let workDir: string;
before(async () => { workDir = await mkdtemp(join(tmpdir(), 'kiln-registry-harness-')); });
after(async () => rm(workDir, { recursive: true, force: true }));

/** The same image content gives the same digests whichever registry it went to. */
const digestsByFormat = new Map<string, string>();

function sha256(data: string | Buffer): string {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

function portIsOpen(host: string): Promise<boolean> {
  const [address, port] = host.split(':');
  return new Promise((resolve) => {
    const socket = connect({ host: address, port: Number(port) });
    socket.setTimeout(2_000, () => { socket.destroy(); resolve(false); });
    socket.on('connect', () => { socket.destroy(); resolve(true); });
    socket.on('error', () => resolve(false));
  });
}

function decodeJwt(token: string): { header: Record<string, unknown>; claims: Record<string, unknown> } {
  const [header, claims] = token.split('.').slice(0, 2).map((part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>);
  return { header: header!, claims: claims! };
}

/** skopeo flags for the registry without its credentials: anonymous access. */
function anonymousSkopeoArgs(registry: TestRegistry): string[] {
  const args = registry.skopeoArgs('inspect');
  const creds = args.indexOf('--creds');
  if (creds >= 0) args.splice(creds, 2);
  return [...args, '--no-creds'];
}

function basicAuth(username: string, password: string): string {
  return 'Basic ' + Buffer.from(`${username}:${password}`).toString('base64');
}

for (const mode of MODES) {
  describe(`registry harness (${mode})`, () => {
    let registry: TestRegistry;
    before(async () => { registry = await startRegistry(mode); });
    after(async () => registry?.stop());

    it('serves /v2/ on 127.0.0.1 as the mode says', async () => {
      assert.match(registry.host, /^127\.0\.0\.1:\d+$/);
      assert.equal(registry.url, `${mode === 'http' ? 'http' : 'https'}://${registry.host}`);
      const r = await httpRequest(`${registry.url}/v2/`, { caFile: registry.caFile });
      if (mode === 'http' || mode === 'tls') {
        assert.equal(r.status, 200);
        assert.equal(registry.username, undefined);
      } else {
        assert.equal(r.status, 401);
        assert.ok(registry.username && registry.password);
      }
      if (mode === 'htpasswd') assert.match(String(r.headers['www-authenticate']), /^Basic realm="/);
      if (mode === 'token') {
        assert.equal(r.headers['www-authenticate'],
          `Bearer realm="${registry.tokenServer!.realm}",service="${registry.tokenServer!.service}"`);
      }
      if (mode !== 'http') {
        assert.ok(registry.caFile);
        await assert.rejects(httpRequest(`${registry.url}/v2/`), /self.signed|unable to verify|certificate/i,
          'the registry certificate is from the test CA, not a public one');
      }
    });

    for (const format of FORMATS) {
      it(`takes the busybox image as ${format} from skopeo and gives the same digest back`, async () => {
        const digest = await pushBusyboxImage(registry, REPOSITORY, format, format);
        assert.match(digest, /^sha256:[0-9a-f]{64}$/);
        const ref = `docker://${registry.host}/${REPOSITORY}:${format}`;
        const inspectArgs = registry.skopeoArgs('inspect');
        const raw = await mustRun('skopeo', ['inspect', '--raw', ...inspectArgs, ref]);
        assert.equal(sha256(raw), digest);
        assert.equal((JSON.parse(raw) as { mediaType: string }).mediaType, MANIFEST_MEDIA_TYPES[format]);
        const info = JSON.parse(await mustRun('skopeo', ['inspect', ...inspectArgs, ref])) as { Digest: string; Os: string };
        assert.equal(info.Digest, digest);
        assert.equal(info.Os, 'linux');
        const config = JSON.parse(await mustRun('skopeo', ['inspect', '--config', ...inspectArgs, ref])) as { config: { Cmd: string[] } };
        assert.deepEqual(config.config.Cmd, ['sh']);

        const earlier = digestsByFormat.get(format);
        if (earlier) assert.equal(digest, earlier, 'the busybox image is reproducible');
        else digestsByFormat.set(format, digest);
      });
    }

    it('gives the image back to skopeo copy (src flags) with busybox, the symlinks and the users', async () => {
      const layout = join(workDir, `${mode}-layout`);
      await mustRun('skopeo', ['copy', '--quiet', ...registry.skopeoArgs('src'),
        `docker://${registry.host}/${REPOSITORY}:v2s2`, `oci:${layout}:copy`]);
      const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
      const manifest = JSON.parse(await readFile(join(layout, 'blobs', 'sha256', index.manifests[0]!.digest.slice(7)), 'utf8')) as
        { layers: { digest: string }[] };
      assert.equal(manifest.layers.length, 1);
      const layer = join(layout, 'blobs', 'sha256', manifest.layers[0]!.digest.slice(7));
      const listing = await mustRun('tar', ['-tvzf', layer]);
      assert.match(listing, /^lrwxrwxrwx \S+ +0 \S+ \S+ bin\/sh -> busybox$/m);
      assert.match(listing, /^drwxr-xr-x app\/app +0 \S+ \S+ home\/app\/$/m);
      assert.match(listing, /^drwxrwxrwt root\/root +0 \S+ \S+ tmp\/$/m);
      const rootfs = join(workDir, `${mode}-rootfs`);
      await mkdir(rootfs);
      await mustRun('tar', ['-xzf', layer, '--no-same-owner', '-C', rootfs, 'bin/busybox', 'etc/passwd']);
      assert.ok((await readFile(join(rootfs, 'bin/busybox'))).equals(await readFile('/bin/busybox')), 'the layer holds Debian\'s static busybox');
      const passwd = await readFile(join(rootfs, 'etc/passwd'), 'utf8');
      assert.match(passwd, new RegExp(`^${BUSYBOX_USER.name}:x:${BUSYBOX_USER.uid}:${BUSYBOX_USER.gid}:`, 'm'));
      assert.match(passwd, /^root:x:0:0:/m);
    });

    if (mode === 'htpasswd' || mode === 'token') {
      it('refuses anonymous access with 401', async () => {
        const manifestUrl = `${registry.url}/v2/${REPOSITORY}/manifests/oci`;
        assert.equal((await httpRequest(manifestUrl, { caFile: registry.caFile, headers: { accept: ACCEPT_MANIFESTS } })).status, 401);
        const anonymous = await runCommand('skopeo', ['inspect', '--raw', ...anonymousSkopeoArgs(registry), `docker://${registry.host}/${REPOSITORY}:oci`]);
        assert.notEqual(anonymous.code, 0);
        assert.match(anonymous.stderr, /401|unauthorized|authentication required/i);
        if (mode === 'token') {
          // An anonymous token is issued, as Docker Hub does, but it grants nothing.
          const server = registry.tokenServer!;
          const r = await httpRequest(`${server.realm}?service=${server.service}&scope=repository:${REPOSITORY}:pull`, { caFile: registry.caFile });
          assert.equal(r.status, 200);
          const { token } = JSON.parse(r.body.toString()) as { token: string };
          assert.deepEqual(decodeJwt(token).claims.access, []);
          const withToken = await httpRequest(manifestUrl, { caFile: registry.caFile, headers: { accept: ACCEPT_MANIFESTS, authorization: `Bearer ${token}` } });
          assert.equal(withToken.status, 401);
          assert.match(String(withToken.headers['www-authenticate']), /error="insufficient_scope"/);
        }
      });

      it('refuses a wrong password', async () => {
        const wrong = await runCommand('skopeo', ['inspect', '--raw', ...anonymousSkopeoArgs(registry).filter((a) => a !== '--no-creds'),
          '--creds', `${registry.username}:not-${registry.password}`, `docker://${registry.host}/${REPOSITORY}:oci`]);
        assert.notEqual(wrong.code, 0);
        assert.match(wrong.stderr, /401|unauthorized|authentication required/i);
        const url = mode === 'htpasswd'
          ? `${registry.url}/v2/`
          : `${registry.tokenServer!.realm}?service=${registry.tokenServer!.service}&scope=repository:${REPOSITORY}:pull`;
        const bad = await httpRequest(url, { caFile: registry.caFile, headers: { authorization: basicAuth(registry.username!, 'wrong') } });
        assert.equal(bad.status, 401);
        const good = await httpRequest(url, { caFile: registry.caFile, headers: { authorization: basicAuth(registry.username!, registry.password!) } });
        assert.equal(good.status, 200);
      });

      it('writes a docker config.json with its credentials', async () => {
        const dir = join(workDir, `${mode}-docker`);
        await registry.writeDockerConfig(dir);
        const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as { auths: Record<string, { auth: string }> };
        assert.equal(Buffer.from(config.auths[registry.host]!.auth, 'base64').toString(), `${registry.username}:${registry.password}`);
        // skopeo reads the same file format as --authfile.
        const viaConfig = await runCommand('skopeo', ['inspect', '--raw', ...anonymousSkopeoArgs(registry).filter((a) => a !== '--no-creds'),
          '--authfile', join(dir, 'config.json'), `docker://${registry.host}/${REPOSITORY}:oci`]);
        assert.equal(viaConfig.code, 0, viaConfig.stderr);
      });
    }

    if (mode === 'token') {
      it('the token server saw the scopes skopeo asked for, and its tokens carry them', async () => {
        const server = registry.tokenServer!;
        const scopes = server.requests.flatMap((r) => [r.query.scope ?? []].flat());
        assert.ok(scopes.includes(`repository:${REPOSITORY}:pull,push`), `push scope in ${JSON.stringify(scopes)}`);
        assert.ok(scopes.includes(`repository:${REPOSITORY}:pull`), `pull scope in ${JSON.stringify(scopes)}`);
        assert.ok(server.requests.every((r) => r.query.service === server.service));
        assert.ok(server.requests.some((r) => r.method === 'GET' && r.authorization?.startsWith('Basic ')));

        const r = await httpRequest(`${server.realm}?service=${server.service}&scope=repository:${REPOSITORY}:pull&scope=repository:other:pull,push`,
          { caFile: registry.caFile, headers: { authorization: basicAuth(registry.username!, registry.password!) } });
        const body = JSON.parse(r.body.toString()) as { token: string; access_token: string; expires_in: number };
        assert.equal(body.access_token, body.token);
        assert.equal(body.expires_in, 300);
        const { header, claims } = decodeJwt(body.token);
        assert.equal(header.alg, 'RS256');
        assert.equal((header.x5c as string[]).length, 1);
        assert.equal(claims.aud, server.service);
        assert.equal(claims.iss, server.issuer);
        assert.equal(claims.sub, registry.username);
        assert.deepEqual(claims.access, [
          { type: 'repository', name: REPOSITORY, actions: ['pull'] },
          { type: 'repository', name: 'other', actions: ['pull', 'push'] },
        ]);
      });

      it('grants tokens by OAuth2 password and refresh_token POSTs that the registry accepts', async () => {
        const server = registry.tokenServer!;
        const post = (form: Record<string, string>) => httpRequest(server.realm, {
          method: 'POST', caFile: registry.caFile, body: new URLSearchParams(form).toString(),
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        });
        const common = { service: server.service, scope: `repository:${REPOSITORY}:pull`, client_id: 'kiln-test' };
        const wrong = await post({ ...common, grant_type: 'password', username: registry.username!, password: 'wrong' });
        assert.equal(wrong.status, 401);
        const byPassword = await post({ ...common, grant_type: 'password', username: registry.username!, password: registry.password!, access_type: 'offline' });
        assert.equal(byPassword.status, 200, byPassword.body.toString());
        const granted = JSON.parse(byPassword.body.toString()) as { access_token: string; refresh_token: string };
        assert.ok(granted.refresh_token);
        const byRefresh = await post({ ...common, grant_type: 'refresh_token', refresh_token: granted.refresh_token });
        assert.equal(byRefresh.status, 200, byRefresh.body.toString());
        const refreshed = JSON.parse(byRefresh.body.toString()) as { access_token: string };
        assert.equal((await post({ ...common, grant_type: 'refresh_token', refresh_token: 'unknown' })).status, 401);

        for (const token of [granted.access_token, refreshed.access_token]) {
          const r = await httpRequest(`${registry.url}/v2/${REPOSITORY}/manifests/oci`, {
            caFile: registry.caFile, headers: { accept: ACCEPT_MANIFESTS, authorization: `Bearer ${token}` },
          });
          assert.equal(r.status, 200, r.body.toString());
          assert.equal(r.headers['docker-content-digest'], digestsByFormat.get('oci'));
        }
        const last = server.requests.at(-1)!;
        assert.equal(last.method, 'POST');
        assert.equal(last.query.grant_type, 'refresh_token');
      });
    }

    it('stop() ends the registry, closes its port and removes its storage', async () => {
      const { host, dataDir } = registry;
      assert.ok(await portIsOpen(host));
      const tokenHost = registry.tokenServer && new URL(registry.tokenServer.realm).host;
      await registry.stop();
      assert.equal(await portIsOpen(host), false, 'the registry port is closed');
      assert.equal(existsSync(dataDir), false, 'the storage is removed');
      if (tokenHost) assert.equal(await portIsOpen(tokenHost), false, 'the token server port is closed');
      await registry.stop(); // idempotent, as after() calls it again
    });
  });
}

describe('registry harness (token lifetime)', () => {
  it('issues tokens with the requested expires_in', async () => {
    const registry = await startRegistry('token', { tokenExpiresInSeconds: 7 });
    try {
      const server = registry.tokenServer!;
      const r = await httpRequest(`${server.realm}?service=${server.service}&scope=repository:${REPOSITORY}:pull`,
        { caFile: registry.caFile, headers: { authorization: basicAuth(registry.username!, registry.password!) } });
      const body = JSON.parse(r.body.toString()) as { token: string; expires_in: number };
      assert.equal(body.expires_in, 7);
      const { claims } = decodeJwt(body.token);
      assert.equal(Number(claims.exp) - Number(claims.iat), 7);
    } finally {
      await registry.stop();
    }
  });
});
