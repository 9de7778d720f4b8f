import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BitField, BitFieldError } from '../src/bitfield.js';

test('wire bit order: piece 0 is the high bit of byte 0', () => {
  const b = new BitField(10);
  b.set(0);
  b.set(9);
  assert.deepEqual(b.toBuffer(), Buffer.from([0x80, 0x40]));
  assert.equal(b.count(), 2);
  assert.ok(b.get(0) && b.has(9) && !b.get(1));
  b.set(0, false);
  b.set(0, false);
  assert.equal(b.count(), 1);
  assert.throws(() => b.get(10), RangeError);
  assert.throws(() => b.set(-1), RangeError);
});

test('allSet / isComplete keep spare bits zero', () => {
  const b = BitField.allSet(13);
  assert.ok(b.isComplete());
  assert.equal(b.count(), 13);
  assert.deepEqual(b.toBuffer(), Buffer.from([0xff, 0xf8]));
  assert.ok(BitField.allSet(0).isComplete());
  assert.deepEqual(BitField.allSet(16).toBuffer(), Buffer.from([0xff, 0xff]));
});

test('fromBuffer validates byte length and spare bits', () => {
  assert.throws(() => BitField.fromBuffer(Buffer.from([0xff]), 10), (e: Error) => e instanceof BitFieldError && /expected 2 bytes for 10 pieces, got 1/.test(e.message));
  assert.throws(() => BitField.fromBuffer(Buffer.from([0xff, 0xff]), 10), /spare bits set past piece 9/);
  const b = BitField.fromBuffer(Buffer.from([0xa0, 0xc0]), 10);
  assert.deepEqual([...b.indices()], [0, 2, 8, 9]);
  assert.equal(b.count(), 4);
});

test('property: count matches a naive model; round trip through the wire format', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 200 }), fc.array(fc.tuple(fc.nat(), fc.boolean()), { maxLength: 300 }), (len, ops) => {
      const b = new BitField(len);
      const model = new Array<boolean>(len).fill(false);
      for (const [i, v] of ops) {
        if (len === 0) break;
        b.set(i % len, v);
        model[i % len] = v;
      }
      assert.equal(b.count(), model.filter(Boolean).length);
      const c = BitField.fromBuffer(b.toBuffer(), len);
      for (let i = 0; i < len; i++) assert.equal(c.get(i), model[i]);
      assert.equal(c.count(), b.count());
      assert.equal(c.countAnd(b), b.count());
      assert.equal(b.isComplete(), model.every(Boolean));
    }),
  );
});
