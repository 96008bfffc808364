// Instruction values as Docker checks and applies them to the image config: EXPOSE port specs,
// STOPSIGNAL names, and ENV's place-keeping update of the environment.
import { BuildError } from './errors.js';

/** EXPOSE port specs ("80", "80/udp", "8000-8002/tcp") as config keys ("80/tcp"). */
export function exposedPorts(spec: string, line: number): string[] {
  const m = /^(?:(?:\[[^\]]*\]|[^:]*):)?(?:[^:]*:)?(\d+)(?:-(\d+))?(?:\/([A-Za-z]+))?$/.exec(spec);
  if (!m) throw new BuildError(`invalid port: "${spec}"`, line);
  const start = Number(m[1]);
  const end = m[2] !== undefined ? Number(m[2]) : start;
  const proto = (m[3] ?? 'tcp').toLowerCase();
  if (!['tcp', 'udp', 'sctp'].includes(proto)) throw new BuildError(`invalid port: "${spec}": invalid proto: ${proto}`, line);
  if (start > 65535 || end > 65535 || end < start) throw new BuildError(`invalid containerPort: ${m[1]}${m[2] ? '-' + m[2] : ''}`, line);
  const out: string[] = [];
  for (let p = start; p <= end; p++) out.push(`${p}/${proto}`);
  return out;
}

const signalNames = new Set([
  'ABRT', 'ALRM', 'BUS', 'CHLD', 'CLD', 'CONT', 'FPE', 'HUP', 'ILL', 'INT', 'IO', 'IOT', 'KILL', 'PIPE', 'POLL', 'PROF', 'PWR',
  'QUIT', 'SEGV', 'STKFLT', 'STOP', 'SYS', 'TERM', 'TRAP', 'TSTP', 'TTIN', 'TTOU', 'URG', 'USR1', 'USR2', 'VTALRM', 'WINCH', 'XCPU', 'XFSZ',
]);

/** Docker's signal.ParseSignal: a number, SIGNAME, NAME, or RTMIN+n/RTMAX-n. */
export function checkSignal(signal: string, line: number): string {
  const name = signal.toUpperCase().replace(/^SIG/, '');
  const ok = (/^\d+$/.test(signal) && Number(signal) > 0 && Number(signal) <= 64)
    || signalNames.has(name)
    || /^RTMIN(\+([1-9]|1[0-5]))?$/.test(name) || /^RTMAX(-([1-9]|1[0-4]))?$/.test(name);
  if (!ok) throw new BuildError(`invalid signal: ${signal}`, line);
  return signal;
}

/** Docker's addEnv: a variable already set keeps its place and takes the new value. */
export function setEnv(env: string[], key: string, value: string): string[] {
  const at = env.findIndex((e) => e.startsWith(key + '='));
  const entry = `${key}=${value}`;
  return at < 0 ? [...env, entry] : env.map((e, i) => (i === at ? entry : e));
}
