import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  MessageParser,
  WireProtocolError,
  encodeAllowedFast,
  encodeBitfield,
  encodeCancel,
  encodeChoke,
  encodeExtended,
  encodeHandshake,
  encodeHave,
  encodeHaveAll,
  encodeHaveNone,
  encodeInterested,
  encodeKeepAlive,
  encodeMessage,
  encodeNotInterested,
  encodePiece,
  encodePieceHeader,
  encodePort,
  encodeRequest,
  encodeReject,
  encodeReserved,
  encodeSuggest,
  encodeUnchoke,
  parseHandshake,
  parseReserved,
  type WireMessage,
} from '../src/wire/messages.js';

const IH = Buffer.alloc(20, 0xab);
const PID = Buffer.from('-BI0001-abcdefghijkl');

test('handshake round-trip and reserved bits', () => {
  const hs = encodeHandshake(IH, PID, { extended: true, fast: true, dht: true });
  assert.equal(hs.length, 68);
  assert.equal(hs[0], 19);
  assert.equal(hs.subarray(1, 20).toString('latin1'), 'BitTorrent protocol');
  assert.equal(hs[25], 0x10);
  assert.equal(hs[27], 0x05);
  const p = parseHandshake(hs);
  assert.deepEqual(p.caps, { extended: true, fast: true, dht: true });
  assert.ok(p.infoHash.equals(IH));
  assert.ok(p.peerId.equals(PID));
  assert.deepEqual(parseReserved(encodeReserved({ fast: true })), { extended: false, fast: true, dht: false });
  assert.deepEqual(parseHandshake(encodeHandshake(IH, PID)).caps, { extended: false, fast: false, dht: false });
  const bad = Buffer.from(hs);
  bad[3] ^= 1;
  assert.throws(() => parseHandshake(bad), WireProtocolError);
  assert.throws(() => parseHandshake(hs.subarray(0, 67)), WireProtocolError);
});

test('every encoder has the BEP 3/6/10 byte layout', () => {
  assert.deepEqual([...encodeKeepAlive()], [0, 0, 0, 0]);
  assert.deepEqual([...encodeChoke()], [0, 0, 0, 1, 0]);
  assert.deepEqual([...encodeUnchoke()], [0, 0, 0, 1, 1]);
  assert.deepEqual([...encodeInterested()], [0, 0, 0, 1, 2]);
  assert.deepEqual([...encodeNotInterested()], [0, 0, 0, 1, 3]);
  assert.deepEqual([...encodeHave(0x01020304)], [0, 0, 0, 5, 4, 1, 2, 3, 4]);
  assert.deepEqual([...encodeBitfield(Buffer.from([0xff, 0x80]))], [0, 0, 0, 3, 5, 0xff, 0x80]);
  assert.deepEqual([...encodeRequest(1, 2, 3)], [0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
  assert.deepEqual([...encodePiece(1, 2, Buffer.from([9, 9]))], [0, 0, 0, 11, 7, 0, 0, 0, 1, 0, 0, 0, 2, 9, 9]);
  assert.deepEqual([...encodePieceHeader(1, 2, 2)], [0, 0, 0, 11, 7, 0, 0, 0, 1, 0, 0, 0, 2]);
  assert.deepEqual([...encodeCancel(1, 2, 3)], [0, 0, 0, 13, 8, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
  assert.deepEqual([...encodePort(6881)], [0, 0, 0, 3, 9, 0x1a, 0xe1]);
  assert.deepEqual([...encodeSuggest(7)], [0, 0, 0, 5, 0x0d, 0, 0, 0, 7]);
  assert.deepEqual([...encodeHaveAll()], [0, 0, 0, 1, 0x0e]);
  assert.deepEqual([...encodeHaveNone()], [0, 0, 0, 1, 0x0f]);
  assert.deepEqual([...encodeReject(1, 2, 3)], [0, 0, 0, 13, 0x10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
  assert.deepEqual([...encodeAllowedFast(7)], [0, 0, 0, 5, 0x11, 0, 0, 0, 7]);
  assert.deepEqual([...encodeExtended(3, Buffer.from('de'))], [0, 0, 0, 4, 20, 3, 0x64, 0x65]);
  assert.throws(() => encodeHave(-1), RangeError);
  assert.throws(() => encodeRequest(1, 2 ** 32, 1), RangeError);
  assert.throws(() => encodePort(70000), RangeError);
});

// ---------------------------------------------------------------- property tests

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const messageArb: fc.Arbitrary<WireMessage> = fc.oneof(
  fc.constant({ type: 'keep-alive' } as WireMessage),
  fc.constantFrom<WireMessage>({ type: 'choke' }, { type: 'unchoke' }, { type: 'interested' }, { type: 'not-interested' }, { type: 'have-all' }, { type: 'have-none' }),
  u32.map((index) => ({ type: 'have', index }) as WireMessage),
  u32.map((index) => ({ type: 'suggest', index }) as WireMessage),
  u32.map((index) => ({ type: 'allowed-fast', index }) as WireMessage),
  fc.integer({ min: 0, max: 65535 }).map((port) => ({ type: 'port', port }) as WireMessage),
  fc.uint8Array({ maxLength: 300 }).map((b) => ({ type: 'bitfield', bitfield: Buffer.from(b) }) as WireMessage),
  fc.tuple(fc.constantFrom('request', 'cancel', 'reject'), u32, u32, u32).map(([type, index, begin, length]) => ({ type, index, begin, length }) as WireMessage),
  fc.tuple(u32, u32, fc.uint8Array({ maxLength: 16384 })).map(([index, begin, b]) => ({ type: 'piece', index, begin, block: Buffer.from(b) }) as WireMessage),
  fc.tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 2000 })).map(([extId, b]) => ({ type: 'extended', extId, payload: Buffer.from(b) }) as WireMessage),
);

/** Normalise for comparison: Buffers → arrays. */
function plain(m: WireMessage): unknown {
  const o: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(m)) o[k] = Buffer.isBuffer(v) ? [...v] : v;
  return o;
}

function splitAt(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(buf.subarray(prev, p));
    prev = p;
  }
  out.push(buf.subarray(prev));
  return out;
}

test('property: any chunking of a valid stream yields the same messages', () => {
  fc.assert(
    fc.property(fc.array(messageArb, { maxLength: 25 }), fc.array(fc.nat(), { maxLength: 40 }), fc.boolean(), (msgs, cuts, withHs) => {
      const parts = msgs.map(encodeMessage);
      if (withHs) parts.unshift(encodeHandshake(IH, PID, { extended: true }));
      const stream = Buffer.concat(parts);
      const p = new MessageParser({ expectHandshake: withHs });
      const got: WireMessage[] = [];
      for (const c of splitAt(stream, cuts)) got.push(...p.push(c));
      if (withHs) {
        const h = got.shift()!;
        assert.equal(h.type, 'handshake');
        if (h.type === 'handshake') assert.ok(h.handshake.infoHash.equals(IH));
      }
      assert.deepEqual(got.map(plain), msgs.map(plain));
      assert.equal(p.midMessage, false);
      assert.equal(p.bytesParsed, stream.length);
    }),
    { numRuns: 300 },
  );
});

test('property: transientChunks — read into one reused buffer (scrambled after every feed), held input and kept payloads survive', () => {
  fc.assert(
    fc.property(fc.array(messageArb, { maxLength: 25 }), fc.array(fc.nat(), { maxLength: 40 }), fc.array(fc.boolean(), { maxLength: 60 }), fc.boolean(), (msgs, cuts, stops, drainEachTime) => {
      const stream = Buffer.concat(msgs.map(encodeMessage));
      const p = new MessageParser({ transientChunks: true });
      const readBuf = Buffer.alloc(stream.length + 1);
      const seen: { msg: WireMessage; atSink: unknown }[] = [];
      let s = 0;
      // A consumer copies what it needs during the sink call (piece blocks are views, valid only then).
      const sink = (m: WireMessage) => {
        seen.push({ msg: m, atSink: plain(m) });
        return stops[s++ % Math.max(1, stops.length)] !== true;
      };
      for (const c of splitAt(stream, cuts)) {
        c.copy(readBuf);
        assert.equal(p.feed(readBuf.subarray(0, c.length), sink), null);
        readBuf.fill(0xee); // the socket's next read overwrites the buffer
        // Either resume after every stop, or keep feeding new reads while earlier input is still held.
        for (let i = 0; drainEachTime && i < 100 && p.heldBytes > 0; i++) {
          p.feed(Buffer.alloc(0), sink);
          readBuf.fill(0xdd);
        }
      }
      for (let i = 0; i < 1000 && p.heldBytes > 0; i++) p.feed(Buffer.alloc(0), sink);
      assert.deepEqual(seen.map((x) => x.atSink), msgs.map(plain));
      // Kept messages (an extension's payload, a bitfield) still hold their bytes after the buffer was reused.
      for (const x of seen) if (x.msg.type === 'extended' || x.msg.type === 'bitfield') assert.deepEqual(plain(x.msg), x.atSink);
    }),
    { numRuns: 300 },
  );
});

test('transientChunks: piece blocks that straddle reads are assembled in one reused buffer; without it each keeps its own', () => {
  const blocks = [Buffer.alloc(16384, 0xa1), Buffer.alloc(16384, 0xb2), Buffer.alloc(16384, 0xc3)];
  const stream = Buffer.concat(blocks.map((b, i) => encodePiece(i, 0, b)));
  // 5000-byte reads: every block straddles at least one read boundary.
  const reads: Buffer[] = [];
  for (let off = 0; off < stream.length; off += 5000) reads.push(stream.subarray(off, off + 5000));
  for (const transientChunks of [true, false]) {
    const p = new MessageParser({ transientChunks });
    const got: { view: Buffer; bytesAtSink: Buffer }[] = [];
    for (const r of reads) {
      assert.equal(
        p.feed(Buffer.from(r), (m) => {
          if (m.type === 'piece') got.push({ view: m.block, bytesAtSink: Buffer.from(m.block) });
        }),
        null,
      );
    }
    assert.equal(got.length, 3);
    got.forEach((g, i) => assert.ok(g.bytesAtSink.equals(blocks[i]), `block ${i} at the sink (transient ${transientChunks})`));
    const memory = new Set(got.map((g) => g.view.buffer));
    if (transientChunks) {
      assert.equal(memory.size, 1, 'one assembly buffer for every straddling block');
    } else {
      assert.equal(memory.size, 3);
      got.forEach((g, i) => assert.ok(g.view.equals(blocks[i]), `block ${i} kept after parsing`));
    }
  }
});

test('property: byte-at-a-time parsing equals whole-buffer parsing', () => {
  fc.assert(
    fc.property(fc.array(messageArb, { maxLength: 8 }), (msgs) => {
      const stream = Buffer.concat(msgs.map(encodeMessage));
      const a = new MessageParser().push(stream).map(plain);
      const p = new MessageParser();
      const b: unknown[] = [];
      for (let i = 0; i < stream.length; i++) b.push(...p.push(stream.subarray(i, i + 1)).map(plain));
      assert.deepEqual(b, a);
    }),
    { numRuns: 60 },
  );
});

test('property: random bytes never throw anything but WireProtocolError, and feed() never throws', () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 10 }), fc.boolean(), (chunks, hs) => {
      const p = new MessageParser({ expectHandshake: hs, maxMessageLength: 4096 });
      const q = new MessageParser({ expectHandshake: hs, maxMessageLength: 4096 });
      for (const c of chunks) {
        try {
          p.push(Buffer.from(c));
        } catch (e) {
          assert.ok(e instanceof WireProtocolError, String(e));
          break;
        }
      }
      for (const c of chunks) {
        const err = q.feed(Buffer.from(c), () => {});
        if (err) {
          assert.ok(err instanceof WireProtocolError);
          assert.equal(q.feed(Buffer.from([0, 0, 0, 0]), () => assert.fail('parsed after failure')), err);
          break;
        }
      }
    }),
    { numRuns: 500 },
  );
});

test('property: random valid-length-prefixed junk with a known id is either parsed or a typed error', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 30 }), fc.uint8Array({ maxLength: 40 }), (id, body) => {
      const b = Buffer.alloc(5 + body.length);
      b.writeUInt32BE(1 + body.length, 0);
      b[4] = id;
      b.set(body, 5);
      try {
        new MessageParser().push(b);
      } catch (e) {
        assert.ok(e instanceof WireProtocolError);
      }
    }),
    { numRuns: 500 },
  );
});

// ---------------------------------------------------------------- limits and malformed input

test('a huge length prefix fails as soon as the 4 length bytes arrive, without buffering', () => {
  const p = new MessageParser();
  const err = p.feed(Buffer.from([0xff, 0xff, 0xff, 0xf0]), () => assert.fail('no message expected'));
  assert.ok(err instanceof WireProtocolError);
  assert.equal(err.code, 'MESSAGE_TOO_LONG');
  assert.equal(p.heldBytes, 0);
  // and split across chunks
  const q = new MessageParser();
  assert.equal(q.feed(Buffer.from([0x7f, 0xff]), () => {}), null);
  assert.equal(q.feed(Buffer.from([0xff, 0xff]), () => {})?.code, 'MESSAGE_TOO_LONG');
});

test('per-type limits: piece block, bitfield, fixed lengths', () => {
  const big = encodePiece(0, 0, Buffer.alloc(16385));
  assert.throws(() => new MessageParser().push(big.subarray(0, 5)), (e: WireProtocolError) => e.code === 'MESSAGE_TOO_LONG');
  assert.equal(new MessageParser({ maxBlockLength: 32768 }).push(big)[0].type, 'piece');
  assert.throws(() => new MessageParser({ maxBitfieldLength: 10 }).push(encodeBitfield(Buffer.alloc(11)).subarray(0, 5)), WireProtocolError);
  assert.equal(new MessageParser({ maxBitfieldLength: 11 }).push(encodeBitfield(Buffer.alloc(11)))[0].type, 'bitfield');
  // have with 6-byte body
  const badHave = Buffer.from([0, 0, 0, 7, 4, 0, 0, 0, 1, 0, 0]);
  assert.throws(() => new MessageParser().push(badHave), (e: WireProtocolError) => e.code === 'BAD_MESSAGE_LENGTH');
  assert.throws(() => new MessageParser().push(Buffer.from([0, 0, 0, 2, 0, 0])), (e: WireProtocolError) => e.code === 'BAD_MESSAGE_LENGTH');
  assert.throws(() => new MessageParser().push(Buffer.from([0, 0, 0, 5, 7, 0, 0, 0, 0])), (e: WireProtocolError) => e.code === 'BAD_MESSAGE_LENGTH');
  assert.throws(() => new MessageParser().push(Buffer.from([0, 0, 0, 1, 20])), (e: WireProtocolError) => e.code === 'BAD_MESSAGE_LENGTH');
  // bad handshake fails on the first wrong byte
  const p = new MessageParser({ expectHandshake: true });
  assert.equal(p.feed(Buffer.from('GET / HTTP/1.1\r\n'), () => {})?.code, 'BAD_HANDSHAKE');
});

test('unknown message ids are skipped without buffering and the stream continues', () => {
  const unknown = Buffer.alloc(5 + 100000);
  unknown.writeUInt32BE(100001, 0);
  unknown[4] = 0x42;
  const stream = Buffer.concat([unknown, encodeHave(5)]);
  const p = new MessageParser({ maxMessageLength: 200000 });
  const out: WireMessage[] = [];
  for (let i = 0; i < stream.length; i += 1000) {
    out.push(...p.push(stream.subarray(i, i + 1000)));
    assert.equal(p.heldBytes, 0);
  }
  assert.deepEqual(out, [{ type: 'have', index: 5 }]);
});

test('piece block is a zero-copy view when contiguous, one private copy when split', () => {
  const block = Buffer.alloc(16384, 7);
  const msg = encodePiece(3, 16384, block);
  const chunk = Buffer.concat([encodeHave(1), msg, encodeChoke()]);
  const got = new MessageParser().push(chunk);
  const piece = got[1];
  assert.equal(piece.type, 'piece');
  if (piece.type !== 'piece') return;
  assert.equal(piece.block.buffer, chunk.buffer, 'contiguous block must share memory with the chunk');
  assert.equal(piece.block.byteOffset, chunk.byteOffset + 9 + 13);
  const p = new MessageParser();
  const a = p.push(msg.subarray(0, 1000));
  const b = p.push(msg.subarray(1000));
  assert.equal(a.length, 0);
  const split = b[0];
  assert.equal(split.type, 'piece');
  if (split.type !== 'piece') return;
  assert.notEqual(split.block.buffer, msg.buffer);
  assert.ok(split.block.equals(block));
  assert.equal(split.index, 3);
  assert.equal(split.begin, 16384);
});

test('sink returning false stops parsing and keeps the rest for the next feed', () => {
  const stream = Buffer.concat([encodeHandshake(IH, PID), encodeHave(1), encodeHave(2)]);
  const p = new MessageParser({ expectHandshake: true });
  const seen: string[] = [];
  p.feed(stream, (m) => {
    seen.push(m.type);
    return m.type !== 'handshake';
  });
  assert.deepEqual(seen, ['handshake']);
  assert.equal(p.heldBytes, 18);
  p.feed(Buffer.alloc(0), (m) => {
    seen.push(m.type);
  });
  assert.deepEqual(seen, ['handshake', 'have', 'have']);
});

test('256 MiB of piece messages in 64 KiB chunks parses in linear time', () => {
  // Stands in for the 1 GiB case: the parser never concatenates, so time is linear in bytes.
  const block = Buffer.alloc(16384, 1);
  const one = encodePiece(0, 0, block);
  // A 64 KiB chunk pattern that splits messages at shifting offsets.
  const unit = Buffer.concat(Array.from({ length: 9 }, () => one)); // 147573 bytes
  const p = new MessageParser();
  let pieces = 0;
  let bytes = 0;
  const sink = (m: WireMessage): void => {
    if (m.type === 'piece') {
      pieces++;
      bytes += m.block.length;
    }
  };
  const total = 256 * 1024 * 1024;
  const t0 = process.hrtime.bigint();
  let fed = 0;
  let off = 0;
  while (fed < total) {
    const end = Math.min(off + 65536, unit.length);
    assert.equal(p.feed(unit.subarray(off, end), sink), null);
    fed += end - off;
    off = end === unit.length ? 0 : end;
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  assert.ok(pieces > 16000);
  assert.equal(bytes, pieces * 16384);
  const mbps = total / 1048576 / (ms / 1000);
  // Generous bound for a loaded 2-core CI box; real figure is printed for the report.
  assert.ok(mbps > 200, `parser throughput ${mbps.toFixed(0)} MiB/s`);
  console.log(`# parser: ${mbps.toFixed(0)} MiB/s over ${fed} bytes in 64 KiB chunks`);
});

test('BEP 6 allowed-fast set matches the spec vectors', async () => {
  const { allowedFastSet } = await import('../src/wire/fast.js');
  const ih = Buffer.alloc(20, 0xaa);
  assert.deepEqual(allowedFastSet(7, 1313, ih, '80.4.4.200'), [1059, 431, 808, 1217, 287, 376, 1188]);
  assert.deepEqual(allowedFastSet(9, 1313, ih, '80.4.4.200'), [1059, 431, 808, 1217, 287, 376, 1188, 353, 508]);
  assert.deepEqual(allowedFastSet(9, 1313, ih, '::ffff:80.4.4.7'), allowedFastSet(9, 1313, ih, '80.4.4.200'));
  assert.deepEqual(allowedFastSet(10, 3, ih, '1.2.3.4').sort(), [0, 1, 2]);
  assert.deepEqual(allowedFastSet(10, 100, ih, '2001:db8::1'), []);
  assert.deepEqual(allowedFastSet(10, 0, ih, '1.2.3.4'), []);
});
