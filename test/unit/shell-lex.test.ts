// Shell-word expansion: BuildKit's own expander test data, then kiln's cases for the options, the
// backtick escape, every ${...} operator, patterns, the lookup sets and the error messages.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { conformanceDir } from '../helpers/paths.js';
import { ShellExpansionError, ShellLex, envFromList } from '../../src/dockerfile/shell-lex.js';
import type { EnvLookup, ShellLexOptions } from '../../src/dockerfile/shell-lex.js';

/** The lines of a data file, without line ends (a final newline gives no extra line). */
function dataLines(name: string): string[] {
  const lines = readFileSync(join(conformanceDir, name), 'utf8').split('\n');
  if (lines.at(-1) === '') lines.pop();
  return lines.map((line) => line.replace(/\r$/, ''));
}

function expectExpansionError(run: () => unknown, message?: string | RegExp): void {
  assert.throws(run, (err: unknown) => {
    assert.ok(err instanceof ShellExpansionError, `expected ShellExpansionError, got ${String(err)}`);
    if (typeof message === 'string') assert.equal(err.message, message);
    else if (message) assert.match(err.message, message);
    return true;
  });
}

describe('BuildKit envVarTest (processWord)', () => {
  const env = envFromList(['PWD=/home', 'SHELL=bash', 'KOREAN=한국어', 'NULL=']);
  const lex = new ShellLex('\\');
  dataLines('envVarTest').forEach((line, index) => {
    const lineNo = index + 1;
    if (line.startsWith('#') || line.trim() === '') return;
    const fields = line.trim().split('|');
    if (fields.length !== 3) {
      test(`envVarTest:${lineNo} is well formed`, () => assert.fail(`expected 3 fields in ${JSON.stringify(line)}`));
      return;
    }
    const [platform, input, expected] = fields.map((field) => field.trim()) as [string, string, string];
    if (platform === 'W') return;
    test(`envVarTest:${lineNo} ${platform} ${JSON.stringify(input)} -> ${JSON.stringify(expected)}`, () => {
      assert.ok(platform === 'A' || platform === 'U', `unknown platform ${platform}`);
      if (expected === 'error') {
        expectExpansionError(() => lex.processWord(input, env));
      } else {
        assert.equal(lex.processWord(input, env), expected, `envVarTest line ${lineNo}: ${input}`);
      }
    });
  });
});

describe('BuildKit wordsTest (processWords)', () => {
  const lex = new ShellLex('\\');
  const envList: string[] = [];
  dataLines('wordsTest').forEach((line, index) => {
    const lineNo = index + 1;
    if (line.startsWith('#') || line === '') return;
    if (line.startsWith('ENV ')) {
      envList.push(line.slice(3).replace(/^ +/, ''));
      return;
    }
    const parts = line.split('|');
    if (parts.length !== 2) {
      test(`wordsTest:${lineNo} is well formed`, () => assert.fail(`expected exactly one | in ${JSON.stringify(line)}`));
      return;
    }
    const input = (parts[0] ?? '').trim();
    const expected = (parts[1] ?? '').replace(/^ +/, '').split(',');
    const env = envFromList([...envList]);
    test(`wordsTest:${lineNo} ${JSON.stringify(input)} -> ${JSON.stringify(expected)}`, () => {
      if (expected.length === 1 && expected[0] === 'error') {
        expectExpansionError(() => lex.processWords(input, env));
      } else {
        assert.deepEqual(lex.processWords(input, env), expected, `wordsTest line ${lineNo}: ${input}`);
      }
    });
  });
});

const word = (input: string, env: EnvLookup, options?: ShellLexOptions): string =>
  new ShellLex('\\', options).processWord(input, env);
const words = (input: string, env: EnvLookup, options?: ShellLexOptions): string[] =>
  new ShellLex('\\', options).processWords(input, env);

describe('operators', () => {
  // S set, E set but empty, U unset.
  const env = envFromList(['S=val', 'E=']);
  const cases: [string, string, string, string][] = [
    // input (V replaced by S, E, U), result for S, for E, for U
    ['$V', 'val', '', ''],
    ['${V}', 'val', '', ''],
    ['${V:-w}', 'val', 'w', 'w'],
    ['${V-w}', 'val', '', 'w'],
    ['${V:+w}', 'w', '', ''],
    ['${V+w}', 'w', 'w', ''],
    ['${V?m}', 'val', '', 'error'],
    ['${V:?m}', 'val', 'error', 'error'],
    ['${V#v}', 'al', '', ''],
    ['${V##*}', '', '', ''],
    ['${V%l}', 'va', '', ''],
    ['${V%%*}', '', '', ''],
    ['${V/a/A}', 'vAl', '', ''],
    ['${V//?/x}', 'xxx', '', ''],
    ['${V//*/x}', 'x', 'x', 'x'],
    ['${V/#/x}', 'val', '', ''],
  ];
  for (const [template, onSet, onEmpty, onUnset] of cases) {
    for (const [name, expected] of [
      ['S', onSet],
      ['E', onEmpty],
      ['U', onUnset],
    ] as const) {
      const input = template.replace('V', name);
      test(`${input} -> ${expected}`, () => {
        if (expected === 'error') expectExpansionError(() => word(input, env), /: m$/);
        else assert.equal(word(input, env), expected);
      });
    }
  }

  test('the word is expanded, quoted and escaped like the rest', () => {
    const env2 = envFromList(['A=a', 'B=b c']);
    assert.equal(word('${X:-$A-${B}}', env2), 'a-b c');
    assert.equal(word('${X:-${Y:-${A:+[$A]}}}', env2), '[a]');
    assert.equal(word(`\${X:-'$A'"$A"\\$A\\}}`, env2), '$Aa$A}');
    assert.equal(word('${A:+x}}', env2), 'x}');
    assert.deepEqual(words('${X:-"$B" $B}', env2), ['b', 'c', 'b', 'c']);
  });

  test('? messages: the word, else a default', () => {
    const env2 = envFromList(['E=', 'ARG=x']);
    expectExpansionError(() => word('${U?}', env2), 'failed to process "${U?}": U: is not allowed to be unset');
    expectExpansionError(() => word('${E:?}', env2), 'failed to process "${E:?}": E: is not allowed to be empty');
    expectExpansionError(() => word('${U:?}', env2), 'failed to process "${U:?}": U: is not allowed to be unset');
    expectExpansionError(() => word('${E:?message here$ARG}', env2), /E: message herex$/);
    assert.equal(word('${E?message}', env2), '');
  });

  test('positional and special parameters are looked up but never set', () => {
    const env2 = envFromList([]);
    assert.equal(word('$1x $@@ ${#:-n} ${0}y $999 $$ $-', env2), 'x @ n y   ');
    const found = new ShellLex().processWordWithMatches('$12a $? ${!}', env2);
    assert.deepEqual([...found.unmatched].sort(), ['!', '12', '?']);
  });

  test('$ before a non-name character stays', () => {
    assert.equal(word('$ $. $/ a$ $"x" $', envFromList([])), '$ $. $/ a$ $x $');
  });

  test('names: letters, digits and _ in any script', () => {
    const env2 = envFromList(['a_1=x', 'ÄÖ=y', 'a=z']);
    assert.equal(word('$a_1.$ÄÖ-$a-b', env2), 'x.y-z-b');
  });
});

describe('patterns', () => {
  const env = envFromList(['P=/usr/local/lib.tar.gz', 'B=[a-z]x', 'L=abc', 'NL=a\nb', 'STAR=a**b', 'Q=x?y']);
  const cases: [string, string][] = [
    ['${P#*/}', 'usr/local/lib.tar.gz'],
    ['${P##*/}', 'lib.tar.gz'],
    ['${P%.*}', '/usr/local/lib.tar'],
    ['${P%%.*}', '/usr/local/lib'],
    ['${P#/???/}', 'local/lib.tar.gz'],
    ['${P%.??}', '/usr/local/lib.tar'],
    ['${P#nomatch}', '/usr/local/lib.tar.gz'],
    ['${P#}', '/usr/local/lib.tar.gz'],
    ['${P/lib/LIB}', '/usr/local/LIB.tar.gz'],
    ['${P//l/L}', '/usr/LocaL/Lib.tar.gz'],
    ['${P//\\//:}', ':usr:local:lib.tar.gz'],
    ['${P/*./}', 'gz'],
    // Brackets are not special: [a-z] is matched literally, as BuildKit does.
    ['${B#[a-z]}', 'x'],
    ['${L#[a-z]}', 'abc'],
    ['${L/[abc]/X}', 'abc'],
    ['${B//[a-z]/X}', 'Xx'],
    // Escapes make * ? \ literal; \} keeps the brace in the pattern.
    ['${STAR#a\\*}', '*b'],
    ['${STAR%%\\**}', 'a'],
    ['${STAR%\\**}', 'a*'],
    ['${Q/\\?/!}', 'x!y'],
    ['${Q/?/!}', '!?y'],
    // Wildcards do not cross a newline.
    ['${NL#*b}', 'a\nb'],
    ['${NL/?/X}', 'X\nb'],
    // The word is expanded before it is used as a pattern.
    ['${P#$X/usr}', '/local/lib.tar.gz'],
    // Replace-all: an empty match right after a match is not replaced again; $0 is the match.
    ['${L//*/X}', 'X'],
    ["${L//?/'<$0>'}", '<a><b><c>'],
    ["${L//b/'$$'}", 'a$c'],
    ["${L//b/'$1$x'}", 'ac'],
    ["${L/b/'$0'}", 'a$0c'],
  ];
  for (const [input, expected] of cases) {
    test(`${JSON.stringify(input)} -> ${JSON.stringify(expected)}`, () => {
      assert.equal(word(input, env), expected);
    });
  }

  test('bad patterns', () => {
    expectExpansionError(() => word('${L#a\\x}', env), 'failed to process "${L#a\\\\x}": invalid pattern (a\\x) in substitution: invalid escape \'\\x\'');
    // Suffix patterns are matched reversed, and reported reversed.
    expectExpansionError(() => word('${L%a\\x}', env), /invalid pattern \(\\xa\) in substitution: invalid escape '\\x'$/);
    expectExpansionError(() => word('${L/\\x/y}', env), /invalid pattern \(\\x\) in substitution/);
  });
});

describe('quotes and escapes', () => {
  const env = envFromList(['A=1 2']);
  test('backslash', () => {
    assert.equal(word('a\\ b\\$A\\\\', env), 'a b$A\\');
    assert.equal(word('"\\a\\"\\$A\\\\"', env), '\\a"$A\\');
    assert.deepEqual(words('a\\ b c\\', env), ['a b', 'c']);
  });

  test('backtick escape token', () => {
    const lex = new ShellLex('`');
    const env2 = envFromList(['PWD=/home']);
    assert.equal(lex.processWord('C:\\dir\\$PWD', env2), 'C:\\dir\\/home');
    assert.equal(lex.processWord('he`$PWD``', env2), 'he$PWD`');
    assert.equal(lex.processWord('"a`"b`$PWD``c\\d`x"', env2), 'a"b$PWD`c\\d`x');
    assert.equal(lex.processWord('"\\"', env2), '\\');
    assert.equal(lex.processWord('${X:-`}}', env2), '}');
    assert.equal(lex.processWord('end`', env2), 'end');
    assert.deepEqual(lex.processWords('a` b c', env2), ['a b', 'c']);
  });

  test('quotes keep white space in one word', () => {
    assert.deepEqual(words(`x"$A"y '$A' $A ""`, env), ['x1 2y', '$A', '1', '2']);
  });

  test('<< and the blanks after it stay with the delimiter', () => {
    assert.deepEqual(words('cat <<  EOF > out <in', env), ['cat', '<<  EOF', '>', 'out', '<in']);
    assert.equal(word('a << b', env), 'a << b');
  });

  test('a leading byte-order mark is dropped', () => {
    assert.equal(word('\uFEFFa\uFEFF', env), 'a\uFEFF');
  });
});

describe('options', () => {
  const env = envFromList(['A=1 2', 'E=']);
  test('rawQuotes keeps the quote characters', () => {
    assert.equal(word(`'a b'"c$A"d`, env, { rawQuotes: true }), `'a b'"c1 2"d`);
    assert.deepEqual(words(`x 'a b' "$A"`, env, { rawQuotes: true }), ['x', "'a b'", '"1 2"']);
  });

  test('rawEscapes keeps the escape characters', () => {
    assert.equal(word('a\\ b\\$A', env, { rawEscapes: true }), 'a\\ b\\$A');
    assert.deepEqual(words('a\\ b', env, { rawEscapes: true }), ['a\\ b']);
    assert.equal(word('"\\$A"', env, { rawEscapes: true }), '\\$A');
    // BuildKit writes an escape that protects nothing twice inside double quotes.
    assert.equal(word('"\\t"', env, { rawEscapes: true }), '\\\\t');
    // Words of -, +, ? are read without it.
    assert.equal(word('${X:-a\\b}', env, { rawEscapes: true }), 'ab');
  });

  test('skipProcessQuotes treats quotes as plain characters', () => {
    assert.equal(word(`'$A' "x"`, env, { skipProcessQuotes: true }), `'1 2' "x"`);
    assert.deepEqual(words(`"a b"`, env, { skipProcessQuotes: true }), ['"a', 'b"']);
    assert.equal(word(`it's`, env, { skipProcessQuotes: true }), `it's`);
  });

  test('skipUnsetEnv leaves unset references as written', () => {
    const options = { skipUnsetEnv: true };
    assert.equal(word('$U ${U} $1 ${E} $A', env, options), '$U ${U} $1  1 2');
    assert.equal(word('${U:-d} ${U+x} ${U:?m} ${U#*} ${U%%a}', env, options), '${U:-d} ${U+x} ${U:?m} ${U#*} ${U%%a}');
    // The word is written back expanded, and '//' comes back as a single '/'.
    assert.equal(word('${U:-$A} ${U//a/b}', env, options), '${U:-1 2} ${U/a/b}');
    // Unknown operators after ':' are only rejected for set variables.
    assert.equal(word('${U:=x}', env, options), '${U:=x}');
    expectExpansionError(() => word('${A:=x}', env, options), /unsupported modifier \(:=\) in substitution$/);
    assert.equal(word('${E:-d}', env, options), 'd');
  });

  test('options combine', () => {
    assert.equal(word(`'$U' \\$U $U`, env, { rawQuotes: true, rawEscapes: true, skipUnsetEnv: true }), `'$U' \\$U $U`);
  });
});

describe('matched and unmatched', () => {
  const lex = new ShellLex();
  const check = (input: string, list: string[], result: string, matched: string[], unmatched: string[]): void => {
    const found = lex.processWordWithMatches(input, envFromList(list));
    assert.equal(found.result, result);
    assert.deepEqual([...found.matched].sort(), matched);
    assert.deepEqual([...found.unmatched].sort(), unmatched);
  };
  test('plain references', () => {
    check('x', ['DUMMY=dummy'], 'x', [], []);
    check('x ${UNUSED}', ['DUMMY=dummy'], 'x ', [], ['UNUSED']);
    check('x ${FOO} $FOO', ['FOO=y'], 'x y y', ['FOO'], []);
  });
  test('operators look up their variable and the ones in their word', () => {
    check('${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}', ['FOO=xxx', 'BAR='], 'xxx  ccc', ['BAR', 'FOO'], ['BAZ']);
    check('${FOO:+$A} ${BAR:-$B}', ['FOO=1', 'A=a'], 'a ', ['A', 'FOO'], ['B', 'BAR']);
    check('${FOO#$BAR}', ['FOO=xxyy', 'BAR=x'], 'xyy', ['BAR', 'FOO'], []);
    check('${FOO/$N/$R}', ['FOO=a/b', 'N=/', 'R=-'], 'a-b', ['FOO', 'N', 'R'], []);
    check(
      'v-${VERSION}.${OS}${VARIANT:+-${VARIANT}}.tgz',
      ['VERSION=1', 'OS=linux', 'VARIANT='],
      'v-1.linux.tgz',
      ['OS', 'VARIANT', 'VERSION'],
      [],
    );
  });
  test('words come along', () => {
    const found = lex.processWordWithMatches('a "b c" $X', envFromList(['X=d e']));
    assert.equal(found.result, 'a b c d e');
    assert.deepEqual(found.words, ['a', 'b c', 'd', 'e']);
  });
});

describe('splitting quirk kept from BuildKit', () => {
  test('text before a ${name<op>word} in the same word is lost from the split only', () => {
    const env = envFromList(['A=1']);
    assert.deepEqual(words('a${X:-b} c', env), ['b', 'c']);
    assert.deepEqual(words('a"${X:-b}"', env), ['b']);
    assert.equal(word('a${X:-b}', env), 'ab');
    assert.deepEqual(words('a${A}b $A${X#y}', env), ['a1b']);
  });
});

describe('errors', () => {
  const env = envFromList(['A=a']);
  const cases: [string, string][] = [
    ["it's", 'unexpected end of statement while looking for matching single-quote'],
    ['"abc', 'unexpected end of statement while looking for matching double-quote'],
    ['"abc\\"', 'unexpected end of statement while looking for matching double-quote'],
    ['${', "syntax error: missing '}'"],
    ['${A', 'unsupported modifier (\uFFFD) in substitution'],
    ['${A:-x', "syntax error: missing '}'"],
    ['${A:-"x}', "syntax error: missing '}'"],
    ['${A/x', "syntax error: missing '/' in ${}"],
    ['${A//x/y', "syntax error: missing '}'"],
    ['${}', 'syntax error: bad substitution'],
    ['${{A}', 'syntax error: bad substitution'],
    ['${:-x}', 'syntax error: bad substitution'],
    ['${.}', 'unsupported modifier (.) in substitution'],
    ['${A=x}', 'unsupported modifier (=) in substitution'],
    ['${A:=x}', 'unsupported modifier (:=) in substitution'],
    ['${A:x}', 'unsupported modifier (:x) in substitution'],
    ['${A:#x}', 'unsupported modifier (:#) in substitution'],
    ['${A:%%x}', 'unsupported modifier (:%) in substitution'],
    ['${#A}', 'unsupported modifier (A) in substitution'],
    ['${A:-${B:?gone}}', 'B: gone'],
  ];
  for (const [input, reason] of cases) {
    test(`${JSON.stringify(input)}: ${reason}`, () => {
      const message = `failed to process ${JSON.stringify(input)}: ${reason}`;
      expectExpansionError(() => word(input, env), message);
      expectExpansionError(() => words(input, env), message);
    });
  }
  test('the word is Go-quoted in the message', () => {
    expectExpansionError(() => word('"tab\there\x01é', env), 'failed to process "\\"tab\\there\\x01é": unexpected end of statement while looking for matching double-quote');
  });
});

describe('envFromList', () => {
  test('later entries win, no = means empty, names are case-sensitive', () => {
    const env = envFromList(['A=1', 'A=2', 'B', 'c=x=y', 'C=3']);
    assert.equal(env('A'), '2');
    assert.equal(env('B'), '');
    assert.equal(env('c'), 'x=y');
    assert.equal(env('C'), '3');
    assert.equal(env('a'), undefined);
  });
});
