// Flags written before an instruction's arguments (`COPY --from=x --chown=1:1 ...`), parsed with
// BuildKit's rules: every flag must be declared by the instruction, string flags need a value,
// boolean flags take none or true/false, list flags may repeat, others may not.

export type FlagKind = 'string' | 'bool' | 'list';

export class InstructionFlagError extends Error {}

export interface ParsedFlags {
  strings: Map<string, string>;
  bools: Map<string, boolean>;
  lists: Map<string, string[]>;
  /** Names of the flags the user wrote, in order. */
  used: string[];
}

export function parseInstructionFlags(
  written: readonly string[],
  declared: Readonly<Record<string, FlagKind>>,
): ParsedFlags {
  const out: ParsedFlags = { strings: new Map(), bools: new Map(), lists: new Map(), used: [] };
  for (const raw of written) {
    if (!raw.startsWith('--')) throw new InstructionFlagError(`invalid flag "${raw}": flags start with --`);
    const body = raw.slice(2);
    const eq = body.indexOf('=');
    const name = eq < 0 ? body : body.slice(0, eq);
    const value = eq < 0 ? undefined : body.slice(eq + 1);
    const kind = declared[name];
    if (kind === undefined) throw new InstructionFlagError(`unknown flag: ${name}`);
    if (kind !== 'list' && out.used.includes(name)) {
      throw new InstructionFlagError(`duplicate flag specified: ${name}`);
    }
    out.used.push(name);
    switch (kind) {
      case 'string':
        if (value === undefined) throw new InstructionFlagError(`missing a value on flag: ${name}`);
        out.strings.set(name, value);
        break;
      case 'list':
        if (value === undefined) throw new InstructionFlagError(`missing a value on flag: ${name}`);
        out.lists.set(name, [...(out.lists.get(name) ?? []), value]);
        break;
      case 'bool': {
        const v = value === undefined ? 'true' : value.toLowerCase();
        if (v !== 'true' && v !== 'false') {
          throw new InstructionFlagError(`expecting boolean value for flag ${name}, not: ${value}`);
        }
        out.bools.set(name, v === 'true');
        break;
      }
    }
  }
  return out;
}
