// A counting semaphore: at most `size` tasks run at once, the others wait in order. Layer
// extraction (one per core) and uploads begun during the build (a few at a time) share it.
export class Slots {
  private free: number;
  private readonly waiting: (() => void)[] = [];

  constructor(private size: number) {
    this.free = size;
  }

  /** Lets up to `size` tasks run at once from now on (never fewer than before). */
  grow(size: number): void {
    for (; this.size < size; this.size++) {
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    }
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.free > 0) this.free--;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    }
  }
}
