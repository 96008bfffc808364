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

/**
 * Patterns in .dockerignore syntax, matched as BuildKit matches COPY --exclude patterns and the include
 * patterns of COPY --parents (moby/patternmatcher): each pattern is cleaned like Go's filepath.Clean and
 * must be a valid filepath.Match pattern; `*` and `?` stay within one path component, `**` spans any
 * number of them, `[...]` and `\` work as in filepath.Match, a leading `!` re-includes what earlier
 * patterns matched, and a path matches when it or one of its parent directories does. Paths are
 * "/"-separated and relative, with no "./" (a leading "/" in a pattern is kept, so it matches nothing).
 */
export class PathPatterns {
  private constructor(
    private readonly patterns: readonly CompiledPattern[],
    /** Some pattern starts with "!": an excluded directory may hold included paths, so it must be walked. */
    readonly hasExclusions: boolean,
  ) {}

  /** Throws BadPatternError naming the pattern that is not valid. */
  static compile(patterns: readonly string[]): PathPatterns {
    const compiled: CompiledPattern[] = [];
    for (const raw of patterns) {
      let p = raw.trim();
      if (p === '') continue;
      p = goClean(p);
      let exclusion = false;
      if (p.startsWith('!')) {
        if (p.length === 1) throw new BadPatternError('illegal exclusion pattern: "!"');
        exclusion = true;
        p = p.slice(1);
      }
      if (!validGoPattern(p)) throw new BadPatternError(`syntax error in pattern "${raw}"`);
      compiled.push({ exclusion, pattern: p, test: compileMatcher(p) });
    }
    return new PathPatterns(compiled, compiled.some((c) => c.exclusion));
  }

  get empty(): boolean {
    return this.patterns.length === 0;
  }

  /**
   * Whether `path` is matched, given what its parent directory got (patternmatcher's
   * MatchesUsingParentResults, which BuildKit uses while it walks a source): pass `parent` undefined
   * for a path whose parent was not matched against these patterns (a top-level entry). The returned
   * `state` is what to pass for the path's children.
   */
  match(path: string, parent?: MatchState): { matched: boolean; state: MatchState } {
    const state: boolean[] = new Array<boolean>(this.patterns.length).fill(false);
    let matched = false;
    for (const [i, pattern] of this.patterns.entries()) {
      let hit = parent?.[i] ?? false;
      if (!hit) {
        // An inclusion cannot change a path already matched, nor an exclusion one not matched yet.
        if (pattern.exclusion !== matched) continue;
        hit = pattern.test(path) || (parent === undefined && parentDirs(path).some((dir) => pattern.test(dir)));
      }
      state[i] = hit;
      if (hit) matched = !pattern.exclusion;
    }
    return { matched, state };
  }

  /**
   * Whether some path below the directory `dir` (which did not match) could match: false only when no
   * pattern can reach below it, so a walk may skip it. Component by component, a pattern's leading
   * components must match the directory's; "**" (or an escape, or an exception) reaches anywhere.
   */
  couldMatchBelow(dir: string): boolean {
    if (this.hasExclusions) return true;
    const parts = dir.split('/');
    return this.patterns.some(({ pattern }) => {
      if (pattern.includes('\\') || /\[[^\]]*\//.test(pattern)) return true; // an escape or a class holding "/": no pruning
      const segments = pattern.split('/');
      for (const [i, part] of parts.entries()) {
        const segment = segments[i];
        if (segment === undefined) return false; // longer than the pattern: only a match of the directory would reach below
        if (segment.includes('**')) return true;
        let test = segmentTests.get(segment);
        if (!test) segmentTests.set(segment, (test = compileMatcher(segment)));
        if (!test(part)) return false;
      }
      return true;
    });
  }

  /** patternmatcher's MatchesOrParentMatches: the path, or one of its parent directories, matches. */
  matches(path: string): boolean {
    return this.match(path).matched;
  }
}

/** Per pattern, whether a directory (or one of its parents) matched it. */
export type MatchState = readonly boolean[];

const segmentTests = new Map<string, (name: string) => boolean>();

interface CompiledPattern {
  exclusion: boolean;
  /** Cleaned, without the "!". */
  pattern: string;
  test: (path: string) => boolean;
}

/** "a/b/c" → ["a", "a/b"]. */
function parentDirs(path: string): string[] {
  const out: string[] = [];
  for (let i = path.indexOf('/'); i > 0; i = path.indexOf('/', i + 1)) out.push(path.slice(0, i));
  return out;
}

/** Go's path.Clean for "/"-separated paths: "" → ".", "a/./b/../" → "a", "/../x" → "/x". */
export function goClean(path: string): string {
  if (path === '') return '.';
  const rooted = path.startsWith('/');
  const out: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length > 0 && out[out.length - 1] !== '..') out.pop();
      else if (!rooted) out.push('..');
    } else out.push(part);
  }
  const joined = out.join('/');
  return rooted ? '/' + joined : joined === '' ? '.' : joined;
}

/** Whether Go's filepath.Match accepts the pattern (it checks the whole pattern, whatever it is matched with). */
function validGoPattern(p: string): boolean {
  const chars = Array.from(p); // code points, as Go decodes runes
  let i = 0;
  // One character of a class, possibly escaped (Go's getEsc): not "-" or "]", and not the class's end.
  const classChar = (): boolean => {
    if (i >= chars.length || chars[i] === '-' || chars[i] === ']') return false;
    if (chars[i] === '\\') {
      i++;
      if (i >= chars.length) return false;
    }
    i++;
    return i < chars.length;
  };
  while (i < chars.length) {
    const c = chars[i++];
    if (c === '\\') {
      if (i >= chars.length) return false;
      i++;
    } else if (c === '[') {
      if (chars[i] === '^') i++;
      for (let ranges = 0; ; ranges++) {
        if (chars[i] === ']' && ranges > 0) {
          i++;
          break;
        }
        if (!classChar()) return false;
        if (chars[i] === '-') {
          i++;
          if (!classChar()) return false;
        }
      }
    }
  }
  return true;
}

/** patternmatcher's compile: exact, prefix ("a/**"), suffix ("**" first) or regular-expression matching. */
function compileMatcher(pattern: string): (path: string) => boolean {
  const chars = Array.from(pattern);
  let re = '^';
  let type: 'exact' | 'prefix' | 'suffix' | 'regexp' = 'exact';
  for (let i = 0, step = 0; i < chars.length; step++) {
    const c = chars[i++]!;
    if (c === '*') {
      if (chars[i] === '*') {
        i++;
        if (chars[i] === '/') i++; // "**/" is "**"
        if (i >= chars.length) {
          // "**" at the end matches everything below, as in .gitignore.
          if (type === 'exact') type = 'prefix';
          else {
            re += '.*';
            type = 'regexp';
          }
        } else {
          re += '(.*/)?';
          type = 'regexp';
        }
        if (step === 0) type = 'suffix';
      } else {
        re += '[^/]*';
        type = 'regexp';
      }
    } else if (c === '?') {
      re += '[^/]';
      type = 'regexp';
    } else if ('.+()|{}$'.includes(c)) {
      re += '\\' + c;
    } else if (c === '\\') {
      // An escaped character stands for itself.
      if (i < chars.length) re += escapeRe(chars[i++]!);
      type = 'regexp';
    } else if (c === '[' || c === ']') {
      re += c;
      type = 'regexp';
    } else {
      re += c;
    }
  }
  switch (type) {
    case 'exact':
      return (path) => path === pattern;
    case 'prefix': {
      const prefix = pattern.slice(0, -2);
      return (path) => path.startsWith(prefix);
    }
    case 'suffix': {
      const suffix = pattern.slice(2);
      return (path) => path.endsWith(suffix) || (suffix.startsWith('/') && path === suffix.slice(1));
    }
    case 'regexp': {
      let regexp: RegExp;
      try {
        regexp = new RegExp(re + '$');
      } catch {
        return () => false; // Go's regexp refusing the translation makes the pattern match nothing
      }
      return (path) => regexp.test(path);
    }
  }
}
