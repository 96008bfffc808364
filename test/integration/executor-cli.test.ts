// The executor's command line as a kaniko user meets it: flag names and syntax, refusals of what is
// not built yet, and one-line errors that name the Dockerfile line.
import { strict as assert } from 'node:assert';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { kiln, mustRun } from '../helpers/exec.js';

let dir: string;
before(async () => { dir = await mkdtemp(join(tmpdir(), 'kiln-cli-')); });
after(async () => rm(dir, { recursive: true, force: true }));

async function context(name: string, dockerfile: string, files: Record<string, string> = {}): Promise<string> {
  const ctx = join(dir, name);
  await mkdir(ctx, { recursive: true });
  await writeFile(join(ctx, 'Dockerfile'), dockerfile);
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(ctx, path, '..'), { recursive: true });
    await writeFile(join(ctx, path), content);
  }
  return ctx;
}

describe('executor errors', () => {
  it('reports a parse error as FILE:LINE without a stack trace', async () => {
    const ctx = await context('parse-error', 'FROM scratch\nCOPY --bogus=1 a /a\n', { a: 'x' });
    const r = await kiln(['executor', '-c', ctx, '--no-push']);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split('\n').at(-1), `${join(ctx, 'Dockerfile')}:2: COPY: unknown flag: bogus`);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  });

  it('prints the stack trace at --verbosity debug', async () => {
    const ctx = await context('parse-error-debug', 'FROM scratch\nFOO bar\n');
    const r = await kiln(['executor', '-c', ctx, '--no-push', '--verbosity=debug']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Dockerfile:2: unknown instruction: FOO/);
    assert.match(r.stderr, /\n\s+at /);
  });

  it('names the line of a missing COPY source', async () => {
    const ctx = await context('missing-source', 'FROM scratch\nENV A=1\nCOPY nothing-here /x\n');
    const r = await kiln(['executor', '-c', ctx, '--no-push']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Dockerfile:3: COPY failed: "nothing-here" not found in the build context/);
  });

  it('reports a RUN whose shell is missing, and names an unreachable base registry', async () => {
    let ctx = await context('run', 'FROM scratch\nRUN echo hi\n');
    let r = await kiln(['executor', '-c', ctx, '--no-push']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /exec \/bin\/sh: No such file or directory/);
    assert.match(r.stderr, /Dockerfile:2: The command \[\/bin\/sh -c echo hi\] returned a non-zero code: 127/);
    ctx = await context('registry-base', 'ARG BASE=127.0.0.1:9/debian\nFROM ${BASE}:12\n');
    r = await kiln(['executor', '-c', ctx, '--no-push']);
    assert.match(r.stderr, /Dockerfile:2: FROM 127\.0\.0\.1:9\/debian:12: .*127\.0\.0\.1:9/);
  });

  it('cleans a COPY source against the context root, as BuildKit does ("../x" is "x")', async () => {
    const ctx = await context('outside', 'FROM scratch\nCOPY ../secret /s\n');
    const r = await kiln(['executor', '-c', ctx, '--no-push']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Dockerfile:2: COPY failed: "\.\.\/secret" not found in the build context/);
  });

  it('names a bad .dockerignore pattern by line, and a COPY --from that is neither a stage nor an image', async () => {
    const ignored = await context('bad-ignore', 'FROM scratch\nCOPY f /f\n', { f: 'f', '.dockerignore': '# fine\n*.tmp\n[\n' });
    const r = await kiln(['executor', '-c', ignored, '--no-push']);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split('\n').at(-1), `kiln: ${join(ignored, '.dockerignore')}:3: invalid pattern "[" (Invalid regular expression: /^[$/: Unterminated character class); fix or remove it`);
    // 127.0.0.1:9 refuses at once: the name is tried as an image there (--registry-map), and fails.
    const from = await context('from-missing', 'FROM scratch AS build\nCOPY --from=biuld /x /x\n');
    const m = await kiln(['executor', '-c', from, '--no-push', '--registry-map', 'index.docker.io=127.0.0.1:9', '--skip-default-registry-fallback']);
    assert.equal(m.code, 1);
    assert.match(m.stderr, /Dockerfile:2: COPY --from=biuld: no stage is named "biuld", and as an image: /);
  });

  it('refuses several sources into a destination without a trailing slash', async () => {
    const ctx = await context('multi', 'FROM scratch\nCOPY a b /dest\n', { a: '1', b: '2' });
    const r = await kiln(['executor', '-c', ctx, '--no-push']);
    assert.match(r.stderr, /Dockerfile:2: When using COPY with more than one source file, the destination must be a directory and end with a \//);
  });

  it('reports an unknown --target with the stage names', async () => {
    const ctx = await context('target', 'FROM scratch AS one\nFROM scratch AS two\n');
    const r = await kiln(['executor', '-c', ctx, '--no-push', '--target', 'three']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /target stage "three" could not be found \(stages: one, two\)/);
  });
});

describe('executor flags', () => {
  it('accepts kaniko flags that are not built yet when they change nothing, and refuses them otherwise', async () => {
    // --cache without a repository to keep it in is a usage error, named before anything is built.
    const noRepo = await kiln(['executor', '-c', await context('cache-flags', 'FROM scratch\n'), '--no-push', '--cache']);
    assert.equal(noRepo.code, 1);
    assert.match(noRepo.stderr, /--cache needs --cache-repo, or a --destination/);
    const ctx = await context('flags', 'FROM scratch\nENV A=1\n');
    const ok = await kiln(['executor', '-c', ctx, '--no-push', '--cache=false', '--ignore-var-run=true', '--snapshot-mode', 'full', '--cache-dir=/cache']);
    assert.equal(ok.code, 0, ok.stderr);
    const bucket = await kiln(['executor', '-c', ctx, '--no-push', '--bucket=my-bucket']);
    assert.equal(bucket.code, 1);
    assert.match(bucket.stderr, /--bucket is not supported yet \(planned in no issue yet/);
  });

  it('reads KANIKO_NO_PUSH, and names an unreachable registry before building', async () => {
    const ctx = await context('push', 'FROM scratch\n');
    const unreachable = '127.0.0.1:9'; // the discard port: nothing listens there
    const pushed = await kiln(['executor', '-c', ctx, '-d', `${unreachable}/app:1`]);
    assert.equal(pushed.code, 1);
    assert.match(pushed.stderr, new RegExp(`127\\.0\\.0\\.1:9`));
    assert.doesNotMatch(pushed.stderr, /Building stage/);
    const none = await kiln(['executor', '-c', ctx]);
    assert.match(none.stderr, /you must provide --destination, or use --no-push/);
    const env = await kiln(['executor', '-c', ctx, '-d', `${unreachable}/app:1`], { env: { ...process.env, KANIKO_NO_PUSH: 'true' } });
    assert.equal(env.code, 0, env.stderr);
  });

  it('rejects unknown flags, stray arguments and bad references', async () => {
    const ctx = await context('bad-flags', 'FROM scratch\n');
    let r = await kiln(['executor', '-c', ctx, '--no-push', '--frobnicate']);
    assert.match(r.stderr, /unknown flag: --frobnicate/);
    r = await kiln(['executor', '-c', ctx, '--no-push', 'stray']);
    assert.match(r.stderr, /unexpected argument "stray"/);
    r = await kiln(['executor', '-c', ctx, '--no-push', '-d', 'Example.com/UPPER:1']);
    assert.match(r.stderr, /repository name must be lowercase/);
    r = await kiln(['executor', '-c', ctx, '--no-push', '--custom-platform', 'linux']);
    assert.match(r.stderr, /invalid platform "linux"/);
  });

  it('resolves a relative --dockerfile against the context, and honours -f, -c, --target and --custom-platform', async () => {
    const ctx = await context('relative', 'FROM scratch AS a\nLABEL stage=a\nFROM a AS b\nLABEL stage=b\n');
    await mkdir(join(ctx, 'docker'), { recursive: true });
    await writeFile(join(ctx, 'docker', 'Build.dockerfile'), 'FROM scratch AS a\nLABEL from=subdir\nFROM a\nLABEL stage=last\n');
    const layout = join(dir, 'relative-layout');
    let r = await kiln(['executor', `-c=${ctx}`, '-f', 'docker/Build.dockerfile', '--no-push', '--target=a', '--oci-layout-path', layout, '--custom-platform=linux/arm64/v8'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    const config = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', '--config', `oci:${layout}:latest`]));
    assert.deepEqual(config.config.Labels, { from: 'subdir' });
    assert.equal(config.architecture, 'arm64');
    assert.equal(config.variant, 'v8');
    r = await kiln(['executor', '-c', ctx, '--no-push', '--oci-layout-path', layout, '--skip-unused-stages']);
    assert.equal(r.code, 0, r.stderr);
    const last = JSON.parse(await mustRun('skopeo', ['inspect', '--raw', '--config', `oci:${layout}:latest`]));
    assert.deepEqual(last.config.Labels, { stage: 'b' });
  });

  it('warns about build args no ARG consumed, as Docker does', async () => {
    const ctx = await context('unused-args', 'ARG USED_GLOBALLY\nFROM scratch\nARG USED=x\nLABEL v=$USED\n');
    const r = await kiln(['executor', '-c', ctx, '--no-push', '--build-arg', 'USED=1', '--build-arg', 'USED_GLOBALLY=2', '--build-arg', 'NOBODY=3', '--build-arg', 'HTTP_PROXY=x']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /WARN.*One or more build-args \[NOBODY\] were not consumed/);
  });

  it('logs in kaniko\'s formats', async () => {
    const ctx = await context('logs', 'FROM scratch\nENV A=1\n');
    const json = await kiln(['executor', '-c', ctx, '--no-push', '--log-format=json']);
    const lines = json.stderr.trim().split('\n').map((l) => JSON.parse(l) as { level: string; msg: string; time: string });
    assert.ok(lines.some((l) => l.level === 'info' && l.msg === 'ENV A=1'));
    const text = await kiln(['executor', '-c', ctx, '--no-push', '--log-format', 'text']);
    assert.match(text.stderr, /^time="[^"]+" level=info msg="ENV A=1"$/m);
    const color = await kiln(['executor', '-c', ctx, '--no-push']);
    // kaniko's color format shows the seconds since start; a loaded machine may be past the first one.
    assert.match(color.stderr, /\x1b\[36mINFO\x1b\[0m\[\d{4}\] ENV A=1/);
    const quiet = await kiln(['executor', '-c', ctx, '--no-push', '-v', 'error']);
    assert.equal(quiet.stderr, '');
    const bad = await kiln(['executor', '-c', ctx, '--no-push', '--log-format', 'xml']);
    assert.match(bad.stderr, /not a valid log format: "xml"/);
  });
});

describe('kiln parse', () => {
  it('dumps a Dockerfile in BuildKit\'s format and reports errors as FILE:LINE', async () => {
    const file = join(dir, 'parse.Dockerfile');
    await writeFile(file, 'FROM scratch\nENV a=1 b="two words"\nCMD ["x", "y"]\n');
    const r = await kiln(['parse', '--dump', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '(from "scratch")\n(env "a" "1" "=" "b" "\\"two words\\"" "=")\n(cmd "x" "y")\n');
    await writeFile(file, 'FROM scratch\nENV PATH\n');
    const bad = await kiln(['parse', '--dump', file]);
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr, `${file}:2: ENV must have two arguments\n`);
  });
});
