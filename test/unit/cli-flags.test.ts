import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { repoRoot } from '../helpers/paths.js';
import { FlagError, parseFlags, type FlagSpec } from '../../src/cli/flag-parser.js';
import { EXECUTOR_FLAGS } from '../../src/cli/executor-flags.js';

const specs: FlagSpec[] = [
  { name: 'context', short: 'c', kind: 'string', default: '/workspace/', description: '' },
  { name: 'destination', short: 'd', kind: 'list', description: '' },
  { name: 'no-push', kind: 'bool', default: false, env: 'KANIKO_NO_PUSH', description: '' },
  { name: 'push-retry', kind: 'int', default: 0, description: '' },
];

describe('pflag-compatible parsing', () => {
  it('takes --flag=value, --flag value, -x value, -xvalue and -x=value', () => {
    const r = parseFlags(['--context=/a', '-d', 'one', '-dtwo', '-d=three', '--destination', 'four'], specs, {});
    assert.equal(r.values.get('context'), '/a');
    assert.deepEqual(r.values.get('destination'), ['one', 'two', 'three', 'four']);
  });

  it('treats booleans as pflag does: bare is true, =false is false, a following word is not a value', () => {
    assert.equal(parseFlags(['--no-push'], specs, {}).values.get('no-push'), true);
    assert.equal(parseFlags(['--no-push=false'], specs, {}).values.get('no-push'), false);
    const r = parseFlags(['--no-push', 'false'], specs, {});
    assert.equal(r.values.get('no-push'), true);
    assert.deepEqual(r.positional, ['false']);
    assert.throws(() => parseFlags(['--no-push=maybe'], specs, {}), FlagError);
  });

  it('applies defaults and environment variables only when the flag is absent', () => {
    assert.equal(parseFlags([], specs, {}).values.get('context'), '/workspace/');
    assert.equal(parseFlags([], specs, { KANIKO_NO_PUSH: 'true' }).values.get('no-push'), true);
    assert.equal(parseFlags(['--no-push=false'], specs, { KANIKO_NO_PUSH: 'true' }).values.get('no-push'), true, 'kaniko: the variable wins');
    assert.deepEqual(parseFlags([], specs, {}).values.get('destination'), []);
  });

  it('rejects unknown flags, missing values and non-integers', () => {
    assert.throws(() => parseFlags(['--nope'], specs, {}), /unknown flag: --nope/);
    assert.throws(() => parseFlags(['-z'], specs, {}), /unknown shorthand flag: 'z'/);
    assert.throws(() => parseFlags(['--context'], specs, {}), /flag needs an argument: --context/);
    assert.throws(() => parseFlags(['--push-retry=x'], specs, {}), /expected an integer/);
    assert.equal(parseFlags(['--push-retry', '3'], specs, {}).values.get('push-retry'), 3);
  });

  it('stops at --', () => {
    assert.deepEqual(parseFlags(['--', '--context=x'], specs, {}).positional, ['--context=x']);
  });
});

describe('the executor flag table', () => {
  it('has every kaniko v1.24 executor flag exactly once, and kiln\'s own', () => {
    const kilnOnly = ['isolation', 'secret'];
    const kaniko = [
      'dockerfile', 'context', 'context-sub-path', 'bucket', 'destination', 'snapshot-mode', 'custom-platform', 'build-arg', 'insecure',
      'skip-tls-verify', 'insecure-pull', 'skip-tls-verify-pull', 'push-retry', 'push-ignore-immutable-tag-errors', 'image-fs-extract-retry',
      'image-download-retry', 'kaniko-dir', 'tar-path', 'single-snapshot', 'reproducible', 'target', 'no-push', 'no-push-cache', 'cache-repo',
      'cache-dir', 'digest-file', 'image-name-with-digest-file', 'image-name-tag-with-digest-file', 'oci-layout-path', 'compression',
      'compression-level', 'cache', 'compressed-caching', 'cleanup', 'cache-ttl', 'insecure-registry', 'skip-tls-verify-registry',
      'registry-certificate', 'registry-client-cert', 'registry-map', 'registry-mirror', 'skip-default-registry-fallback', 'ignore-var-run',
      'label', 'skip-unused-stages', 'use-new-run', 'git', 'cache-copy-layers', 'cache-run-layers', 'ignore-path', 'force-build-metadata',
      'skip-push-permission-check', 'verbosity', 'log-format', 'log-timestamp', 'force', 'snapshotMode', 'customPlatform', 'tarPath', 'whitelist-var-run',
    ];
    const names = EXECUTOR_FLAGS.map((f) => f.name);
    assert.equal(new Set(names).size, names.length, 'duplicate flag names');
    assert.deepEqual([...names].sort(), [...kaniko, ...kilnOnly].sort());
    const shorts = EXECUTOR_FLAGS.filter((f) => f.short).map((f) => `${f.short}=${f.name}`).sort();
    assert.deepEqual(shorts, ['b=bucket', 'c=context', 'd=destination', 'f=dockerfile', 'v=verbosity']);
  });
});

describe('the README flag table', () => {
  it('lists every executor flag with its true status', () => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    for (const flag of EXECUTOR_FLAGS) {
      const row = readme.split('\n').find((l) => l.startsWith('| ') && l.includes(`\`--${flag.name}\` |`));
      assert.ok(row, `README has no row for --${flag.name}`);
      const status = row.split('|')[2]!.trim();
      if (flag.notYet) assert.match(status, /^not yet \(issue #\d+|^not yet \(no issue/, `--${flag.name}`);
      else assert.equal(status, 'supported', `--${flag.name}`);
    }
  });
});
