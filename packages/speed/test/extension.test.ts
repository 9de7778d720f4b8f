import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, createConnection, type Socket, type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { PeerWire } from '@bitorrent/core';
import { keyPairFromSeed, type ChannelInfo } from '@bitorrent/ledger';
import { speedWire, type SpeedWireExtension, type SpeedWireOptions } from '../src/extension.js';
import { SPEED_EXTENSION_NAME, SpeedErrorCode, type SpeedMessage, type PaymentMessage } from '../src/messages.js';
import { ProviderPayments, RequesterPayments } from '../src/payments.js';

const LEDGER = Buffer.alloc(32, 7);
const INFO_HASH = Buffer.alloc(20, 0xab);
const ka = keyPairFromSeed(Buffer.alloc(32, 0xa1));
const kb = keyPairFromSeed(Buffer.alloc(32, 0xb2));

interface Side {
  wire: PeerWire;
  ext?: SpeedWireExtension;
  events: { ready?: Buffer; legacy?: string; messages: SpeedMessage[]; errors: Error[] };
}

async function pair(a: SpeedWireOptions | undefined, b: SpeedWireOptions | undefined, t: { after: (fn: () => void) => void }): Promise<[Side, Side]> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const sa = createConnection({ host: '127.0.0.1', port });
  const [sb] = await accepted;
  const mk = (socket: Socket, opts: SpeedWireOptions | undefined, id: number): Side => {
    const wire = new PeerWire(socket, { peerId: Buffer.alloc(20, id), keepAliveMs: 0, idleTimeoutMs: 0 });
    const side: Side = { wire, events: { messages: [], errors: [] } };
    if (opts) side.ext = wire.use(speedWire(opts));
    wire.on('speed-ready', (k: Buffer) => (side.events.ready = k));
    wire.on('speed-legacy', (r: string) => (side.events.legacy = r));
    wire.on('speed-message', (m: SpeedMessage) => side.events.messages.push(m));
    wire.on('speed-error', (e: Error) => side.events.errors.push(e));
    wire.on('error', () => {});
    return side;
  };
  const A = mk(sa, a, 1);
  const B = mk(sb, b, 2);
  B.wire.on('handshake', (ih: Buffer) => B.wire.sendHandshake(ih));
  A.wire.sendHandshake(INFO_HASH);
  t.after(() => {
    A.wire.destroy();
    B.wire.destroy();
    server.close();
  });
  return [A, B];
}

const optsA = (extra: Partial<SpeedWireOptions> = {}): SpeedWireOptions => ({ ledgerId: LEDGER, publicKey: ka.publicKey, secretKey: ka.secretKey, ...extra });
const optsB = (extra: Partial<SpeedWireOptions> = {}): SpeedWireOptions => ({ ledgerId: LEDGER, publicKey: kb.publicKey, secretKey: kb.secretKey, reservePrice: () => 3n, ...extra });

/** Wait (polling on timers, bounded at 5 s) until `cond` holds: socket delivery is asynchronous (Nagle, delayed ACK). */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
  assert.ok(cond(), `timed out waiting for ${what}`);
}

test('both peers speak bt_speed: handshake fields, mutual AUTH, each learns the other’s proven key', async (t) => {
  const [A, B] = await pair(optsA(), optsB(), t);
  await until(() => !!A.events.ready && !!B.events.ready, 'speed-ready');
  assert.ok(A.events.ready!.equals(kb.publicKey));
  assert.ok(B.events.ready!.equals(ka.publicKey));
  assert.equal(A.ext!.peerHandshake!.reserve, 3n);
  assert.ok(A.wire.extensionSupported(SPEED_EXTENSION_NAME));
});

test('a legacy peer (no bt_speed) is reported as legacy and nothing is sent to it', async (t) => {
  const [A, B] = await pair(optsA(), undefined, t);
  await until(() => !!A.events.legacy, 'speed-legacy');
  assert.match(A.events.legacy!, /does not advertise/);
  assert.equal(A.ext!.send({ type: 'reject', piece: 1 }), false);
  assert.equal(A.ext!.sendBid(5n), undefined);
  assert.ok(!B.wire.destroyed && !A.wire.destroyed);
});

test('peers on different ledgers fall back to legacy on both sides', async (t) => {
  const [A, B] = await pair(optsA(), optsB({ ledgerId: Buffer.alloc(32, 8) }), t);
  await until(() => !!A.events.legacy && !!B.events.legacy, 'legacy on both');
  assert.match(A.events.legacy!, /another ledger/);
  assert.equal(A.events.ready, undefined);
});

test('a peer claiming a key it does not own fails AUTH', async (t) => {
  // B advertises A's public key but can only sign with its own secret key.
  const [A, B] = await pair(optsA(), optsB({ publicKey: keyPairFromSeed(Buffer.alloc(32, 0xcc)).publicKey }), t);
  await until(() => !!A.events.legacy, 'A rejects B');
  assert.match(A.events.legacy!, /AUTH signature invalid/);
  assert.equal(A.events.ready, undefined);
  await until(() => !!B.events.legacy, 'B told');
  assert.ok(!A.wire.destroyed);
});

test('malformed Speed messages get an ERROR reply and never close the connection', async (t) => {
  const [A, B] = await pair(optsA(), optsB(), t);
  await until(() => !!A.events.ready && !!B.events.ready, 'ready');
  A.wire.sendExtended(SPEED_EXTENSION_NAME, Buffer.from('d8:msg_typei1e5:pricei-1e3:seqi1ee'));
  A.wire.sendExtended(SPEED_EXTENSION_NAME, Buffer.from('garbage'));
  A.wire.sendExtended(SPEED_EXTENSION_NAME, Buffer.from('d8:msg_typei99ee')); // unknown type: ignored
  await until(() => B.events.errors.length === 2 && A.events.messages.filter((m) => m.type === 'error').length === 2, 'errors');
  const errs = A.events.messages.filter((m) => m.type === 'error');
  assert.ok(errs.every((e) => e.type === 'error' && e.code === SpeedErrorCode.MALFORMED));
  assert.ok(!A.wire.destroyed && !B.wire.destroyed);
});

test('end to end over loopback: bid → bid_response → channel → payment → ack, amounts exact', async (t) => {
  const [A, B] = await pair(optsA(), optsB(), t); // A requester, B provider
  await until(() => !!A.events.ready && !!B.events.ready, 'ready');
  const provider = new ProviderPayments({ ledgerId: LEDGER, publicKey: kb.publicKey });
  const key = provider.connect(B.ext!.peerKey!, 0)!;
  const requester = new RequesterPayments({ ledgerId: LEDGER, publicKey: ka.publicKey, secretKey: ka.secretKey, providerKey: A.ext!.peerKey! });

  const seq = A.ext!.sendBid(10n)!;
  assert.equal(seq, 1n);
  await until(() => B.events.messages.some((m) => m.type === 'bid'), 'bid');
  assert.equal(B.ext!.peerBid, 10n);
  // Provider: auction won at 4/byte.
  B.ext!.send({ type: 'bid_response', seq: B.ext!.peerBidSeq, price: 4n, maxUnpaid: provider.maxUnpaid, minTtl: provider.minTtlSeconds });
  provider.setPrice(key, 4n);
  await until(() => A.events.messages.some((m) => m.type === 'bid_response'), 'bid_response');
  const br = A.events.messages.find((m) => m.type === 'bid_response')!;
  assert.ok(br.type === 'bid_response');
  assert.deepEqual(requester.onBidResponse(br.price, A.ext!.bidPrice(br.seq)), { ok: true });
  // Requester opened a channel on the ledger (record as the ledger would report it).
  const info: ChannelInfo = { id: Buffer.alloc(32, 0x33), ledgerId: LEDGER, requester: ka.publicKey, provider: kb.publicKey, deposit: 1_000_000n, expiresAt: 10 * 3_600_000, status: 'open', openedAt: 0, openSeq: 1, settled: 0n };
  const { announce } = requester.onChannelOpened(info);
  A.ext!.send(announce);
  await until(() => B.events.messages.some((m) => m.type === 'channel'), 'channel');
  const cm = B.events.messages.find((m) => m.type === 'channel')!;
  assert.ok(cm.type === 'channel');
  assert.equal(provider.onChannelAnnounced(key, Buffer.from(cm.channel)), 'fetch');
  assert.deepEqual(provider.onChannelInfo(key, info, 0), { ok: true });
  // One 16 KiB block of piece 0, then the requester verifies and pays.
  assert.ok(provider.canServe(key, 0, 0).ok);
  provider.onBlockSent(key, 0, 16384, 0);
  requester.onBlock(0, 16384);
  const pay = requester.onPieceVerified(0);
  assert.equal(pay.type, 'payment');
  assert.ok(A.ext!.send((pay as { message: PaymentMessage }).message));
  await until(() => B.events.messages.some((m) => m.type === 'payment') || B.events.errors.length > 0, 'payment');
  assert.deepEqual(B.events.errors, []);
  const pm = B.events.messages.find((m) => m.type === 'payment')!;
  assert.ok(pm.type === 'payment');
  const res = provider.onPayment(key, pm, 1);
  assert.ok(res.ok);
  assert.equal(res.delta, 4n * 16384n);
  B.ext!.send(res.ack);
  await until(() => A.events.messages.some((m) => m.type === 'ack'), 'ack');
  const ack = A.events.messages.find((m) => m.type === 'ack')!;
  assert.ok(ack.type === 'ack');
  assert.deepEqual(requester.onAck(ack), {});
  assert.equal(requester.paid, provider.account(key)!.earned);
  // Bid seq must increase: a replayed bid is refused by the extension.
  A.wire.sendExtended(SPEED_EXTENSION_NAME, Buffer.from('d8:msg_typei1e5:pricei99e3:seqi1ee'));
  await until(() => A.events.messages.filter((m) => m.type === 'error').length === 1, 'bid seq error');
  assert.equal(B.ext!.peerBid, 10n);
});
