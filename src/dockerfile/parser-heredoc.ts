// Finding here-document words (`<<EOF`, `<<-'EOF'`, `3<<EOF`) on a RUN/COPY/ADD line, as BuildKit
// does: the line is split into shell words with no variables set (unset ones are kept as written),
// and each word of the form `[fd]<<[-]word` names a heredoc. Its body is read by parser.ts.
import { goQuote, isGoSpace } from './dump.js';
import { ParseFailure } from './parser-line-parsers.js';

/** A heredoc found on an instruction line; `content` is filled in from the lines that follow. */
export interface HeredocHead {
  name: string;
  expand: boolean;
  chomp: boolean;
  fileDescriptor: number;
}

class ShellLexError extends Error {}

const EOF = -1;
const BACKSLASH = 0x5c;
const isLetter = /^\p{L}$/u;
const isDecimalDigit = /^\p{Nd}$/u;

const runeString = (cp: number): string => (cp < 0 ? '\ufffd' : String.fromCodePoint(cp));
const letter = (cp: number): boolean => cp >= 0 && isLetter.test(String.fromCodePoint(cp));
const digit = (cp: number): boolean => cp >= 0 && isDecimalDigit.test(String.fromCodePoint(cp));

/** Collects words; the buffer object is shared by every collector of one lexer, as in BuildKit. */
class WordCollector {
  readonly words: string[] = [];
  private inWord = false;
  constructor(private readonly buffer: { text: string }) {}

  addChar(cp: number): void {
    if (isGoSpace(cp) && this.inWord) {
      if (this.buffer.text !== '') {
        this.words.push(this.buffer.text);
        this.buffer.text = '';
        this.inWord = false;
      }
    } else if (!isGoSpace(cp)) {
      this.addRawChar(cp);
    }
  }

  addRawChar(cp: number): void {
    this.buffer.text += runeString(cp);
    this.inWord = true;
  }

  addString(s: string): void {
    for (const ch of s) this.addChar(ch.codePointAt(0)!);
  }

  addRawString(s: string): void {
    this.buffer.text += s;
    this.inWord = true;
  }

  finish(): string[] {
    if (this.buffer.text !== '') {
      this.words.push(this.buffer.text);
      this.buffer.text = '';
      this.inWord = false;
    }
    return this.words;
  }
}

/**
 * BuildKit's shell word splitter restricted to what heredoc detection uses: escape token `\`,
 * an empty environment and unset variables left as written. `rawQuotes` keeps quote characters in
 * the words, `rawEscapes` keeps escape characters.
 */
class HeredocWordLexer {
  private readonly runes: number[] = [];
  private pos = 0;
  // Nested ${...} words reset this shared buffer, dropping a partly built outer word (BuildKit does).
  private readonly sharedBuffer = { text: '' };
  private rawEscapes: boolean;

  constructor(
    private readonly source: string,
    private readonly rawQuotes: boolean,
    rawEscapes: boolean,
  ) {
    this.rawEscapes = rawEscapes;
    for (const ch of source) {
      const cp = ch.codePointAt(0)!;
      this.runes.push(cp >= 0xd800 && cp <= 0xdfff ? 0xfffd : cp);
    }
    // Go's text/scanner skips a byte order mark at the very start.
    if (this.runes[0] === 0xfeff) this.pos = 1;
  }

  words(): string[] {
    try {
      return this.processStopOn(EOF, this.rawEscapes)[1];
    } catch (e) {
      if (e instanceof ShellLexError) throw new ShellLexError(`failed to process ${goQuote(this.source)}: ${e.message}`);
      throw e;
    }
  }

  private peek(): number {
    return this.pos < this.runes.length ? this.runes[this.pos]! : EOF;
  }

  private next(): number {
    const cp = this.peek();
    if (cp !== EOF) this.pos++;
    return cp;
  }

  private processStopOn(stop: number, rawEscapes: boolean): [string, string[]] {
    let result = '';
    this.sharedBuffer.text = '';
    const words = new WordCollector(this.sharedBuffer);
    const saved = this.rawEscapes;
    this.rawEscapes = rawEscapes;
    try {
      while (this.peek() !== EOF) {
        let cp = this.peek();
        if (stop !== EOF && cp === stop) {
          this.next();
          return [result, words.finish()];
        }
        const special = this.special(cp);
        if (special) {
          const text = special();
          result += text;
          if (cp === 0x24) words.addString(text);
          else words.addRawString(text);
          continue;
        }
        cp = this.next();
        if (cp === BACKSLASH) {
          if (this.rawEscapes) {
            words.addRawChar(cp);
            result += runeString(cp);
          }
          cp = this.next();
          if (cp === EOF) break;
          words.addRawChar(cp);
        } else {
          words.addChar(cp);
        }
        result += runeString(cp);
      }
      if (stop !== EOF) throw new ShellLexError(`unexpected end of statement while looking for matching ${runeString(stop)}`);
      return [result, words.finish()];
    } finally {
      this.rawEscapes = saved;
    }
  }

  private special(cp: number): (() => string) | undefined {
    switch (cp) {
      case 0x24: return () => this.processDollar();
      case 0x3c: return () => this.processPossibleHeredoc();
      case 0x27: return () => this.processSingleQuote();
      case 0x22: return () => this.processDoubleQuote();
      default: return undefined;
    }
  }

  private processSingleQuote(): string {
    let result = '';
    const open = this.next();
    if (this.rawQuotes) result += runeString(open);
    for (;;) {
      const cp = this.next();
      if (cp === EOF) throw new ShellLexError('unexpected end of statement while looking for matching single-quote');
      if (cp === 0x27) {
        if (this.rawQuotes) result += runeString(cp);
        return result;
      }
      result += runeString(cp);
    }
  }

  private processDoubleQuote(): string {
    let result = '';
    const open = this.next();
    if (this.rawQuotes) result += runeString(open);
    for (;;) {
      const peeked = this.peek();
      if (peeked === EOF) throw new ShellLexError('unexpected end of statement while looking for matching double-quote');
      if (peeked === 0x22) {
        this.next();
        if (this.rawQuotes) result += '"';
        return result;
      }
      if (peeked === 0x24) {
        result += this.processDollar();
        continue;
      }
      let cp = this.next();
      if (cp === BACKSLASH) {
        if (this.rawEscapes) result += '\\';
        const after = this.peek();
        if (after === EOF) continue;
        // Only ", $ and the escape itself can be escaped; other escapes stay.
        if (after === 0x22 || after === 0x24 || after === BACKSLASH) cp = this.next();
      }
      result += runeString(cp);
    }
  }

  /** With no variable set, every reference comes back as written (nested words processed). */
  private processDollar(): string {
    this.next();
    if (this.peek() !== 0x7b) {
      const name = this.processName();
      return name === '' ? '$' : '$' + name;
    }
    this.next();
    const first = this.peek();
    if (first === EOF) throw new ShellLexError("syntax error: missing '}'");
    if (first === 0x7b || first === 0x7d || first === 0x3a) throw new ShellLexError('syntax error: bad substitution');
    const name = this.processName();
    let cp = this.next();
    let modifier = runeString(cp);
    let nullIsUnset = false;
    if (cp === 0x7d) return `\${${name}}`;
    if (cp === 0x3a) {
      nullIsUnset = true;
      cp = this.next();
      modifier += runeString(cp);
    }
    if (nullIsUnset || cp === 0x2b || cp === 0x2d || cp === 0x3f || cp === 0x23 || cp === 0x25) {
      const rawEscapes = cp === 0x23 || cp === 0x25;
      if (nullIsUnset && rawEscapes) throw new ShellLexError(`unsupported modifier (${modifier}) in substitution`);
      const word = this.nested(0x7d, rawEscapes, "syntax error: missing '}'");
      return `\${${name}${modifier}${word}}`;
    }
    if (cp === 0x2f) {
      if (this.peek() === 0x2f) this.next();
      const pattern = this.nested(0x2f, true, "syntax error: missing '/' in ${}");
      const replacement = this.nested(0x7d, true, "syntax error: missing '}'");
      return `\${${name}/${pattern}/${replacement}}`;
    }
    throw new ShellLexError(`unsupported modifier (${modifier}) in substitution`);
  }

  private nested(stop: number, rawEscapes: boolean, atEndMessage: string): string {
    try {
      return this.processStopOn(stop, rawEscapes)[0];
    } catch (e) {
      if (e instanceof ShellLexError && this.peek() === EOF) throw new ShellLexError(atEndMessage);
      throw e;
    }
  }

  private processName(): string {
    let name = '';
    while (this.peek() !== EOF) {
      const cp = this.peek();
      if (name === '' && digit(cp)) {
        while (this.peek() !== EOF && digit(this.peek())) name += runeString(this.next());
        return name;
      }
      if (name === '' && '@*#?-$!0'.includes(runeString(cp))) {
        this.next();
        return runeString(cp);
      }
      if (!letter(cp) && !digit(cp) && cp !== 0x5f) break;
      name += runeString(this.next());
    }
    return name;
  }

  private processPossibleHeredoc(): string {
    this.next();
    if (this.peek() !== 0x3c) return '<';
    this.next();
    let space = '';
    for (let cp = this.peek(); cp === 0x09 || cp === 0x0d || cp === 0x20; cp = this.peek()) {
      space += runeString(cp);
      this.next();
    }
    return '<<' + space;
  }
}

const heredocWord = /^([0-9]*)<<(-?)[\t\n\f\r ]*([^<]*)$/;
const MAX_UINT64 = (1n << 64n) - 1n;

/** The heredoc a single word names, or undefined when it names none; throws on a malformed delimiter. */
export function parseHeredocWord(word: string): HeredocHead | undefined {
  const match = heredocWord.exec(word);
  if (!match) return undefined;
  const [, digits = '', dash, rest = ''] = match;
  if (rest === '') return undefined;
  try {
    const plain = new HeredocWordLexer(rest, false, false).words();
    if (plain.length !== 1) return undefined;
    const raw = new HeredocWordLexer(rest, true, false).words();
    if (raw.length !== plain.length) {
      throw new ParseFailure(`internal lexing of heredoc produced inconsistent results: ${rest}`);
    }
    // A quote that lexing removed means part of the delimiter was quoted: the body is literal.
    const quotes = (s: string) => s.replace(/[^'"]/g, '').length;
    return {
      name: plain[0]!,
      expand: quotes(plain[0]!) === quotes(raw[0]!),
      chomp: dash === '-',
      // Go's ParseUint: empty gives 0, out of range gives the largest uint64.
      fileDescriptor: digits === '' ? 0 : Number(BigInt(digits) > MAX_UINT64 ? MAX_UINT64 : BigInt(digits)),
    };
  } catch (e) {
    if (e instanceof ShellLexError) throw new ParseFailure(e.message);
    throw e;
  }
}

/** The heredocs named on an instruction line, in order. A line that does not lex names none. */
export function heredocsFromLine(line: string): HeredocHead[] {
  let words: string[];
  try {
    words = new HeredocWordLexer(line, true, true).words();
  } catch (e) {
    if (!(e instanceof ShellLexError)) throw e;
    words = [];
  }
  const heads: HeredocHead[] = [];
  for (const word of words) {
    const head = parseHeredocWord(word);
    if (head) heads.push(head);
  }
  return heads;
}

/** Strips the leading tabs of every line (`<<-`). */
export function chompHeredocContent(content: string): string {
  return content.split('\n').map((l) => l.replace(/^\t+/, '')).join('\n');
}
