// What a Dockerfile's stage graph and global ARGs say before any stage runs: which stage or image
// each FROM and COPY --from names, the global ARG values (with BuildKit's automatic platform ARGs),
// each stage's base platform, SOURCE_DATE_EPOCH, and which stages a target needs.
import { ShellLex } from '../dockerfile/shell-lex.js';
import type { DockerfileModel, Stage } from '../dockerfile/stages.js';
import { hostPlatform, InvalidPlatformError, parsePlatform, platformString } from '../image/platform.js';
import type { Platform } from '../image/types.js';
import { BuildError } from './errors.js';
import type { BuildOptions } from './options.js';
import type { StageEnvironment } from './stage-environment.js';

/** The stage a COPY --from names, by index or (case-insensitive) name; undefined for an image. */
export function stageNamed(model: DockerfileModel, from: string): Stage | undefined {
  return /^\d+$/.test(from) ? model.stages[Number(from)] : model.stages.find((s) => s.name === from.toLowerCase());
}

/** Index of the earlier stage a FROM names, or -1. */
export function baseIndex(model: DockerfileModel, stage: Stage, baseName: string): number {
  const lower = baseName.toLowerCase();
  const earlier = model.stages.slice(0, stage.index).find((s) => s.name === lower);
  return earlier ? earlier.index : -1;
}

/** Whether a FROM's expanded name is an image in a registry: neither scratch nor an earlier stage. */
export function namesRegistryImage(model: DockerfileModel, stage: Stage, baseName: string): boolean {
  return baseName.toLowerCase() !== 'scratch' && baseIndex(model, stage, baseName) < 0;
}

export function expandFrom(stage: Stage, env: Pick<StageEnvironment, 'escapeToken' | 'globalArgs'>): string {
  const lex = new ShellLex(env.escapeToken);
  const name = lex.processWord(stage.from.image, (k) => env.globalArgs.get(k));
  if (name === '') throw new BuildError(`FROM ${stage.from.image}: the base image name is empty after expanding build args`, stage.from.node.startLine);
  return name;
}

/**
 * The platform a stage's base is picked for: FROM --platform (expanded with the global ARGs, so
 * `--platform=$BUILDPLATFORM` works) or the build's target platform. As in BuildKit, it only picks
 * the base; TARGETPLATFORM inside the stage still names the build's target.
 */
export function stagePlatform(stage: Stage, env: Pick<StageEnvironment, 'escapeToken' | 'globalArgs'>, options: BuildOptions): Platform {
  if (stage.from.platform === undefined) return options.platform;
  const line = stage.from.node.startLine;
  const text = new ShellLex(env.escapeToken).processWord(stage.from.platform, (k) => env.globalArgs.get(k));
  try {
    return parsePlatform(text);
  } catch (e) {
    if (e instanceof InvalidPlatformError) throw new BuildError(`FROM --platform=${stage.from.platform}: ${e.message}`, line);
    throw e;
  }
}

/**
 * BuildKit's SOURCE_DATE_EPOCH build arg: the time (Unix seconds) the config and history say the
 * image was made, for reproducible builds; file timestamps are left as they are, as BuildKit does
 * by default. A stage sees it only through `ARG SOURCE_DATE_EPOCH`, like any build arg.
 */
export function sourceDateEpoch(buildArgs: ReadonlyMap<string, string>): Date | undefined {
  const value = buildArgs.get('SOURCE_DATE_EPOCH');
  if (value === undefined || value === '') return undefined;
  if (!/^\d{1,11}$/.test(value)) throw new BuildError(`SOURCE_DATE_EPOCH must be a Unix time in seconds, not "${value}"`, 0);
  return new Date(Number(value) * 1000);
}

/** ARGs that BuildKit defines without an ARG instruction (or, for SOURCE_DATE_EPOCH, uses itself). */
export const PREDEFINED_ARGS = new Set([
  'SOURCE_DATE_EPOCH',
  'HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'FTP_PROXY', 'ftp_proxy', 'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy',
]);

/** Global-scope ARG values: BuildKit's automatic platform args, then each meta ARG (a --build-arg wins). */
export function globalArgValues(model: DockerfileModel, options: Pick<BuildOptions, 'buildArgs' | 'platform'>, escapeToken: '\\' | '`'): Map<string, string | undefined> {
  const values = new Map<string, string | undefined>();
  // TARGET* name what is built (--custom-platform), BUILD* the machine kiln runs on.
  for (const [prefix, p] of [['TARGET', options.platform], ['BUILD', hostPlatform()]] as const) {
    values.set(`${prefix}PLATFORM`, platformString(p));
    values.set(`${prefix}OS`, p.os);
    values.set(`${prefix}ARCH`, p.architecture);
    values.set(`${prefix}VARIANT`, p.variant ?? '');
  }
  const lex = new ShellLex(escapeToken);
  for (const ins of model.metaArgs) {
    for (const arg of ins.args) {
      if (options.buildArgs.has(arg.key)) values.set(arg.key, options.buildArgs.get(arg.key));
      else if (arg.value !== undefined) {
        try {
          values.set(arg.key, lex.processWord(arg.value, (k) => values.get(k)));
        } catch (e) {
          throw new BuildError((e as Error).message, ins.node.startLine);
        }
      } else values.set(arg.key, undefined);
    }
  }
  return values;
}

export function safeExpand(lex: ShellLex, word: string, lookup: (k: string) => string | undefined): string {
  try {
    return lex.processWord(word, lookup);
  } catch {
    return word; // the stage reports the error when it runs
  }
}

/** The target and every stage it starts FROM or copies from, transitively. */
export function stagesNeededBy(model: DockerfileModel, target: number, env: Pick<StageEnvironment, 'escapeToken' | 'globalArgs' | 'buildArgs'>): Set<number> {
  const needed = new Set<number>();
  const lex = new ShellLex(env.escapeToken);
  const visit = (index: number): void => {
    if (index < 0 || needed.has(index)) return;
    needed.add(index);
    const stage = model.stages[index]!;
    visit(baseIndex(model, stage, expandFrom(stage, env)));
    // The stage's ARG defaults (and --build-arg values) as far as they are known before it runs.
    const args = new Map<string, string | undefined>();
    const lookup = (k: string): string | undefined => (args.has(k) ? args.get(k) : undefined);
    for (const ins of stage.instructions) {
      if (ins.kind === 'arg') {
        for (const a of ins.args) {
          if (env.buildArgs.has(a.key)) args.set(a.key, env.buildArgs.get(a.key));
          else if (a.value !== undefined) args.set(a.key, safeExpand(lex, a.value, lookup));
          else args.set(a.key, env.globalArgs.get(a.key));
        }
      }
      if (ins.kind !== 'copy' || ins.from === undefined) continue;
      const from = safeExpand(lex, ins.from, lookup);
      const source = stageNamed(model, from);
      if (source && source.index < index) visit(source.index);
    }
  };
  visit(target);
  return needed;
}
