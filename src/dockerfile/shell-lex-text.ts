// Character classes and string quoting as Go's standard library defines them. BuildKit's expander is
// written in Go, so word splitting, name scanning and error messages follow these definitions.

const WHITE_SPACE = /^\p{White_Space}$/u;
const LETTER = /^\p{L}$/u;
const DECIMAL_DIGIT = /^\p{Nd}$/u;
const GRAPHIC = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;

/** Go's unicode.IsSpace (the Unicode White_Space property). `ch` is one code point, or '' (never space). */
export function isGoSpace(ch: string): boolean {
  return WHITE_SPACE.test(ch);
}

/** Go's unicode.IsLetter: any code point of category L. */
export function isGoLetter(ch: string): boolean {
  return LETTER.test(ch);
}

/** Go's unicode.IsDigit: any decimal digit (category Nd), not only 0-9. */
export function isGoDigit(ch: string): boolean {
  return DECIMAL_DIGIT.test(ch);
}

const NAMED_ESCAPES = new Map<number, string>([
  [0x07, '\\a'],
  [0x08, '\\b'],
  [0x0c, '\\f'],
  [0x0a, '\\n'],
  [0x0d, '\\r'],
  [0x09, '\\t'],
  [0x0b, '\\v'],
]);

function hex(codePoint: number, digits: number): string {
  return codePoint.toString(16).padStart(digits, '0');
}

/** Go's strconv.Quote (the `%q` verb): double quotes, backslash escapes, printable Unicode kept as is. */
export function goQuote(text: string): string {
  let out = '"';
  for (const ch of text) {
    const codePoint = ch.codePointAt(0) ?? 0;
    if (ch === '"' || ch === '\\') out += '\\' + ch;
    else if (ch === ' ' || GRAPHIC.test(ch)) out += ch;
    else {
      const named = NAMED_ESCAPES.get(codePoint);
      if (named !== undefined) out += named;
      else if (codePoint < 0x20 || codePoint === 0x7f) out += '\\x' + hex(codePoint, 2);
      else if (codePoint < 0x10000) out += '\\u' + hex(codePoint, 4);
      else out += '\\U' + hex(codePoint, 8);
    }
  }
  return out + '"';
}
