import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { resolveUser, runArgv, runEnv, runHistory, runScript, DEFAULT_PATH } from '../../src/build/run-step.js';
import { parseDockerfile } from '../../src/dockerfile/parser.js';
import { toInstruction, type CommandLineInstruction } from '../../src/dockerfile/instructions.js';

function runOf(text: string): CommandLineInstruction {
  const ins = toInstruction(parseDockerfile(text).instructions[0]!);
  assert.equal(ins.kind, 'run');
  return ins as CommandLineInstruction;
}

const passwd = 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nbob:x:1500:1500::/home/bob:/bin/sh\n';
const group = 'root:x:0:\napp:x:1000:\ndevs:x:1600:app,bob\nwheel:x:10:bob\n';

describe('RUN process', () => {
  it('runs shell form through SHELL and exec form as written', () => {
    assert.deepEqual(runArgv(runOf('RUN echo hi'), undefined), ['/bin/sh', '-c', 'echo hi']);
    assert.deepEqual(runArgv(runOf('RUN echo hi'), ['/bin/bash', '-eo', 'pipefail', '-c']), ['/bin/bash', '-eo', 'pipefail', '-c', 'echo hi']);
    assert.deepEqual(runArgv(runOf('RUN ["/bin/echo", "a b"]'), ['/bin/bash', '-c']), ['/bin/echo', 'a b']);
  });

  it('runs heredocs as BuildKit does', () => {
    assert.deepEqual(runArgv(runOf('RUN <<EOF\necho one\necho two\nEOF\n'), undefined), ['/bin/sh', '-c', 'echo one\necho two\n']);
    assert.deepEqual(runArgv(runOf('RUN cat > /f <<EOT\nbody\nEOT\n'), undefined), ['/bin/sh', '-c', 'cat > /f <<EOT\nbody\nEOT']);
  });

  it('runs a heredoc that starts with #! as a file at /dev/pipes, its body unexpanded, as BuildKit does', () => {
    const ins = runOf('RUN <<EOF\n#!/bin/sh -e\necho $HOME\nEOF\n');
    assert.deepEqual(runArgv(ins, ['/bin/bash', '-c']), ['/dev/pipes/EOF']);
    assert.deepEqual(runScript(ins), { target: '/dev/pipes/EOF', content: '#!/bin/sh -e\necho $HOME\n' });
    assert.equal(runScript(runOf('RUN <<EOF\necho plain\nEOF\n')), undefined);
    assert.equal(runScript(runOf('RUN cat <<EOF\n#!/bin/sh\nEOF\n')), undefined, 'a heredoc fed to a command is its input, not a script');
  });

  it('writes history as BuildKit, with the stage build args first', () => {
    assert.equal(runHistory(['/bin/sh', '-c', 'make'], [['A', '1'], ['B', 'x y']]), 'RUN |2 A=1 B=x y /bin/sh -c make');
    assert.equal(runHistory(['/bin/sh', '-c', 'make'], []), 'RUN /bin/sh -c make');
  });

  it('builds the environment: ENV wins over build args, PATH and HOME default', () => {
    assert.deepEqual(runEnv(['A=env'], [['A', 'arg'], ['B', 'arg']], '/root'), ['A=env', 'B=arg', `PATH=${DEFAULT_PATH}`, 'HOME=/root']);
    assert.deepEqual(runEnv(['PATH=/x', 'HOME=/h'], [], '/root'), ['PATH=/x', 'HOME=/h']);
  });

  it('resolves users as Docker: names, numbers, groups and members', () => {
    const files = { passwd, group };
    assert.deepEqual(resolveUser('0', files), { uid: 0, gid: 0, groups: [0], home: '/root' });
    assert.deepEqual(resolveUser('bob', files), { uid: 1500, gid: 1500, groups: [1500, 1600, 10], home: '/home/bob' });
    assert.deepEqual(resolveUser('1000', files), { uid: 1000, gid: 1000, groups: [1000, 1600], home: '/home/app' });
    assert.deepEqual(resolveUser('app:devs', files), { uid: 1000, gid: 1600, groups: [1600], home: '/home/app' });
    assert.deepEqual(resolveUser('4321', files), { uid: 4321, gid: 0, groups: [0], home: '/' });
    assert.deepEqual(resolveUser('4321:55', {}), { uid: 4321, gid: 55, groups: [55], home: '/' });
    assert.throws(() => resolveUser('nobody', files), /unable to find user nobody/);
    assert.throws(() => resolveUser('app:nogroup', files), /unable to find group nogroup/);
  });
});
