// BuildKit's parse-tree dump (one s-expression per instruction, arguments Go-quoted) and the Go
// string conventions the parser relies on to behave byte for byte like BuildKit.
//
// Go strings are byte strings that may hold invalid UTF-8. Kiln's strings carry such a byte as the
// lone surrogate U+DC80..U+DCFF (the "surrogateescape" convention), so a Dockerfile read as bytes
// survives parsing unchanged and prints as Go would print it (`\xNN`).
import type { InstructionNode, ParseResult } from './ast.js';

/** BuildKit's `Node.Dump()` of the whole file, with the final newline its tests add. */
export function dumpParse(result: ParseResult): string {
  let out = '';
  for (const node of result.instructions) out += '(' + dumpNode(node) + ')\n';
  return goTrimSpace(out) + '\n';
}

function dumpNode(node: InstructionNode): string {
  let out = goToLower(node.keyword);
  if (node.flags.length > 0) out += ' [' + node.flags.map(goQuote).join(' ') + ']';
  if (node.onbuild) out += ' ' + goTrimSpace('(' + dumpNode(node.onbuild) + ')\n');
  for (const arg of node.args) out += ' ' + goQuote(arg);
  return goTrimSpace(out);
}

// ---- Go strings -------------------------------------------------------------------------------

/** Go's `unicode.IsSpace`. */
export function isGoSpace(cp: number): boolean {
  switch (cp) {
    case 0x09: case 0x0a: case 0x0b: case 0x0c: case 0x0d: case 0x20:
    case 0x85: case 0xa0: case 0x1680: case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200a;
  }
}

// Every Go space is in the BMP, so scanning code units is enough for trimming.
export function goTrimLeftSpace(s: string): string {
  let start = 0;
  while (start < s.length && isGoSpace(s.charCodeAt(start))) start++;
  return start === 0 ? s : s.slice(start);
}

export function goTrimSpace(s: string): string {
  let end = s.length;
  while (end > 0 && isGoSpace(s.charCodeAt(end - 1))) end--;
  return goTrimLeftSpace(end === s.length ? s : s.slice(0, end));
}

/** Go's `strings.ToLower`: simple per-rune mapping; bytes that are not UTF-8 become U+FFFD. */
export function goToLower(s: string): string {
  if (/^[\x00-\x7f]*$/.test(s)) return s.toLowerCase();
  let out = '';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0xd800 && cp <= 0xdfff) {
      out += '\ufffd';
      continue;
    }
    // JavaScript applies full case mappings (U+0130 -> "i\u0307"); Go keeps the first rune only.
    out += String.fromCodePoint(ch.toLowerCase().codePointAt(0)!);
  }
  return out;
}

const ESCAPED_BYTE_BASE = 0xdc00;
const hasSurrogate = /[\ud800-\udfff]/;

/** The bytes a Go string with this content holds (escaped bytes restored, other lone surrogates as U+FFFD). */
export function goStringBytes(s: string): Uint8Array {
  if (!hasSurrogate.test(s)) return Buffer.from(s, 'utf8');
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      out.push(c);
    } else if (c < 0x800) {
      out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    } else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length && isLowSurrogate(s.charCodeAt(i + 1))) {
      const cp = 0x10000 + ((c - 0xd800) << 10) + (s.charCodeAt(i + 1) - 0xdc00);
      i++;
      out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
    } else if (c >= 0xdc80 && c <= 0xdcff) {
      out.push(c - ESCAPED_BYTE_BASE);
    } else if (c >= 0xd800 && c <= 0xdfff) {
      out.push(0xef, 0xbf, 0xbd);
    } else {
      out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    }
  }
  return Uint8Array.from(out);
}

function isLowSurrogate(c: number): boolean {
  return c >= 0xdc00 && c <= 0xdfff;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Decodes bytes as Go sees them: valid UTF-8 as text, every other byte escaped (see above). */
export function goStringFromBytes(bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    // Not valid UTF-8: decode rune by rune below.
  }
  let out = '';
  for (let i = 0; i < bytes.length; ) {
    const [cp, width] = decodeRune(bytes, i);
    out += width === 1 && cp === 0xfffd ? String.fromCharCode(ESCAPED_BYTE_BASE + bytes[i]!) : String.fromCodePoint(cp);
    i += width;
  }
  return out;
}

/** Go's `utf8.DecodeRune`: an invalid sequence yields (U+FFFD, 1). */
export function decodeRune(b: Uint8Array, i: number): [number, number] {
  const b0 = b[i]!;
  if (b0 < 0x80) return [b0, 1];
  const cont = (k: number, lo = 0x80, hi = 0xbf): boolean => i + k < b.length && b[i + k]! >= lo && b[i + k]! <= hi;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    if (cont(1)) return [((b0 & 0x1f) << 6) | (b[i + 1]! & 0x3f), 2];
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    const lo = b0 === 0xe0 ? 0xa0 : 0x80;
    const hi = b0 === 0xed ? 0x9f : 0xbf;
    if (cont(1, lo, hi) && cont(2)) {
      return [((b0 & 0x0f) << 12) | ((b[i + 1]! & 0x3f) << 6) | (b[i + 2]! & 0x3f), 3];
    }
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    const lo = b0 === 0xf0 ? 0x90 : 0x80;
    const hi = b0 === 0xf4 ? 0x8f : 0xbf;
    if (cont(1, lo, hi) && cont(2) && cont(3)) {
      const cp = ((b0 & 0x07) << 18) | ((b[i + 1]! & 0x3f) << 12) | ((b[i + 2]! & 0x3f) << 6) | (b[i + 3]! & 0x3f);
      return [cp, 4];
    }
  }
  return [0xfffd, 1];
}

const printable = /^[\p{L}\p{M}\p{N}\p{P}\p{S}]$/u;

/** Go's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space. */
function isGoPrint(cp: number): boolean {
  if (cp < 0x7f) return cp >= 0x20;
  return printable.test(String.fromCodePoint(cp));
}

const hex = (n: number, width: number): string => n.toString(16).padStart(width, '0');

/** Go's `strconv.Quote`. */
export function goQuote(s: string): string {
  const bytes = goStringBytes(s);
  let out = '"';
  for (let i = 0; i < bytes.length; ) {
    const [cp, width] = decodeRune(bytes, i);
    if (width === 1 && cp === 0xfffd) out += '\\x' + hex(bytes[i]!, 2);
    else out += quoteRune(cp);
    i += width;
  }
  return out + '"';
}

function quoteRune(cp: number): string {
  if (cp === 0x22 || cp === 0x5c) return '\\' + String.fromCharCode(cp);
  if (isGoPrint(cp)) return String.fromCodePoint(cp);
  switch (cp) {
    case 0x07: return '\\a';
    case 0x08: return '\\b';
    case 0x0c: return '\\f';
    case 0x0a: return '\\n';
    case 0x0d: return '\\r';
    case 0x09: return '\\t';
    case 0x0b: return '\\v';
  }
  if (cp < 0x20 || cp === 0x7f) return '\\x' + hex(cp, 2);
  return cp < 0x10000 ? '\\u' + hex(cp, 4) : '\\U' + hex(cp, 8);
}
