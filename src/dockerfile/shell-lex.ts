// Shell-word expansion for Dockerfile arguments, matching BuildKit's frontend/dockerfile/shell lexer:
// quotes, escapes, $name / ${name} and the ${name<op>word} forms, optionally split into words.
// It is a small, fixed subset of sh: no command substitution, arithmetic, tilde or globbing.

import { PatternError, removePrefix, removeSuffix, replaceAll, replaceFirst } from './shell-lex-pattern.js';
import { Cursor, END, WordSplitter } from './shell-lex-scan.js';
import { goQuote, isGoDigit, isGoLetter } from './shell-lex-text.js';

/** Looks a variable up: undefined = not set; '' = set but empty. */
export type EnvLookup = (name: string) => string | undefined;

export interface ShellLexOptions {
  /** Keep quote characters in the output (quotes still group and protect their content). */
  rawQuotes?: boolean;
  /** Keep escape characters in the output (they still protect the character after them). */
  rawEscapes?: boolean;
  /** Treat ' and " as ordinary characters. */
  skipProcessQuotes?: boolean;
  /** Leave references to unset variables as written (`$x`, `${x}`, `${x:-w}`, ...) instead of expanding them. */
  skipUnsetEnv?: boolean;
}

export interface ExpandResult {
  /** The word expanded as one word. */
  result: string;
  /** The same expansion split on unquoted white space. */
  words: string[];
  /** Variable names that were looked up and set. */
  matched: Set<string>;
  /** Variable names that were looked up and not set. */
  unmatched: Set<string>;
}

/** A word BuildKit would refuse to expand; the message reads like BuildKit's. */
export class ShellExpansionError extends Error {
  override readonly name = 'ShellExpansionError';
}

/** Builds a lookup from `K=V` entries; later entries win, an entry without `=` sets K to ''. Case-sensitive. */
export function envFromList(list: string[]): EnvLookup {
  const values = new Map<string, string>();
  for (const entry of list) {
    const eq = entry.indexOf('=');
    if (eq < 0) values.set(entry, '');
    else values.set(entry.slice(0, eq), entry.slice(eq + 1));
  }
  return (name) => values.get(name);
}

/** Go prints a missing rune (end of input) as U+FFFD in messages. */
const shown = (ch: string): string => (ch === END ? '\uFFFD' : ch);

/** $@ $* $# $? $- $$ $! $0: one-character parameter names (never set in a Dockerfile). */
const SPECIAL_PARAMETERS = new Set(['@', '*', '#', '?', '-', '$', '!', '0']);
/** Operators that may follow `${name`, each taking a word up to `}`. */
const WORD_OPERATORS = new Set(['+', '-', '?', '#', '%']);
/** White space allowed between `<<` and a here-document delimiter. */
const HEREDOC_GAP = new Set(['\t', '\r', ' ']);

/** A failure inside one expansion; turned into a ShellExpansionError naming the whole word. */
class Failure extends Error {}

interface LexSettings {
  escapeToken: string;
  rawQuotes: boolean;
  rawEscapes: boolean;
  skipProcessQuotes: boolean;
  skipUnsetEnv: boolean;
}

/** The state of expanding one word. */
class Expansion {
  readonly matched = new Set<string>();
  readonly unmatched = new Set<string>();
  private readonly cursor: Cursor;
  /** The word being split, shared by all nesting levels (see WordSplitter). */
  private readonly pending = { text: '' };

  constructor(
    private readonly settings: LexSettings,
    text: string,
    private readonly env: EnvLookup,
  ) {
    this.cursor = new Cursor(text);
  }

  /**
   * Expands up to `stop` (consumed) or, when `stop` is END, to the end of the word.
   * `keepEscapes` keeps escape characters in the text; BuildKit sets it for patterns.
   */
  readUntil(stop: string, keepEscapes: boolean): { text: string; words: string[] } {
    const { escapeToken, skipProcessQuotes } = this.settings;
    const cursor = this.cursor;
    const splitter = new WordSplitter(this.pending);
    let text = '';
    for (;;) {
      const ch = cursor.peek();
      if (ch === END) break;
      if (stop !== END && ch === stop) {
        cursor.next();
        return { text, words: splitter.finish() };
      }
      if (ch === '$') {
        const value = this.expandDollar();
        text += value;
        splitter.addSplittable(value);
        continue;
      }
      // Quoted text and a `<<` operator are never split, whatever white space they hold.
      let unsplit: string | undefined;
      if (ch === '<') unsplit = this.readHeredocOperator();
      else if (ch === "'" && !skipProcessQuotes) unsplit = this.readSingleQuoted();
      else if (ch === '"' && !skipProcessQuotes) unsplit = this.readDoubleQuoted(keepEscapes);
      if (unsplit !== undefined) {
        text += unsplit;
        splitter.addLiteral(unsplit);
        continue;
      }
      cursor.next();
      if (ch !== escapeToken) {
        text += ch;
        splitter.addSplittable(ch);
        continue;
      }
      if (keepEscapes) {
        text += ch;
        splitter.addLiteral(ch);
      }
      const escaped = cursor.next();
      if (escaped === END) break; // a trailing escape is dropped
      text += escaped;
      splitter.addLiteral(escaped);
    }
    if (stop !== END) throw new Failure(`unexpected end of statement while looking for matching ${stop}`);
    return { text, words: splitter.finish() };
  }

  /** `<<` and the blanks after it stay glued to the delimiter word; a single `<` is plain. */
  private readHeredocOperator(): string {
    const cursor = this.cursor;
    cursor.next();
    if (cursor.peek() !== '<') return '<';
    cursor.next();
    let text = '<<';
    while (HEREDOC_GAP.has(cursor.peek())) text += cursor.next();
    return text;
  }

  /** Everything up to the next ' is literal; there is no way to escape a ' inside. */
  private readSingleQuoted(): string {
    const cursor = this.cursor;
    const open = cursor.next();
    let text = this.settings.rawQuotes ? open : '';
    for (;;) {
      const ch = cursor.next();
      if (ch === END) throw new Failure('unexpected end of statement while looking for matching single-quote');
      if (ch === "'") return this.settings.rawQuotes ? text + ch : text;
      text += ch;
    }
  }

  /** $ expands; the escape token protects only ", $ and itself, and is kept before anything else. */
  private readDoubleQuoted(keepEscapes: boolean): string {
    const { escapeToken, rawQuotes } = this.settings;
    const cursor = this.cursor;
    const open = cursor.next();
    let text = rawQuotes ? open : '';
    for (;;) {
      const ch = cursor.peek();
      if (ch === END) throw new Failure('unexpected end of statement while looking for matching double-quote');
      if (ch === '"') {
        cursor.next();
        return rawQuotes ? text + ch : text;
      }
      if (ch === '$') {
        text += this.expandDollar();
        continue;
      }
      cursor.next();
      if (ch === escapeToken) {
        if (keepEscapes) text += ch;
        const after = cursor.peek();
        // At the end the escape vanishes and the missing quote is reported on the next turn.
        if (after === END) continue;
        if (after === '"' || after === '$' || after === escapeToken) {
          text += cursor.next();
          continue;
        }
      }
      // BuildKit writes a non-protecting escape as text even when keepEscapes already did: `"\t"` gives `\\t`.
      text += ch;
    }
  }

  private lookup(name: string): string | undefined {
    const value = this.env(name);
    (value === undefined ? this.unmatched : this.matched).add(name);
    return value;
  }

  /** A name: letters, digits and `_`; or a run of digits (positional); or one special parameter. */
  private readName(): string {
    const cursor = this.cursor;
    const first = cursor.peek();
    if (isGoDigit(first)) {
      let digits = '';
      while (isGoDigit(cursor.peek())) digits += cursor.next();
      return digits;
    }
    if (SPECIAL_PARAMETERS.has(first)) return cursor.next();
    let name = '';
    for (let ch = first; isGoLetter(ch) || isGoDigit(ch) || ch === '_'; ch = cursor.peek()) name += cursor.next();
    return name;
  }

  /** Reads a nested word for ${...}, reporting any failure at the end of input as a missing terminator. */
  private readNested(stop: string, keepEscapes: boolean, missingMessage: string): string {
    try {
      return this.readUntil(stop, keepEscapes).text;
    } catch (err) {
      if (err instanceof Failure && this.cursor.peek() === END) throw new Failure(missingMessage);
      throw err;
    }
  }

  private expandDollar(): string {
    const cursor = this.cursor;
    const skipUnset = this.settings.skipUnsetEnv;
    cursor.next();
    if (cursor.peek() !== '{') {
      const name = this.readName();
      if (name === '') return '$';
      const value = this.lookup(name);
      if (value === undefined && skipUnset) return '$' + name;
      return value ?? '';
    }
    cursor.next();
    const first = cursor.peek();
    if (first === END) throw new Failure("syntax error: missing '}'");
    if (first === '{' || first === '}' || first === ':') throw new Failure('syntax error: bad substitution');
    const name = this.readName();
    let operator = cursor.next();
    if (operator === '}') {
      const value = this.lookup(name);
      if (value === undefined && skipUnset) return '${' + name + '}';
      return value ?? '';
    }
    if (operator === '/') return this.expandReplacement(name);

    let written = shown(operator);
    const nullIsUnset = operator === ':';
    if (nullIsUnset) {
      operator = cursor.next();
      written += shown(operator);
    } else if (!WORD_OPERATORS.has(operator)) {
      throw new Failure(`unsupported modifier (${written}) in substitution`);
    }
    const isPatternOperator = operator === '#' || operator === '%';
    if (nullIsUnset && isPatternOperator) throw new Failure(`unsupported modifier (${written}) in substitution`);
    // Any character after ':' is accepted up to here; an unknown one is rejected only after its word is read.
    const word = this.readNested('}', isPatternOperator, "syntax error: missing '}'");
    const value = this.lookup(name);
    if (value === undefined && skipUnset) return '${' + name + written + word + '}';

    const unsetOrNull = value === undefined || (nullIsUnset && value === '');
    switch (operator) {
      case '-':
        return unsetOrNull ? word : (value ?? '');
      case '+':
        return unsetOrNull ? '' : word;
      case '?':
        if (value === undefined) throw new Failure(`${name}: ${word || 'is not allowed to be unset'}`);
        if (unsetOrNull) throw new Failure(`${name}: ${word || 'is not allowed to be empty'}`);
        return value;
      case '#':
      case '%': {
        // A doubled operator (## or %%) asks for the longest match.
        const longest = word.startsWith(operator);
        const pattern = longest ? word.slice(1) : word;
        return this.matchPattern(() =>
          operator === '#' ? removePrefix(pattern, value ?? '', longest) : removeSuffix(pattern, value ?? '', longest),
        );
      }
      default:
        throw new Failure(`unsupported modifier (${written}) in substitution`);
    }
  }

  /** ${name/pattern/replacement} and ${name//pattern/replacement}; the leading '/' is already read. */
  private expandReplacement(name: string): string {
    const replaceEvery = this.cursor.peek() === '/';
    if (replaceEvery) this.cursor.next();
    const pattern = this.readNested('/', true, "syntax error: missing '/' in ${}");
    const replacement = this.readNested('}', true, "syntax error: missing '}'");
    const value = this.lookup(name);
    // BuildKit writes a single '/' back even for '//'.
    if (value === undefined && this.settings.skipUnsetEnv) return '${' + name + '/' + pattern + '/' + replacement + '}';
    return this.matchPattern(() =>
      replaceEvery ? replaceAll(pattern, value ?? '', replacement) : replaceFirst(pattern, value ?? '', replacement),
    );
  }

  private matchPattern(apply: () => string): string {
    try {
      return apply();
    } catch (err) {
      if (err instanceof PatternError) throw new Failure(err.message);
      throw err;
    }
  }
}

/** Expands Dockerfile words as BuildKit does. Instances hold only settings; methods may be called freely. */
export class ShellLex {
  private readonly settings: LexSettings;

  constructor(escapeToken: '\\' | '`' = '\\', options: ShellLexOptions = {}) {
    this.settings = {
      escapeToken,
      rawQuotes: options.rawQuotes ?? false,
      rawEscapes: options.rawEscapes ?? false,
      skipProcessQuotes: options.skipProcessQuotes ?? false,
      skipUnsetEnv: options.skipUnsetEnv ?? false,
    };
  }

  /** Expand as ONE word (no splitting): what ENV values, WORKDIR, USER etc. get. Throws ShellExpansionError. */
  processWord(word: string, env: EnvLookup): string {
    return this.processWordWithMatches(word, env).result;
  }

  /**
   * Expand and split on unquoted white space: what COPY/ADD/EXPOSE/... arguments get. Throws ShellExpansionError.
   * Like BuildKit, text before a ${name<op>word} in the same word is dropped from the split
   * (`a${x:-b}` gives ["b"]); plain $name and ${name} do not do this.
   */
  processWords(word: string, env: EnvLookup): string[] {
    return this.processWordWithMatches(word, env).words;
  }

  /** processWord plus which variable names were looked up and found (matched) or not (unmatched). */
  processWordWithMatches(word: string, env: EnvLookup): ExpandResult {
    const expansion = new Expansion(this.settings, word, env);
    try {
      const { text, words } = expansion.readUntil(END, this.settings.rawEscapes);
      return { result: text, words, matched: expansion.matched, unmatched: expansion.unmatched };
    } catch (err) {
      if (err instanceof Failure) throw new ShellExpansionError(`failed to process ${goQuote(word)}: ${err.message}`);
      throw err;
    }
  }
}
