// --single-snapshot (kaniko's): a stage's steps still run one after another, but their changes are
// gathered into one layer written when the stage ends. Later changes override earlier ones; a path
// created and deleted within the stage leaves no trace; deletions of what the base had stay whiteouts.
import type { LayerEntry } from '../layer/layer-writer.js';
import type { Snapshot } from '../snapshot/snapshot.js';
import type { FsView } from './fs-view.js';

export class SquashedChanges {
  private readonly entries = new Map<string, LayerEntry>();
  private readonly whiteouts = new Set<string>();
  private readonly opaque = new Set<string>();

  private base?: FsView;

  /** `baseView()` gives the stage's files before its first change; it is called at the first change. */
  constructor(private readonly baseView: () => FsView) {}

  private inBase(path: string): LayerEntry | undefined {
    return this.base?.get(path);
  }

  get empty(): boolean {
    return this.entries.size === 0 && this.whiteouts.size === 0 && this.opaque.size === 0;
  }

  add(change: Snapshot): void {
    this.base ??= this.baseView();
    for (const dir of change.opaque) {
      this.dropBelow(dir);
      if (this.inBase(dir)?.type === 'dir') this.opaque.add(dir);
    }
    for (const path of change.whiteouts) {
      this.entries.delete(path);
      this.dropBelow(path);
      this.opaque.delete(path);
      if (this.inBase(path)) this.whiteouts.add(path);
    }
    for (const entry of change.entries) {
      // Only a directory already gathered can have gathered entries below it.
      if (entry.type !== 'dir' && this.entries.get(entry.path)?.type === 'dir') this.dropBelow(entry.path);
      // Deleted, then made again: a directory must hide what the base had in it.
      if (this.whiteouts.delete(entry.path) && entry.type === 'dir' && this.inBase(entry.path)?.type === 'dir') this.opaque.add(entry.path);
      this.entries.set(entry.path, entry);
    }
  }

  result(): Snapshot {
    return { entries: [...this.entries.values()], whiteouts: [...this.whiteouts], opaque: [...this.opaque] };
  }

  private dropBelow(dir: string): void {
    const prefix = dir + '/';
    for (const key of [...this.entries.keys()]) if (key.startsWith(prefix)) this.entries.delete(key);
    for (const key of [...this.whiteouts]) if (key.startsWith(prefix)) this.whiteouts.delete(key);
    for (const key of [...this.opaque]) if (key.startsWith(prefix)) this.opaque.delete(key);
  }
}
