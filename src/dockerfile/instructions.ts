// Typed instructions made from parse-tree nodes, as BuildKit's `instructions` package does:
// flags checked per instruction, argument counts checked, nothing expanded yet (expansion needs the
// stage's environment and happens at dispatch).
import { DockerfileSyntaxError, type Heredoc, type InstructionNode } from './ast.js';
import { parseHeredocWord } from './parser-heredoc.js';
import { InstructionFlagError, parseInstructionFlags, type FlagKind, type ParsedFlags } from './instruction-flags.js';

interface Located {
  /** The node this instruction came from (line numbers, original text). */
  node: InstructionNode;
}

export interface KeyValue { key: string; value: string; }
export interface ArgDefinition { key: string; value?: string; }
/** A heredoc used as a COPY/ADD source (`COPY <<EOF /file`). */
export interface InlineSource { name: string; content: string; expand: boolean; }

export interface FromInstruction extends Located { kind: 'from'; image: string; stageName?: string; platform?: string; }
export interface EnvInstruction extends Located { kind: 'env'; pairs: KeyValue[]; }
export interface LabelInstruction extends Located { kind: 'label'; pairs: KeyValue[]; }
export interface ArgInstruction extends Located { kind: 'arg'; args: ArgDefinition[]; }
export interface ExposeInstruction extends Located { kind: 'expose'; ports: string[]; }
export interface VolumeInstruction extends Located { kind: 'volume'; paths: string[]; }
export interface UserInstruction extends Located { kind: 'user'; user: string; }
export interface WorkdirInstruction extends Located { kind: 'workdir'; path: string; }
export interface StopSignalInstruction extends Located { kind: 'stopsignal'; signal: string; }
export interface MaintainerInstruction extends Located { kind: 'maintainer'; name: string; }
export interface OnbuildInstruction extends Located { kind: 'onbuild'; expression: string; }
export interface ShellInstruction extends Located { kind: 'shell'; shell: string[]; }
export interface CopyInstruction extends Located {
  kind: 'copy' | 'add';
  sources: string[];
  inlineSources: InlineSource[];
  dest: string;
  from?: string;
  chown?: string;
  chmod?: string;
  link: boolean;
  parents: boolean;
  excludes: string[];
  checksum?: string;
  keepGitDir: boolean;
  unpack?: boolean;
}
/** RUN, CMD, ENTRYPOINT: exec form (prependShell false) or shell form (one string, run through SHELL). */
export interface CommandLineInstruction extends Located {
  kind: 'run' | 'cmd' | 'entrypoint';
  cmdLine: string[];
  prependShell: boolean;
  heredocs: Heredoc[];
  flags: ParsedFlags;
}
export interface HealthcheckInstruction extends Located {
  kind: 'healthcheck';
  /** ["NONE"], ["CMD", ...exec], or ["CMD-SHELL", cmdline]. */
  test: string[];
  /** Nanoseconds, as the image config stores them; 0 means unset. */
  interval: number;
  timeout: number;
  startPeriod: number;
  startInterval: number;
  retries: number;
}

export type Instruction =
  | FromInstruction | EnvInstruction | LabelInstruction | ArgInstruction | ExposeInstruction
  | VolumeInstruction | UserInstruction | WorkdirInstruction | StopSignalInstruction | MaintainerInstruction
  | OnbuildInstruction | ShellInstruction | CopyInstruction | CommandLineInstruction | HealthcheckInstruction;

const validStageName = /^[a-z][a-z0-9-_.]*$/;

function fail(node: InstructionNode, message: string): never {
  throw new DockerfileSyntaxError(message, node.startLine);
}

function flagsOf(node: InstructionNode, declared: Record<string, FlagKind>): ParsedFlags {
  try {
    return parseInstructionFlags(node.flags, declared);
  } catch (e) {
    if (e instanceof InstructionFlagError) fail(node, `${node.keyword.toUpperCase()}: ${e.message}`);
    throw e;
  }
}

function pairs(node: InstructionNode): KeyValue[] {
  const out: KeyValue[] = [];
  for (let i = 0; i + 1 < node.args.length; i += 3) out.push({ key: node.args[i]!, value: node.args[i + 1]! });
  return out;
}

function exactlyOne(node: InstructionNode): string {
  if (node.args.length !== 1) fail(node, `${node.keyword.toUpperCase()} requires exactly one argument`);
  return node.args[0]!;
}

function atLeastOne(node: InstructionNode): string[] {
  if (node.args.length === 0) fail(node, `${node.keyword.toUpperCase()} requires at least one argument`);
  return node.args;
}

/** Parses one node into a typed instruction; throws DockerfileSyntaxError with the node's line. */
export function toInstruction(node: InstructionNode): Instruction {
  const keyword = node.keyword;
  switch (keyword) {
    case 'from': {
      const flags = flagsOf(node, { platform: 'string' });
      const args = node.args;
      let stageName: string | undefined;
      if (args.length === 3 && args[1]!.toLowerCase() === 'as') {
        stageName = args[2]!.toLowerCase();
        if (!validStageName.test(stageName)) {
          fail(node, `invalid name for build stage: "${args[2]}", name can't start with a number or contain symbols`);
        }
      } else if (args.length !== 1) {
        fail(node, 'FROM requires either one or three arguments');
      }
      return { kind: 'from', node, image: args[0]!, stageName, platform: flags.strings.get('platform') };
    }
    case 'env':
    case 'label': {
      flagsOf(node, {});
      if (node.args.length === 0) fail(node, `${keyword.toUpperCase()} requires at least one argument`);
      const list = pairs(node);
      if (list.some((p) => p.key === '')) fail(node, `${keyword.toUpperCase()} names can not be blank`);
      return { kind: keyword, node, pairs: list };
    }
    case 'arg': {
      flagsOf(node, {});
      const args = atLeastOne(node).map((word): ArgDefinition => {
        const eq = word.indexOf('=');
        if (eq < 0) return { key: word };
        if (eq === 0) fail(node, 'ARG names can not be blank');
        return { key: word.slice(0, eq), value: word.slice(eq + 1) };
      });
      return { kind: 'arg', node, args };
    }
    case 'expose':
      flagsOf(node, {});
      return { kind: 'expose', node, ports: [...atLeastOne(node)].sort() };
    case 'volume': {
      flagsOf(node, {});
      const paths = atLeastOne(node).map((v) => v.trim());
      if (paths.some((p) => p === '')) fail(node, 'VOLUME specified can not be an empty string');
      return { kind: 'volume', node, paths };
    }
    case 'user':
      flagsOf(node, {});
      return { kind: 'user', node, user: exactlyOne(node) };
    case 'workdir':
      flagsOf(node, {});
      return { kind: 'workdir', node, path: exactlyOne(node) };
    case 'stopsignal':
      flagsOf(node, {});
      return { kind: 'stopsignal', node, signal: exactlyOne(node) };
    case 'maintainer':
      flagsOf(node, {});
      return { kind: 'maintainer', node, name: exactlyOne(node) };
    case 'onbuild':
      return toOnbuild(node);
    case 'shell': {
      flagsOf(node, {});
      if (!node.json) fail(node, 'SHELL requires the arguments to be in JSON form');
      return { kind: 'shell', node, shell: atLeastOne(node) };
    }
    case 'copy':
    case 'add':
      return toCopy(node);
    case 'run':
    case 'cmd':
    case 'entrypoint': {
      const flags = flagsOf(node, keyword === 'run' ? { mount: 'list', network: 'string', security: 'string', device: 'list' } : {});
      return { kind: keyword, node, cmdLine: [...node.args], prependShell: !node.json, heredocs: node.heredocs, flags };
    }
    case 'healthcheck':
      return toHealthcheck(node);
    default:
      fail(node, `unknown instruction: ${keyword.toUpperCase()}`);
  }
}

function toOnbuild(node: InstructionNode): OnbuildInstruction {
  flagsOf(node, {});
  const inner = node.onbuild;
  if (!inner) fail(node, 'ONBUILD requires at least one argument');
  const trigger = inner.keyword.toUpperCase();
  if (trigger === 'ONBUILD') fail(node, 'Chaining ONBUILD via `ONBUILD ONBUILD` isn\'t allowed');
  if (trigger === 'MAINTAINER' || trigger === 'FROM') fail(node, `${trigger} isn't allowed as an ONBUILD trigger`);
  // The trigger is stored as written (minus ONBUILD), heredoc bodies re-attached, as BuildKit stores it.
  let expression = node.original.replace(/^\s*ONBUILD\s*/i, '');
  for (const h of inner.heredocs) expression += '\n' + h.content + h.name;
  return { kind: 'onbuild', node, expression };
}

function toCopy(node: InstructionNode): CopyInstruction {
  const kind = node.keyword as 'copy' | 'add';
  const declared: Record<string, FlagKind> = kind === 'copy'
    ? { from: 'string', chown: 'string', chmod: 'string', link: 'bool', parents: 'bool', exclude: 'list' }
    : { chown: 'string', chmod: 'string', link: 'bool', 'keep-git-dir': 'bool', checksum: 'string', unpack: 'bool', exclude: 'list' };
  const flags = flagsOf(node, declared);
  if (node.args.length < 2) fail(node, `${kind.toUpperCase()} requires at least two arguments, but only one was provided. Destination could not be determined`);
  const dest = node.args[node.args.length - 1]!;
  if (heredocName(dest) !== undefined) fail(node, `${kind.toUpperCase()} cannot accept a heredoc as a destination`);
  const sources: string[] = [];
  const inlineSources: InlineSource[] = [];
  for (const src of node.args.slice(0, -1)) {
    const name = heredocName(src);
    const doc = name === undefined ? undefined : node.heredocs.find((h) => h.name === name);
    if (doc) inlineSources.push({ name: doc.name, content: doc.content, expand: doc.expand });
    else sources.push(src);
  }
  return {
    kind, node, sources, inlineSources, dest,
    from: flags.strings.get('from'),
    chown: flags.strings.get('chown'),
    chmod: flags.strings.get('chmod'),
    link: flags.bools.get('link') ?? false,
    parents: flags.bools.get('parents') ?? false,
    excludes: flags.lists.get('exclude') ?? [],
    checksum: flags.strings.get('checksum'),
    keepGitDir: flags.bools.get('keep-git-dir') ?? false,
    unpack: flags.bools.get('unpack'),
  };
}

/** The delimiter of a `<<EOF` / `<<-"EOF"` word, or undefined when the word is not a heredoc. */
function heredocName(word: string): string | undefined {
  return parseHeredocWord(word)?.name;
}

function toHealthcheck(node: InstructionNode): HealthcheckInstruction {
  const args = atLeastOne(node);
  const type = args[0]!.toUpperCase();
  const base = { kind: 'healthcheck' as const, node, interval: 0, timeout: 0, startPeriod: 0, startInterval: 0, retries: 0 };
  if (type === 'NONE') {
    flagsOf(node, {});
    if (args.length !== 1) fail(node, 'HEALTHCHECK NONE takes no arguments');
    return { ...base, test: ['NONE'] };
  }
  const flags = flagsOf(node, { interval: 'string', timeout: 'string', 'start-period': 'string', 'start-interval': 'string', retries: 'string' });
  if (type !== 'CMD') fail(node, `Unknown type "${type}" in HEALTHCHECK (try CMD)`);
  const cmd = args.slice(1);
  if (cmd.length === 0) fail(node, 'Missing command after HEALTHCHECK CMD');
  const duration = (name: string): number => {
    const text = flags.strings.get(name);
    if (text === undefined || text === '') return 0;
    const ns = parseGoDuration(text);
    if (ns === undefined) fail(node, `HEALTHCHECK: invalid duration "${text}" for --${name}`);
    if (ns !== 0 && ns < 1_000_000) fail(node, `Interval "${name}" cannot be less than 1ms`);
    return ns;
  };
  let retries = 0;
  const retriesText = flags.strings.get('retries');
  if (retriesText !== undefined && retriesText !== '') {
    if (!/^[+-]?\d+$/.test(retriesText)) fail(node, `HEALTHCHECK: invalid --retries value "${retriesText}"`);
    retries = Number(retriesText);
    if (retries < 0) fail(node, `--retries cannot be negative (${retries})`);
  }
  return {
    ...base,
    test: node.json ? ['CMD', ...cmd] : ['CMD-SHELL', ...cmd],
    interval: duration('interval'),
    timeout: duration('timeout'),
    startPeriod: duration('start-period'),
    startInterval: duration('start-interval'),
    retries,
  };
}

const durationUnits: Record<string, number> = {
  ns: 1, us: 1e3, 'µs': 1e3, 'μs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9,
};

/** Go's time.ParseDuration ("1m30s", "1.5h", "300ms"), in nanoseconds; undefined when invalid. */
export function parseGoDuration(text: string): number | undefined {
  let rest = text;
  let sign = 1;
  if (rest.startsWith('-') || rest.startsWith('+')) {
    if (rest[0] === '-') sign = -1;
    rest = rest.slice(1);
  }
  if (rest === '0') return 0;
  if (rest === '') return undefined;
  let total = 0;
  const part = /^(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;
  while (rest !== '') {
    const m = part.exec(rest);
    if (!m) return undefined;
    total += Number(m[1]) * durationUnits[m[2]!]!;
    rest = rest.slice(m[0].length);
  }
  return sign * Math.round(total);
}
