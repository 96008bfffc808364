// Docker's semantics for the process of a RUN step: the command line (shell form through SHELL,
// exec form, heredocs as BuildKit runs them), the environment (ENV, then the stage's build args
// that ENV does not set, a default PATH, HOME), and the user and groups from the image's files.
import type { CommandLineInstruction as RunInstruction } from '../dockerfile/instructions.js';
import type { StepProcess } from '../isolation/step-process.js';
import { UserLookupError } from './users.js';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The argv of a RUN: heredoc handling as BuildKit's dispatchRun, then the shell for shell form. */
export function runArgv(ins: RunInstruction, shell: readonly string[] | undefined): string[] {
  let args = [...ins.cmdLine];
  if (ins.heredocs.length > 0 && ins.prependShell && args.length === 1) {
    const first = ins.heredocs[0]!;
    if (/^<<-?\s*(["']?)[^"'\s<]+\1\s*$/.test(args[0]!.trim())) {
      // The command is only a heredoc: its body is the script, or with a #! line a file that is run.
      if (runScript(ins)) return [HEREDOC_DIR + first.name];
      args = [first.content];
    } else {
      // The heredocs feed the command: hand the shell the whole text, as BuildKit does.
      args = [args[0] + ins.heredocs.map((h) => '\n' + h.content + h.name).join('')];
    }
  }
  return ins.prependShell ? [...(shell ?? ['/bin/sh', '-c']), ...args] : args;
}

/** Where BuildKit mounts a RUN heredoc that starts with #! (read-only, mode 0755), and runs it from. */
const HEREDOC_DIR = '/dev/pipes/';

/** The file a RUN made of one #! heredoc runs (its body is not expanded, as in BuildKit), if it is one. */
export function runScript(ins: RunInstruction): { target: string; content: string } | undefined {
  const first = ins.heredocs[0];
  if (!first || ins.heredocs.length !== 1 || !ins.prependShell || ins.cmdLine.length !== 1) return undefined;
  if (!/^<<-?\s*(["']?)[^"'\s<]+\1\s*$/.test(ins.cmdLine[0]!.trim()) || !first.content.startsWith('#!')) return undefined;
  if (!/^[A-Za-z0-9_.-]+$/.test(first.name)) throw new UserLookupError(`RUN <<${first.name}: a script's heredoc name must be a plain file name`);
  return { target: HEREDOC_DIR + first.name, content: first.content };
}

/** History text of a RUN, as BuildKit's runCommandString: "|N K=V ... argv". */
export function runHistory(argv: readonly string[], buildArgs: readonly [string, string][]): string {
  const prefix = buildArgs.length ? [`|${buildArgs.length}`, ...buildArgs.map(([k, v]) => `${k}=${v}`)] : [];
  return 'RUN ' + [...prefix, ...argv].join(' ');
}

export interface UserFiles {
  passwd?: string;
  group?: string;
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  groups: number[];
  home: string;
}

/**
 * USER as Docker resolves it: "name" or "uid", optionally ":group" or ":gid". A user found in
 * /etc/passwd brings its primary group, home and the groups that list it as a member; a numeric
 * user that is not there runs with gid 0 and home "/". An explicit group replaces the primary one and the memberships.
 */
export function resolveUser(spec: string, files: UserFiles): ResolvedUser {
  const colon = spec.indexOf(':');
  const userPart = (colon < 0 ? spec : spec.slice(0, colon)) || '0';
  const groupPart = colon < 0 ? '' : spec.slice(colon + 1);
  const passwd = parseColonFile(files.passwd);
  const groupFile = parseColonFile(files.group);
  const numeric = /^\d+$/;
  const entry = numeric.test(userPart) ? passwd.find((f) => f[2] === userPart) : passwd.find((f) => f[0] === userPart);
  if (!entry && !numeric.test(userPart)) {
    throw new UserLookupError(`unable to find user ${userPart}: no matching entries in passwd file`);
  }
  const uid = entry ? Number(entry[2]) : Number(userPart);
  let gid = entry ? Number(entry[3]) : 0;
  const home = entry?.[5] || '/';
  if (groupPart !== '') {
    if (numeric.test(groupPart)) gid = Number(groupPart);
    else {
      const g = groupFile.find((f) => f[0] === groupPart);
      if (!g) throw new UserLookupError(`unable to find group ${groupPart}: no matching entries in group file`);
      gid = Number(g[2]);
    }
  }
  // Docker: the primary group, then (unless a group was given) the groups listing the user.
  const groups = new Set<number>([gid]);
  if (entry && groupPart === '') {
    for (const g of groupFile) {
      if ((g[3] ?? '').split(',').includes(entry[0]!)) groups.add(Number(g[2]));
    }
  }
  return { uid, gid, groups: [...groups], home };
}

function parseColonFile(text: string | undefined): string[][] {
  if (!text) return [];
  return text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(':'));
}

/** The step's environment: the image's Env, build args ENV does not set, PATH and HOME if missing. */
export function runEnv(configEnv: readonly string[], buildArgs: readonly [string, string][], home: string): string[] {
  const env = [...configEnv];
  const has = (k: string): boolean => env.some((e) => e.startsWith(k + '='));
  for (const [k, v] of buildArgs) if (!has(k)) env.push(`${k}=${v}`);
  if (!has('PATH')) env.push(`PATH=${DEFAULT_PATH}`);
  if (!has('HOME')) env.push(`HOME=${home}`);
  return env;
}

export function stepProcess(argv: string[], env: string[], cwd: string, user: ResolvedUser): StepProcess {
  return { argv, env, cwd, uid: user.uid, gid: user.gid, groups: user.groups };
}
