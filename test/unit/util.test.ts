// OncePerKey: shared work per key, failures forgotten.
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { OncePerKey } from '../../src/util/once-per-key.js';

describe('OncePerKey', () => {
  it('runs the work once per key for every caller, during and after it', async () => {
    const once = new OncePerKey<number>();
    let runs = 0;
    const make = async (): Promise<number> => ++runs;
    const [a, b] = await Promise.all([once.get('k', make), once.get('k', make)]);
    assert.deepEqual([a, b, await once.get('k', make), runs], [1, 1, 1, 1]);
    assert.equal(await once.get('other', make), 2);
  });

  it('forgets a failure, so the next caller tries again', async () => {
    const once = new OncePerKey<string>();
    await assert.rejects(once.get('k', async () => { throw new Error('network down'); }), /network down/);
    assert.equal(await once.get('k', async () => 'fetched'), 'fetched');
  });

  it('keeps a value set from elsewhere, but never over one it has', async () => {
    const once = new OncePerKey<string>();
    once.set('k', 'adopted');
    once.set('k', 'second');
    assert.equal(await once.get('k', async () => 'made'), 'adopted');
  });
});
