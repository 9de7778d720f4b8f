import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decode, encode, decodeWithSpan, decodePrefix, BencodeError, type BencodeValue } from '../src/bencode.js';

const b = (s: string) => Buffer.from(s, 'latin1');

test('decodes the basic types', () => {
  assert.equal(decode(b('i42e')), 42);
  assert.equal(decode(b('i-7e')), -7);
  assert.equal(decode(b('i0e')), 0);
  assert.equal(decode(b('i123456789012345678901234567890e')), 123456789012345678901234567890n);
  assert.deepEqual(Buffer.from(decode(b('4:spam')) as Uint8Array).toString(), 'spam');
  assert.deepEqual(decode(b('le')), []);
  const d = decode(b('d3:cow3:moo4:spaml1:a1:bee')) as any;
  assert.equal(Buffer.from(d.cow).toString(), 'moo');
  assert.equal(d.spam.length, 2);
});

test('rejects malformed input with a BencodeError naming the problem', () => {
  const bad: [string, RegExp][] = [
    ['i01e', /leading zero/],
    ['i-0e', /negative zero/],
    ['ie', /empty integer/],
    ['i12', /unterminated integer/],
    ['5:abc', /runs past end/],
    ['l', /unterminated list/],
    ['d3:fooe', /unexpected byte/],
    ['di1ei2ee', /key is not a byte string/],
    ['x', /unexpected byte/],
    ['i1ei2e', /trailing data/],
    ['01:a', /leading zero/],
    ['99999999999999999:a', /too long|runs past/],
  ];
  for (const [input, re] of bad) {
    assert.throws(() => decode(b(input)), (e: unknown) => e instanceof BencodeError && re.test(e.message), input);
  }
});

test('bounds nesting depth', () => {
  const deep = 'l'.repeat(100_000) + 'e'.repeat(100_000);
  assert.throws(() => decode(b(deep)), /nesting too deep/);
});

test('tolerates unsorted keys unless strict', () => {
  const v = decode(b('d1:bi1e1:ai2ee')) as any;
  assert.equal(v.a, 2);
  assert.throws(() => decode(b('d1:bi1e1:ai2ee'), { strictKeyOrder: true }), /not sorted/);
});

test('encode sorts keys by raw bytes and round-trips binary keys', () => {
  assert.equal(encode({ b: 1, a: 'x' }).toString(), 'd1:a1:x1:bi1ee');
  const raw = b('d2:\x01\x02i3e2:\xff\x001:xe');
  assert.deepEqual(encode(decode(raw) as any), raw);
});

test('decodeWithSpan returns the exact bytes of a top-level key (info-hash source)', () => {
  const raw = b('d8:announce3:url4:infod6:lengthi5e4:name1:xee');
  const { span } = decodeWithSpan(raw, 'info');
  assert.equal(Buffer.from(span!).toString('latin1'), 'd6:lengthi5e4:name1:xe');
});

test('decodePrefix reports the end of the value (ut_metadata trailer)', () => {
  const r = decodePrefix(b('d1:ai1eeTRAILER'));
  assert.equal(r.end, 8);
});

const valueArb: fc.Arbitrary<BencodeValue> = fc.letrec((tie) => ({
  v: fc.oneof(
    { depthSize: 'small' },
    fc.integer(),
    fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }).filter((x) => x > BigInt(Number.MAX_SAFE_INTEGER) || x < BigInt(Number.MIN_SAFE_INTEGER)),
    fc.uint8Array({ maxLength: 20 }).map((u) => Buffer.from(u) as Uint8Array),
    fc.array(tie('v'), { maxLength: 4 }),
    fc.dictionary(fc.string({ maxLength: 6 }).map((s) => Buffer.from(s, 'utf8').toString('latin1')), tie('v'), { maxKeys: 4 }).map((o) => {
      const d = Object.create(null);
      Object.assign(d, o);
      return d;
    }),
  ),
})).v;

test('property: decode(encode(x)) == x and encode is canonical', () => {
  fc.assert(
    fc.property(valueArb, (v) => {
      const enc = encode(v as any);
      const dec = decode(enc, { strictKeyOrder: true });
      assert.deepEqual(encode(dec as any), enc);
    }),
    { numRuns: 300 },
  );
});

test('property: random bytes never throw anything but BencodeError', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (u) => {
      try {
        decode(u);
      } catch (e) {
        if (!(e instanceof BencodeError)) throw e;
      }
    }),
    { numRuns: 2000 },
  );
});
