import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { DockerfileSyntaxError } from '../../src/dockerfile/ast.js';
import { parseDockerfile } from '../../src/dockerfile/parser.js';
import { targetStageIndex, toStages } from '../../src/dockerfile/stages.js';

const model = (text: string) => toStages(parseDockerfile(text));

function failsAt(text: string, line: number, message: RegExp): void {
  assert.throws(() => model(text), (e: unknown) => e instanceof DockerfileSyntaxError && e.line === line && message.test(e.message));
}

describe('typed instructions', () => {
  it('splits meta args from stages and names stages in lower case', () => {
    const m = model('ARG A=1\nARG B\nFROM scratch AS Build\nARG C\nFROM build\n');
    assert.deepEqual(m.metaArgs.flatMap((a) => a.args), [{ key: 'A', value: '1' }, { key: 'B' }]);
    assert.deepEqual(m.stages.map((s) => s.name), ['build', undefined]);
    assert.equal(m.stages[0]!.instructions.length, 1);
    assert.equal(targetStageIndex(m, 'BUILD'), 0);
    assert.equal(targetStageIndex(m, undefined), 1);
    assert.equal(targetStageIndex(m, '1'), 1);
  });

  it('parses COPY/ADD flags per instruction, heredoc sources and the destination', () => {
    const m = model('FROM scratch\nCOPY --from=x --chown=1:2 --chmod=755 --link --exclude=a --exclude=b s1 <<EOF /d/\nhi\nEOF\nADD --checksum=sha256:00 --keep-git-dir=false http://x/y /z\n');
    const [copy, add] = m.stages[0]!.instructions;
    assert.ok(copy?.kind === 'copy' && add?.kind === 'add');
    assert.deepEqual([copy.from, copy.chown, copy.chmod, copy.link, copy.excludes, copy.sources, copy.dest], ['x', '1:2', '755', true, ['a', 'b'], ['s1'], '/d/']);
    assert.deepEqual(copy.inlineSources, [{ name: 'EOF', content: 'hi\n', expand: true }]);
    assert.deepEqual([add.checksum, add.keepGitDir, add.sources], ['sha256:00', false, ['http://x/y']]);
  });

  it('rejects flags an instruction does not take, duplicates and missing values, at their line', () => {
    failsAt('FROM scratch\n\nADD --from=x a b\n', 3, /ADD: unknown flag: from/);
    failsAt('FROM scratch\nCOPY --chown=1 --chown=2 a b\n', 2, /duplicate flag specified: chown/);
    failsAt('FROM scratch\nCOPY --chown a b\n', 2, /missing a value on flag: chown/);
    failsAt('FROM scratch\nCOPY --link=maybe a b\n', 2, /expecting boolean value for flag link/);
    failsAt('FROM --platform scratch\n', 1, /missing a value on flag: platform/);
  });

  it('checks argument counts and names as BuildKit does', () => {
    failsAt('FROM scratch\nCOPY onlyone\n', 2, /COPY requires at least two arguments/);
    failsAt('FROM scratch AS 1abc\n', 1, /invalid name for build stage/);
    failsAt('FROM a b\n', 1, /FROM requires either one or three arguments/);
    failsAt('FROM scratch\nSHELL /bin/sh -c\n', 2, /SHELL requires the arguments to be in JSON form/);
    failsAt('FROM scratch\nHEALTHCHECK NONE x\n', 2, /HEALTHCHECK NONE takes no arguments/);
    failsAt('FROM scratch\nHEALTHCHECK --interval=1x CMD a\n', 2, /invalid duration "1x"/);
    failsAt('FROM scratch\nHEALTHCHECK --retries=-1 CMD a\n', 2, /--retries cannot be negative/);
    failsAt('FROM scratch\nFROBNICATE\n', 2, /unknown instruction: FROBNICATE/);
    failsAt('ENV A=1\nFROM scratch\n', 1, /only ARG may come before FROM/);
    failsAt('FROM scratch AS a\nFROM scratch AS a\n', 2, /duplicate stage name "a"/);
  });

  it('keeps exec and shell forms apart and records HEALTHCHECK options in nanoseconds', () => {
    const [cmd, ep, hc, none] = model('FROM scratch\nCMD ["a", "b"]\nENTRYPOINT run it\nHEALTHCHECK --interval=1m30s --retries=3 CMD curl x\nHEALTHCHECK NONE\n').stages[0]!.instructions;
    assert.ok(cmd?.kind === 'cmd' && ep?.kind === 'entrypoint' && hc?.kind === 'healthcheck' && none?.kind === 'healthcheck');
    assert.deepEqual([cmd.cmdLine, cmd.prependShell], [['a', 'b'], false]);
    assert.deepEqual([ep.cmdLine, ep.prependShell], [['run it'], true]);
    assert.deepEqual([hc.test, hc.interval, hc.retries], [['CMD-SHELL', 'curl x'], 90e9, 3]);
    assert.deepEqual(none.test, ['NONE']);
  });

  it('stores ONBUILD triggers as written, heredoc bodies re-attached', () => {
    const [ob] = model('FROM scratch\nONBUILD RUN <<EOF\necho hi\nEOF\n').stages[0]!.instructions;
    assert.ok(ob?.kind === 'onbuild');
    assert.equal(ob.expression, 'RUN <<EOF\necho hi\nEOF');
  });
});
