// Resolves `--chown=user:group` the way Docker does: numeric ids as given, names looked up in the
// image's /etc/passwd and /etc/group, a user without a group taking the user's primary group
// (for a numeric user, the same number).

export class UserLookupError extends Error {}

export interface Identity { uid: number; gid: number; }

export interface UserFiles {
  /** Text of the image's /etc/passwd, undefined when the image has none. */
  passwd?: string;
  group?: string;
}

const numeric = /^\d+$/;

export function resolveChown(spec: string, files: UserFiles): Identity {
  const colon = spec.indexOf(':');
  const userPart = colon < 0 ? spec : spec.slice(0, colon);
  const groupPart = colon < 0 ? undefined : spec.slice(colon + 1);
  if (userPart === '') throw new UserLookupError(`invalid --chown value "${spec}": the user part is empty`);

  let uid: number;
  let primaryGid: number;
  if (numeric.test(userPart)) {
    uid = Number(userPart);
    primaryGid = uid;
  } else {
    const entry = findEntry(files.passwd, userPart, 'passwd');
    uid = Number(entry[2]);
    primaryGid = Number(entry[3]);
  }
  if (groupPart === undefined || groupPart === '') return { uid, gid: primaryGid };
  if (numeric.test(groupPart)) return { uid, gid: Number(groupPart) };
  const group = findEntry(files.group, groupPart, 'group');
  return { uid, gid: Number(group[2]) };
}

function findEntry(text: string | undefined, name: string, file: 'passwd' | 'group'): string[] {
  const what = file === 'passwd' ? 'user' : 'group';
  if (text === undefined) {
    throw new UserLookupError(`unable to find ${what} ${name}: the image has no /etc/${file}; use a numeric id or add /etc/${file} first`);
  }
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields[0] === name && fields.length >= 3 && numeric.test(fields[2] ?? '')) return fields;
  }
  throw new UserLookupError(`unable to find ${what} ${name} in /etc/${file}`);
}
