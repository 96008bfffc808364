// A command line parser with spf13/pflag's syntax, because kaniko's command line is a contract:
// `--flag=value` and `--flag value`, `-d value`/`-dvalue`, booleans as `--flag` or `--flag=false`
// (never a separate word), repeatable flags, and flag names such as `--no-push` that are names in
// their own right. commander (used for the subcommands) reads `--no-x` as the negation of `--x`
// and has no `--bool=false`, so the executor's flags are parsed here, driven by a table.

export type FlagKind = 'string' | 'bool' | 'int' | 'duration' | 'list';

export interface FlagSpec {
  name: string;
  short?: string;
  kind: FlagKind;
  /** Default as kaniko documents it (strings for string/duration flags). */
  default?: string | boolean | number;
  /** Environment variable read when the flag is not given. */
  env?: string;
  description: string;
}

export class FlagError extends Error {}

export type FlagValue = string | boolean | number | string[];

export interface ParsedCommandLine {
  values: Map<string, FlagValue>;
  /** Flags the user actually wrote (or set through their environment variable). */
  given: Set<string>;
  positional: string[];
}

export function parseFlags(argv: readonly string[], specs: readonly FlagSpec[], env: NodeJS.ProcessEnv = process.env): ParsedCommandLine {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short!, s]));
  const values = new Map<string, FlagValue>();
  const given = new Set<string>();
  const positional: string[] = [];

  const set = (spec: FlagSpec, raw: string | undefined, display: string): void => {
    given.add(spec.name);
    switch (spec.kind) {
      case 'bool': {
        const v = raw === undefined ? 'true' : raw.toLowerCase();
        if (!['true', 'false', '1', '0', 't', 'f'].includes(v)) throw new FlagError(`invalid argument "${raw}" for "${display}" flag: expected true or false`);
        values.set(spec.name, v === 'true' || v === '1' || v === 't');
        return;
      }
      case 'int': {
        if (raw === undefined || !/^[+-]?\d+$/.test(raw)) throw new FlagError(`invalid argument "${raw ?? ''}" for "${display}" flag: expected an integer`);
        values.set(spec.name, Number(raw));
        return;
      }
      case 'list': {
        const prev = given.has(spec.name) && Array.isArray(values.get(spec.name)) ? (values.get(spec.name) as string[]) : [];
        values.set(spec.name, [...prev, raw ?? '']);
        return;
      }
      default:
        values.set(spec.name, raw ?? '');
    }
  };

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      const spec = byName.get(name);
      if (!spec) throw new FlagError(`unknown flag: --${name}`);
      let raw = eq < 0 ? undefined : arg.slice(eq + 1);
      if (raw === undefined && spec.kind !== 'bool') {
        if (i + 1 >= argv.length) throw new FlagError(`flag needs an argument: --${name}`);
        raw = argv[++i]!;
      }
      set(spec, raw, name);
    } else if (arg.startsWith('-') && arg.length > 1) {
      const letter = arg[1]!;
      const spec = byShort.get(letter);
      if (!spec) throw new FlagError(`unknown shorthand flag: '${letter}' in ${arg}`);
      let raw: string | undefined = arg.slice(2);
      if (raw.startsWith('=')) raw = raw.slice(1);
      else if (raw === '') raw = undefined;
      if (raw === undefined && spec.kind !== 'bool') {
        if (i + 1 >= argv.length) throw new FlagError(`flag needs an argument: '${letter}' in -${letter}`);
        raw = argv[++i]!;
      }
      set(spec, raw, spec.name);
    } else positional.push(arg);
  }

  // kaniko reads its environment variables after the flags: a list variable adds to the flag's
  // values, any other variable overrides the flag (KANIKO_NO_PUSH beats --no-push).
  for (const spec of specs) {
    const fromEnv = spec.env ? env[spec.env] : undefined;
    if (fromEnv !== undefined && fromEnv !== '') set(spec, fromEnv, `${spec.name} (from ${spec.env})`);
    else if (given.has(spec.name)) continue;
    else if (spec.kind === 'list') values.set(spec.name, []);
    else if (spec.default !== undefined) values.set(spec.name, spec.default);
  }
  return { values, given, positional };
}
