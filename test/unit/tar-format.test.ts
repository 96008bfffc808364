// Tar header fields at their edges, byte for byte, and read back by GNU tar.
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { BLOCK_SIZE, encodeHeader, END_OF_ARCHIVE, padding } from '../../src/layer/tar-format.js';

const field = (block: Buffer, offset: number, width: number): string => block.toString('latin1', offset, offset + width);

describe('ustar headers', () => {
  it('write numbers as zero-padded octal up to the largest each field holds', () => {
    const block = encodeHeader({ name: 'f', type: 'file', mode: 0o4755, uid: 0o7777777, gid: 0, size: 0o77777777777, mtime: 0o77777777776 });
    assert.equal(block.length, BLOCK_SIZE, 'everything fits: no PAX header');
    assert.equal(field(block, 100, 8), '0004755\0');
    assert.equal(field(block, 108, 8), '7777777\0');
    assert.equal(field(block, 116, 8), '0000000\0');
    assert.equal(field(block, 124, 12), '77777777777\0');
    assert.equal(field(block, 136, 12), '77777777776\0');
    // The checksum: the sum of the bytes with its own field as spaces, 6 octal digits, NUL, space.
    const spaced = Buffer.from(block);
    spaced.fill(0x20, 148, 156);
    assert.equal(field(block, 148, 8), spaced.reduce((a, b) => a + b, 0).toString(8).padStart(6, '0') + '\0 ');
  });

  it('are read back by GNU tar, device numbers and times included', () => {
    const parts = [
      encodeHeader({ name: 'dev/loop9', type: 'block', mode: 0o660, uid: 0, gid: 6, size: 0, mtime: 4_102_444_800, devmajor: 7, devminor: 9 }),
      encodeHeader({ name: 'a.txt', type: 'file', mode: 0o644, uid: 1000, gid: 1000, size: 3, mtime: 1 }), Buffer.from('abc'), padding(3),
      END_OF_ARCHIVE,
    ];
    const listing = execFileSync('tar', ['-tv', '--numeric-owner', '--full-time'], { input: Buffer.concat(parts), env: { ...process.env, TZ: 'UTC' } }).toString();
    assert.match(listing, /^brw-rw---- 0\/6 +7,9 2100-01-01 00:00:00 dev\/loop9$/m);
    assert.match(listing, /^-rw-r--r-- 1000\/1000 +3 1970-01-01 00:00:01 a\.txt$/m);
  });

  it('pad content to whole blocks with zeros', () => {
    assert.equal(padding(0).length, 0);
    assert.equal(padding(512).length, 0);
    assert.deepEqual(padding(1), Buffer.alloc(511));
    assert.deepEqual(padding(513), Buffer.alloc(511));
    assert.deepEqual(padding(1023), Buffer.alloc(1));
  });
});
