// COPY/ADD --chmod as BuildKit reads and applies it.
//
// An octal value (any run of octal digits up to 07777) is the mode of every copied file and directory.
// Anything else is a symbolic mode in chmod(1) syntax — `+x`, `go-w`, `a=rX`, `u=rwx,g=rx,o=`, `g=u` —
// applied to each file's own mode. BuildKit parses it with BSD setmode(3) rules (its vendored
// tonistiigi/dchapes-mode, with a umask of 0), and so does this module:
//   - clauses are separated by ",", each is `[ugoa]*` followed by one or more `op perms` with op in "+-=";
//   - no "who" means "a" (the umask is 0), and "a" does not include the sticky bit: `=rw` keeps it;
//   - `s` (setuid/setgid) and `t` (sticky) are ignored when only "o" is named;
//   - `X` adds execute bits only to directories and to files that had an execute bit before the whole
//     mode was applied; with "-", `X` clears them like `x`;
//   - `u`, `g`, `o` as perms copy that class's current bits (`g=u`, `o+g`, `u-o`);
//   - `=` first clears the named classes' bits (setuid/setgid included), then sets.
// Symbolic modes never touch symlinks (Linux has no lchmod), and parent directories a COPY creates
// stay 0755, as in BuildKit, where only an octal mode is also used to create directories.
import { CopyError } from './copy-error.js';

const SETUID = 0o4000;
const SETGID = 0o2000;
const STICKY = 0o1000;
/** Bits `a` (and an empty "who") stands for: everything but the sticky bit. */
const STANDARD = SETUID | SETGID | 0o777;
const WHO: Record<string, number> = { a: STANDARD, u: SETUID | 0o700, g: SETGID | 0o070, o: 0o007 };
const CLASS_SHIFT: Record<'u' | 'g' | 'o', number> = { u: 6, g: 3, o: 0 };

/** One step of a symbolic mode, applied in order. */
type ModeStep =
  | { kind: 'set' | 'clear' | 'setIfExecutable'; bits: number }
  /** Copies the bits of class `from` into the classes of `to` (6, 3, 0 = u, g, o). */
  | { kind: 'copy'; from: 'u' | 'g' | 'o'; to: number[]; set: boolean; clear: boolean };

export type Chmod =
  | { kind: 'octal'; text: string; mode: number }
  | { kind: 'symbolic'; text: string; steps: ModeStep[] };

/** Parses --chmod's value (after word expansion); throws CopyError with BuildKit's wording where it has one. */
export function parseChmod(text: string): Chmod {
  if (/^[0-7]+$/.test(text)) {
    const mode = parseInt(text, 8);
    if (mode <= 0o7777) return { kind: 'octal', text, mode };
    throw nonOctal(text);
  }
  // BuildKit tries octal first; a value that starts with a digit and is not octal gets the octal error.
  if (/^[0-9]/.test(text)) throw nonOctal(text);
  const steps = parseSymbolic(text);
  if (!steps) throw new CopyError(`invalid chmod parameter: '${text}': invalid syntax (use octal such as 755, or symbolic such as u+x,go-w)`);
  return { kind: 'symbolic', text, steps };
}

function nonOctal(text: string): CopyError {
  return new CopyError(`invalid chmod parameter: '${text}'. it should be octal string and between 0 and 07777`);
}

/** The mode a copied file or directory gets: `mode` is its own permission bits (0o7777 mask). */
export function applyChmod(chmod: Chmod | undefined, mode: number, isDirectory: boolean): number {
  if (!chmod) return mode & 0o7777;
  if (chmod.kind === 'octal') return chmod.mode;
  const original = mode & 0o7777;
  let m = original;
  for (const step of chmod.steps) {
    switch (step.kind) {
      case 'set':
        m |= step.bits;
        break;
      case 'clear':
        m &= ~step.bits;
        break;
      case 'setIfExecutable':
        if (isDirectory || (original & 0o111) !== 0) m |= step.bits;
        break;
      case 'copy': {
        const value = (m >> CLASS_SHIFT[step.from]) & 7;
        // "=" clears every bit of the target classes; "-" only the copied ones.
        const cleared = step.set ? 7 : value;
        for (const shift of step.to) {
          if (step.clear) m &= ~(cleared << shift);
          if (step.set) m |= value << shift;
        }
        break;
      }
    }
  }
  return m & 0o7777;
}

/** setmode(3)'s grammar; undefined on a syntax error. */
function parseSymbolic(text: string): ModeStep[] | undefined {
  const steps: ModeStep[] = [];
  /** Adds the steps for `op` with permission bits `perm` for the classes in `who` (0: all, umask 0). */
  const add = (op: string, who: number, perm: number): void => {
    const bits = who !== 0 ? who & perm : perm;
    if (op === '=') {
      steps.push({ kind: 'clear', bits: who !== 0 ? who : STANDARD });
      steps.push({ kind: 'set', bits });
    } else if (op === '+') steps.push({ kind: 'set', bits });
    else if (op === '-') steps.push({ kind: 'clear', bits });
    else steps.push({ kind: 'setIfExecutable', bits });
  };
  const addCopy = (from: 'u' | 'g' | 'o', who: number, op: string): void => {
    const to = who === 0 ? [6, 3, 0] : [[0o400, 6], [0o040, 3], [0o004, 0]].filter(([bit]) => (who & bit!) !== 0).map(([, shift]) => shift!);
    steps.push({ kind: 'copy', from, to, set: op !== '-', clear: op !== '+' });
  };

  let i = 0;
  for (;;) {
    // Who: any of "ugoa"; a clause cannot end here.
    let who = 0;
    for (; i < text.length && WHO[text[i]!] !== undefined; i++) who |= WHO[text[i]!]!;
    if (i >= text.length) return undefined;
    // One or more "op perms" for this who ("u+r-w" is two).
    let equalDone = false;
    for (;;) {
      const op = text[i++];
      if (op !== '+' && op !== '-' && op !== '=') return undefined;
      if (op === '=') equalDone = false;
      who &= ~STICKY;
      let perm = 0;
      let permX = 0;
      for (;; i++) {
        const c = text[i];
        if (c === 'r') perm |= 0o444;
        else if (c === 'w') perm |= 0o222;
        else if (c === 'x') perm |= 0o111;
        else if (c === 'X') {
          if (op === '-') perm |= 0o111;
          else permX = 0o111;
        } else if (c === 's') {
          if (who === 0 || (who & ~0o007) !== 0) perm |= SETUID | SETGID;
        } else if (c === 't') {
          if (who === 0 || (who & ~0o007) !== 0) {
            who |= STICKY;
            perm |= STICKY;
          }
        } else if (c === 'u' || c === 'g' || c === 'o') {
          // The bits gathered so far go first, then the copy.
          if (perm !== 0) {
            add(op, who, perm);
            perm = 0;
          }
          if (op === '=') equalDone = true;
          if (permX !== 0) {
            add('X', who, permX);
            permX = 0;
          }
          addCopy(c, who, op);
        } else {
          if (perm !== 0 || (op === '=' && !equalDone)) {
            if (op === '=') equalDone = true;
            add(op, who, perm);
          }
          if (permX !== 0) add('X', who, permX);
          break;
        }
      }
      if (i >= text.length) return steps;
      if (text[i] === ',') {
        i++;
        break;
      }
      // Anything else must be the next operator for the same who.
    }
  }
}

/** Mode of a directory a COPY creates (missing parents): 0755, whatever --chmod says (see the header). */
export const CREATED_DIR_MODE = 0o755;
