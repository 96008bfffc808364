// How each instruction's arguments are split, as BuildKit's dispatch table does it (line_parsers.go,
// split_command.go). Nothing is expanded here; quotes and escapes stay in the words.
import { goQuote, goStringBytes, goStringFromBytes, goTrimLeftSpace, goTrimSpace, isGoSpace } from './dump.js';

/** A parse failure whose line the caller knows; parser.ts turns it into a DockerfileSyntaxError. */
export class ParseFailure extends Error {}

export interface ParsedArgs {
  args: string[];
  json: boolean;
}

const noArgs = (): ParsedArgs => ({ args: [], json: false });

/** Go's `regexp.MustCompile("[\t\v\f\r ]+")`, the separator of whitespace-split arguments. */
const whitespaceRun = /[\t\v\f\r ]+/g;

/** Go's `Regexp.Split(s, n)` for the whitespace pattern (n < 0: no limit). */
export function splitWhitespace(s: string, n: number): string[] {
  if (s === '') return [''];
  const out: string[] = [];
  let begin = 0;
  let lastMatchStart = 0;
  whitespaceRun.lastIndex = 0;
  for (let m = whitespaceRun.exec(s); m !== null; m = whitespaceRun.exec(s)) {
    if (n > 0 && out.length === n - 1) break;
    lastMatchStart = m.index;
    out.push(s.slice(begin, m.index));
    begin = m.index + m[0].length;
  }
  if (lastMatchStart !== s.length) out.push(s.slice(begin));
  return out;
}

/** The rune at `i` and its width in UTF-16 units; a lone surrogate reads as U+FFFD, as invalid UTF-8 does in Go. */
export function runeAt(s: string, i: number): [number, number] {
  const cp = s.codePointAt(i)!;
  if (cp >= 0x10000) return [cp, 2];
  if (cp >= 0xd800 && cp <= 0xdfff) return [0xfffd, 1];
  return [cp, 1];
}

const IN_SPACES = 0;
const IN_WORD = 1;
const IN_QUOTE = 2;
const SINGLE_QUOTE = 0x27;
const DOUBLE_QUOTE = 0x22;

/**
 * Splits on unquoted white space, keeping quotes and escapes in the words (they are processed
 * later, at expansion). An escape token at the very end is dropped.
 */
export function parseWords(rest: string, escape: number): string[] {
  const words: string[] = [];
  let phase = IN_SPACES;
  let quote = 0;
  let blankOK = false;
  let word = '';
  let cp = 0;
  let width = 0;
  for (let pos = 0; pos <= rest.length; pos += width) {
    if (pos !== rest.length) [cp, width] = runeAt(rest, pos);
    if (phase === IN_SPACES) {
      if (pos === rest.length) break;
      if (isGoSpace(cp)) continue;
      phase = IN_WORD;
    }
    if (pos === rest.length) {
      if (blankOK || word !== '') words.push(word);
      break;
    }
    if (phase === IN_WORD) {
      if (isGoSpace(cp)) {
        phase = IN_SPACES;
        if (blankOK || word !== '') words.push(word);
        word = '';
        blankOK = false;
        continue;
      }
      if (cp === SINGLE_QUOTE || cp === DOUBLE_QUOTE) {
        quote = cp;
        blankOK = true;
        phase = IN_QUOTE;
      }
      if (cp === escape) {
        if (pos + width === rest.length) continue;
        // Unquoted, the escape and the character after it are both kept, even a quote.
        word += String.fromCodePoint(cp);
        pos += width;
        [cp, width] = runeAt(rest, pos);
      }
      word += String.fromCodePoint(cp);
      continue;
    }
    if (cp === quote) phase = IN_WORD;
    // Inside single quotes nothing can be escaped.
    if (cp === escape && quote !== SINGLE_QUOTE) {
      if (pos + width === rest.length) {
        phase = IN_WORD;
        continue;
      }
      pos += width;
      word += String.fromCodePoint(cp);
      [cp, width] = runeAt(rest, pos);
    }
    word += String.fromCodePoint(cp);
  }
  return words;
}

/**
 * ENV and LABEL: `KEY name value` (old form, the rest of the line is the value) when the first word
 * has no `=`, else `name=value ...`. Produces triples key, value, separator.
 */
export function parseNameVal(rest: string, keyword: 'ENV' | 'LABEL', escape: number): ParsedArgs {
  const words = parseWords(rest, escape);
  if (words.length === 0) return noArgs();
  if (!words[0]!.includes('=')) {
    const parts = splitWhitespace(rest, 2);
    if (parts.length < 2) throw new ParseFailure(`${keyword} must have two arguments`);
    return { args: [parts[0]!, parts[1]!, ''], json: false };
  }
  const args: string[] = [];
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq < 0) {
      throw new ParseFailure(`Syntax error - can't find = in ${goQuote(word)}. Must be of the form: name=value`);
    }
    args.push(word.slice(0, eq), word.slice(eq + 1), '=');
  }
  return { args, json: false };
}

/** ARG: one word per definition (`name` or `name=value`), quotes kept. */
export function parseNameOrNameVal(rest: string, escape: number): ParsedArgs {
  return { args: parseWords(rest, escape), json: false };
}

export function parseStringsWhitespaceDelimited(rest: string): ParsedArgs {
  if (rest === '') return noArgs();
  return { args: splitWhitespace(rest, -1), json: false };
}

/** The whole rest of the line as one argument. */
export function parseString(rest: string): ParsedArgs {
  return rest === '' ? noArgs() : { args: [rest], json: false };
}

/** Unknown instructions keep an empty argument (BuildKit's parser leaves rejecting them to the dispatcher). */
export function parseIgnore(): ParsedArgs {
  return { args: [''], json: false };
}

const NOT_JSON = Symbol('not a JSON array');
/** Deeper than this, Go's JSON scanner gives up (a syntax error, so the text is not exec form). */
const GO_JSON_MAX_DEPTH = 10000;
const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** Exec form: a JSON array of strings, decoded as Go's encoding/json decodes it. */
function parseJSON(rest: string): string[] | typeof NOT_JSON {
  const text = goTrimLeftSpace(rest);
  if (!text.startsWith('[')) return NOT_JSON;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return NOT_JSON;
  }
  if (!goCanHold(value)) return NOT_JSON;
  const list = value as unknown[];
  if (!list.every((v): v is string => typeof v === 'string')) {
    throw new ParseFailure('when using JSON array syntax, arrays must be comprised of strings only');
  }
  // Go decodes unpaired surrogates (escaped or raw invalid bytes) to U+FFFD.
  return list.map((s) => s.replace(loneSurrogate, '\ufffd'));
}

/** False when Go's decoder would fail where JSON.parse did not: nesting too deep, a number beyond float64. */
function goCanHold(value: unknown): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v === 'number' && !Number.isFinite(v)) return false;
    if (v === null || typeof v !== 'object') continue;
    if (depth > GO_JSON_MAX_DEPTH) return false;
    for (const child of Object.values(v)) stack.push([child, depth + 1]);
  }
  return true;
}

/** CMD, ENTRYPOINT, RUN, SHELL: exec form when it parses as a JSON string array, else one shell-form argument. */
export function parseMaybeJSON(rest: string): ParsedArgs {
  if (rest === '') return noArgs();
  const list = parseJSON(rest);
  if (list !== NOT_JSON) return { args: list, json: true };
  return { args: [rest], json: false };
}

/** ADD, COPY, VOLUME: exec form, else whitespace-split words. */
export function parseMaybeJSONToList(rest: string): ParsedArgs {
  const list = parseJSON(rest);
  if (list !== NOT_JSON) return { args: list, json: true };
  return parseStringsWhitespaceDelimited(rest);
}

/**
 * HEALTHCHECK: a type word (`NONE`, `CMD`, ...) then the command as in parseMaybeJSON. BuildKit
 * scans this byte by byte, so bytes 0x85 and 0xA0 inside multi-byte characters count as spaces.
 */
export function parseHealthConfig(rest: string): ParsedArgs {
  const bytes = goStringBytes(rest);
  let sep = 0;
  while (sep < bytes.length && !isGoSpace(bytes[sep]!)) sep++;
  let next = sep;
  while (next < bytes.length && isGoSpace(bytes[next]!)) next++;
  if (sep === 0) return noArgs();
  const type = goStringFromBytes(bytes.subarray(0, sep));
  const command = parseMaybeJSON(goStringFromBytes(bytes.subarray(next)));
  return { args: [type, ...command.args], json: command.json };
}

export interface SplitCommand {
  keyword: string;
  flags: string[];
  rest: string;
}

/** The keyword, the `--flags` before the arguments, and the trimmed rest of the line. */
export function splitCommand(line: string, escape: number): SplitCommand {
  const parts = splitWhitespace(goTrimSpace(line), 2);
  let flags: string[] = [];
  let rest = '';
  if (parts.length === 2) ({ flags, rest } = extractBuilderFlags(parts[1]!, escape));
  return { keyword: parts[0]!, flags, rest: goTrimSpace(rest) };
}

/**
 * Leading words that start with `--` are flags (quotes removed, escapes applied); a lone `--` ends
 * them. BuildKit reads this part byte by byte, so each byte of a non-ASCII character becomes its
 * own character (U+0080..U+00FF); kiln reproduces that.
 */
export function extractBuilderFlags(line: string, escape: number): { flags: string[]; rest: string } {
  const bytes = goStringBytes(line);
  const flags: string[] = [];
  const restFrom = (pos: number) => ({ flags, rest: goStringFromBytes(bytes.subarray(pos)) });
  let phase = IN_SPACES;
  let quote = 0;
  let blankOK = false;
  let word = '';
  let ch = 0;
  for (let pos = 0; pos <= bytes.length; pos++) {
    if (pos !== bytes.length) ch = bytes[pos]!;
    if (phase === IN_SPACES) {
      if (pos === bytes.length) break;
      if (isGoSpace(ch)) continue;
      if (ch !== 0x2d || pos + 1 === bytes.length || bytes[pos + 1] !== 0x2d) return restFrom(pos);
      phase = IN_WORD;
    }
    if (pos === bytes.length) {
      if (word !== '--' && (blankOK || word !== '')) flags.push(word);
      break;
    }
    if (phase === IN_WORD) {
      if (isGoSpace(ch)) {
        phase = IN_SPACES;
        if (word === '--') return restFrom(pos);
        if (blankOK || word !== '') flags.push(word);
        word = '';
        blankOK = false;
        continue;
      }
      if (ch === SINGLE_QUOTE || ch === DOUBLE_QUOTE) {
        quote = ch;
        blankOK = true;
        phase = IN_QUOTE;
        continue;
      }
      if (ch === escape) {
        if (pos + 1 === bytes.length) continue;
        pos++;
        ch = bytes[pos]!;
      }
      word += String.fromCharCode(ch);
      continue;
    }
    if (ch === quote) {
      phase = IN_WORD;
      continue;
    }
    if (ch === escape) {
      if (pos + 1 === bytes.length) {
        phase = IN_WORD;
        continue;
      }
      pos++;
      ch = bytes[pos]!;
    }
    word += String.fromCharCode(ch);
  }
  return { flags, rest: '' };
}
