// Splits typed instructions into build stages (BuildKit's instructions.Parse): ARGs before the first
// FROM are meta args (global scope), every FROM opens a stage, stage names are unique.
import { DockerfileSyntaxError, type ParseResult } from './ast.js';
import { toInstruction, type ArgInstruction, type FromInstruction, type Instruction } from './instructions.js';

export interface Stage {
  index: number;
  /** Lower-cased `AS` name, if any. */
  name?: string;
  from: FromInstruction;
  instructions: Exclude<Instruction, FromInstruction>[];
}

export interface DockerfileModel {
  metaArgs: ArgInstruction[];
  stages: Stage[];
}

export function toStages(parse: ParseResult): DockerfileModel {
  const metaArgs: ArgInstruction[] = [];
  const stages: Stage[] = [];
  for (const node of parse.instructions) {
    const instruction = toInstruction(node);
    if (instruction.kind === 'from') {
      const name = instruction.stageName;
      if (name !== undefined && stages.some((s) => s.name === name)) {
        throw new DockerfileSyntaxError(`duplicate stage name "${name}"`, node.startLine);
      }
      stages.push({ index: stages.length, name, from: instruction, instructions: [] });
      continue;
    }
    const current = stages[stages.length - 1];
    if (current) current.instructions.push(instruction);
    else if (instruction.kind === 'arg') metaArgs.push(instruction);
    else {
      throw new DockerfileSyntaxError(
        `${node.keyword.toUpperCase()} before the first FROM: only ARG may come before FROM (no build stage in current context)`,
        node.startLine,
      );
    }
  }
  if (stages.length === 0) throw new DockerfileSyntaxError('the Dockerfile has no FROM instruction', 0);
  return { metaArgs, stages };
}

/** The index of the stage `--target` names (by name or, as kaniko allows, by index); the last stage when none. */
export function targetStageIndex(model: DockerfileModel, target: string | undefined): number {
  if (target === undefined || target === '') return model.stages.length - 1;
  const byName = model.stages.find((s) => s.name === target.toLowerCase());
  if (byName) return byName.index;
  if (/^\d+$/.test(target) && Number(target) < model.stages.length) return Number(target);
  const names = model.stages.map((s) => s.name).filter((n) => n !== undefined);
  throw new DockerfileSyntaxError(
    `target stage "${target}" could not be found` + (names.length ? ` (stages: ${names.join(', ')})` : ' (no stage has a name)'),
    0,
  );
}
