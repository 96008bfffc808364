import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { lstat, mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseDockerfile } from '../../src/dockerfile/parser.js';
import { toInstruction, type CommandLineInstruction } from '../../src/dockerfile/instructions.js';
import { csvFields, parseMount, parseRunFlags, ramInBytes, RunFlagError } from '../../src/build/run-mount-spec.js';
import { prepareRunMounts, runMountKey } from '../../src/build/run-mounts.js';
import { BuildContext } from '../../src/context/build-context.js';
import { parseSecretFlags } from '../../src/cli/secret-flag.js';
import { UsageError } from '../../src/cli/errors.js';
import { mountsInPlace, sandboxArgs, stubLayer } from '../../src/isolation/step-mounts.js';
import { sandboxBinary } from '../../src/isolation/sandbox-binary.js';

function flagsOf(text: string): CommandLineInstruction['flags'] {
  const ins = toInstruction(parseDockerfile(text).instructions[0]!);
  return (ins as CommandLineInstruction).flags;
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-run-mounts-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('RUN --mount parsing (BuildKit\'s rules)', () => {
  it('reads each type with its defaults', () => {
    assert.deepEqual(parseMount('type=cache,target=/root/.cache'), { type: 'cache', target: '/root/.cache', readOnly: false, sharing: 'shared', required: false });
    assert.deepEqual(parseMount('target=/src'), { type: 'bind', target: '/src', readOnly: true, sharing: 'shared', required: false });
    assert.equal(parseMount('type=bind,target=/src,rw').readOnly, false);
    assert.equal(parseMount('type=bind,target=/src,readwrite=true').readOnly, false);
    assert.equal(parseMount('type=cache,target=/c,ro').readOnly, true);
    const secret = parseMount('type=secret,id=npmrc');
    assert.equal(secret.target, '/run/secrets/npmrc');
    assert.equal(secret.readOnly, true);
    assert.equal(parseMount('type=secret,target=/etc/tok').id, 'tok');
    assert.equal(parseMount('type=secret,id=a,env=TOKEN').target, undefined);
    assert.equal(parseMount('type=secret,id=a,env=TOKEN,target=/t').target, '/t');
    assert.equal(parseMount('type=secret,id=a,required').required, true);
    assert.equal(parseMount('type=secret,id=a,required=false').required, false);
    const full = parseMount('type=cache,id=apt,target=/var/cache/apt,sharing=locked,mode=0700,uid=100,gid=101');
    assert.deepEqual([full.id, full.sharing, full.mode, full.uid, full.gid], ['apt', 'locked', 0o700, 100, 101]);
    assert.equal(parseMount('type=tmpfs,target=/t,size=64m').sizeBytes, 64 * 1024 * 1024);
    assert.equal(parseMount('TYPE=Cache,Target=/x').type, 'cache'); // keys and the type are case-insensitive
  });

  it('expands values with the stage\'s variables, never the type', () => {
    const vars: Record<string, string> = { DIR: '/opt/cache', ID: 'x' };
    const m = parseMount('type=cache,target=$DIR,id=${ID}-1', (w) => w.replace(/\$\{?(\w+)\}?/g, (_, k: string) => vars[k] ?? ''));
    assert.deepEqual([m.target, m.id], ['/opt/cache', 'x-1']);
  });

  it('refuses what BuildKit refuses, and what kiln does not build, naming the issue', () => {
    const bad: [string, RegExp][] = [
      ['type=nfs,target=/x', /unsupported mount type "nfs"/],
      ['type=ssh', /type=ssh is not built yet in kiln/],
      ['type=cache', /needs a target/],
      ['type=bind,target=/x,sharing=locked', /invalid cache sharing set for bind mount/],
      ['type=cache,target=/x,sharing=sometimes', /unsupported sharing value/],
      ['type=cache,target=/x,required', /must be a key=value pair/],
      ['type=cache,target=/x,size=1m', /unexpected key 'size' for mount type 'cache'/],
      ['type=secret,id=a,source=b', /both source and id/],
      ['type=secret,id=a,from=stage', /should not have a from/],
      ['type=cache,target=/x,mode=0999', /invalid value for mode/],
      ['type=cache,target=/x,colour=blue', /unexpected key 'colour'/],
    ];
    for (const [value, message] of bad) assert.throws(() => parseMount(value), message, value);
  });

  it('reads --network and --security, refusing insecure and --device', () => {
    assert.equal(parseRunFlags(flagsOf('RUN --network=none true'), (w) => w).network, 'none');
    assert.equal(parseRunFlags(flagsOf('RUN --network=host --security=sandbox true'), (w) => w).network, 'host');
    assert.throws(() => parseRunFlags(flagsOf('RUN --network=bridge true'), (w) => w), /unsupported network mode "bridge"/);
    assert.throws(() => parseRunFlags(flagsOf('RUN --security=insecure true'), (w) => w), /--security=insecure is not supported: kiln never runs a step with extra privileges/);
    assert.throws(() => parseRunFlags(flagsOf('RUN --device=/dev/fuse true'), (w) => w), /--device is not built yet in kiln/);
    const flags = parseRunFlags(flagsOf('RUN --mount=type=cache,target=/a --mount=type=tmpfs,target=/b true'), (w) => w);
    assert.deepEqual(flags.mounts.map((m) => m.type), ['cache', 'tmpfs']);
  });

  it('splits fields as Go\'s CSV reader does, and sizes as Docker\'s units', () => {
    assert.deepEqual(csvFields('a=1,"b=x,y","c=x""y"'), ['a=1', 'b=x,y', 'c=x"y']);
    assert.throws(() => csvFields('"a'), RunFlagError);
    assert.throws(() => csvFields('a="b"'), /bare " in a field/);
    assert.equal(ramInBytes('100'), 100);
    assert.equal(ramInBytes('1k'), 1024);
    assert.equal(ramInBytes('1.5GiB'), 1.5 * 1024 ** 3);
    assert.throws(() => ramInBytes('lots'), /invalid size/);
  });
});

describe('--secret', () => {
  it('takes BuildKit\'s syntax: src, env, type=env, and a bare id', async () => {
    const file = join(dir, 'tok');
    await writeFile(file, 'x');
    const env = { MY_TOKEN: 'v', bare: 'w' };
    const secrets = parseSecretFlags([`id=a,src=${file}`, 'id=b,env=MY_TOKEN', 'type=env,id=c,src=MY_TOKEN', 'id=bare', `id=d,source=${file}`], env);
    assert.deepEqual(Object.fromEntries(secrets), { a: { file }, b: { env: 'MY_TOKEN' }, c: { env: 'MY_TOKEN' }, bare: { env: 'bare' }, d: { file } });
  });

  it('refuses a secret with no id, a missing file or variable, and unknown keys', () => {
    assert.throws(() => parseSecretFlags(['src=/x'], {}), UsageError);
    assert.throws(() => parseSecretFlags([`id=a,src=${join(dir, 'nope')}`], {}), /is not a readable file/);
    assert.throws(() => parseSecretFlags(['id=a,env=NOPE'], {}), /NOPE is not set/);
    assert.throws(() => parseSecretFlags(['id=a,colour=red'], {}), /unexpected key 'colour'/);
  });
});

describe('RUN --mount sources', () => {
  it('writes a secret with its mode and hands env secrets over as variables; skips a missing optional one', async () => {
    const file = join(dir, 'secret-value');
    await writeFile(file, 'hunter2-value');
    process.env['KILN_UNIT_SECRET'] = 'env-value';
    const flags = parseRunFlags(flagsOf('RUN --mount=type=secret,id=f,mode=0440,uid=7 --mount=type=secret,id=e,env=E --mount=type=secret,id=gone true'), (w) => w);
    const prepared = await prepareRunMounts(flags, {
      context: BuildContext.plain(dir), source: () => Promise.reject(new Error('no stages')), cacheRoot: join(dir, 'cache'),
      secrets: new Map([['f', { file }], ['e', { env: 'KILN_UNIT_SECRET' }]]), workdir: '/', resolve: (p) => p.slice(1),
    });
    try {
      assert.deepEqual(prepared.env, ['E=env-value']);
      assert.equal(prepared.mounts.length, 1);
      const [mount] = prepared.mounts;
      assert.ok(mount?.type === 'bind' && mount.readOnly && mount.target === '/run/secrets/f');
      const st = await stat(mount.source);
      assert.deepEqual([st.mode & 0o777, st.uid], [0o440, 7]);
    } finally {
      await prepared.dispose();
      delete process.env['KILN_UNIT_SECRET'];
    }
    assert.ok(!(await lstat(prepared.mounts[0]!.type === 'bind' ? prepared.mounts[0]!.source : '').catch(() => undefined)), 'the secret file outlived the step');
  });

  it('makes a cache directory once per id (default: the target), with its mode, and a lock for sharing=locked', async () => {
    const env = {
      context: BuildContext.plain(dir), source: () => Promise.reject(new Error('no stages')), cacheRoot: join(dir, 'caches'),
      secrets: new Map(), workdir: '/work', resolve: (p: string) => p.slice(1),
    };
    const one = await prepareRunMounts(parseRunFlags(flagsOf('RUN --mount=type=cache,target=rel,mode=0700,sharing=locked true'), (w) => w), env);
    const two = await prepareRunMounts(parseRunFlags(flagsOf('RUN --mount=type=cache,target=/work/rel true'), (w) => w), env);
    const three = await prepareRunMounts(parseRunFlags(flagsOf('RUN --mount=type=cache,target=/work/rel,id=other true'), (w) => w), env);
    const source = (p: typeof one): string => (p.mounts[0]!.type === 'bind' ? p.mounts[0]!.source : '');
    assert.equal(one.mounts[0]!.target, '/work/rel');
    assert.equal(source(one), source(two));
    assert.notEqual(source(one), source(three));
    assert.equal((await stat(source(one))).mode & 0o777, 0o700);
    assert.deepEqual(one.locks, [source(one) + '.lock']);
    assert.deepEqual(two.locks, []);
    assert.equal((await readdir(env.cacheRoot)).length, 2);
  });

  it('keys a RUN by what its binds read, never by secret values', async () => {
    const ctx = join(dir, 'ctx');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'in.txt'), 'one');
    const context = await BuildContext.open(ctx);
    const flags = parseRunFlags(flagsOf('RUN --mount=type=bind,source=in.txt,target=/in --mount=type=secret,id=s --mount=type=cache,target=/c true'), (w) => w);
    const first = await runMountKey(flags, context, () => undefined);
    assert.ok(first.cacheable);
    assert.deepEqual(Object.keys(first.files), ['mount0:in.txt']);
    assert.ok(!JSON.stringify(first).includes('hunter'), 'no secret value can be in a key: it is never read');
    await writeFile(join(ctx, 'in.txt'), 'two');
    const changed = await runMountKey(flags, await BuildContext.open(ctx), () => undefined);
    assert.notDeepEqual(changed.files, first.files);
    const fromStage = await runMountKey(parseRunFlags(flagsOf('RUN --mount=from=build,target=/b true'), (w) => w), context, (f) => (f === 'build' ? 'stage-key' : undefined));
    assert.equal(fromStage.extra['mount0:from-stage'], 'stage-key');
    const fromTag = await runMountKey(parseRunFlags(flagsOf('RUN --mount=from=alpine:3,target=/b true'), (w) => w), context, () => undefined);
    assert.equal(fromTag.cacheable, false);
  });
});

describe('mount stubs', () => {
  it('on a plain tree: creates missing targets, takes them away when still empty, puts the parent\'s times back', async () => {
    const root = join(dir, 'tree');
    await mkdir(join(root, 'var'), { recursive: true });
    const old = new Date('2020-01-01T00:00:00Z');
    await utimes(join(root, 'var'), old, old);
    const secret = join(dir, 'secret-file');
    await writeFile(secret, 's');
    const setup = await mountsInPlace([
      { type: 'bind', source: dir, target: '/var/cache/x', readOnly: false },
      { type: 'bind', source: secret, target: '/run/secrets/s', readOnly: true },
    ], root);
    assert.ok((await stat(join(root, 'var/cache/x'))).isDirectory());
    assert.ok((await stat(join(root, 'run/secrets/s'))).isFile());
    assert.deepEqual(setup.touched, ['var']); // (the root itself is never an entry of a layer)
    assert.deepEqual(setup.args.slice(0, 5), ['--mount', 'bind', 'rw', 'var/cache/x', dir]);
    await setup.undo();
    assert.deepEqual((await readdir(root)).sort(), ['var']);
    assert.deepEqual(await readdir(join(root, 'var')), []);
    assert.equal((await stat(join(root, 'var'))).mtime.getTime(), old.getTime());
  });

  it('refuses a target through a symlink', async () => {
    const root = join(dir, 'linked');
    await mkdir(root, { recursive: true });
    const { symlink } = await import('node:fs/promises');
    await symlink('/etc', join(root, 'out'));
    await assert.rejects(mountsInPlace([{ type: 'tmpfs', target: '/out/x' }], root), /is a symlink/);
  });

  it('on overlayfs: a lower layer of stubs on top, with existing parents\' metadata, nothing for existing targets', async () => {
    const work = join(dir, 'overlay');
    await mkdir(join(work, 'l1/root'), { recursive: true });
    await mkdir(join(work, 'l1/exists'), { recursive: true });
    const { chmod } = await import('node:fs/promises');
    await chmod(join(work, 'l1/root'), 0o700);
    const { overlay, dir: stubs } = await stubLayer([
      { type: 'tmpfs', target: '/root/.cache/x' },
      { type: 'tmpfs', target: '/exists' },
    ], 'lowerdir=i:l1,upperdir=u,workdir=w', work);
    const name = stubs.slice(work.length + 1);
    assert.equal(overlay, `lowerdir=${name}:i:l1,upperdir=u,workdir=w`);
    assert.equal((await stat(join(stubs, 'root'))).mode & 0o777, 0o700);
    assert.ok((await stat(join(stubs, 'root/.cache/x'))).isDirectory());
    assert.deepEqual(await readdir(stubs), ['root']);
    assert.deepEqual(sandboxArgs([{ type: 'tmpfs', target: '/t', sizeBytes: 10 }]), ['--mount', 'tmpfs', '10', 't', '-']);
  });
});

describe('kiln-sandbox run --lock and --no-network', () => {
  const sandbox = (args: string[]): Promise<{ code: number; stdout: string }> => new Promise((resolve, reject) => {
    const child = spawn(sandboxBinary(), ['run', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout }));
  });

  it('serializes steps that hold the same lock (sharing=locked)', async () => {
    const lock = join(dir, 'cache.lock');
    const started = performance.now();
    await Promise.all([1, 2].map(() => sandbox(['--lock', lock, '--', 'sleep', '0.4'])));
    assert.ok(performance.now() - started >= 780, 'two locked steps overlapped');
  });

  it('gives --no-network a namespace with only loopback, up (needs root, as chroot isolation does)', async () => {
    const r = await sandbox(['--no-network', '--', 'cat', '/proc/net/dev']);
    assert.equal(r.code, 0);
    const interfaces = r.stdout.split('\n').slice(2).filter((l) => l.trim()).map((l) => l.trim().split(':')[0]);
    assert.deepEqual(interfaces, ['lo']);
  });
});
