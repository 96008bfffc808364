// Go's filepath.Match pattern syntax, which Docker uses for COPY/ADD sources:
// `*` any run of non-separators, `?` one non-separator, `[...]` classes with ranges (negated by a
// leading `^`), and `\` escaping the next character.

export class BadPatternError extends Error {}

/** True when the word has glob metacharacters (Go's hasMeta). */
export function hasGlobMeta(pattern: string): boolean {
  return /[*?[\\]/.test(pattern);
}

/** Compiles one path segment of a Go pattern to an anchored RegExp; throws BadPatternError. */
export function segmentRegExp(segment: string): RegExp {
  let re = '';
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '\\') {
      i++;
      if (i >= segment.length) throw new BadPatternError(`syntax error in pattern "${segment}"`);
      re += escapeRe(segment[i]!);
    } else if (c === '[') {
      let j = i + 1;
      let cls = '';
      if (segment[j] === '^') { cls += '^'; j++; }
      let first = true;
      for (; j < segment.length && (segment[j] !== ']' || first); j++) {
        first = false;
        let ch = segment[j]!;
        if (ch === '\\') {
          j++;
          if (j >= segment.length) throw new BadPatternError(`syntax error in pattern "${segment}"`);
          ch = segment[j]!;
        }
        if (ch === '/') throw new BadPatternError(`syntax error in pattern "${segment}"`);
        cls += ch === '-' && segment[j + 1] !== ']' && cls !== '' && cls !== '^' ? '-' : escapeRe(ch);
      }
      if (j >= segment.length || cls === '' || cls === '^') throw new BadPatternError(`syntax error in pattern "${segment}"`);
      re += `[${cls}]`;
      i = j;
    } else re += escapeRe(c);
  }
  return new RegExp(`^${re}$`, 's');
}

function escapeRe(c: string): string {
  return c.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}
