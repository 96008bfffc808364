// Makes the V8 code cache of kiln's bundle (dist/src/cli/kiln.cjs.cache; see src/cli/bundle.cts).
// The cache holds the functions V8 compiled while one kiln process ran, so that process should run
// what CI jobs run: pull a base image, COPY onto it, push the result. No registry is installed at
// build time, so a minimal one in this process serves the base (made by a first kiln build, as an
// OCI layout) and takes the push in memory. It is a warm-up, not a test: kiln's tests use the real
// distribution registry. If anything here fails, kiln still works, only starts slower.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { URL } from 'node:url';

const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

const digestOf = (bytes) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

/** Runs kiln (its start script) with the code cache written at exit; this process keeps serving meanwhile. */
function kiln(start, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [start, ...args], {
      env: { ...process.env, KILN_WRITE_CODE_CACHE: '1', NODE_OPTIONS: '' }, stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`kiln ${args.join(' ')} exited ${code}: ${stderr}`))));
  });
}

/** A registry of one base image (from an OCI layout) that accepts any push and keeps it in memory. */
function warmUpRegistry(layout) {
  const blobs = new Map();
  const manifests = new Map();
  const blob = (digest) => blobs.get(digest) ?? readFileSync(join(layout, 'blobs', ...digest.split(':')));
  const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
  manifests.set('base:1', blob(index.manifests[0].digest));
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const url = new URL(req.url, 'http://registry');
      const [, repository, kind, reference] = /^\/v2\/warm\/([^/]+)\/(manifests|blobs)\/(.+)$/.exec(url.pathname) ?? [];
      const send = (status, headers = {}, body) => { res.writeHead(status, headers); res.end(body); };
      if (url.pathname === '/v2/') return send(200);
      if (url.pathname.startsWith('/v2/warm/') && url.pathname.includes('/blobs/uploads/')) {
        if (req.method === 'POST') return send(202, { location: `${url.pathname}${url.pathname.endsWith('/') ? '' : '/'}session` });
        if (req.method === 'PUT') {
          const digest = url.searchParams.get('digest');
          blobs.set(digest, body);
          return send(201, { 'docker-content-digest': digest });
        }
        return send(204);
      }
      if (kind === 'blobs') {
        try {
          const bytes = blob(reference);
          return send(200, { 'content-length': bytes.length, 'docker-content-digest': reference }, req.method === 'HEAD' ? undefined : bytes);
        } catch {
          return send(404);
        }
      }
      if (kind === 'manifests') {
        const key = `${repository}:${reference}`;
        if (req.method === 'PUT') {
          manifests.set(key, body);
          return send(201, { 'docker-content-digest': digestOf(body) });
        }
        const bytes = manifests.get(key);
        if (!bytes) return send(404);
        const headers = { 'content-type': MANIFEST, 'content-length': bytes.length, 'docker-content-digest': digestOf(bytes) };
        return send(200, headers, req.method === 'HEAD' ? undefined : bytes);
      }
      return send(404);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Writes the cache for the bundle that `start` runs; false (with a warning) when it could not. */
export async function makeCodeCache(start) {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-code-cache-'));
  let server;
  try {
    writeFileSync(join(dir, 'file.txt'), 'kiln\n');
    writeFileSync(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY file.txt /base/\n');
    await kiln(start, ['executor', '--context', dir, '--no-push', '--oci-layout-path', join(dir, 'layout'), '--verbosity', 'error']);
    server = await warmUpRegistry(join(dir, 'layout'));
    const host = `127.0.0.1:${server.address().port}`;
    writeFileSync(join(dir, 'Dockerfile'), [
      `FROM ${host}/warm/base:1`, 'ARG VERSION=1', 'ENV A=${VERSION} B=2', 'LABEL kiln.example=yes', 'WORKDIR /app',
      'COPY file.txt ./', 'USER 1000', 'EXPOSE 8080', 'ENTRYPOINT ["/app/run"]', 'CMD ["--help"]', '',
    ].join('\n'));
    await kiln(start, ['executor', '--context', dir, '--destination', `${host}/warm/app:1`, '--verbosity', 'error']);
    return true;
  } catch (e) {
    console.warn(`kiln's code cache covers less than it should (its warm-up failed): ${e.message}`);
    return false;
  } finally {
    server?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
