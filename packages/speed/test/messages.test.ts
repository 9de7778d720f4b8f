import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { encode, decode } from '@bitorrent/core';
import {
  encodeSpeedMessage,
  decodeSpeedMessage,
  encodeAnyMessage,
  decodeAnyMessage,
  encodeSpeedHandshake,
  parseSpeedHandshake,
  decodeSpeedHandshakePayload,
  authPayload,
  SpeedMessageError,
  SPEED_EXTENSION_NAME,
  U128_MAX,
  U64_MAX,
  type SpeedMessage,
} from '../src/messages.js';

const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n }).map((u) => Buffer.from(u));
const u128 = fc.bigInt({ min: 0n, max: U128_MAX });
const seq = fc.bigInt({ min: 1n, max: U64_MAX });

const arbMessage: fc.Arbitrary<SpeedMessage> = fc.oneof(
  bytes(64).map((sig) => ({ type: 'auth' as const, sig })),
  fc.record({ type: fc.constant('bid' as const), seq, price: u128 }),
  fc.record({
    type: fc.constant('bid_response' as const),
    seq,
    price: u128,
    maxUnpaid: fc.integer({ min: 1, max: 1024 }),
    minTtl: fc.integer({ min: 0, max: 0xffffffff }),
  }),
  fc.record({ type: fc.constant('channel' as const), channel: bytes(32) }),
  fc.record({
    type: fc.constant('payment' as const),
    channel: bytes(32),
    seq,
    amount: fc.bigInt({ min: 1n, max: U128_MAX }),
    piece: fc.integer({ min: 0, max: 0xffffffff }),
    sig: bytes(64),
  }),
  fc.record(
    { type: fc.constant('ack' as const), channel: bytes(32), seq: fc.bigInt({ min: 0n, max: U64_MAX }), amount: u128, sig: bytes(64) },
    { requiredKeys: ['type', 'channel', 'seq', 'amount'] },
  ),
  fc.record({ type: fc.constant('reject' as const), piece: fc.integer({ min: 0, max: 0xffffffff }) }),
  fc.record(
    { type: fc.constant('error' as const), code: fc.integer({ min: 1, max: 65535 }), text: fc.string({ maxLength: 60 }) },
    { requiredKeys: ['type', 'code'] },
  ),
);

function normalize(m: SpeedMessage): unknown {
  // Compare through JSON with bigint → string and bytes → hex.
  return JSON.parse(
    JSON.stringify(m, (_k, v) => (typeof v === 'bigint' ? `n${v}` : v instanceof Uint8Array || (v && v.type === 'Buffer') ? Buffer.from(v.data ?? v).toString('hex') : v)),
  );
}

test('every message round-trips exactly, and re-encoding is byte-identical', () => {
  fc.assert(
    fc.property(arbMessage, (m) => {
      const wire = encodeSpeedMessage(m);
      const back = decodeSpeedMessage(wire);
      assert.deepEqual(normalize(back), normalize(m));
      assert.ok(encodeSpeedMessage(back).equals(wire));
    }),
    { numRuns: 2000 },
  );
});

test('amounts beyond 2^53 travel as exact bencode integers and come back as bigint', () => {
  const price = (1n << 100n) + 12345n;
  const wire = encodeSpeedMessage({ type: 'bid', seq: 1n, price });
  assert.ok(wire.includes(Buffer.from(`i${price}e`)));
  const m = decodeSpeedMessage(wire);
  assert.equal(m.type, 'bid');
  assert.equal((m as { price: bigint }).price, price);
});

test('layout of a bid is the documented one', () => {
  assert.equal(encodeSpeedMessage({ type: 'bid', seq: 7n, price: 1000n }).toString('latin1'), 'd8:msg_typei1e5:pricei1000e3:seqi7ee');
});

test('random bytes and mutated messages only ever raise SpeedMessageError', () => {
  const check = (buf: Uint8Array) => {
    try {
      decodeSpeedMessage(buf);
    } catch (e) {
      assert.ok(e instanceof SpeedMessageError, `unexpected ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    }
  };
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), check), { numRuns: 3000 });
  fc.assert(
    fc.property(arbMessage, fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 4 }), fc.nat(), (m, flips, cut) => {
      const wire = Buffer.from(encodeSpeedMessage(m));
      for (const [i, b] of flips) wire[i % wire.length] = b;
      check(wire);
      check(wire.subarray(0, cut % (wire.length + 1)));
    }),
    { numRuns: 3000 },
  );
  // Structurally valid bencode with wrong types/ranges in every field.
  const anyVal = fc.oneof(fc.integer(), fc.bigInt({ min: -(1n << 140n), max: 1n << 140n }), fc.uint8Array({ maxLength: 70 }), fc.constant([]), fc.constant({}));
  fc.assert(
    fc.property(
      fc.integer({ min: -2, max: 10 }),
      fc.dictionary(fc.constantFrom('seq', 'price', 'k', 'min_ttl', 'channel', 'amount', 'piece', 'sig', 'code', 'msg', 'x'), anyVal),
      (t, rest) => check(encode({ ...rest, msg_type: t } as never)),
    ),
    { numRuns: 3000 },
  );
});

test('PAYMENT and ACK fast paths: the same bytes as the general encoder, and the same value or the same error as the general decoder', () => {
  const paymentOrAck = arbMessage.filter((m) => m.type === 'payment' || m.type === 'ack');
  // Decoding through both paths: the same message, or the same SpeedMessageError kind and text.
  const outcome = (f: (b: Uint8Array) => SpeedMessage, buf: Uint8Array): unknown => {
    try {
      return normalize(f(buf));
    } catch (e) {
      assert.ok(e instanceof SpeedMessageError);
      return { error: e.kind, message: e.message };
    }
  };
  const same = (buf: Uint8Array) => assert.deepEqual(outcome(decodeSpeedMessage, buf), outcome(decodeAnyMessage, buf));
  fc.assert(
    fc.property(paymentOrAck, (m) => {
      const wire = encodeSpeedMessage(m);
      assert.deepEqual(wire, encodeAnyMessage(m));
      assert.deepEqual(normalize(decodeSpeedMessage(wire)), normalize(m));
      same(wire);
    }),
    { numRuns: 2000 },
  );
  // Mutated, truncated, extended and re-keyed encodings: the fast decoder never accepts what the general one refuses,
  // nor reads a value differently.
  fc.assert(
    fc.property(
      paymentOrAck,
      fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 3 }),
      fc.nat(),
      fc.uint8Array({ maxLength: 4 }),
      (m, flips, cut, tail) => {
        const wire = Buffer.from(encodeSpeedMessage(m));
        for (const [i, b] of flips) wire[i % wire.length] = b;
        same(wire);
        same(wire.subarray(0, cut % (wire.length + 1)));
        same(Buffer.concat([wire.subarray(0, wire.length - 1), tail, wire.subarray(wire.length - 1)]));
      },
    ),
    { numRuns: 3000 },
  );
  // Field values near and past every range edge, leading zeros and signs, written by hand in the canonical layout.
  const int = fc.oneof(fc.constantFrom('0', '1', '00', '01', '-0', '-1', `${U64_MAX}`, `${U64_MAX + 1n}`, `${U128_MAX}`, `${U128_MAX + 1n}`, '4294967295', '4294967296'), fc.bigInt({ min: 0n, max: 1n << 130n }).map(String));
  fc.assert(
    fc.property(fc.boolean(), int, int, int, fc.boolean(), (payment, amount, piece, seqText, withSig) => {
      const ch = 'c'.repeat(32), sig = withSig ? `3:sig64:${'s'.repeat(64)}` : '';
      const body = payment ? `d6:amounti${amount}e7:channel32:${ch}8:msg_typei4e5:piecei${piece}e3:seqi${seqText}e${sig}e` : `d6:amounti${amount}e7:channel32:${ch}8:msg_typei5e3:seqi${seqText}e${sig}e`;
      same(Buffer.from(body, 'latin1'));
    }),
    { numRuns: 2000 },
  );
  // The encoders refuse the same bad fields with the same error.
  const refusal = (f: (m: SpeedMessage) => Buffer, m: SpeedMessage): unknown => {
    try {
      return f(m).toString('hex');
    } catch (e) {
      return (e as Error).message;
    }
  };
  const good = { channel: Buffer.alloc(32), seq: 1n, amount: 1n, piece: 0, sig: Buffer.alloc(64) };
  for (const bad of [{ seq: 0n }, { amount: 0n }, { piece: -1 }, { piece: 2 ** 32 }, { seq: U64_MAX + 1n }, { sig: Buffer.alloc(63) }, { channel: Buffer.alloc(31) }, { sig: undefined }]) {
    const m = { type: 'payment', ...good, ...bad } as unknown as SpeedMessage;
    assert.equal(refusal(encodeSpeedMessage, m), refusal(encodeAnyMessage, m), JSON.stringify(Object.keys(bad)));
    const a = { type: 'ack', ...good, seq: 0n, amount: 0n, ...bad } as unknown as SpeedMessage;
    assert.equal(refusal(encodeSpeedMessage, a), refusal(encodeAnyMessage, a), JSON.stringify(Object.keys(bad)));
  }
});

test('specific rejections carry a clear kind and message', () => {
  const err = (buf: Uint8Array) => {
    try {
      decodeSpeedMessage(buf);
    } catch (e) {
      assert.ok(e instanceof SpeedMessageError);
      return e;
    }
    assert.fail('expected an error');
  };
  assert.equal(err(encode({ msg_type: 99 })).kind, 'unknown_type');
  assert.equal(err(encode({ msg_type: 1, seq: 0, price: 5 })).kind, 'invalid_value'); // seq starts at 1
  assert.equal(err(encode({ msg_type: 1, seq: 1, price: -5 })).kind, 'invalid_value');
  assert.equal(err(encode({ msg_type: 1, seq: 1, price: (1n << 128n) })).kind, 'invalid_value');
  assert.equal(err(encode({ msg_type: 3, channel: Buffer.alloc(31) })).kind, 'invalid_value');
  assert.equal(err(encode({ msg_type: 4, channel: Buffer.alloc(32), seq: 1, amount: 0, piece: 0, sig: Buffer.alloc(64) })).kind, 'invalid_value');
  assert.equal(err(Buffer.from('d8:msg_typei1e3:seqi1e5:pricei1ee')).kind, 'malformed'); // keys not sorted
  assert.equal(err(Buffer.concat([encodeSpeedMessage({ type: 'reject', piece: 1 }), Buffer.from('x')])).kind, 'malformed');
  assert.equal(err(Buffer.alloc(2000, 0x64)).kind, 'too_large');
  assert.equal(err(Buffer.from('li1ee')).kind, 'malformed');
  assert.throws(() => encodeSpeedMessage({ type: 'bid', seq: 1n, price: -1n }), SpeedMessageError);
  assert.throws(() => encodeSpeedMessage({ type: 'payment', channel: Buffer.alloc(32), seq: 1n, amount: 1n, piece: -1, sig: Buffer.alloc(64) }), SpeedMessageError);
});

test('unknown keys are ignored for forward compatibility', () => {
  const m = decodeSpeedMessage(encode({ msg_type: 6, piece: 3, zz_future: 'x' }));
  assert.deepEqual(m, { type: 'reject', piece: 3 });
});

test('error text is truncated on encode to 256 bytes and decoded as UTF-8', () => {
  const wire = encodeSpeedMessage({ type: 'error', code: 8, text: 'é'.repeat(300) });
  const m = decodeSpeedMessage(wire);
  assert.equal(m.type, 'error');
  assert.ok(Buffer.byteLength((m as { text: string }).text) <= 256);
  assert.ok(!(m as { text: string }).text.includes('\uFFFD'));
});

test('handshake: present, absent (legacy), disabled and malformed', () => {
  const h = { v: 1, ledger: Buffer.alloc(32, 1), pk: Buffer.alloc(32, 2), nonce: Buffer.alloc(32, 3), reserve: 5n };
  const payload = encode({ m: { ut_metadata: 3, [SPEED_EXTENSION_NAME]: 7 }, v: 'bitorrent', [SPEED_EXTENSION_NAME]: encodeSpeedHandshake(h) });
  assert.deepEqual(normalize(decodeSpeedHandshakePayload(payload) as never), normalize(h as never));
  // Legacy peer: no bt_speed in m.
  assert.equal(decodeSpeedHandshakePayload(encode({ m: { ut_metadata: 3 } })), undefined);
  assert.equal(parseSpeedHandshake(decode(encode({ v: 'x' }))), undefined);
  // Disabled (id 0).
  assert.equal(decodeSpeedHandshakePayload(encode({ m: { bt_speed: 0 }, bt_speed: encodeSpeedHandshake(h) })), undefined);
  // Advertised but malformed.
  assert.throws(() => decodeSpeedHandshakePayload(encode({ m: { bt_speed: 2 } })), SpeedMessageError);
  assert.throws(() => decodeSpeedHandshakePayload(encode({ m: { bt_speed: 2 }, bt_speed: { v: 1, ledger: Buffer.alloc(32), pk: Buffer.alloc(31), nonce: Buffer.alloc(32) } })), SpeedMessageError);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
      try {
        decodeSpeedHandshakePayload(b);
      } catch (e) {
        assert.ok(e instanceof SpeedMessageError);
      }
    }),
  );
});

test('auth proof: signature over the other side’s nonce verifies only in its own context', () => {
  const a = generateKeyPairSync('ed25519');
  const b = generateKeyPairSync('ed25519');
  const raw = (k: ReturnType<typeof generateKeyPairSync>['publicKey']) => Buffer.from(k.export({ format: 'der', type: 'spki' }).subarray(-32));
  const ctx = {
    infoHash: Buffer.alloc(20, 9),
    ledger: Buffer.alloc(32, 1),
    signerPk: raw(a.publicKey),
    verifierPk: raw(b.publicKey),
    verifierNonce: Buffer.alloc(32, 0xbb),
    signerNonce: Buffer.alloc(32, 0xaa),
  };
  const payload = authPayload(ctx);
  assert.equal(payload.length, 24 + 20 + 32 * 5);
  assert.ok(payload.subarray(0, 24).equals(Buffer.from('bitorrent/speed-auth/v1\0')));
  const sig = sign(null, payload, a.privateKey);
  const pub = a.publicKey;
  assert.ok(verify(null, authPayload(ctx), pub, sig));
  // A new connection (fresh verifier nonce), another torrent or another verifier: the old proof does not verify.
  assert.ok(!verify(null, authPayload({ ...ctx, verifierNonce: Buffer.alloc(32, 0xcc) }), pub, sig));
  assert.ok(!verify(null, authPayload({ ...ctx, infoHash: Buffer.alloc(32, 9) }), pub, sig));
  assert.ok(!verify(null, authPayload({ ...ctx, verifierPk: Buffer.alloc(32, 5) }), pub, sig));
  assert.throws(() => authPayload({ ...ctx, infoHash: Buffer.alloc(21) }), SpeedMessageError);
});
