import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { goDuration, goList, goQuotedList } from '../../src/build/go-format.js';
import { goQuote } from '../../src/dockerfile/dump.js';
import { resolveChown } from '../../src/build/users.js';
import { segmentRegExp, hasGlobMeta } from '../../src/context/go-glob.js';
import { cleanContextPath } from '../../src/context/build-context.js';
import { parseGoDuration } from '../../src/dockerfile/instructions.js';
import { parseChmod } from '../../src/build/copy.js';
import { Logger } from '../../src/log/logger.js';
import { FsView } from '../../src/build/fs-view.js';
import type { LayerEntry } from '../../src/layer/layer-writer.js';

describe('Go renderings used in image history', () => {
  it('formats durations like time.Duration.String', () => {
    const cases: [number, string][] = [[0, '0s'], [1e9, '1s'], [1.5e9, '1.5s'], [90e9, '1m30s'], [7200e9, '2h0m0s'], [3e8, '300ms'], [1500, '1.5µs'], [42, '42ns']];
    for (const [ns, text] of cases) assert.equal(goDuration(ns), text);
  });
  it('parses durations like time.ParseDuration', () => {
    assert.equal(parseGoDuration('1m30s'), 90e9);
    assert.equal(parseGoDuration('1.5h'), 5400e9);
    assert.equal(parseGoDuration('300ms'), 3e8);
    assert.equal(parseGoDuration('0'), 0);
    assert.equal(parseGoDuration('5'), undefined);
    assert.equal(parseGoDuration('1x'), undefined);
  });
  it('quotes strings and lists like %q and %v', () => {
    assert.equal(goQuote('a "b"\n\t\\'), '"a \\"b\\"\\n\\t\\\\"');
    assert.equal(goQuote('\x01é'), '"\\x01é"');
    assert.equal(goQuotedList(['/bin/sh', '-c', 'echo hi']), '["/bin/sh" "-c" "echo hi"]');
    assert.equal(goList(['80/tcp', '53/udp']), '[80/tcp 53/udp]');
  });
});

describe('--chown resolution', () => {
  const files = { passwd: 'root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n', group: 'root:x:0:\nstaff:x:50:app\n' };
  it('uses numeric ids as given and the uid as gid when no group is given', () => {
    assert.deepEqual(resolveChown('10', {}), { uid: 10, gid: 10 });
    assert.deepEqual(resolveChown('10:20', {}), { uid: 10, gid: 20 });
  });
  it('looks names up in passwd and group, with the primary group by default', () => {
    assert.deepEqual(resolveChown('app', files), { uid: 1000, gid: 1001 });
    assert.deepEqual(resolveChown('app:staff', files), { uid: 1000, gid: 50 });
    assert.deepEqual(resolveChown('0:staff', files), { uid: 0, gid: 50 });
  });
  it('explains what is missing', () => {
    assert.throws(() => resolveChown('app', {}), /unable to find user app: the image has no \/etc\/passwd/);
    assert.throws(() => resolveChown('nobody', files), /unable to find user nobody in \/etc\/passwd/);
    assert.throws(() => resolveChown('app:wheel', files), /unable to find group wheel in \/etc\/group/);
  });
});

describe('Go glob segments and context paths', () => {
  it('matches like filepath.Match', () => {
    const m = (p: string, s: string): boolean => segmentRegExp(p).test(s);
    assert.ok(m('*.txt', 'a.txt'));
    assert.ok(!m('*.txt', 'a.txt.bak'));
    assert.ok(m('?.go', 'x.go'));
    assert.ok(m('[a-c]x', 'bx'));
    assert.ok(!m('[^a-c]x', 'bx'));
    assert.ok(m('\\*', '*'));
    assert.ok(!m('\\*', 'a'));
    assert.throws(() => segmentRegExp('[a'), /syntax error in pattern/);
    assert.ok(hasGlobMeta('a*') && !hasGlobMeta('plain/path'));
  });
  it('keeps sources inside the context: ".." is cleaned against its root, as BuildKit does', () => {
    assert.equal(cleanContextPath('/a/b/'), 'a/b');
    assert.equal(cleanContextPath('./a/../b'), 'b');
    assert.equal(cleanContextPath('.'), '');
    assert.equal(cleanContextPath('../x'), 'x');
    assert.equal(cleanContextPath('a/../../x'), 'x');
    assert.equal(cleanContextPath('..'), '');
  });
});

describe('--chmod', () => {
  it('takes octal and symbolic modes (more in copy.test.ts)', () => {
    assert.deepEqual(parseChmod('755'), { kind: 'octal', text: '755', mode: 0o755 });
    assert.deepEqual(parseChmod('0644'), { kind: 'octal', text: '0644', mode: 0o644 });
    assert.equal(parseChmod('u+x').kind, 'symbolic');
    assert.throws(() => parseChmod('999'), /invalid chmod parameter: '999'\. it should be octal string and between 0 and 07777/);
  });
});

describe('kaniko-style log lines', () => {
  const at = new Date('2026-01-02T03:04:05.678Z');
  const lines: string[] = [];
  const logger = (format: 'color' | 'text' | 'json', timestamp = false): Logger =>
    new Logger({ format, timestamp, now: () => at, write: (l) => lines.push(l) });
  it('formats each of kaniko\'s three formats', () => {
    lines.length = 0;
    logger('color').info('COPY a /b');
    logger('color', true).warn('careful');
    logger('text').info('two words');
    logger('json').error('bad');
    assert.deepEqual(lines, [
      '\x1b[36mINFO\x1b[0m[0000] COPY a /b\n',
      '\x1b[33mWARN\x1b[0m[2026-01-02T03:04:05Z] careful\n',
      'time="2026-01-02T03:04:05Z" level=info msg="two words"\n',
      '{"level":"error","msg":"bad","time":"2026-01-02T03:04:05Z"}\n',
    ]);
  });
  it('filters by level and redacts secrets', () => {
    lines.length = 0;
    const l = new Logger({ level: 'warn', format: 'text', now: () => at, write: (x) => lines.push(x) });
    l.info('hidden');
    l.addSecret('hunter2');
    l.warn('password is hunter2');
    assert.deepEqual(lines, ['time="2026-01-02T03:04:05Z" level=warning msg="password is ***"\n']);
  });
});

describe('COPY destinations through symlinks in the image', () => {
  const view = new FsView();
  const at = (path: string, type: 'dir' | 'symlink', linkname?: string): LayerEntry => ({ path, type, mode: 0o755, uid: 0, gid: 0, mtime: new Date(0), ...(linkname ? { linkname } : {}) });
  view.apply([at('usr', 'dir'), at('usr/lib', 'dir'), at('lib', 'symlink', 'usr/lib'), at('opt', 'dir'), at('opt/abs', 'symlink', '/usr'), at('loop', 'symlink', 'loop'), at('up', 'symlink', '../../../usr')]);

  it('follows symlinked parents inside the image, never above its root', () => {
    assert.equal(view.resolveParents('/lib/x/y'), 'usr/lib/x/y');
    assert.equal(view.resolveParents('/opt/abs/lib/x'), 'usr/lib/x');
    assert.equal(view.resolveParents('/up/lib/x'), 'usr/lib/x');
    assert.equal(view.resolveParents('/loop/x'), 'loop/x');
  });

  it('follows the last component only when asked and only to a directory', () => {
    assert.equal(view.resolveParents('/lib'), 'lib');
    assert.equal(view.resolveParents('/lib', true), 'usr/lib');
    assert.equal(view.resolveParents('/loop', true), 'loop');
  });
});
