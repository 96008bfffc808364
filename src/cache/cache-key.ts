// Layer cache keys. A key chains everything that can change a step's result: where the stage
// started (base image digest, or the key an earlier stage ended with), the platform, then every
// instruction of the stage as it was expanded (its history text, which carries ARG values for RUN),
// the files a COPY/ADD reads (content, mode, owner), and the key of a COPY --from stage. Changing any
// of them changes every later key; changing nothing gives the same keys in another process.
import { createHash } from 'node:crypto';

/** Bumped when the meaning of a key or of a cache entry changes, so old entries are never misread. */
export const CACHE_FORMAT = 'kiln-cache-v1';

/** One input of the chain, kept in cache entries so a later miss can say what changed. */
export interface ChainItem {
  /** Dockerfile line, for messages. */
  line: number;
  /** The instruction as expanded (history text); for the chain's start, "FROM <digest>". */
  text: string;
  /** Files a COPY/ADD reads: path → "type:mode:owner:content" (see source-digest.ts). */
  files?: Record<string, string>;
  /** Other inputs that are not part of the text (COPY --from's stage key, heredoc bodies, flags). */
  extra?: Record<string, string>;
}

export function hashText(...parts: string[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(String(p.length)).update(':').update(p);
  return h.digest('hex');
}

/** The chain's state as a step sees it: `key` names the state after `items` were applied on `parent`. */
export class CacheChain {
  private constructor(
    /** The key before the first item of this segment (the last cached step, or the stage's start). */
    readonly parent: string,
    readonly key: string,
    /** Items since `parent`: what a cache entry stores to explain a later miss. */
    readonly items: readonly ChainItem[],
  ) {}

  /** The start of a stage: its base (image digest, "scratch", or an earlier stage's final key) and build-wide settings. */
  static start(base: string, settings: Record<string, string>): CacheChain {
    // The start is the first item of the first segment, so a miss there can say "the base image changed".
    const item: ChainItem = { line: 0, text: `FROM ${base}`, extra: settings };
    return new CacheChain('', hashText(CACHE_FORMAT, itemText(item)), [item]);
  }

  /** The chain with one more instruction applied. */
  add(item: ChainItem): CacheChain {
    return new CacheChain(this.parent, hashText(this.key, itemText(item)), [...this.items, item]);
  }

  /** A new segment starting at this key (after a step whose result was looked up or stored under it). */
  settle(): CacheChain {
    return new CacheChain(this.key, this.key, []);
  }
}

function itemText(item: ChainItem): string {
  const parts = [item.text];
  for (const [k, v] of Object.entries(item.files ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) parts.push(`file ${k} ${v}`);
  for (const [k, v] of Object.entries(item.extra ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) parts.push(`extra ${k} ${v}`);
  return parts.join('\n');
}

/**
 * Why a step missed, comparing the items a previous build stored for the same step with this
 * build's: the first instruction that differs, a build arg, a context file. Undefined when nothing
 * explains it (the entry expired or was deleted).
 */
export function explainMiss(previous: readonly ChainItem[], current: readonly ChainItem[]): string | undefined {
  const n = Math.max(previous.length, current.length);
  for (let i = 0; i < n; i++) {
    const was = previous[i];
    const now = current[i];
    if (!was || !now) return now ? `line ${now.line} is new: ${now.text}` : `an instruction was removed before this step (it was: ${was!.text})`;
    const files = fileChange(was.files, now.files);
    if (was.text !== now.text) return textChange(was.text, now);
    if (files) return files;
    for (const k of new Set([...Object.keys(was.extra ?? {}), ...Object.keys(now.extra ?? {})])) {
      if (was.extra?.[k] !== now.extra?.[k]) return `${describeExtra(k)} changed (line ${now.line})`;
    }
  }
  return undefined;
}

function describeExtra(key: string): string {
  if (key === 'from-stage') return 'the stage COPY --from reads';
  if (key.startsWith('heredoc:')) return `the heredoc ${key.slice(8)}`;
  return key;
}

function textChange(was: string, now: ChainItem): string {
  const args = (t: string): Map<string, string> | undefined => {
    const m = /^RUN \|(\d+) /.exec(t);
    if (!m) return undefined;
    const words = t.slice(m[0].length).split(' ').slice(0, Number(m[1]));
    return new Map(words.map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]));
  };
  const a = args(was) ?? new Map<string, string>();
  const b = args(now.text) ?? new Map<string, string>();
  const changed = [...new Set([...a.keys(), ...b.keys()])].filter((k) => a.get(k) !== b.get(k));
  const strip = (t: string): string => t.replace(/^RUN \|\d+ (?:\S+=\S* )*/, 'RUN ');
  if (changed.length > 0 && strip(was) === strip(now.text)) {
    return `build arg ${changed.join(', ')} changed (line ${now.line})`;
  }
  if (was.startsWith('ARG ') && now.text.startsWith('ARG ')) {
    const pairs = (t: string): Map<string, string> => new Map(t.slice(4).split(' ').map((w) => [w.split('=')[0]!, w]));
    const x = pairs(was), y = pairs(now.text);
    const differ = [...new Set([...x.keys(), ...y.keys()])].filter((k) => x.get(k) !== y.get(k));
    if (differ.length > 0) return `build arg ${differ.join(', ')} changed (line ${now.line})`;
  }
  if (was.startsWith('FROM ') && now.text.startsWith('FROM ')) return `the base image changed (${was.slice(5)} → ${now.text.slice(5)})`;
  return `line ${now.line} changed: ${clip(was)} → ${clip(now.text)}`;
}

function fileChange(was: Record<string, string> | undefined, now: Record<string, string> | undefined): string | undefined {
  if (!was && !now) return undefined;
  const a = was ?? {}, b = now ?? {};
  const changed: string[] = [], added: string[] = [], removed: string[] = [];
  for (const [k, v] of Object.entries(b)) {
    if (!(k in a)) added.push(k);
    else if (a[k] !== v) changed.push(k);
  }
  for (const k of Object.keys(a)) if (!(k in b)) removed.push(k);
  const say = (verb: string, list: string[]): string | undefined => {
    if (list.length === 0) return undefined;
    const shown = list.sort().slice(0, 3).join(', ') + (list.length > 3 ? ` and ${list.length - 3} more` : '');
    return `context file${list.length > 1 ? 's' : ''} ${shown} ${verb}`;
  };
  const parts = [say('changed', changed), say(added.length > 1 ? 'were added' : 'was added', added), say(removed.length > 1 ? 'were removed' : 'was removed', removed)].filter(Boolean);
  return parts.length ? parts.join('; ') : undefined;
}

function clip(text: string): string {
  return text.length > 120 ? text.slice(0, 117) + '...' : text;
}
