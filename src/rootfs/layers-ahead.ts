// A DirectoryRoot's layers applied in their order, each as soon as it is readable (a big one from its
// growing download), rather than each after the last byte of all of them. Container isolation gives
// the first stage that RUNs its base this way while the stage starts (RootFactory.applyAhead), each
// layer read once with its listing from the same pass; any other RUN root, with the layer cache too,
// gets its layers so when it is made (StageBuilder.buildRoot). The root takes them as applied.
import type { LayerListing } from '../cache/layer-listing.js';
import { WORKER_MIN_BYTES, type ExtractJob } from './extract-in-worker.js';

export interface AheadLayer {
  digest: string;
  size: number;
}

export type Growing = NonNullable<ExtractJob['growing']>;

/** Applies one layer onto the root: from its blob file as it grows, or from the stored blob. */
export type ApplyLayer = (layer: AheadLayer, growing?: Growing) => Promise<LayerListing | undefined>;

interface Position {
  layer: AheadLayer;
  /** Its download's blob file, followed as it grows, once the download has one. */
  growing?: Growing;
  /** Settles when the blob is in the store (or will never be: abandon()). */
  stored: Promise<void>;
  markStored: () => void;
  failStored: (e: unknown) => void;
  isStored: boolean;
  /** Settles when the blob is either growing or stored: the application may start. */
  readable: Promise<void>;
  markReadable: () => void;
  /** The layer's application (its listing), after every layer below it. */
  applied: Promise<LayerListing | undefined>;
}

export class LayersAhead {
  private readonly positions: Position[];
  private taken = 0;

  constructor(layers: readonly AheadLayer[], private readonly apply: ApplyLayer) {
    let below: Promise<unknown> = Promise.resolve();
    this.positions = layers.map((layer) => {
      let markStored!: () => void, failStored!: (e: unknown) => void, markReadable!: () => void;
      const stored = new Promise<void>((resolve, reject) => { markStored = resolve; failStored = reject; });
      const readable = new Promise<void>((resolve) => { markReadable = resolve; });
      stored.catch(() => undefined);
      const position: Position = { layer, stored, markStored, failStored, isStored: false, readable, markReadable, applied: Promise.resolve(undefined) };
      // A layer that failed leaves the root half made: nothing goes on top of it.
      position.applied = below.then(() => this.applyAt(position));
      position.applied.catch(() => undefined); // reported by listing() and take()
      below = position.applied;
      return position;
    });
  }

  /** Whether the root has taken every layer given here. */
  get allTaken(): boolean {
    return this.taken === this.positions.length;
  }

  /** The layer's download has a blob file that can be read as it grows (followed for big layers only). */
  growing(digest: string, growing: Growing): void {
    for (const p of this.at(digest)) {
      if (p.isStored || p.layer.size < WORKER_MIN_BYTES) continue;
      p.growing = growing;
      p.markReadable();
    }
  }

  /** The layer's blob is in the store. */
  stored(digest: string): void {
    for (const p of this.at(digest)) {
      p.isStored = true;
      p.markStored();
      p.markReadable();
    }
  }

  /** The downloads failed: layers not yet stored never will be, and are not applied. */
  abandon(reason: unknown): void {
    for (const p of this.positions) {
      if (p.isStored) continue;
      p.failStored(reason);
      p.markReadable();
    }
  }

  /** The listing read while the layer was applied (undefined: not listed); rejects when it failed. */
  listing(digest: string): Promise<LayerListing | undefined> {
    const position = this.at(digest)[0];
    return position ? position.applied : Promise.reject(new Error(`internal error: layer ${digest} is not applied ahead`));
  }

  /**
   * The root takes its next layer: its application when it is the next one applied ahead, else
   * undefined once every layer applied ahead was taken. A layer out of order is kiln's bug.
   */
  take(digest: string): Promise<LayerListing | undefined> | undefined {
    const next = this.positions[this.taken];
    if (!next) return undefined;
    if (next.layer.digest !== digest) {
      throw new Error(`internal error: the root asked for layer ${digest} where ${next.layer.digest} was applied ahead`);
    }
    this.taken++;
    return next.applied;
  }

  private at(digest: string): Position[] {
    return this.positions.filter((p) => p.layer.digest === digest);
  }

  private async applyAt(position: Position): Promise<LayerListing | undefined> {
    await position.readable;
    if (!position.isStored && position.growing) {
      try {
        return await this.apply(position.layer, position.growing);
      } catch {
        // That download attempt failed (and may be retried), or the bytes did: the stored blob decides.
      }
    }
    await position.stored;
    return this.apply(position.layer);
  }
}
