import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { encode, type PeerAddress } from '@bitorrent/core';
import {
  decodeMessage,
  encodeQuery,
  encodeResponse,
  encodeNodes,
  decodeNodes,
  responseValues,
  KrpcDecodeError,
  DhtNode,
  VirtualClock,
  seededRng,
  type Transport,
} from '../src/index.js';

class Sink implements Transport {
  sent: { buf: Buffer; to: PeerAddress }[] = [];
  cb?: (buf: Buffer, from: PeerAddress) => void;
  send(buf: Buffer, to: PeerAddress): void {
    if (this.sent.length < 1000) this.sent.push({ buf, to });
  }
  onMessage(cb: (buf: Buffer, from: PeerAddress) => void): void {
    this.cb = cb;
  }
}

test('codec: queries and responses round-trip', () => {
  const id = Buffer.alloc(20, 7);
  const q = decodeMessage(encodeQuery(Buffer.from('aa'), 'find_node', { id, target: Buffer.alloc(20, 1) }));
  assert.equal(q.y, 'q');
  assert.ok(q.y === 'q' && q.method === 'find_node' && q.id.equals(id) && !q.ro);
  const nodes = [{ id: Buffer.alloc(20, 2), host: '1.2.3.4', port: 6881 }];
  const r = decodeMessage(encodeResponse(Buffer.from('aa'), { id, nodes: encodeNodes(nodes, 4) }, { host: '9.8.7.6', port: 1234 }));
  assert.ok(r.y === 'r');
  if (r.y !== 'r') return;
  assert.deepEqual(r.ip, { host: '9.8.7.6', port: 1234 });
  assert.deepEqual(decodeNodes(r.r.nodes as Uint8Array, 4), nodes);
  const six = [{ id: Buffer.alloc(20, 3), host: '2001:db8::1', port: 6881 }];
  assert.deepEqual(decodeNodes(encodeNodes(six, 6), 6), six);
  // The BEP 5 example messages.
  const ping = decodeMessage(Buffer.from('d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe'));
  assert.ok(ping.y === 'q' && ping.method === 'ping');
  const err = decodeMessage(Buffer.from('d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee'));
  assert.deepEqual(err.y === 'e' && [err.code, err.message], [201, 'A Generic Error Ocurred']);
  const gp = decodeMessage(Buffer.from('d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re'));
  assert.ok(gp.y === 'r');
  if (gp.y === 'r') assert.equal(responseValues(gp.r).length, 2);
});

test('codec: strict — bad ids, lengths, types and oversize packets are KrpcDecodeError', () => {
  const bad = [
    'd1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe', // short id
    'd1:ad2:id20:abcdefghij0123456789e1:q4:ping1:y1:qe', // no t
    'd1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:xe', // bad y
    'd1:q4:ping1:t2:aa1:y1:qe', // no a
    'li1ee',
    'd1:t2:aa1:y1:re',
    '',
    'd',
  ];
  for (const b of bad) assert.throws(() => decodeMessage(Buffer.from(b)), KrpcDecodeError, b);
  assert.throws(() => decodeMessage(Buffer.alloc(5000, 0x61)), KrpcDecodeError);
  assert.throws(() => decodeNodes(Buffer.alloc(27), 4), KrpcDecodeError);
});

test('fuzz: decodeMessage throws only KrpcDecodeError on random and mutated input', () => {
  const valid = [
    encodeQuery(Buffer.from('ab'), 'get_peers', { id: Buffer.alloc(20, 1), info_hash: Buffer.alloc(20, 2) }),
    encodeResponse(Buffer.from('ab'), { id: Buffer.alloc(20, 1), token: Buffer.alloc(8), values: [Buffer.alloc(6, 1)], nodes: Buffer.alloc(52, 3) }, { host: '1.1.1.1', port: 1 }),
  ];
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat(), fc.nat(255), fc.nat(), (rnd, which, byte, pos) => {
      for (const input of [Buffer.from(rnd), mutate(valid[which % 2], pos, byte)]) {
        try {
          decodeMessage(input);
        } catch (err) {
          assert.ok(err instanceof KrpcDecodeError, String(err));
        }
      }
    }),
    { numRuns: 3000 },
  );
});

function mutate(b: Buffer, pos: number, byte: number): Buffer {
  const c = Buffer.from(b);
  const i = pos % c.length;
  switch (pos % 4) {
    case 0:
      c[i] = byte;
      return c;
    case 1:
      return c.subarray(0, i);
    case 2:
      return Buffer.concat([c.subarray(0, i), Buffer.from([byte]), c.subarray(i)]);
    default:
      return Buffer.concat([c.subarray(0, i), c.subarray(i + 1)]);
  }
}

/** Arbitrary bencodable values: structured garbage that gets past the bencode layer. */
const benc: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  v: fc.oneof(
    { depthSize: 'small' },
    fc.integer(),
    fc.uint8Array({ maxLength: 40 }),
    fc.constantFrom(Buffer.alloc(20, 9), Buffer.alloc(8), Buffer.from('n4'), Buffer.from('n6')),
    fc.array(tie('v'), { maxLength: 4 }),
    fc.dictionary(fc.constantFrom('id', 'target', 'info_hash', 'token', 'port', 'implied_port', 'v', 'k', 'sig', 'seq', 'salt', 'cas', 'want', 'x'), tie('v'), { maxKeys: 6 }),
  ),
})).v;

test('fuzz: the node handler never throws and its state stays bounded under hostile packets', () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const clock = new VirtualClock();
  const rng = seededRng(1);
  const sink = new Sink();
  const node = new DhtNode({ transport: sink, clock, rng, maxTorrents: 50, maxPeersPerTorrent: 20, maxItems: 20, rateLimitPerSecond: 1000 });
  const methods = ['ping', 'find_node', 'get_peers', 'announce_peer', 'get', 'put', 'sample_infohashes', 'x'];
  let n = 0;
  const from = () => ({ host: `${1 + (n % 200)}.${(n >> 8) & 255}.${n & 255}.9`, port: 1 + (n % 60000) });
  const feed = (buf: Buffer) => {
    n++;
    sink.sent.length = 0;
    assert.doesNotThrow(() => sink.cb!(buf, from()));
    if (n % 500 === 0) clock.advance(1000);
  };
  const round = () =>
    fc.assert(
      fc.property(fc.constantFrom(...methods), fc.constantFrom('q', 'r', 'e'), benc, fc.uint8Array({ maxLength: 64 }), (q, y, a, raw) => {
        const args = typeof a === 'object' && a !== null && !Array.isArray(a) && !(a instanceof Uint8Array) ? { id: rng(20), ...a } : a;
        let pkt: Buffer;
        try {
          pkt = encode({ t: Buffer.from([n & 255, 1]), y, q, a: args as never, r: args as never });
        } catch {
          pkt = Buffer.from(raw);
        }
        feed(pkt);
        feed(Buffer.from(raw));
        feed(mutate(pkt, n * 7919, n & 255));
        // Valid announces from many IPs to many info-hashes with real tokens: storage must stay capped.
        const ih = rng(20);
        const ip = from();
        sink.sent.length = 0;
        sink.cb!(encodeQuery(Buffer.from('tt'), 'get_peers', { id: rng(20), info_hash: ih }), ip);
        const reply = sink.sent.length ? decodeMessage(sink.sent[0].buf) : undefined;
        if (reply?.y === 'r' && reply.r.token instanceof Uint8Array) {
          sink.cb!(encodeQuery(Buffer.from('tu'), 'announce_peer', { id: rng(20), info_hash: ih, port: 1000, token: reply.r.token }), ip);
        }
      }),
      { numRuns: 2000, seed: 7 },
    );
  round();
  gc();
  const heapAfterWarmup = process.memoryUsage().heapUsed;
  round();
  round();
  gc();
  const heapAfter = process.memoryUsage().heapUsed;
  assert.ok(node.peerStore.torrentCount() <= 50, `torrents ${node.peerStore.torrentCount()}`);
  assert.ok(node.peerStore.peerCount() <= 50 * 20);
  assert.ok(node.items.size() <= 20);
  assert.ok(node.nodeCount() <= 160 * 8);
  assert.ok(node.rateLimiterSize() <= 20_000);
  assert.ok(node.pendingQueries() === 0);
  assert.equal(node.stats.internalErrors, 0, 'no unexpected exception inside the handler');
  assert.ok(node.stats.badPackets > 0 && node.stats.queriesAnswered > 0);
  // Two more rounds of hostile traffic did not grow the heap beyond noise (8 MB).
  assert.ok(heapAfter - heapAfterWarmup < 8 * 1024 * 1024, `heap grew by ${heapAfter - heapAfterWarmup} bytes`);
});

test('rate limit: a flooding IP is cut off, others still served', () => {
  const clock = new VirtualClock();
  const sink = new Sink();
  const node = new DhtNode({ transport: sink, clock, rng: seededRng(2), rateLimitPerSecond: 10 });
  const ping = encodeQuery(Buffer.from('pp'), 'ping', { id: Buffer.alloc(20, 5) });
  for (let i = 0; i < 100; i++) sink.cb!(ping, { host: '5.5.5.5', port: 1 });
  assert.equal(sink.sent.length, 20); // burst = 2 x rate
  assert.equal(node.stats.rateLimited, 80);
  sink.cb!(ping, { host: '6.6.6.6', port: 1 });
  assert.equal(sink.sent.length, 21);
  clock.advance(1000);
  sink.cb!(ping, { host: '5.5.5.5', port: 1 });
  assert.equal(sink.sent.length, 22);
});

test('no amplification: get_peers replies stay small however many peers are stored', () => {
  const clock = new VirtualClock();
  const sink = new Sink();
  const rng = seededRng(3);
  const node = new DhtNode({ transport: sink, clock, rng, rateLimitPerSecond: 10_000 });
  const ih = Buffer.alloc(20, 1);
  for (let i = 0; i < 300; i++) node.peerStore.add(ih, { host: `8.8.${i >> 8}.${i & 255}`, port: 1000 + i });
  const q = encodeQuery(Buffer.from('gp'), 'get_peers', { id: Buffer.alloc(20, 5), info_hash: ih });
  sink.cb!(q, { host: '9.9.9.9', port: 1 });
  const reply = sink.sent[0].buf;
  const m = decodeMessage(reply);
  assert.ok(m.y === 'r');
  if (m.y === 'r') assert.equal(responseValues(m.r).length, 32);
  assert.ok(reply.length < 600, `reply ${reply.length} bytes`);
  // Unknown methods get a small error, undecodable garbage without a transaction id gets nothing.
  sink.sent.length = 0;
  sink.cb!(Buffer.from('garbage'), { host: '9.9.9.9', port: 1 });
  assert.equal(sink.sent.length, 0);
});
