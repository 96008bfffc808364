// kiln's own executor image, built by kiln (FROM scratch + COPY) for tests that run kiln inside a
// container: Node.js and the libraries it links with are copied under /kaniko and started through
// their own dynamic loader, so kiln keeps running after a build replaces /lib, /usr and /etc.
import { copyFile, cp, mkdir, writeFile } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { docker, kiln, mustRun } from './exec.js';

const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

/** Builds the image into the test dockerd as `tag`. */
export async function buildKilnTestImage(workDir: string, tag: string): Promise<void> {
  const ctx = join(workDir, 'kiln-image');
  const kaniko = join(ctx, 'kaniko');
  await mkdir(join(kaniko, 'lib'), { recursive: true });
  await copyFile(process.execPath, join(kaniko, 'node'));
  // The loader and every library node links with, under the names the loader looks for.
  const ldd = await mustRun('ldd', [process.execPath]);
  let loader = '';
  for (const line of ldd.split('\n')) {
    const m = /^\s*(\S+)\s+=>\s+(\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (!m) continue;
    const [name, path] = m[2] ? [m[1]!, m[2]] : [basename(m[1]!), m[1]!];
    await copyFile(path, join(kaniko, 'lib', basename(name)));
    if (!m[2]) loader = basename(name);
  }
  if (!loader) throw new Error(`no dynamic loader in ldd output:\n${ldd}`);
  const app = join(kaniko, 'kiln');
  await mkdir(app, { recursive: true });
  await copyFile(join(repoRoot, 'package.json'), join(app, 'package.json'));
  await cp(join(repoRoot, 'dist', 'src'), join(app, 'dist', 'src'), { recursive: true });
  await cp(join(repoRoot, 'dist', 'native'), join(app, 'dist', 'native'), { recursive: true });
  const prod = (await mustRun('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: repoRoot })).split('\n').filter((p) => p.includes('node_modules'));
  for (const dir of prod) await cp(dir, join(app, relative(repoRoot, dir)), { recursive: true });
  await writeFile(join(ctx, 'Dockerfile'), [
    'FROM scratch',
    'COPY kaniko /kaniko',
    'ENV KILN_ISOLATION=container DOCKER_CONFIG=/kaniko/.docker/ SSL_CERT_DIR=/kaniko/ssl/certs',
    'WORKDIR /workspace',
    `ENTRYPOINT ["/kaniko/lib/${loader}", "--library-path", "/kaniko/lib", "/kaniko/node", "/kaniko/kiln/dist/src/cli/main.js", "executor"]`,
  ].join('\n') + '\n');
  const tar = join(workDir, 'kiln-image.tar');
  const r = await kiln(['executor', '-c', ctx, '--no-push', '-d', tag, '--tar-path', tar]);
  if (r.code !== 0) throw new Error(`kiln could not build its own image: ${r.stderr}`);
  await docker(['load', '-q', '-i', tar]);
}
