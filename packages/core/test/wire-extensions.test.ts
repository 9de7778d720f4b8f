import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { decodePrefix, encode, type BencodeDict } from '../src/bencode.js';
import { PeerWire, type PeerWireOptions } from '../src/wire/peer-wire.js';
import type { WireExtension, WireExtensionFactory } from '../src/wire/extensions.js';
import { utMetadata, UtMetadataError, type UtMetadataExtension } from '../src/wire/ut-metadata.js';
import { utPex, type PexPeer, type PexUpdate, type UtPexExtension } from '../src/wire/ut-pex.js';
import { encodeExtended } from '../src/wire/messages.js';

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

/** a = outgoing leecher side, b = incoming; extensions registered before the handshakes. Resolves after both BEP 10 handshakes. */
async function pair(
  t: TestContext,
  infoHash: Buffer,
  extsA: WireExtensionFactory[],
  extsB: WireExtensionFactory[],
  opts: Partial<PeerWireOptions> = {},
  setup?: (a: PeerWire, b: PeerWire) => void,
): Promise<[PeerWire, PeerWire]> {
  const [c, s] = await tcpPair(t);
  const a = new PeerWire(c, { peerId: PID_A, ...opts });
  const b = new PeerWire(s, { peerId: PID_B, ...opts });
  t.after(() => {
    a.destroy();
    b.destroy();
  });
  setup?.(a, b);
  for (const e of extsA) a.use(e);
  b.once('handshake', (ih: Buffer) => {
    for (const e of extsB) b.use(e);
    b.sendHandshake(ih);
  });
  const ready = Promise.all([once(a, 'extended-handshake'), once(b, 'extended-handshake')]);
  a.sendHandshake(infoHash);
  await ready;
  return [a, b];
}

function makeInfo(approxBytes: number): Buffer {
  const nPieces = Math.ceil(approxBytes / 20);
  return encode({ length: nPieces * 16384, name: 'test.bin', 'piece length': 16384, pieces: randomBytes(nPieces * 20) });
}
const sha1 = (b: Buffer): Buffer => createHash('sha1').update(b).digest();

test('ut_metadata: fetch a ~50 KiB info dict between two wires', async (t) => {
  const info = makeInfo(50 * 1024);
  assert.ok(info.length > 49 * 1024 && info.length % 16384 !== 0);
  const ih = sha1(info);
  const [a, b] = await pair(t, ih, [utMetadata({ infoHash: ih, getMetadata: () => undefined })], [utMetadata({ infoHash: ih, getMetadata: () => info })]);
  assert.equal(a.extendedHandshake!.metadata_size, info.length);
  assert.equal(b.extendedHandshake!.metadata_size, undefined);
  const md = a.getExtension<UtMetadataExtension>('ut_metadata')!;
  assert.equal(md.peerMetadataSize, info.length);
  const got = await md.fetchAsync();
  assert.ok(got.equals(info));
  assert.equal(md.fetching, false);
});

test('ut_metadata: fetch() before the extended handshake waits for it', async (t) => {
  const info = makeInfo(3000);
  const ih = sha1(info);
  const [c, s] = await tcpPair(t);
  const a = new PeerWire(c, { peerId: PID_A });
  const b = new PeerWire(s, { peerId: PID_B });
  t.after(() => {
    a.destroy();
    b.destroy();
  });
  const md = a.use(utMetadata({ infoHash: ih, getMetadata: () => undefined }));
  const result = md.fetchAsync();
  b.once('handshake', (x: Buffer) => {
    b.use(utMetadata({ infoHash: ih, getMetadata: () => info }));
    b.sendHandshake(x);
  });
  a.sendHandshake(ih);
  assert.ok((await result).equals(info));
});

test('ut_metadata: corrupt metadata from a peer gives HASH_MISMATCH', async (t) => {
  const info = makeInfo(50 * 1024);
  const ih = sha1(info);
  const corrupt = Buffer.from(info);
  corrupt[corrupt.length - 100] ^= 0xff;
  const [a] = await pair(t, ih, [utMetadata({ infoHash: ih, getMetadata: () => undefined })], [utMetadata({ infoHash: ih, getMetadata: () => corrupt })]);
  const md = a.getExtension<UtMetadataExtension>('ut_metadata')!;
  await assert.rejects(md.fetchAsync(), (e: UtMetadataError) => e instanceof UtMetadataError && e.code === 'HASH_MISMATCH');
  assert.equal(a.destroyed, false, 'the session decides what to do with the peer');
});

test('ut_metadata: oversize metadata_size is refused before allocating', async (t) => {
  const info = makeInfo(40 * 1024);
  const ih = sha1(info);
  const [a] = await pair(t, ih, [utMetadata({ infoHash: ih, getMetadata: () => undefined, maxMetadataSize: 32 * 1024 })], [utMetadata({ infoHash: ih, getMetadata: () => info })]);
  await assert.rejects(a.getExtension<UtMetadataExtension>('ut_metadata')!.fetchAsync(), (e: UtMetadataError) => e.code === 'TOO_LARGE');
});

test('ut_metadata: a reject from the peer is reported', async (t) => {
  const info = makeInfo(20 * 1024);
  const ih = sha1(info);
  let calls = 0;
  // Advertises metadata_size in its handshake, then "loses" the metadata and rejects.
  const flaky = utMetadata({ infoHash: ih, getMetadata: () => (calls++ === 0 ? info : undefined) });
  const [a] = await pair(t, ih, [utMetadata({ infoHash: ih, getMetadata: () => undefined })], [flaky]);
  await assert.rejects(a.getExtension<UtMetadataExtension>('ut_metadata')!.fetchAsync(), (e: UtMetadataError) => e.code === 'REJECTED');
});

test('ut_metadata: hostile data (wrong piece length, wrong total_size, garbage) is bounded and reported', async (t) => {
  const info = makeInfo(20 * 1024);
  const ih = sha1(info);
  // A fake ut_metadata peer that answers every request with a 10-byte piece.
  const liar = (mode: 'short' | 'total'): WireExtensionFactory => (wire) => ({
    name: 'ut_metadata',
    extendHandshake(d) {
      d.metadata_size = info.length;
    },
    onMessage(payload) {
      const req = decodePrefix(payload).value as BencodeDict;
      wire.sendExtended('ut_metadata', Buffer.from('garbage'));
      const total = mode === 'total' ? 1e12 : info.length;
      wire.sendExtended('ut_metadata', Buffer.concat([encode({ msg_type: 1, piece: req.piece as number, total_size: total }), Buffer.alloc(mode === 'short' ? 10 : 16384)]));
    },
  });
  const [a] = await pair(t, ih, [utMetadata({ infoHash: ih, getMetadata: () => undefined })], [liar('short')]);
  await assert.rejects(a.getExtension<UtMetadataExtension>('ut_metadata')!.fetchAsync(), (e: UtMetadataError) => e.code === 'BAD_PIECE');
  const [a2] = await pair(t, ih, [utMetadata({ infoHash: ih, getMetadata: () => undefined })], [liar('total')]);
  await assert.rejects(a2.getExtension<UtMetadataExtension>('ut_metadata')!.fetchAsync(), (e: UtMetadataError) => e.code === 'BAD_SIZE');
});

test('ut_metadata: peer without the extension gives NOT_SUPPORTED', async (t) => {
  const ih = Buffer.alloc(20, 3);
  const [a] = await pair(t, ih, [utMetadata({ infoHash: ih, getMetadata: () => undefined })], []);
  await assert.rejects(a.getExtension<UtMetadataExtension>('ut_metadata')!.fetchAsync(), (e: UtMetadataError) => e.code === 'NOT_SUPPORTED');
});

// ---------------------------------------------------------------- ut_pex

function virtualTimer() {
  const fns: (() => void)[] = [];
  return {
    setTimer: (fn: () => void) => {
      fns.push(fn);
      return () => fns.splice(fns.indexOf(fn), 1);
    },
    fire: () => fns.forEach((f) => f()),
    count: () => fns.length,
  };
}

test('ut_pex: IPv4 + IPv6 exchange with flags, then added/dropped diffs at most once per interval', async (t) => {
  let now = 1_000_000;
  const timer = virtualTimer();
  let peers: PexPeer[] = [
    { host: '10.0.0.1', port: 6881, flags: 0x12 },
    { host: '10.0.0.2', port: 6882 },
    { host: '2001:db8::1', port: 7000, flags: 0x04 },
  ];
  const sender = utPex({ getPeers: () => peers, now: () => now, setTimer: timer.setTimer });
  const [c, s] = await tcpPair(t);
  const a = new PeerWire(c, { peerId: PID_A });
  const b = new PeerWire(s, { peerId: PID_B });
  t.after(() => {
    a.destroy();
    b.destroy();
  });
  const ext = a.use(sender);
  b.once('handshake', (ih: Buffer) => {
    b.use(utPex({ now: () => now }));
    b.sendHandshake(ih);
  });
  const first = once(b, 'pex-peers');
  a.sendHandshake(Buffer.alloc(20, 9));
  const [u1] = (await first) as [PexUpdate];
  assert.deepEqual(u1.added, [
    { host: '10.0.0.1', port: 6881, flags: 0x12 },
    { host: '10.0.0.2', port: 6882, flags: 0 },
    { host: '2001:db8::1', port: 7000, flags: 0x04 },
  ]);
  assert.deepEqual(u1.dropped, []);
  assert.equal(ext.advertisedCount, 3);
  assert.equal(timer.count(), 1);

  // Changes inside the interval are not sent.
  peers = [{ host: '10.0.0.1', port: 6881 }, { host: '2001:db8::2', port: 7001 }, { host: '10.0.0.3', port: 6883 }];
  now += 30_000;
  assert.equal((ext as UtPexExtension).flush(), false);
  now += 30_000;
  const second = once(b, 'pex-peers');
  timer.fire();
  const [u2] = (await second) as [PexUpdate];
  assert.deepEqual(u2.added, [{ host: '10.0.0.3', port: 6883, flags: 0 }, { host: '2001:db8::2', port: 7001, flags: 0 }]);
  assert.deepEqual(u2.dropped, [{ host: '10.0.0.2', port: 6882 }, { host: '2001:db8::1', port: 7000 }]);
  // Nothing new: nothing sent.
  now += 60_000;
  assert.equal(ext.flush(), false);
  a.destroy();
  assert.equal(timer.count(), 0, 'timer cancelled on close');
});

test('ut_pex: at most 50 added per message, rest in the next round', { timeout: 20_000 }, async (t) => {
  let now = 0;
  const timer = virtualTimer();
  const peers: PexPeer[] = Array.from({ length: 60 }, (_, i) => ({ host: `10.1.0.${i + 1}`, port: 1000 + i }));
  const ih = Buffer.alloc(20, 5);
  const updates: PexUpdate[] = [];
  let firstUpdate!: Promise<unknown>;
  const [, b] = await pair(t, ih, [utPex({ getPeers: () => peers, now: () => now, setTimer: timer.setTimer })], [utPex({ now: () => now })], {}, (_a, b) => {
    firstUpdate = once(b, 'pex-peers');
    b.on('pex-peers', (u: PexUpdate) => updates.push(u));
  });
  await firstUpdate;
  assert.equal(updates[0].added.length, 50);
  now += 60_000;
  const next = once(b, 'pex-peers');
  timer.fire();
  await next;
  assert.equal(updates[1].added.length, 10);
  assert.deepEqual(new Set([...updates[0].added, ...updates[1].added].map((p) => p.port)).size, 60);
});

test('ut_pex: hostile garbage is ignored, truncated fields are cut to whole entries', async (t) => {
  const ih = Buffer.alloc(20, 6);
  const [a, b] = await pair(t, ih, [], [utPex()]);
  const id = a.peerExtensions.get('ut_pex')!;
  assert.ok(id > 0);
  const seen: PexUpdate[] = [];
  b.on('pex-peers', (u: PexUpdate) => seen.push(u));
  const raw = (payload: Buffer): void => void a.socket.write(encodeExtended(id, payload));
  raw(Buffer.from('not bencode at all'));
  raw(encode({ added: 12345 }));
  raw(encode([1, 2, 3]));
  raw(encode({ added: Buffer.from([1, 2, 3]), dropped6: Buffer.alloc(17) }));
  raw(Buffer.from('d5:added' + '9999999:'));
  raw(encode({ added: Buffer.from([127, 0, 0, 5, 0x1a, 0xe1, 9]), 'added.f': Buffer.from([2]) }));
  await once(b, 'pex-peers');
  // A second valid message right away is a flood: ignored (BEP 11 senders wait a minute).
  raw(encode({ added: Buffer.from([127, 0, 0, 6, 0x1a, 0xe1]) }));
  const marker = once(b, 'have'); // same TCP stream: once it arrives, the PEX message before it was handled
  a.have(1);
  await marker;
  assert.equal(seen.length, 1);
  assert.deepEqual(seen[0], { added: [{ host: '127.0.0.5', port: 6881, flags: 2 }], dropped: [] });
  assert.equal(b.destroyed, false);
});

test('custom extension shape compiles against WireExtension', () => {
  const f: WireExtensionFactory = () => ({ name: 'x', onMessage() {} }) satisfies WireExtension;
  assert.equal(typeof f, 'function');
});
