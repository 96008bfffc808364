// The entries of a layer in the order they are written: checked, sorted bytewise by path, and with
// each hard-link group's content on the path that comes first, so extraction finds every link target.
import type { LayerEntry } from './layer-writer.js';

export function orderEntries(entries: readonly LayerEntry[]): LayerEntry[] {
  const keyed = entries.map((entry) => {
    checkEntry(entry);
    return { entry, key: Buffer.from(entry.path, 'utf8') };
  });
  keyed.sort((a, b) => Buffer.compare(a.key, b.key));
  for (let i = 1; i < keyed.length; i++) {
    if (keyed[i]!.key.equals(keyed[i - 1]!.key)) throw new Error(`layer has two entries for ${keyed[i]!.entry.path}`);
  }
  return firstLinkCarriesContent(keyed.map((k) => k.entry));
}

function checkEntry(entry: LayerEntry): void {
  const what = `layer entry ${JSON.stringify(entry.path)}`;
  const segments = entry.path.split('/');
  if (segments.some((s) => s === '' || s === '.' || s === '..') || entry.path.includes('\0')) {
    throw new Error(`${what}: path must be relative and clean, without "/" at either end`);
  }
  for (const [name, id] of [['uid', entry.uid], ['gid', entry.gid]] as const) {
    if (!Number.isSafeInteger(id) || id < 0) throw new Error(`${what}: invalid ${name} ${id}`);
  }
  if (Number.isNaN(entry.mtime.getTime())) throw new Error(`${what}: invalid mtime`);
  switch (entry.type) {
    case 'file':
      if ((entry.content === undefined) === (entry.source === undefined)) throw new Error(`${what}: a file needs exactly one of content and source`);
      if (entry.content && entry.size !== undefined && entry.size !== entry.content.length) {
        throw new Error(`${what}: size ${entry.size} but ${entry.content.length} bytes of content`);
      }
      break;
    case 'symlink':
    case 'hardlink':
      if (!entry.linkname) throw new Error(`${what}: a ${entry.type} needs a linkname`);
      break;
    case 'dir':
    case 'char':
    case 'block':
    case 'fifo':
      break;
    default:
      throw new Error(`${what}: unknown type ${String((entry as { type: unknown }).type)}`);
  }
}

/**
 * Hard links name "the first entry" of their group, but sorting can put a link before its target.
 * Then the earliest path of the group takes the target's content and every other path links to it:
 * the same files on extraction, in an order every extractor accepts.
 */
function firstLinkCarriesContent(sorted: LayerEntry[]): LayerEntry[] {
  const byPath = new Map(sorted.map((e) => [e.path, e]));
  const groups = new Map<string, string[]>(); // root path -> paths of its links, in tar order
  for (const entry of sorted) {
    if (entry.type !== 'hardlink') continue;
    const root = linkRoot(entry, byPath);
    const links = groups.get(root.path) ?? [];
    links.push(entry.path);
    groups.set(root.path, links);
  }
  if (groups.size === 0) return sorted;

  const replaced = new Map<string, LayerEntry>();
  for (const [rootPath, links] of groups) {
    const root = byPath.get(rootPath)!;
    const first = Buffer.compare(Buffer.from(links[0]!), Buffer.from(rootPath)) < 0 ? links[0]! : rootPath;
    if (first !== rootPath) replaced.set(first, { ...root, path: first });
    for (const path of [rootPath, ...links]) {
      if (path === first) continue;
      const member = byPath.get(path)!;
      if (member.type !== 'hardlink' || member.linkname !== first) replaced.set(path, asHardlink(member, first));
    }
  }
  return sorted.map((e) => replaced.get(e.path) ?? e);
}

function linkRoot(entry: LayerEntry, byPath: ReadonlyMap<string, LayerEntry>): LayerEntry {
  let current = entry;
  const seen = new Set<string>();
  while (current.type === 'hardlink') {
    if (seen.has(current.path)) throw new Error(`hard links in a cycle at ${entry.path}`);
    seen.add(current.path);
    const target = byPath.get(current.linkname!);
    // Extractors (dockerd's overlay2 among them) link within the layer being applied only.
    if (!target) throw new Error(`hard link ${current.path} points to ${current.linkname}, which is not in the layer`);
    current = target;
  }
  if (current.type === 'dir') throw new Error(`hard link ${entry.path} points to the directory ${current.path}`);
  return current;
}

function asHardlink(entry: LayerEntry, linkname: string): LayerEntry {
  return {
    path: entry.path, type: 'hardlink', mode: entry.mode, uid: entry.uid, gid: entry.gid, mtime: entry.mtime, linkname,
    ...(entry.xattrs ? { xattrs: entry.xattrs } : {}),
  };
}
