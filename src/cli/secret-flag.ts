// --secret, with BuildKit's (buildx's) syntax: id=X,src=PATH | id=X,env=VAR (also type=file|env,
// source=); with neither src nor env, the variable named X if it is set, else the file X. kaniko has
// no such flag. Only where each value comes from is kept here; values are read when a RUN uses them.
import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { SecretSource } from '../build/run-mounts.js';
import { csvFields } from '../build/run-mount-spec.js';
import { UsageError } from './errors.js';

export function parseSecretFlags(items: readonly string[], env: NodeJS.ProcessEnv): Map<string, SecretSource> {
  const out = new Map<string, SecretSource>();
  for (const item of items) {
    let id: string | undefined;
    let file: string | undefined;
    let variable: string | undefined;
    let type: string | undefined;
    let fields: string[];
    try {
      fields = csvFields(item);
    } catch (e) {
      throw new UsageError(`invalid --secret ${item}: ${(e as Error).message}`);
    }
    for (const field of fields) {
      const eq = field.indexOf('=');
      if (eq < 0) throw new UsageError(`invalid --secret field '${field}': it must be a key=value pair`);
      const key = field.slice(0, eq).toLowerCase();
      const value = field.slice(eq + 1);
      if (key === 'type') {
        if (value !== 'file' && value !== 'env') throw new UsageError(`unsupported --secret type "${value}": use file or env`);
        type = value;
      } else if (key === 'id') id = value;
      else if (key === 'src' || key === 'source') file = value;
      else if (key === 'env') variable = value;
      else throw new UsageError(`unexpected key '${key}' in --secret ${field}: use id, src, env or type`);
    }
    if (!id) throw new UsageError(`--secret ${item} has no id: use --secret id=NAME,src=PATH or --secret id=NAME,env=VARIABLE`);
    if (type === 'env' && variable === undefined) [variable, file] = [file, undefined];
    if (file === undefined && variable === undefined) {
      if (env[id] !== undefined) variable = id;
      else file = id;
    }
    if (variable !== undefined) {
      if (env[variable] === undefined) throw new UsageError(`--secret id=${id}: the environment variable ${variable} is not set`);
      out.set(id, { env: variable });
      continue;
    }
    const path = resolve(file!);
    const st = (() => {
      try {
        return statSync(path);
      } catch {
        return undefined;
      }
    })();
    if (!st?.isFile()) throw new UsageError(`--secret id=${id}: ${path} is not a readable file`);
    out.set(id, { file: path });
  }
  return out;
}
