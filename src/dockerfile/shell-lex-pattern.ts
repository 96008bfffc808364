// Pattern matching for ${v#p} ${v##p} ${v%p} ${v%%p} ${v/p/r} ${v//p/r}, the way BuildKit does it.
//
// BuildKit turns the pattern into a Go (RE2) regular expression in which only `*` (any run of
// characters) and `?` (one character) are wildcards. Everything else is literal, bracket
// expressions included: `[a-z]` matches the five characters `[a-z]`, not one letter. A backslash
// may escape `*`, `?` or `\`; before `}` or `/` it is dropped (it only kept the ${...} syntax from
// ending the pattern); before anything else it is an error. Go's `.` does not match "\n", so
// neither wildcard crosses a newline.

import { isGoDigit, isGoLetter } from './shell-lex-text.js';

/** A pattern BuildKit rejects; the message is BuildKit's full "invalid pattern (...)" text. */
export class PatternError extends Error {}

const BYTE_ORDER_MARK = '\uFEFF';
/** Characters that mean something in a regular expression and are literal in a pattern. */
const REGEX_SPECIALS = new Set(['[', ']', '{', '}', '.', '+', '(', ')', '|', '^', '$']);
const ANY_CHAR = '[^\\n]';

function compilePattern(pattern: string, shortestStar: boolean, anchored: boolean): RegExp {
  const chars = Array.from(pattern);
  // BuildKit reads the pattern with Go's text/scanner, which discards a leading byte-order mark.
  let index = chars[0] === BYTE_ORDER_MARK ? 1 : 0;
  let source = anchored ? '^' : '';
  while (index < chars.length) {
    const ch = chars[index++] ?? '';
    if (ch === '*') {
      source += shortestStar ? ANY_CHAR + '*?' : ANY_CHAR + '*';
    } else if (ch === '?') {
      source += ANY_CHAR;
    } else if (ch === '\\') {
      const escaped = chars[index];
      if (escaped === '}' || escaped === '/') continue;
      index++;
      if (escaped !== '*' && escaped !== '?' && escaped !== '\\') {
        // Go prints a missing rune (end of pattern) as U+FFFD.
        throw new PatternError(
          `invalid pattern (${pattern}) in substitution: invalid escape '\\${escaped ?? '\uFFFD'}'`,
        );
      }
      source += '\\' + escaped;
    } else if (REGEX_SPECIALS.has(ch)) {
      source += '\\' + ch;
    } else {
      source += ch;
    }
  }
  return new RegExp(source, 'gu');
}

function firstMatch(re: RegExp, text: string, from: number): { start: number; end: number } | undefined {
  re.lastIndex = from;
  const match = re.exec(text);
  return match ? { start: match.index, end: match.index + match[0].length } : undefined;
}

/** `${v#p}` (shortest) and `${v##p}` (longest): drop the part of `value` that the pattern matches at its start. */
export function removePrefix(pattern: string, value: string, longest: boolean): string {
  const match = firstMatch(compilePattern(pattern, !longest, true), value, 0);
  return match ? value.slice(match.end) : value;
}

/** Reverses a pattern while keeping each backslash in front of the character it escapes. */
function reversePattern(pattern: string): string {
  const chars = Array.from(pattern);
  const units: string[] = [];
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i] ?? '';
    if (ch === '\\' && i + 1 < chars.length) units.push(ch + (chars[++i] ?? ''));
    else units.push(ch);
  }
  return units.reverse().join('');
}

function reverseText(text: string): string {
  return Array.from(text).reverse().join('');
}

/**
 * `${v%p}` and `${v%%p}`. Like BuildKit, the suffix is found by reversing both the value and the
 * pattern and removing a prefix, so errors name the reversed pattern.
 */
export function removeSuffix(pattern: string, value: string, longest: boolean): string {
  return reverseText(removePrefix(reversePattern(pattern), reverseText(value), longest));
}

/** `${v/p/r}`: the first (leftmost, longest-star) match is replaced by `replacement`, taken literally. */
export function replaceFirst(pattern: string, value: string, replacement: string): string {
  const match = firstMatch(compilePattern(pattern, false, false), value, 0);
  return match ? value.slice(0, match.start) + replacement + value.slice(match.end) : value;
}

/**
 * `${v//p/r}`, as Go's Regexp.ReplaceAllString: `replacement` is a Go template (`$0` / `${0}` is the
 * match, `$$` a dollar, other `$name` references empty), and an empty match right after another
 * match is not replaced.
 */
export function replaceAll(pattern: string, value: string, replacement: string): string {
  const re = compilePattern(pattern, false, false);
  let out = '';
  let copiedUpTo = 0;
  let searchFrom = 0;
  while (searchFrom <= value.length) {
    const match = firstMatch(re, value, searchFrom);
    if (!match) break;
    out += value.slice(copiedUpTo, match.start);
    if (match.end > copiedUpTo || match.start === 0) {
      out += expandGoTemplate(replacement, value.slice(match.start, match.end));
    }
    copiedUpTo = match.end;
    // Step on by at least one code point so that empty matches cannot loop.
    const step = searchFrom < value.length ? String.fromCodePoint(value.codePointAt(searchFrom) ?? 0).length : 0;
    if (searchFrom + step > match.end) searchFrom += step;
    else if (searchFrom + 1 > match.end) searchFrom++;
    else searchFrom = match.end;
  }
  return out + value.slice(copiedUpTo);
}

/** Go's Regexp.Expand for a regular expression without groups: only group 0, the whole match, exists. */
function expandGoTemplate(template: string, wholeMatch: string): string {
  let out = '';
  let index = 0;
  for (;;) {
    const dollar = template.indexOf('$', index);
    if (dollar < 0) break;
    out += template.slice(index, dollar);
    index = dollar + 1;
    if (template[index] === '$') {
      out += '$';
      index++;
      continue;
    }
    const reference = readTemplateReference(template, index);
    if (!reference) {
      out += '$';
      continue;
    }
    index = reference.end;
    if (reference.name === '0') out += wholeMatch;
  }
  return out + template.slice(index);
}

/** Reads `name` or `{name}` (letters, digits, `_`) after a `$`; undefined when malformed. */
function readTemplateReference(template: string, start: number): { name: string; end: number } | undefined {
  let index = start;
  const braced = template[index] === '{';
  if (braced) index++;
  const nameStart = index;
  while (index < template.length) {
    const ch = String.fromCodePoint(template.codePointAt(index) ?? 0);
    if (!isGoLetter(ch) && !isGoDigit(ch) && ch !== '_') break;
    index += ch.length;
  }
  if (index === nameStart) return undefined;
  const name = template.slice(nameStart, index);
  if (braced) {
    if (template[index] !== '}') return undefined;
    index++;
  }
  return { name, end: index };
}
