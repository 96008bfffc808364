// A build context that arrives as a tar archive (kaniko's tar://path, tar://stdin and https:// contexts),
// gzip-compressed or not (told by its first bytes), unpacked into a directory. Regular files,
// directories, symlinks and hardlinks keep their modes and mtimes; devices and fifos are left out (a
// COPY never takes them). No entry can land outside the directory: names with "..", absolute names
// and entries below a symlink the archive made are refused, naming the entry.
import { createReadStream, createWriteStream } from 'node:fs';
import { link, lstat, mkdir, symlink, utimes, lutimes, chmod } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { extract } from 'tar-stream';
import { ContextError } from './build-context.js';

/** Unpacks `source` (a file path, or a stream such as stdin) into the existing directory `dir`. */
export async function unpackTarContext(source: string | Readable, dir: string, what: string): Promise<void> {
  const input = typeof source === 'string' ? createReadStream(source) : source;
  const tar = extract();
  const dirTimes: { path: string; mtime: Date }[] = [];
  const unpacking = (async () => {
    for await (const entry of tar) {
      const header = entry.header;
      const rel = safeName(header.name, what);
      if (rel === '') {
        entry.resume();
        continue;
      }
      const target = join(dir, rel);
      await ensureParents(dir, rel, what);
      const mode = (header.mode ?? 0o644) & 0o7777;
      const mtime = header.mtime ?? new Date(0);
      switch (header.type) {
        case 'directory': {
          const existing = await lstat(target).catch(() => undefined);
          if (existing && !existing.isDirectory()) throw new ContextError(`${what}: entry ${header.name} is a directory, but an earlier entry made it something else`);
          if (!existing) await mkdir(target);
          await chmod(target, mode);
          dirTimes.push({ path: target, mtime });
          entry.resume();
          break;
        }
        case 'file': case 'contiguous-file':
          await pipeline(entry, createWriteStream(target, { mode }));
          await chmod(target, mode);
          await utimes(target, mtime, mtime);
          break;
        case 'symlink':
          entry.resume();
          await symlink(header.linkname ?? '', target);
          await lutimes(target, mtime, mtime).catch(() => undefined);
          break;
        case 'link': {
          entry.resume();
          const from = safeName(header.linkname ?? '', what);
          await ensureParents(dir, from, what);
          await link(join(dir, from), target);
          break;
        }
        default:
          entry.resume(); // devices, fifos, PAX and GNU extension records tar-stream did not fold in
      }
    }
  })();
  const head = await firstBytes(input);
  if (head.bytes.length === 0) {
    tar.destroy();
    await unpacking.catch(() => undefined);
    throw new ContextError(`${what}: the archive is empty (no data${typeof source === 'string' ? '' : ' on standard input'})`);
  }
  const decompressed = head.bytes[0] === 0x1f && head.bytes[1] === 0x8b;
  const bytes = Readable.from(concat(head.bytes, head.rest));
  const feeding = decompressed ? pipeline(bytes, createGunzip(), tar) : pipeline(bytes, tar);
  try {
    await Promise.all([feeding, unpacking]);
  } catch (e) {
    tar.destroy();
    input.destroy();
    if (e instanceof ContextError) throw e;
    throw new ContextError(`${what}: cannot unpack the context archive: ${e instanceof Error ? e.message : String(e)}`);
  }
  // Directory times last: every entry written inside a directory changed its mtime.
  for (const d of dirTimes.reverse()) await utimes(d.path, d.mtime, d.mtime);
}

/** A member name as a path inside the context, or an error for names that would climb out. */
function safeName(name: string, what: string): string {
  const clean = posix.normalize('/' + name).slice(1).replace(/\/+$/, '');
  if (name.split('/').includes('..') || clean.startsWith('..')) throw new ContextError(`${what}: entry ${name} would be written outside the context`);
  return clean;
}

/** Creates missing parents; a parent that is a symlink or a file is refused (nothing is written through links). */
async function ensureParents(root: string, rel: string, what: string): Promise<void> {
  const parts = rel.split('/').slice(0, -1);
  let current = root;
  for (const part of parts) {
    current = join(current, part);
    const st = await lstat(current).catch(() => undefined);
    if (!st) await mkdir(current, { mode: 0o755 });
    else if (!st.isDirectory()) throw new ContextError(`${what}: entry ${rel} lies below ${current.slice(root.length + 1)}, which is not a directory in the archive`);
  }
}

/** The stream's first chunk (to tell gzip from plain tar) and an iterator of the rest. */
async function firstBytes(input: Readable): Promise<{ bytes: Buffer; rest: AsyncIterator<Buffer> }> {
  const it = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const first = await it.next();
  return { bytes: first.done ? Buffer.alloc(0) : Buffer.from(first.value), rest: it };
}

async function* concat(head: Buffer, rest: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  if (head.length > 0) yield head;
  for (let next = await rest.next(); !next.done; next = await rest.next()) yield next.value;
}
