import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  applyArg, applyCmd, applyEntrypoint, applyEnv, applyExpose, applyHealthcheck, applyLabel, applyOnbuild, applyVolume,
  applyWorkdir, type StageVariables,
} from '../../src/build/metadata-steps.js';
import { BuildError } from '../../src/build/errors.js';
import { parseDockerfile } from '../../src/dockerfile/parser.js';
import { toInstruction, type Instruction } from '../../src/dockerfile/instructions.js';
import { ShellLex } from '../../src/dockerfile/shell-lex.js';
import type { ContainerConfig } from '../../src/image/types.js';

/** The one instruction in `text`, checked to be of `kind`. */
function parse<K extends Instruction['kind']>(text: string, kind: K): Extract<Instruction, { kind: K }> {
  const ins = toInstruction(parseDockerfile(text).instructions[0]!);
  assert.equal(ins.kind, kind);
  return ins as Extract<Instruction, { kind: K }>;
}

function scope(vars: Record<string, string> = {}): StageVariables {
  return { lex: new ShellLex('\\'), vars: new Map(Object.entries(vars)) };
}

describe('metadata steps', () => {
  it('ENV expands with the variables from before the instruction and keeps a variable in its place', () => {
    const cfg: ContainerConfig = { Env: ['PATH=/bin', 'A=old', 'Z=z'] };
    const vars = scope({ A: 'old' });
    const createdBy = applyEnv(parse('ENV A=new B=${A}-x', 'env'), cfg, vars);
    assert.equal(createdBy, 'ENV A=new B=old-x');
    assert.deepEqual(cfg.Env, ['PATH=/bin', 'A=new', 'Z=z', 'B=old-x']);
    assert.equal(vars.vars.get('A'), 'new');
    assert.equal(vars.vars.get('B'), 'old-x');
  });

  it('LABEL adds to the inherited labels without changing the base object', () => {
    const base = { keep: '1', over: 'base' };
    const cfg: ContainerConfig = { Labels: base };
    assert.equal(applyLabel(parse('LABEL over="$V" "a b"=c', 'label'), cfg, scope({ V: 'stage' })), 'LABEL over=stage a b=c');
    assert.deepEqual(cfg.Labels, { keep: '1', over: 'stage', 'a b': 'c' });
    assert.deepEqual(base, { keep: '1', over: 'base' });
  });

  it('ARG prefers --build-arg, then its default, then the global value, and records what RUN sees', () => {
    const vars = scope();
    const stageArgs: [string, string][] = [['B', 'earlier']];
    const sources = { buildArgs: new Map([['A', 'cli']]), globalArgs: new Map([['C', 'global'], ['D', undefined]]), consumedBuildArgs: new Set<string>() };
    const createdBy = applyArg(parse('ARG A=default B=$A C D E', 'arg'), vars, stageArgs, sources);
    assert.equal(createdBy, 'ARG A=cli B=cli C=global D E');
    assert.deepEqual(stageArgs, [['B', 'cli'], ['A', 'cli'], ['C', 'global']]);
    assert.deepEqual([...sources.consumedBuildArgs], ['A']);
    assert.equal(vars.vars.has('D'), false);
  });

  it('EXPOSE defaults to /tcp, expands one word into several ports and checks each', () => {
    const cfg: ContainerConfig = { ExposedPorts: { '22/tcp': {} } };
    assert.equal(applyExpose(parse('EXPOSE $PORTS 53/UDP', 'expose'), cfg, scope({ PORTS: '80 8000-8001' })), 'EXPOSE [80/tcp 8000/tcp 8001/tcp 53/udp]');
    assert.deepEqual(cfg.ExposedPorts, { '22/tcp': {}, '80/tcp': {}, '8000/tcp': {}, '8001/tcp': {}, '53/udp': {} });
    assert.throws(() => applyExpose(parse('EXPOSE 80/icmp', 'expose'), {}, scope()), (e: unknown) => e instanceof BuildError && /invalid proto: icmp/.test(e.message));
  });

  it('VOLUME refuses a path that expands to nothing, before changing the config', () => {
    const cfg: ContainerConfig = {};
    assert.throws(() => applyVolume(parse('VOLUME /data $EMPTY', 'volume'), cfg, scope({ EMPTY: '' })), (e: unknown) => e instanceof BuildError && e.line === 1 && e.message.includes('VOLUME specified can not be an empty string'));
    assert.equal(cfg.Volumes, undefined);
    assert.deepEqual(applyVolume(parse('VOLUME ["/a", "$D"]', 'volume'), cfg, scope({ D: '/b' })), { paths: ['/a', '/b'], createdBy: 'VOLUME [/a /b]' });
  });

  it('WORKDIR joins a relative path to the current one and drops trailing slashes', () => {
    const cfg: ContainerConfig = { WorkingDir: '/app' };
    assert.equal(applyWorkdir(cfg, 'src/../lib/'), '/app/lib');
    assert.equal(cfg.WorkingDir, '/app/lib');
    assert.equal(applyWorkdir(cfg, '/'), '/');
  });

  it('CMD in shell form runs through the SHELL set, and an ENTRYPOINT keeps only a CMD of this stage', () => {
    const cfg: ContainerConfig = { Shell: ['/bin/bash', '-eu', '-c'] };
    assert.equal(applyCmd(parse('CMD echo "$HOME"', 'cmd'), cfg), 'CMD ["/bin/bash" "-eu" "-c" "echo \\"$HOME\\""]');
    assert.deepEqual(cfg.Cmd, ['/bin/bash', '-eu', '-c', 'echo "$HOME"']);
    assert.equal(cfg.ArgsEscaped, true);
    applyEntrypoint(parse('ENTRYPOINT ["/init"]', 'entrypoint'), cfg, true);
    assert.deepEqual([cfg.Entrypoint, cfg.Cmd], [['/init'], ['/bin/bash', '-eu', '-c', 'echo "$HOME"']]);
    const inherited: ContainerConfig = { Cmd: ['base'] };
    assert.equal(applyEntrypoint(parse('ENTRYPOINT []', 'entrypoint'), inherited, false), 'ENTRYPOINT []');
    assert.deepEqual([inherited.Entrypoint, inherited.Cmd], [null, null]);
  });

  it('HEALTHCHECK NONE stores only the test and renders the zero durations', () => {
    const cfg: ContainerConfig = { Healthcheck: { Test: ['CMD', 'old'], Interval: 1e9 } };
    assert.equal(applyHealthcheck(parse('HEALTHCHECK NONE', 'healthcheck'), cfg), 'HEALTHCHECK {Test:[NONE] Interval:0s Timeout:0s StartPeriod:0s StartInterval:0s Retries:0}');
    assert.deepEqual(cfg.Healthcheck, { Test: ['NONE'] });
    applyHealthcheck(parse('HEALTHCHECK --interval=1m30s --retries=2 CMD check', 'healthcheck'), cfg);
    assert.deepEqual(cfg.Healthcheck, { Test: ['CMD-SHELL', 'check'], Interval: 90e9, Retries: 2 });
  });

  it('ONBUILD appends the trigger as written', () => {
    const cfg: ContainerConfig = { OnBuild: ['RUN a'] };
    applyOnbuild(parse('ONBUILD RUN echo $X', 'onbuild'), cfg);
    assert.deepEqual(cfg.OnBuild, ['RUN a', 'RUN echo $X']);
  });
});
