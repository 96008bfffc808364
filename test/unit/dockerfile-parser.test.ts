import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DockerfileSyntaxError, type Heredoc, type InstructionNode } from '../../src/dockerfile/ast.js';
import { dumpParse, goQuote, goStringFromBytes } from '../../src/dockerfile/dump.js';
import { parseHeredocWord } from '../../src/dockerfile/parser-heredoc.js';
import { parseDockerfile } from '../../src/dockerfile/parser.js';
import { conformanceDir } from '../helpers/paths.js';

const positiveDir = join(conformanceDir, 'parser-testfiles');
const negativeDir = join(conformanceDir, 'parser-testfiles-negative');

function caseNames(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
}

function only(text: string): InstructionNode {
  const result = parseDockerfile(text);
  assert.equal(result.instructions.length, 1);
  return result.instructions[0]!;
}

function syntaxError(text: string | Uint8Array, message: string | RegExp, line?: number): void {
  assert.throws(
    () => parseDockerfile(text),
    (e: unknown) => {
      assert.ok(e instanceof DockerfileSyntaxError, String(e));
      if (typeof message === 'string') assert.equal(e.message, message);
      else assert.match(e.message, message);
      if (line !== undefined) assert.equal(e.line, line);
      return true;
    },
  );
}

describe('BuildKit parser conformance', () => {
  const positive = caseNames(positiveDir);
  it('has all 33 positive cases', () => assert.equal(positive.length, 33));
  for (const name of positive) {
    it(`parses ${name} exactly as BuildKit`, () => {
      const source = readFileSync(join(positiveDir, name, 'Dockerfile'));
      const expected = readFileSync(join(positiveDir, name, 'result'));
      assert.equal(dumpParse(parseDockerfile(source)), expected.toString('utf8'));
      assert.ok(Buffer.from(dumpParse(parseDockerfile(source)), 'utf8').equals(expected));
      // A string decoded by the caller parses the same.
      assert.equal(dumpParse(parseDockerfile(source.toString('utf8'))), expected.toString('utf8'));
    });
  }

  const negative = caseNames(negativeDir);
  it('has the negative cases', () => assert.ok(negative.length >= 4));
  for (const name of negative) {
    it(`rejects ${name}`, () => {
      const source = readFileSync(join(negativeDir, name, 'Dockerfile'));
      assert.throws(() => parseDockerfile(source), DockerfileSyntaxError);
    });
  }
});

describe('heredocs', () => {
  const doc = (name: string, content: string, extra: Partial<Heredoc> = {}): Heredoc =>
    ({ name, content, expand: true, chomp: false, fileDescriptor: 0, ...extra });
  const docsOfLast = (body: string): Heredoc[] => parseDockerfile('FROM x\n' + body).instructions.at(-1)!.heredocs;

  it('reads a body up to the terminator and keeps the line as the argument', () => {
    const result = parseDockerfile('FROM x\nRUN <<EOF\necho hi\n  EOF\nEOF\nRUN ls\n');
    const run = result.instructions[1]!;
    assert.deepEqual(run.heredocs, [doc('EOF', 'echo hi\n  EOF\n')]);
    assert.deepEqual(run.args, ['<<EOF']);
    assert.equal(run.original, 'RUN <<EOF');
    assert.deepEqual([run.startLine, run.endLine], [2, 5]);
    assert.deepEqual([result.instructions[2]!.startLine, result.instructions[2]!.endLine], [6, 6]);
  });

  it('keeps empty bodies, comments and quotes in bodies', () => {
    assert.deepEqual(parseDockerfile('FROM x\nRUN <<EMPTY\nEMPTY\n').instructions[1]!.heredocs, [doc('EMPTY', '')]);
    assert.deepEqual(docsOfLast('RUN <<C\n# not a comment\necho "a" \\\n\nC\n'), [doc('C', '# not a comment\necho "a" \\\n\n')]);
    assert.deepEqual(docsOfLast('COPY <<EOF /quotes\n"foo"\n\'bar\'\nEOF\n'), [doc('EOF', '"foo"\n\'bar\'\n')]);
  });

  it('reads several heredocs on one line in order', () => {
    const copy = parseDockerfile('FROM x\nCOPY <<FILE1 <<FILE2 /dest\ncontent 1\nFILE1\ncontent 2\nFILE2\n').instructions[1]!;
    assert.deepEqual(copy.heredocs, [doc('FILE1', 'content 1\n'), doc('FILE2', 'content 2\n')]);
    assert.deepEqual(copy.args, ['<<FILE1', '<<FILE2', '/dest']);
    assert.equal(copy.endLine, 6);
    // The second body may contain the first terminator and the other way round.
    assert.deepEqual(docsOfLast('COPY <<X <<Y /dest\nY\nX\nX\nY\n'), [doc('X', 'Y\n'), doc('Y', 'X\n')]);
  });

  it('chomps leading tabs with <<- (body and terminator)', () => {
    assert.deepEqual(docsOfLast('RUN <<-UNINDENT\n\tbaz\n\t\tquux\n\t\tUNINDENT\n'), [doc('UNINDENT', 'baz\nquux\n', { chomp: true })]);
    // Without `-` the tabs stay and an indented terminator is body.
    assert.deepEqual(docsOfLast('RUN <<INDENT\n\tfoo\n\tINDENT\nINDENT\n'), [doc('INDENT', '\tfoo\n\tINDENT\n')]);
  });

  it('does not expand when any part of the delimiter is quoted', () => {
    assert.deepEqual(docsOfLast("RUN <<-'NOEXPAND'\n\t$NAME\nNOEXPAND\n"), [doc('NOEXPAND', '$NAME\n', { chomp: true, expand: false })]);
    assert.deepEqual(docsOfLast('RUN <<"EOF"\nx\nEOF\n'), [doc('EOF', 'x\n', { expand: false })]);
    assert.deepEqual(docsOfLast("RUN <<eo'f'\necho foo\neof\n"), [doc('eof', 'echo foo\n', { expand: false })]);
    assert.deepEqual(docsOfLast("RUN <<eo\\'f\necho foo\neo'f\n"), [doc("eo'f", 'echo foo\n')]);
    assert.deepEqual(docsOfLast("RUN <<'e'o\\'f\necho foo\neo'f\n"), [doc("eo'f", 'echo foo\n', { expand: false })]);
    assert.deepEqual(docsOfLast("RUN <<'one two'\necho bar\none two\n"), [doc('one two', 'echo bar\n', { expand: false })]);
  });

  it('reads a file descriptor prefix', () => {
    assert.deepEqual(docsOfLast('RUN 3<<EMPTY2\nEMPTY2\n'), [doc('EMPTY2', '', { fileDescriptor: 3 })]);
    assert.deepEqual(docsOfLast('RUN cat 0<<A 4<<-B\na\nA\n\tb\nB\n'), [doc('A', 'a\n'), doc('B', 'b\n', { chomp: true, fileDescriptor: 4 })]);
  });

  it('accepts blanks after << and odd delimiters', () => {
    assert.deepEqual(docsOfLast('RUN <<  EOF  > foo\nEOF\n'), [doc('EOF', '')]);
    // On a line, `<<-` then a blank splits into two words: no heredoc (the next line is an instruction).
    assert.deepEqual(parseDockerfile('FROM x\nRUN <<- EOF\nEOF\n').instructions.map((n) => n.heredocs.length), [0, 0, 0]);
    assert.deepEqual(docsOfLast('RUN <<$EOF\n$EOF\n'), [doc('$EOF', '')]);
    assert.deepEqual(docsOfLast('COPY <<file.txt /dest\nhello world\nfile.txt\n'), [doc('file.txt', 'hello world\n')]);
    assert.deepEqual(docsOfLast('RUN --mount=type=cache,target=/foo <<MOUNT python3\necho hello\nMOUNT\n'), [doc('MOUNT', 'echo hello\n')]);
  });

  it('finds no heredoc where BuildKit finds none', () => {
    assert.deepEqual(docsOfLast('RUN "<<NOHEREDOC"\n'), []);
    assert.deepEqual(docsOfLast("RUN '<<EOF'\n"), []);
    assert.deepEqual(docsOfLast('RUN ["<<EOF"]\n'), []);
    assert.deepEqual(docsOfLast('RUN echo a<<EOF\n'), []);
    assert.deepEqual(docsOfLast('RUN cat <<<EOF\n'), []);
    // Only RUN, COPY and ADD take heredocs: the next line is an instruction.
    const result = parseDockerfile('FROM x\nUSER <<INVALID\nINVALID\n');
    assert.deepEqual(result.instructions.map((n) => n.keyword), ['from', 'user', 'invalid']);
    // A line that does not lex (unterminated quote) names no heredoc.
    assert.deepEqual(docsOfLast("RUN <<EOF 'x\nEOF\n").length, 0);
  });

  it('rejects a missing terminator and malformed delimiters', () => {
    syntaxError('FROM x\nRUN <<EOF\necho hi\n', 'unterminated heredoc', 2);
    syntaxError('FROM x\nRUN <<A <<B\nA\nb\n', 'unterminated heredoc', 2);
  });

  it('parses single heredoc words as BuildKit', () => {
    for (const word of ['<<EOF', "<<'EOF'", '<<"EOF"', '<<-EOF', "<<-'EOF'", '<<-"EOF"', '<<EO"F"', '<< EOF', '<<- EOF']) {
      assert.equal(parseHeredocWord(word)?.name, 'EOF', word);
    }
    for (const word of ['', 'EOF', '<<', '<<-', '<EOF', '<<<EOF', '<<EOF sh']) assert.equal(parseHeredocWord(word), undefined, word);
    assert.throws(() => parseHeredocWord("<<'EOF"), { message: 'failed to process "\'EOF": unexpected end of statement while looking for matching single-quote' });
    assert.throws(() => parseHeredocWord('<<"EOF'), { message: 'failed to process "\\"EOF": unexpected end of statement while looking for matching double-quote' });
    assert.throws(() => parseHeredocWord("<<EOF'"), /single-quote/);
    assert.throws(() => parseHeredocWord('<<EOF"'), /double-quote/);
    assert.throws(() => parseHeredocWord('<<${EOF'), { message: 'failed to process "${EOF": unsupported modifier (\ufffd) in substitution' });
  });

  it('attaches heredocs of an ONBUILD trigger', () => {
    const node = only('ONBUILD RUN <<EOF\necho hi\nEOF\n');
    assert.deepEqual(node.heredocs, [doc('EOF', 'echo hi\n')]);
    assert.deepEqual(node.onbuild?.heredocs, [doc('EOF', 'echo hi\n')]);
    assert.equal(node.original, 'ONBUILD RUN <<EOF');
    assert.equal(node.endLine, 3);
  });

  it('keeps CRLF line ends in bodies and accepts a CRLF terminator', () => {
    assert.deepEqual(docsOfLast('RUN <<EOF\r\na\r\nEOF\r\n'), [doc('EOF', 'a\r\n')]);
  });
});

describe('parser directives', () => {
  it('switches the escape token to a backtick', () => {
    const result = parseDockerfile('# escape=`\nFROM x\nRUN echo \\\nRUN a `\n  b\n');
    assert.equal(result.directives.escape, '`');
    assert.deepEqual(result.instructions.map((n) => n.args), [['x'], ['echo \\'], ['a   b']]);
    assert.deepEqual(only('#escape=`\nENV A=x` y B=\\\n').args, ['A', 'x` y', '=', 'B', '\\', '=']);
  });

  it('reads keys case-insensitively and keeps syntax and check', () => {
    const result = parseDockerfile('# Syntax = docker/dockerfile:1 \n#CHECK=skip=all\n  # ESCAPE=\\\nFROM x\n');
    assert.deepEqual(result.directives, { escape: '\\', syntax: 'docker/dockerfile:1', check: 'skip=all' });
  });

  it('ignores directives after other lines', () => {
    assert.equal(parseDockerfile('# comment\n# escape=`\nFROM x \\\n y\n').directives.escape, '\\');
    assert.equal(parseDockerfile('\n# escape=`\nFROM x\n').directives.escape, '\\');
    assert.equal(parseDockerfile('# unknown=1\n# escape=`\nFROM x\n').directives.escape, '\\');
    assert.equal(parseDockerfile('FROM x\n# escape=`\nRUN a\n').directives.escape, '\\');
    // A byte order mark does not hide a directive.
    assert.equal(parseDockerfile('\ufeff# escape=`\nFROM x\n').directives.escape, '`');
  });

  it('rejects invalid and repeated directives', () => {
    syntaxError('# escape=x\nFROM x\n', "invalid escape token 'x' does not match ` or \\", 1);
    syntaxError('# escape=\\\n# Escape=`\nFROM x\n', 'only one escape parser directive can be used', 2);
    syntaxError('# syntax=a\n# syntax=b\nFROM x\n', 'only one syntax parser directive can be used', 2);
    // After the directive block, a repeat is an ordinary comment.
    assert.equal(parseDockerfile('# syntax=a\n\n# syntax=b\nFROM x\n').directives.syntax, 'a');
  });
});

describe('lines and continuations', () => {
  it('numbers lines as BuildKit does', () => {
    const text = '# ESCAPE=\\\n\n\n\nFROM brimstone/ubuntu:14.04\n\n\n# TORUN\n\n\nENV GOPATH \\\n/go\n\n\n\n# Install\n' +
      'RUN apt-get update \\\n\t&& x \\\n\n\n    && y \\\n    # comment\n    && z\n\n\n';
    const result = parseDockerfile(text);
    assert.deepEqual(result.instructions.map((n) => [n.startLine, n.endLine]), [[5, 5], [11, 12], [17, 23]]);
    assert.equal(result.instructions[2]!.args[0], 'apt-get update \t&& x     && y     && z');
  });

  it('warns about empty continuation lines', () => {
    const result = parseDockerfile('FROM x\nRUN something \\\n\n    following \\\n\n    more\nRUN a \\\n# c\n  b\n');
    assert.deepEqual(result.warnings, [{ line: 6, message: 'Empty continuation line found in: RUN something     following     more' }]);
  });

  it('handles a continuation at end of file and lone escape lines', () => {
    assert.deepEqual(only('RUN a \\').args, ['a']);
    assert.deepEqual(only('RUN a \\\n').args, ['a']);
    assert.deepEqual(only('\\\nFROM x\n').args, ['x']);
    // An escaped escape at the end does not continue the line.
    assert.equal(parseDockerfile('ENV A b\\\\\nENV C d\n').instructions.length, 2);
  });

  it('rejects files with no instructions', () => {
    syntaxError('', 'file with no instructions', 0);
    syntaxError('# a\n\n   \n# b\n', 'file with no instructions', 0);
  });

  it('reports errors on the first line of the instruction', () => {
    syntaxError('FROM x\nENV \\\n  PATH\n', 'ENV must have two arguments', 2);
    syntaxError('FROM x\nLABEL a=b c\n', 'Syntax error - can\'t find = in "c". Must be of the form: name=value', 2);
    syntaxError('FROM x\n\nCMD ["a", 1]\n', 'when using JSON array syntax, arrays must be comprised of strings only', 3);
  });

  it('stops at a line longer than BuildKit reads', () => {
    syntaxError(`FROM x\nLABEL a=${'a'.repeat(65536)}\n`, 'dockerfile line greater than max allowed size of 65535', 2);
    assert.equal(only(`LABEL a=${'a'.repeat(65535 - 8)}\n`).args[1]!.length, 65535 - 8);
  });
});

describe('instructions', () => {
  it('extracts flags and stops at --', () => {
    const node = only('COPY --from=build --chown="a b" --link -- --not-a-flag /dst\n');
    assert.deepEqual(node.flags, ['--from=build', '--chown=a b', '--link']);
    assert.deepEqual(node.args, ['--not-a-flag', '/dst']);
    assert.deepEqual(only('RUN --mount=type=cache,target=/x\\ y echo\n').flags, ['--mount=type=cache,target=/x y']);
    assert.deepEqual(only('COPY -- a b\n').flags, []);
    assert.deepEqual(only('RUN -x --y\n').args, ['-x --y']);
  });

  it('nests ONBUILD triggers and rejects forbidden ones', () => {
    const node = only('ONBUILD  RUN --network=none ["echo", "x"]\n');
    assert.equal(node.keyword, 'onbuild');
    assert.deepEqual(node.args, []);
    assert.deepEqual(node.onbuild && { k: node.onbuild.keyword, f: node.onbuild.flags, a: node.onbuild.args, j: node.onbuild.json },
      { k: 'run', f: ['--network=none'], a: ['echo', 'x'], j: true });
    assert.equal(dumpParse(parseDockerfile('ONBUILD --x RUN --y a\n')), '(onbuild ["--x"] (run ["--y"] "a"))\n');
    assert.equal(only('ONBUILD\n').onbuild, undefined);
    syntaxError('FROM x\nONBUILD ONBUILD RUN a\n', "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", 2);
    syntaxError('ONBUILD from x\n', "FROM isn't allowed as an ONBUILD trigger", 1);
    syntaxError('ONBUILD Maintainer me\n', "MAINTAINER isn't allowed as an ONBUILD trigger", 1);
  });

  it('keeps unknown instructions with an empty argument', () => {
    const node = only('FOO bar baz\n');
    assert.equal(node.keyword, 'foo');
    assert.deepEqual(node.args, ['']);
    assert.equal(dumpParse(parseDockerfile('FOO bar\n')), '(foo "")\n');
  });

  it('splits HEALTHCHECK into type and command', () => {
    assert.deepEqual(only('HEALTHCHECK NONE\n').args, ['NONE']);
    const cmd = only('HEALTHCHECK --interval=5s CMD ["curl", "-f", "x"]\n');
    assert.deepEqual([cmd.flags, cmd.args, cmd.json], [['--interval=5s'], ['CMD', 'curl', '-f', 'x'], true]);
  });

  it('reads ENV and ARG words as BuildKit does', () => {
    assert.deepEqual(only('ENV a="b c" d=e\\ f g=\n').args, ['a', '"b c"', '=', 'd', 'e\\ f', '=', 'g', '', '=']);
    assert.deepEqual(only('ENV a  b  c\n').args, ['a', 'b  c', '']);
    assert.deepEqual(only("ARG a='x y' b\n").args, ["a='x y'", 'b']);
  });

  it('falls back to shell form for text Go cannot decode as JSON', () => {
    assert.deepEqual(only('CMD [1e400]\n').args, ['[1e400]']);
    assert.equal(only('CMD ["\\ud800"]\n').args[0], '\ufffd');
    syntaxError('CMD [null]\n', /strings only/);
  });
});

describe('Go quoting', () => {
  it('quotes like strconv.Quote', () => {
    assert.equal(goQuote('a"b\\c'), '"a\\"b\\\\c"');
    assert.equal(goQuote('\x07\b\f\n\r\t\v'), '"\\a\\b\\f\\n\\r\\t\\v"');
    assert.equal(goQuote('\x00\x01\x1f\x7f'), '"\\x00\\x01\\x1f\\x7f"');
    assert.equal(goQuote('é☃♥😀'), '"é☃♥😀"');
    assert.equal(goQuote('\u00a0\u00ad\u200b\u2028\ue000'), '"\\u00a0\\u00ad\\u200b\\u2028\\ue000"');
    assert.equal(goQuote('\u{e0001}\u{10fffd}'), '"\\U000e0001\\U0010fffd"');
  });

  it('prints bytes that are not UTF-8 as \\x escapes', () => {
    const bytes = Uint8Array.from([0x41, 0xff, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0xe2, 0x98, 0x83]);
    assert.equal(goQuote(goStringFromBytes(bytes)), '"A\\xff\\xc3(\\xed\\xa0\\x80☃"');
    const df = Buffer.concat([Buffer.from('FROM a\nRUN echo '), Buffer.from([0xfe, 0x0a])]);
    assert.equal(dumpParse(parseDockerfile(df)), '(from "a")\n(run "echo \\xfe")\n');
  });

  it('reads flags byte by byte, as BuildKit does', () => {
    assert.deepEqual(only('COPY --chown=é a b\n').flags, ['--chown=\u00c3\u00a9']);
  });
});
