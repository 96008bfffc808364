// RUN's flags as BuildKit reads them (dockerfile/instructions/commands_runmount.go, read for
// behaviour): `--mount` as CSV fields of key=value (a few bare booleans), values expanded with the
// stage's variables; `--network=default|none|host`; `--security=sandbox|insecure`; `--device`.
// kiln refuses what it does not build (ssh mounts, insecure, devices) with the name.
import type { ParsedFlags } from '../dockerfile/instruction-flags.js';

export type MountType = 'bind' | 'cache' | 'tmpfs' | 'secret' | 'ssh';
export type CacheSharing = 'shared' | 'private' | 'locked';

export interface MountSpec {
  type: MountType;
  /** A stage (name or index) or an image the source is read from (bind, cache). */
  from?: string;
  source?: string;
  /** As written (absolute, or relative to WORKDIR); secrets default to /run/secrets/<id>. */
  target?: string;
  readOnly: boolean;
  /** Cache id (default: the target) or secret id. */
  id?: string;
  sharing: CacheSharing;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Secrets: fail when the secret was not given. */
  required: boolean;
  /** tmpfs size limit in bytes. */
  sizeBytes?: number;
  /** Secrets: the environment variable that receives the value. */
  env?: string;
}

export interface RunFlags {
  mounts: MountSpec[];
  network: 'default' | 'none' | 'host';
}

export class RunFlagError extends Error {}

/** RUN's flags, checked; `expand` expands a --mount value with the stage's ARG and ENV values. */
export function parseRunFlags(flags: ParsedFlags, expand: (word: string) => string): RunFlags {
  if (flags.lists.has('device')) throw new RunFlagError('RUN --device is not built yet in kiln');
  const security = flags.strings.get('security');
  if (security !== undefined && security !== 'sandbox') {
    if (security === 'insecure') throw new RunFlagError('RUN --security=insecure is not supported: kiln never runs a step with extra privileges');
    throw new RunFlagError(`unsupported security mode "${security}": use sandbox or insecure`);
  }
  const network = flags.strings.get('network') ?? 'default';
  if (network !== 'default' && network !== 'none' && network !== 'host') {
    throw new RunFlagError(`unsupported network mode "${network}": use default, none or host`);
  }
  return { mounts: (flags.lists.get('mount') ?? []).map((m) => parseMount(m, expand)), network };
}

/** One --mount value. */
export function parseMount(value: string, expand: (word: string) => string = (w) => w): MountSpec {
  const m: MountSpec = { type: 'bind', readOnly: false, sharing: 'shared', required: false };
  let readOnlyGiven = false;
  let sharingGiven = false;
  const fields = csvFields(value);
  // The type decides which keys are allowed, wherever it is written.
  for (const field of fields) {
    const [key, v] = splitField(field);
    if (key === 'type' && v !== undefined) {
      const type = v.toLowerCase();
      if (!['bind', 'cache', 'tmpfs', 'secret', 'ssh'].includes(type)) throw new RunFlagError(`unsupported mount type "${v}": use bind, cache, tmpfs, secret or ssh`);
      m.type = type as MountType;
    }
  }
  if (m.type === 'ssh') throw new RunFlagError('RUN --mount=type=ssh is not built yet in kiln');
  for (const field of fields) {
    const [key, raw] = splitField(field);
    if (raw === undefined) {
      if (key === 'readonly' || key === 'ro') m.readOnly = readOnlyGiven = true;
      else if (key === 'readwrite' || key === 'rw') {
        m.readOnly = false;
        readOnlyGiven = true;
      } else if (key === 'required' && m.type === 'secret') m.required = true;
      else throw new RunFlagError(`invalid field '${field}' must be a key=value pair`);
      continue;
    }
    if (key === 'type') continue;
    const v = expand(raw);
    switch (key) {
      case 'from': m.from = v; break;
      case 'source': case 'src': m.source = v; break;
      case 'target': case 'dst': case 'destination': m.target = v; break;
      case 'readonly': case 'ro': m.readOnly = parseBool(v, key); readOnlyGiven = true; break;
      case 'readwrite': case 'rw': m.readOnly = !parseBool(v, key); readOnlyGiven = true; break;
      case 'required':
        if (m.type !== 'secret') throw new RunFlagError(`unexpected key '${key}' for mount type '${m.type}'`);
        m.required = parseBool(v, key);
        break;
      case 'size':
        if (m.type !== 'tmpfs') throw new RunFlagError(`unexpected key '${key}' for mount type '${m.type}'`);
        m.sizeBytes = ramInBytes(v);
        break;
      case 'id': m.id = v; break;
      case 'sharing': {
        const s = v.toLowerCase();
        if (s !== 'shared' && s !== 'private' && s !== 'locked') throw new RunFlagError(`unsupported sharing value "${v}": use shared, private or locked`);
        m.sharing = s;
        sharingGiven = true;
        break;
      }
      case 'mode': m.mode = parseNumber(v, 8, key); break;
      case 'uid': m.uid = parseNumber(v, 10, key); break;
      case 'gid': m.gid = parseNumber(v, 10, key); break;
      case 'env': m.env = v; break;
      default: throw new RunFlagError(`unexpected key '${key}' in '${field}'`);
    }
  }
  // BuildKit: caches and tmpfs are writable unless told; binds and secrets read-only unless told.
  if (!readOnlyGiven) m.readOnly = m.type === 'bind' || m.type === 'secret';
  if (sharingGiven && m.type !== 'cache') throw new RunFlagError(`invalid cache sharing set for ${m.type} mount`);
  if (m.type === 'secret') {
    if (m.from !== undefined) throw new RunFlagError('secret mount should not have a from');
    if (m.source === undefined && m.target === undefined && m.id === undefined) throw new RunFlagError('invalid secret mount: one of id, source or target is required');
    if (m.source !== undefined && m.id !== undefined) throw new RunFlagError('both source and id can\'t be set');
    m.id = m.id ?? m.source ?? basename(m.target!);
    if (m.target === undefined && m.env === undefined) m.target = '/run/secrets/' + basename(m.id);
  } else if (m.target === undefined || m.target === '') {
    throw new RunFlagError(`mount type=${m.type} needs a target`);
  }
  if (m.type === 'tmpfs' && m.from !== undefined) throw new RunFlagError('tmpfs mount should not have a from');
  return m;
}

function basename(path: string): string {
  const parts = path.split('/').filter((p) => p !== '');
  return parts.at(-1) ?? path;
}

function splitField(field: string): [string, string | undefined] {
  const eq = field.indexOf('=');
  return eq < 0 ? [field.toLowerCase(), undefined] : [field.slice(0, eq).toLowerCase(), field.slice(eq + 1)];
}

function parseBool(v: string, key: string): boolean {
  // Go's strconv.ParseBool
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(v)) return false;
  throw new RunFlagError(`invalid value for ${key}: ${v}`);
}

function parseNumber(v: string, radix: 8 | 10, key: string): number {
  const ok = radix === 8 ? /^[0-7]+$/.test(v) : /^\d+$/.test(v);
  const n = parseInt(v, radix);
  if (!ok || n > 0xffffffff) throw new RunFlagError(`invalid value for ${key}: ${v}`);
  return n;
}

/** Docker's units.RAMInBytes: "64m", "1.5g", "100kb", plain bytes; binary multiples. */
export function ramInBytes(v: string): number {
  const match = /^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$/.exec(v);
  if (!match) throw new RunFlagError(`invalid size: '${v}'`);
  const power = match[2] ? 'kmgtp'.indexOf(match[2].toLowerCase()) + 1 : 0;
  return Math.floor(parseFloat(match[1]!) * 1024 ** power);
}

/** Go's encoding/csv for one record: commas separate fields, a field may be "quoted" ("" is a quote). */
export function csvFields(text: string): string[] {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    let field = '';
    if (text[i] === '"') {
      i++;
      for (;;) {
        if (i >= text.length) throw new RunFlagError(`invalid --mount value ${JSON.stringify(text)}: unterminated quote`);
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += text[i++];
      }
      if (i < text.length && text[i] !== ',') throw new RunFlagError(`invalid --mount value ${JSON.stringify(text)}: extraneous text after a quoted field`);
    } else {
      const comma = text.indexOf(',', i);
      field = text.slice(i, comma < 0 ? text.length : comma);
      i = comma < 0 ? text.length : comma;
      if (field.includes('"')) throw new RunFlagError(`invalid --mount value ${JSON.stringify(text)}: bare " in a field (quote the whole field)`);
    }
    fields.push(field);
    if (i >= text.length) break;
    i++; // the comma
  }
  return fields;
}
