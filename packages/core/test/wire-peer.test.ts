import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { asBytes, asDict, asInt, asString, encode, type BencodeDict } from '../src/bencode.js';
import { PeerWire, type PeerWireOptions } from '../src/wire/peer-wire.js';
import type { WireExtension } from '../src/wire/extensions.js';
import { VirtualClock } from '../src/clock.js';
import { WireProtocolError, encodeBitfield, encodeHandshake, encodeHaveAll, encodeExtended } from '../src/wire/messages.js';

const IH = Buffer.alloc(20, 0x11);
const PID_A = Buffer.from('-BI0001-aaaaaaaaaaaa');
const PID_B = Buffer.from('-BI0001-bbbbbbbbbbbb');

async function tcpPair(t: TestContext): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const accepted = once(server, 'connection');
  const client = net.connect(port, '127.0.0.1');
  const [[srv]] = await Promise.all([accepted, once(client, 'connect')]);
  t.after(() => {
    client.destroy();
    (srv as net.Socket).destroy();
    server.close();
  });
  return [client, srv as net.Socket];
}

/** a = outgoing (sends its handshake at once), b = incoming (answers from its 'handshake' event). */
async function wirePair(
  t: TestContext,
  optsA: Partial<PeerWireOptions> = {},
  optsB: Partial<PeerWireOptions> = {},
  setup?: (a: PeerWire, b: PeerWire) => void,
): Promise<[PeerWire, PeerWire]> {
  const [c, s] = await tcpPair(t);
  const a = new PeerWire(c, { peerId: PID_A, ...optsA });
  const b = new PeerWire(s, { peerId: PID_B, ...optsB });
  t.after(() => {
    a.destroy();
    b.destroy();
  });
  setup?.(a, b);
  b.once('handshake', (ih: Buffer) => b.sendHandshake(ih));
  const ready = Promise.all([once(a, 'handshake'), once(b, 'handshake')]);
  a.sendHandshake(IH);
  await ready;
  return [a, b];
}

test('handshake, BEP 10 handshake fields, bitfield, request/piece over loopback TCP', async (t) => {
  const [a, b] = await wirePair(t, { listenPort: 6881 }, { clientName: 'peer-b 1.0' }, (a, b) => {
    // Both handshakes must be observed by both ends; record b's view of a.
    b.once('handshake', (ih: Buffer, pid: Buffer, caps) => {
      assert.ok(ih.equals(IH));
      assert.ok(pid.equals(PID_A));
      assert.deepEqual(caps, { extended: true, fast: true, dht: false });
    });
    void a;
  });
  assert.ok(a.remotePeerId!.equals(PID_B));
  assert.ok(a.peerId!.equals(PID_B));
  assert.ok(b.peerId!.equals(PID_A));
  assert.ok(a.localPeerId.equals(PID_A));
  assert.equal(a.supportsFast, true);
  assert.equal(a.supportsExtended, true);

  const [[dictAtB]] = b.extendedHandshake ? [[b.extendedHandshake]] : await Promise.all([once(b, 'extended-handshake')]);
  const dAtB = dictAtB as BencodeDict;
  assert.equal(asString(dAtB.v, 'v'), 'bitorrent 0.1');
  assert.equal(asInt(dAtB.p, 'p'), 6881);
  assert.equal(asInt(dAtB.reqq, 'reqq'), 250);
  assert.deepEqual([...asBytes(dAtB.yourip, 'yourip')], [127, 0, 0, 1]);
  assert.deepEqual(Object.keys(asDict(dAtB.m, 'm')), []);
  if (!a.extendedHandshake) await once(a, 'extended-handshake');
  assert.equal(asString(a.extendedHandshake!.v, 'v'), 'peer-b 1.0');

  // bitfield, interest, unchoke, request → piece, have
  const bf = Buffer.from([0b10100000]);
  const gotBf = once(a, 'bitfield');
  b.bitfield(bf);
  assert.deepEqual([...(await gotBf)[0]], [...bf]);

  const gotInterested = once(b, 'interested');
  a.interested();
  await gotInterested;
  assert.equal(b.peerInterested, true);
  assert.equal(a.amInterested, true);

  const gotUnchoke = once(a, 'unchoke');
  b.unchoke();
  await gotUnchoke;
  assert.equal(a.peerChoking, false);
  assert.equal(b.amChoking, false);

  const block = Buffer.alloc(16384);
  for (let i = 0; i < block.length; i++) block[i] = (i * 7) & 0xff;
  b.on('request', (index: number, begin: number, length: number) => b.piece(index, begin, block.subarray(0, length)));
  const pieces: [number, number, Buffer][] = [];
  const allPieces = new Promise<void>((resolve) =>
    a.on('piece', (i: number, bg: number, blk: Buffer) => {
      pieces.push([i, bg, Buffer.from(blk)]);
      if (pieces.length === 3) resolve();
    }),
  );
  a.request(0, 0, 16384);
  a.request(2, 16384, 16384);
  a.request(2, 32768, 100);
  await allPieces;
  assert.deepEqual(pieces.map(([i, bg, blk]) => [i, bg, blk.length]), [[0, 0, 16384], [2, 16384, 16384], [2, 32768, 100]]);
  assert.ok(pieces[0][2].equals(block));
  assert.equal(a.downloadedBytes, 16384 * 2 + 100);
  assert.equal(b.uploadedBytes, 16384 * 2 + 100);

  const gotHave = once(b, 'have');
  a.have(7);
  assert.deepEqual(await gotHave, [7]);

  const gotCancel = once(b, 'cancel');
  a.cancel(1, 2, 3);
  assert.deepEqual(await gotCancel, [1, 2, 3]);

  const gotPort = once(b, 'port');
  a.port(51413);
  assert.deepEqual(await gotPort, [51413]);

  const gotNI = once(b, 'not-interested');
  a.notInterested();
  await gotNI;
  assert.equal(b.peerInterested, false);

  const gotChoke = once(a, 'choke');
  b.choke();
  await gotChoke;
  assert.equal(a.peerChoking, true);

  // close is emitted exactly once on both ends
  let closesA = 0;
  let closesB = 0;
  a.on('close', () => closesA++);
  b.on('close', () => closesB++);
  const bClosed = once(b, 'close');
  a.destroy();
  a.destroy();
  await bClosed;
  b.destroy();
  assert.equal(closesA, 1);
  assert.equal(closesB, 1);
});

test('fast extension messages (BEP 6) when negotiated', async (t) => {
  const [a, b] = await wirePair(t);
  const got: unknown[] = [];
  const done = new Promise<void>((resolve) => {
    b.on('have-all', () => got.push('have-all'));
    b.on('suggest', (i: number) => got.push(['suggest', i]));
    b.on('allowed-fast', (i: number) => got.push(['allowed-fast', i]));
    b.on('reject', (i: number, bg: number, l: number) => {
      got.push(['reject', i, bg, l]);
      resolve();
    });
  });
  assert.equal(a.haveAll(), true);
  assert.equal(a.suggest(4), true);
  assert.equal(a.allowedFast(9), true);
  assert.equal(a.rejectRequest(1, 0, 16384), true);
  await done;
  assert.deepEqual(got, ['have-all', ['suggest', 4], ['allowed-fast', 9], ['reject', 1, 0, 16384]]);
});

test('without fast: fast senders are no-ops and a received have-all closes the connection', async (t) => {
  const [a, b] = await wirePair(t, {}, { reserved: { extended: true, fast: false } });
  assert.equal(a.supportsFast, false);
  assert.equal(a.haveAll(), false);
  assert.equal(a.rejectRequest(0, 0, 1), false);
  assert.equal(a.reject(0, 0, 1), false);
  const errP = once(b, 'error');
  const closeP = new Promise((r) => b.once('close', r));
  a.socket.write(encodeHaveAll()); // a hostile peer ignoring the negotiation
  const [err] = await errP;
  await closeP;
  assert.ok(err instanceof WireProtocolError);
  assert.equal(err.code, 'PROTOCOL_VIOLATION');
  assert.equal(b.destroyed, true);
});

test('a later bitfield (as aria2 sends after have-none and haves) is delivered as a replacement, not a violation', async (t) => {
  const [a, b] = await wirePair(t);
  const got: unknown[] = [];
  b.on('have-none', (replaces: boolean) => got.push(['have-none', replaces]));
  b.on('have', (i: number) => got.push(['have', i]));
  b.on('bitfield', (bf: Buffer, replaces: boolean) => got.push(['bitfield', bf[0], replaces]));
  const second = new Promise((r) => b.on('bitfield', r));
  a.haveNone();
  a.have(3);
  a.bitfield(Buffer.from([0x90]));
  await second;
  assert.deepEqual(got, [['have-none', false], ['have', 3], ['bitfield', 0x90, true]]);
  assert.equal(b.destroyed, false);
});

test('incoming wire holds pipelined messages until the session answers the handshake', async (t) => {
  const [c, s] = await tcpPair(t);
  const b = new PeerWire(s, { peerId: PID_B });
  t.after(() => b.destroy());
  const events: string[] = [];
  b.on('bitfield', () => events.push('bitfield'));
  const hs = once(b, 'handshake');
  // Raw peer: handshake and a bitfield in one write, before we answered.
  c.write(Buffer.concat([encodeHandshake(IH, PID_A, { extended: true, fast: true }), encodeBitfield(Buffer.from([0xff]))]));
  await hs;
  assert.equal(b.handshakeReceived, true);
  assert.equal(b.handshakeSent, false);
  // Give the event loop a few turns: the bitfield must not be delivered yet.
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  assert.deepEqual(events, []);
  const answer = once(c, 'data');
  const bf = once(b, 'bitfield');
  b.sendHandshake(IH);
  await bf;
  assert.deepEqual(events, ['bitfield']);
  const [data] = (await answer) as [Buffer];
  assert.equal(data[0], 19);
});

test('outgoing wire rejects a handshake for another info-hash', async (t) => {
  const [c, s] = await tcpPair(t);
  const a = new PeerWire(c, { peerId: PID_A });
  t.after(() => a.destroy());
  const errP = once(a, 'error');
  a.sendHandshake(IH);
  s.write(encodeHandshake(Buffer.alloc(20, 0x22), PID_B));
  const [err] = await errP;
  assert.equal((err as WireProtocolError).code, 'BAD_HANDSHAKE');
});

test('hostile input: oversize length prefix and garbage handshake close with WireProtocolError', async (t) => {
  const [a, b] = await wirePair(t, {}, { maxMessageLength: 64 * 1024 });
  const errP = once(b, 'error');
  let closes = 0;
  b.on('close', () => closes++);
  a.socket.write(Buffer.from([0x7f, 0xff, 0xff, 0xff, 7]));
  const [err] = await errP;
  assert.equal((err as WireProtocolError).code, 'MESSAGE_TOO_LONG');
  assert.equal(closes, 1);

  const [c, s] = await tcpPair(t);
  const w = new PeerWire(s, { peerId: PID_B });
  const errQ = once(w, 'error');
  c.write('GET /announce HTTP/1.1\r\n\r\n');
  const [err2] = await errQ;
  assert.equal((err2 as WireProtocolError).code, 'BAD_HANDSHAKE');
});

test('no error listener: hostile input closes the wire without crashing the process', async (t) => {
  const [c, s] = await tcpPair(t);
  const w = new PeerWire(s, { peerId: PID_B });
  const closed = new Promise((r) => w.once('close', r));
  c.write(Buffer.alloc(68, 0xee));
  await closed;
  assert.ok(w.closeError instanceof WireProtocolError);
});

test('keep-alive when idle and idle timeout', async (t) => {
  const [a, b] = await wirePair(t, { keepAliveMs: 40 }, { idleTimeoutMs: 0 });
  await once(b, 'keep-alive');
  assert.equal(a.destroyed, false);

  const [c, s] = await tcpPair(t);
  void c;
  const w = new PeerWire(s, { peerId: PID_B, idleTimeoutMs: 60 });
  const errP = once(w, 'error');
  const [err] = await errP;
  assert.equal((err as WireProtocolError).code, 'TIMEOUT');
  assert.equal(w.destroyed, true);
});

test('keep-alive and idle timeout under an injected VirtualClock', async (t) => {
  const clock = new VirtualClock(0);
  const [a, b] = await wirePair(t, { clock, keepAliveMs: 60_000, idleTimeoutMs: 120_000 }, { idleTimeoutMs: 0, keepAliveMs: 0 });
  const ka = once(b, 'keep-alive');
  clock.advance(61_000);
  await ka;
  assert.equal(a.destroyed, false);
  const closed = new Promise((r) => a.once('close', r));
  clock.advance(60_000); // 121 s without receiving anything (b sends no keep-alives)
  await closed;
  assert.equal((a.closeError as WireProtocolError).code, 'TIMEOUT');
});

test('extension API: ids, handshake fields, messages both ways, unknown ids ignored', async (t) => {
  const received: { a: string[]; b: string[] } = { a: [], b: [] };
  const echo = (side: 'a' | 'b') => (wire: PeerWire): WireExtension => ({
    name: 'x_echo',
    extendHandshake(dict) {
      dict.x_echo_version = 3;
    },
    onExtendedHandshake(dict) {
      received[side].push(`hs:${asInt(dict.x_echo_version, 'v')}`);
    },
    onMessage(payload) {
      received[side].push(payload.toString());
      if (side === 'b') wire.sendExtended('x_echo', Buffer.from(`echo ${payload.toString()}`));
    },
  });
  const other = (): WireExtension => ({ name: 'x_other', onMessage() {} });
  const [a, b] = await wirePair(t, {}, {}, (a, b) => {
    a.use(other); // a: x_other=1, x_echo=2 — the ids differ per side
    a.use(echo('a'));
    b.once('handshake', () => b.use(echo('b'))); // incoming: register before answering
  });
  if (!a.extendedHandshake) await once(a, 'extended-handshake');
  if (!b.extendedHandshake) await once(b, 'extended-handshake');
  assert.deepEqual({ ...asDict(b.extendedHandshake!.m, 'm') }, { x_other: 1, x_echo: 2 });
  assert.equal(a.peerExtensions.get('x_echo'), 1);
  assert.equal(b.peerExtensions.get('x_echo'), 2);
  assert.equal(a.extensionSupported('x_echo'), true);
  assert.equal(a.extensionSupported('x_other'), false);
  assert.equal(a.sendExtended('x_other', Buffer.from('nope')), false);
  assert.equal(a.getExtension('x_echo')?.name, 'x_echo');
  assert.throws(() => a.use(other), /before the extended handshake/);

  // garbage under an id nobody registered is ignored
  a.socket.write(encodeExtended(77, Buffer.from('junk')));
  const reply = new Promise<void>((resolve) => {
    const ext = a.getExtension('x_echo')!;
    const orig = ext.onMessage.bind(ext);
    ext.onMessage = (p) => {
      orig(p);
      resolve();
    };
  });
  assert.equal(a.sendExtended('x_echo', Buffer.from('hello')), true);
  await reply;
  assert.deepEqual(received.b, ['hs:3', 'hello']);
  assert.deepEqual(received.a, ['hs:3', 'echo hello']);
  assert.equal(b.destroyed, false);
});

test('a throwing extension closes only its connection', async (t) => {
  const bad = (): WireExtension => ({
    name: 'x_bad',
    onMessage() {
      throw new Error('boom');
    },
  });
  const [a, b] = await wirePair(t, {}, {}, (a, b) => {
    a.use(bad);
    b.once('handshake', () => b.use(bad));
  });
  if (!a.extendedHandshake) await once(a, 'extended-handshake');
  const errP = once(b, 'error');
  a.sendExtended('x_bad', Buffer.from('x'));
  const [err] = await errP;
  assert.equal((err as Error).message, 'boom');
});

test('backpressure: needsDrain/drain with pauseReading/resumeReading, no block copies lost', async (t) => {
  const [a, b] = await wirePair(t);
  b.pauseReading();
  assert.equal(b.readingIsPaused, true);
  const block = Buffer.alloc(16384, 0x5a);
  let sent = 0;
  // Fill until the socket says stop (the kernel buffers absorb some first).
  while (!a.needsDrain || sent < 8) {
    a.piece(0, sent * 16384, block);
    sent++;
    if (sent > 100000) assert.fail('needsDrain never became true');
    if (a.needsDrain) {
      // Let the cork flush and the kernel fill: only stop once the socket truly backs up.
      await new Promise((r) => setImmediate(r));
      if (a.needsDrain && a.writableLength > 256 * 1024) break;
    }
  }
  assert.ok(a.writableLength > 0);
  let got = 0;
  const all = new Promise<void>((resolve) =>
    b.on('piece', (_i: number, _b: number, blk: Buffer) => {
      assert.equal(blk[0], 0x5a);
      if (++got === sent) resolve();
    }),
  );
  const drained = once(a, 'drain');
  b.resumeReading();
  await drained;
  await all;
  assert.equal(b.downloadedBytes, sent * 16384);
  assert.equal(a.uploadedBytes, sent * 16384);
});

test('encode(): our own extended handshake is valid bencode with m/v/reqq', () => {
  // Sanity for the sans-I/O pieces used above.
  const d = encode({ m: { ut_metadata: 1 }, v: 'bitorrent 0.1', reqq: 250 });
  assert.equal(d.toString(), 'd1:md11:ut_metadatai1ee4:reqqi250e1:v13:bitorrent 0.1e');
});

test('property: random bytes after a valid handshake never crash; the wire stays open or closes with WireProtocolError', async () => {
  const { Duplex } = await import('node:stream');
  const fc = (await import('fast-check')).default;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }), fc.boolean(), async (chunks, fast) => {
      const d = new Duplex({ read() {}, write(_c, _e, cb) { cb(); } });
      const w = new PeerWire(d, { peerId: PID_B, keepAliveMs: 0, idleTimeoutMs: 0, maxMessageLength: 4096 });
      w.on('handshake', (ih: Buffer) => w.sendHandshake(ih));
      d.push(encodeHandshake(IH, PID_A, { extended: true, fast }));
      for (const c of chunks) d.push(Buffer.from(c));
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
      if (w.destroyed) {
        if (w.closeError) assert.ok(w.closeError instanceof WireProtocolError, String(w.closeError));
      } else {
        assert.equal(w.handshakeReceived, true);
        w.destroy();
      }
    }),
    { numRuns: 300 },
  );
});
