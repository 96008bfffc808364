// Reading a word for the shell-word expander: a code-point cursor and the word splitter.

import { isGoSpace } from './shell-lex-text.js';

/** What the cursor returns past the end of the word. */
export const END = '';

/** Reads the word one code point at a time. */
export class Cursor {
  private readonly chars: string[];
  private index = 0;

  constructor(text: string) {
    this.chars = Array.from(text);
    // BuildKit reads with Go's text/scanner, which discards a leading byte-order mark.
    if (this.chars[0] === '\uFEFF') this.index = 1;
  }

  peek(): string {
    return this.chars[this.index] ?? END;
  }

  next(): string {
    const ch = this.peek();
    if (ch !== END) this.index++;
    return ch;
  }
}

/**
 * Splits the text of one nesting level into words. The word being built is held in `pending`,
 * which BuildKit shares between all nesting levels of an expansion: every nested ${name<op>word}
 * empties it when it starts and when it ends, so text gathered before such an expansion, in the
 * same word, is lost from the split result (not from the one-word result).
 */
export class WordSplitter {
  readonly words: string[] = [];
  private inWord = false;

  constructor(private readonly pending: { text: string }) {
    pending.text = '';
  }

  /** Text from plain characters and unquoted expansions: white space ends the current word. */
  addSplittable(text: string): void {
    for (const ch of text) {
      if (!isGoSpace(ch)) {
        this.pending.text += ch;
        this.inWord = true;
      } else if (this.inWord && this.pending.text !== '') {
        this.words.push(this.pending.text);
        this.pending.text = '';
        this.inWord = false;
      }
    }
  }

  /** Quoted or escaped text: added as is, white space included. */
  addLiteral(text: string): void {
    this.pending.text += text;
    this.inWord = true;
  }

  finish(): string[] {
    if (this.pending.text !== '') {
      this.words.push(this.pending.text);
      this.pending.text = '';
      this.inWord = false;
    }
    return this.words;
  }
}

