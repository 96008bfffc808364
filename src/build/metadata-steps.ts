// The instructions that change only the image config (ENV, LABEL, ARG, EXPOSE, VOLUME, USER, WORKDIR's
// path, STOPSIGNAL, MAINTAINER, ONBUILD, SHELL, CMD, ENTRYPOINT, HEALTHCHECK), as BuildKit's dispatchEnv,
// dispatchLabel, … do: each applies one instruction and returns the history text (`created_by`) it
// records. No files or layers here: the stage builder does that work and writes the history entry.
import { posix } from 'node:path';
import type {
  ArgInstruction, CommandLineInstruction, EnvInstruction, ExposeInstruction, HealthcheckInstruction, KeyValue,
  LabelInstruction, MaintainerInstruction, OnbuildInstruction, ShellInstruction, StopSignalInstruction,
  UserInstruction, VolumeInstruction,
} from '../dockerfile/instructions.js';
import type { ShellLex } from '../dockerfile/shell-lex.js';
import type { ContainerConfig, HealthConfig, ImageConfig } from '../image/types.js';
import { checkSignal, exposedPorts, setEnv } from './config-values.js';
import { BuildError } from './errors.js';
import { goDuration, goList, goQuotedList } from './go-format.js';

/** A stage's variables and the lexer that expands words with them. */
export interface StageVariables {
  lex: ShellLex;
  /** What `$VAR` sees: ENV and ARG values in the order they were set (BuildKit's state env). */
  vars: Map<string, string>;
}

/** Where an ARG without a stage-level value takes one from. */
export interface ArgSources {
  buildArgs: ReadonlyMap<string, string>;
  /** Values of ARGs declared before the first FROM, after --build-arg overrides. */
  globalArgs: ReadonlyMap<string, string | undefined>;
  /** Build args some ARG consumed, for the "not consumed" warning. */
  consumedBuildArgs: Set<string>;
}

function word(text: string, scope: StageVariables): string {
  return scope.lex.processWord(text, (name) => scope.vars.get(name));
}

/** Every key and value expanded with the variables as they stood before the instruction. */
function expandPairs(pairs: readonly KeyValue[], scope: StageVariables): KeyValue[] {
  return pairs.map((p) => ({ key: word(p.key, scope), value: word(p.value, scope) }));
}

export function applyEnv(ins: EnvInstruction, cfg: ContainerConfig, scope: StageVariables): string {
  const pairs = expandPairs(ins.pairs, scope);
  for (const { key, value } of pairs) {
    scope.vars.set(key, value);
    cfg.Env = setEnv(cfg.Env ?? [], key, value);
  }
  return 'ENV ' + pairs.map((p) => `${p.key}=${p.value}`).join(' ');
}

export function applyLabel(ins: LabelInstruction, cfg: ContainerConfig, scope: StageVariables): string {
  const pairs = expandPairs(ins.pairs, scope);
  cfg.Labels = { ...(cfg.Labels ?? {}) };
  for (const { key, value } of pairs) cfg.Labels[key] = value;
  return 'LABEL ' + pairs.map((p) => `${p.key}=${p.value}`).join(' ');
}

/**
 * ARG changes no config: it sets the variable (a --build-arg wins over the default, a global ARG
 * fills in when there is neither) and records it in `stageArgs` (BuildKit's d.buildArgs), which RUN sees.
 */
export function applyArg(ins: ArgInstruction, scope: StageVariables, stageArgs: [string, string][], sources: ArgSources): string {
  const shown: string[] = [];
  for (const arg of ins.args) {
    let value: string | undefined;
    if (sources.buildArgs.has(arg.key)) {
      value = sources.buildArgs.get(arg.key);
      sources.consumedBuildArgs.add(arg.key);
    } else if (arg.value !== undefined) value = word(arg.value, scope);
    else if (sources.globalArgs.has(arg.key)) value = sources.globalArgs.get(arg.key);
    if (value !== undefined) {
      scope.vars.set(arg.key, value);
      const at = stageArgs.findIndex(([k]) => k === arg.key);
      if (at >= 0) stageArgs[at] = [arg.key, value];
      else stageArgs.push([arg.key, value]);
    }
    shown.push(value === undefined ? arg.key : `${arg.key}=${value}`);
  }
  return 'ARG ' + shown.join(' ');
}

export function applyExpose(ins: ExposeInstruction, cfg: ContainerConfig, scope: StageVariables): string {
  const ports: string[] = [];
  // One word may expand to several ports (`EXPOSE $PORTS`).
  for (const raw of ins.ports) {
    for (const p of scope.lex.processWords(raw, (name) => scope.vars.get(name))) ports.push(...exposedPorts(p, ins.node.startLine));
  }
  cfg.ExposedPorts = { ...(cfg.ExposedPorts ?? {}) };
  for (const p of ports) cfg.ExposedPorts[p] = {};
  return `EXPOSE ${goList(ports)}`;
}

/** VOLUME's config change; the paths are returned too, for the build root to leave out of snapshots. */
export function applyVolume(ins: VolumeInstruction, cfg: ContainerConfig, scope: StageVariables): { paths: string[]; createdBy: string } {
  const paths = ins.paths.map((p) => word(p, scope));
  if (paths.some((p) => p === '')) throw new BuildError('VOLUME specified can not be an empty string', ins.node.startLine);
  cfg.Volumes = { ...(cfg.Volumes ?? {}) };
  for (const p of paths) cfg.Volumes[p] = {};
  return { paths, createdBy: `VOLUME ${goList(paths)}` };
}

export function applyUser(ins: UserInstruction, cfg: ContainerConfig, scope: StageVariables): string {
  cfg.User = word(ins.user, scope);
  return `USER ${cfg.User}`;
}

/** WORKDIR's effect on the config (`path` already expanded): relative paths join the current one. */
export function applyWorkdir(cfg: ContainerConfig, path: string): string {
  const wd = posix.normalize(posix.isAbsolute(path) ? path : posix.join(cfg.WorkingDir || '/', path));
  cfg.WorkingDir = wd.length > 1 ? wd.replace(/\/+$/, '') : wd;
  return cfg.WorkingDir;
}

export function applyStopSignal(ins: StopSignalInstruction, cfg: ContainerConfig, scope: StageVariables): string {
  cfg.StopSignal = checkSignal(word(ins.signal, scope), ins.node.startLine);
  return `STOPSIGNAL ${cfg.StopSignal}`;
}

/** MAINTAINER sets the image's author, outside the container config; its name is not expanded. */
export function applyMaintainer(ins: MaintainerInstruction, image: ImageConfig): string {
  image.author = ins.name;
  return `MAINTAINER ${ins.name}`;
}

/** ONBUILD returns no history text: BuildKit records no history for it. */
export function applyOnbuild(ins: OnbuildInstruction, cfg: ContainerConfig): void {
  cfg.OnBuild = [...(cfg.OnBuild ?? []), ins.expression];
}

export function applyShell(ins: ShellInstruction, cfg: ContainerConfig): string {
  cfg.Shell = [...ins.shell];
  return `SHELL ${goList(ins.shell)}`;
}

/** CMD/ENTRYPOINT's argv: shell form runs through SHELL (default /bin/sh -c). */
function commandArgs(ins: CommandLineInstruction, cfg: ContainerConfig): string[] {
  return ins.prependShell ? [...(cfg.Shell ?? ['/bin/sh', '-c']), ...ins.cmdLine] : [...ins.cmdLine];
}

export function applyCmd(ins: CommandLineInstruction, cfg: ContainerConfig): string {
  const args = commandArgs(ins, cfg);
  cfg.Cmd = args;
  cfg.ArgsEscaped = true; // as BuildKit sets it, for Docker's Windows-era consumers
  return `CMD ${goQuotedList(args)}`;
}

/** `cmdSetInStage`: whether this stage has set CMD already, which an ENTRYPOINT then keeps. */
export function applyEntrypoint(ins: CommandLineInstruction, cfg: ContainerConfig, cmdSetInStage: boolean): string {
  const args = commandArgs(ins, cfg);
  cfg.Entrypoint = ins.prependShell || args.length > 0 ? args : null;
  // Docker: an ENTRYPOINT resets the CMD inherited from the base unless this stage set one.
  if (!cmdSetInStage) cfg.Cmd = null;
  return `ENTRYPOINT ${goQuotedList(args)}`;
}

export function applyHealthcheck(ins: HealthcheckInstruction, cfg: ContainerConfig): string {
  // Docker's HealthConfig omits zero fields (`omitempty`).
  const hc: HealthConfig = { Test: ins.test };
  if (ins.interval) hc.Interval = ins.interval;
  if (ins.timeout) hc.Timeout = ins.timeout;
  if (ins.startPeriod) hc.StartPeriod = ins.startPeriod;
  if (ins.startInterval) hc.StartInterval = ins.startInterval;
  if (ins.retries) hc.Retries = ins.retries;
  cfg.Healthcheck = hc;
  const d = (n: number | undefined): string => goDuration(n ?? 0);
  return `HEALTHCHECK {Test:${goList(ins.test)} Interval:${d(hc.Interval)} Timeout:${d(hc.Timeout)} StartPeriod:${d(hc.StartPeriod)} StartInterval:${d(hc.StartInterval)} Retries:${hc.Retries ?? 0}}`;
}
