// Parser directives (`# syntax=`, `# escape=`, `# check=`) and the escape token they set, which is
// both the escape character and the line-continuation character.
import type { Directives } from './ast.js';
import { goTrimLeftSpace } from './dump.js';
import { ParseFailure } from './parser-line-parsers.js';

const knownDirectives = new Set(['syntax', 'escape', 'check']);
// Go's `\s` is ASCII-only and its `.` stops at "\n" only.
const directiveLine = /^([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*([^\n]+?)[\t\n\f\r ]*$/;

export class DirectiveState {
  readonly directives: Directives = { escape: '\\' };
  /** Code point of the escape token. */
  escape = 0x5c;
  private continuation = continuationPattern('\\');
  private done = false;
  private readonly seen = new Set<string>();

  /**
   * Looks at one source line (newline trimmed). Directives are only recognised until the first line
   * that is not one (an instruction, an empty line, any other comment). Returns true for a directive.
   */
  possibleDirective(line: string): boolean {
    if (this.done) return false;
    if (!line.startsWith('#')) {
      this.done = true;
      return false;
    }
    const match = directiveLine.exec(goTrimLeftSpace(line.slice(1)));
    const key = match?.[1]?.toLowerCase();
    if (!match || key === undefined || !knownDirectives.has(key)) {
      this.done = true;
      return false;
    }
    if (this.seen.has(key)) throw new ParseFailure(`only one ${key} parser directive can be used`);
    this.seen.add(key);
    const value = match[2]!;
    if (key === 'escape') this.setEscape(value);
    else if (key === 'syntax') this.directives.syntax = value;
    else this.directives.check = value;
    return true;
  }

  private setEscape(token: string): void {
    if (token !== '`' && token !== '\\') {
      throw new ParseFailure(`invalid escape token '${token}' does not match \` or \\`);
    }
    this.directives.escape = token;
    this.escape = token.charCodeAt(0);
    this.continuation = continuationPattern(token);
  }

  /**
   * Removes a trailing escape token (and the blanks after it). Returns the line and whether the
   * instruction ends here. An escaped escape token (`\\` at the end) is not a continuation.
   */
  trimContinuation(line: string): [string, boolean] {
    if (!this.continuation.test(line)) return [line, true];
    return [line.replace(this.continuation, '$1'), false];
  }
}

function continuationPattern(token: '\\' | '`'): RegExp {
  const t = token === '\\' ? '\\\\' : '`';
  return new RegExp(`([^${t}])${t}[ \\t]*$|^${t}[ \\t]*$`);
}
