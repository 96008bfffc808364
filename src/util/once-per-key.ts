// One piece of work per key, shared by everyone who asks while it runs or after it succeeded; a
// failure is forgotten, so the next caller tries again (a download, a checkout, a layer extraction).
export class OncePerKey<V> {
  private readonly pending = new Map<string, Promise<V>>();

  get(key: string, make: () => Promise<V>): Promise<V> {
    let result = this.pending.get(key);
    if (!result) {
      result = make();
      this.pending.set(key, result);
      result.catch(() => {
        if (this.pending.get(key) === result) this.pending.delete(key);
      });
    }
    return result;
  }

  /** Records a value made elsewhere, unless the key has one already. */
  set(key: string, value: V): void {
    if (!this.pending.has(key)) this.pending.set(key, Promise.resolve(value));
  }
}
