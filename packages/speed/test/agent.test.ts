/**
 * SpeedAgent end to end on loopback sockets with a real in-process ledger (SQLite in a temp dir): auction,
 * bid response, channel opened on the ledger and checked by the provider, per-piece payments, close, and a
 * check that ledger balances equal the payments made to the base unit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, createConnection, type Socket, type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeerWire, PRIORITY_HIGH, PRIORITY_NORMAL } from '@bitorrent/core';
import { Ledger, keyPairFromSeed, BTT } from '@bitorrent/ledger';
import { SpeedAgent } from '../src/agent.js';

const INFO_HASH = Buffer.alloc(20, 0x42);
const PIECE = 4 * 16384;
const PIECES = 6;

async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
  assert.ok(cond(), `timed out waiting for ${what}`);
}

/** A loopback TCP connection between two agents' wires (leech dials the seeder). */
async function connect(seeder: SpeedAgent, leech: SpeedAgent, t: { after(fn: () => void): void }): Promise<{ lw: PeerWire; sw: PeerWire }> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[Socket]>;
  const sock = createConnection({ host: '127.0.0.1', port: (server.address() as AddressInfo).port });
  sock.setNoDelay(true);
  const [inSock] = await accepted;
  inSock.setNoDelay(true);
  const lw = new PeerWire(sock, { peerId: Buffer.alloc(20, 1), keepAliveMs: 0, idleTimeoutMs: 0 });
  const sw = new PeerWire(inSock, { peerId: Buffer.alloc(20, 2), keepAliveMs: 0, idleTimeoutMs: 0 });
  lw.use(leech.extension());
  sw.use(seeder.extension());
  sw.on('handshake', (ih: Buffer) => sw.sendHandshake(ih));
  lw.on('error', () => {});
  sw.on('error', () => {});
  lw.sendHandshake(INFO_HASH);
  t.after(() => {
    lw.destroy();
    sw.destroy();
    server.close();
  });
  return { lw, sw };
}

async function openLedger(t: { after(fn: () => void | Promise<void>): void }, clock: () => number, funded: Buffer, amount: bigint): Promise<Ledger> {
  const dir = mkdtempSync(join(tmpdir(), 'speed-agent-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const ledger = await Ledger.open({
    db: join(dir, 'ledger.db'),
    ledgerKeys: keyPairFromSeed(Buffer.alloc(32, 0x01)),
    genesis: { allocations: [{ account: funded, amount }], faucetAmount: 0n, createdAt: clock() },
    clock,
    expiryIntervalMs: 0,
    verifyThreads: 0,
  });
  t.after(() => ledger.close());
  return ledger;
}

test('two agents over loopback with a real ledger: paid pieces, exposure ≤ K, ledger balances equal payments', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'speed-agent-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  let clock = 1_700_000_000_000;
  const now = () => clock;
  const ledgerKeys = keyPairFromSeed(Buffer.alloc(32, 0x01));
  const seederKeys = keyPairFromSeed(Buffer.alloc(32, 0x02));
  const leechKeys = keyPairFromSeed(Buffer.alloc(32, 0x03));
  const START = 1000n * BTT;
  const ledger = await Ledger.open({
    db: join(dir, 'ledger.db'),
    ledgerKeys,
    genesis: { allocations: [{ account: leechKeys.publicKey, amount: START }], faucetAmount: 0n, createdAt: clock },
    clock: now,
    expiryIntervalMs: 0,
    verifyThreads: 0,
  });
  t.after(() => ledger.close());
  const ledgerId = ledger.ledgerIdBuf;
  const supply = (await ledger.ledgerInfo()).supply;

  const RESERVE = 1000n; // base units per byte
  let have = 0;
  const seeder = new SpeedAgent({ ledger, ledgerId, keys: seederKeys, now, pieceLength: PIECE, remainingBytes: () => 0, bidding: { enabled: false }, reservePrice: RESERVE, provider: { maxUnpaid: 1 }, rng: () => 0.5 });
  const leech = new SpeedAgent({ ledger, ledgerId, keys: leechKeys, now, pieceLength: PIECE, remainingBytes: () => (PIECES - have) * PIECE });
  const events: string[] = [];
  for (const [name, a] of [['seeder', seeder], ['leech', leech]] as const) {
    a.on('warning', (m: string) => events.push(`${name} warning: ${m}`));
    a.on('legacy', (_id: string, r: string) => events.push(`${name} legacy: ${r}`));
  }

  const { lw, sw } = await connect(seeder, leech, t);
  await until(() => seeder.peerIds().length === 1 && leech.peerIds().length === 1, 'speed-ready on both sides');
  const leechId = seeder.peerIds()[0];
  const seederId = leech.peerIds()[0];

  // The leecher bids (auto-bidder: balance / remaining bytes).
  await leech.refreshBalance();
  await leech.tick();
  assert.equal(leech.bidder.bid, START / BigInt(PIECES * PIECE));
  const sext = sw.getExtension<import('../src/extension.js').SpeedWireExtension>('bt_speed')!;
  await until(() => sext.peerBid > 0n, 'bid at the seeder');

  // Rechoke: the only bidder wins at the reserve price; bid_response precedes the unchoke.
  assert.equal(seeder.uploadPriority(leechId), PRIORITY_NORMAL, 'no paid slot yet');
  const choker = seeder.choker();
  const res = choker.rechoke({ peers: [{ id: leechId, interested: true, downloadRate: 0, uploadRate: 0, connectedAt: clock, unchoked: false }], now: clock, seeding: true, slots: 3 });
  assert.ok(res.unchoke.has(leechId));
  sw.unchoke();
  const lreq = leech.requesterState(seederId)!;
  await until(() => lreq.currentPrice === RESERVE && lreq.channelRemaining > 0n, 'bid_response and channel opened on the ledger');
  assert.equal(seeder.uploadPriority(leechId), PRIORITY_HIGH, 'a paid slot goes first under an upload limit');
  await until(() => seeder.provider.account(seeder.provider.keyOf(leechKeys.publicKey))!.channel !== undefined, 'channel verified by the seeder');

  // Serve every piece block by block; the leecher verifies and pays each one.
  const block = Buffer.alloc(16384, 7);
  let blockedOnce = false;
  for (let i = 0; i < PIECES; i++) {
    await until(() => seeder.mayUpload(leechId, i), `permission to serve piece ${i}`);
    for (let off = 0; off < PIECE; off += block.length) {
      assert.ok(seeder.mayUpload(leechId, i));
      sw.piece(i, off, block);
      seeder.onBlockUploaded(leechId, i, block.length);
    }
    // K = 1: nothing of the next piece until this one is paid.
    if (i + 1 < PIECES && !seeder.mayUpload(leechId, i + 1)) blockedOnce = true;
    await until(() => lreq.owedFor(i) === RESERVE * BigInt(PIECE), `piece ${i} received`);
    have++;
    lw.have(i);
    await leech.onPieceVerified(i);
  }
  assert.ok(blockedOnce, 'exposure limit never engaged');
  const expected = RESERVE * BigInt(PIECES * PIECE);
  const key = seeder.provider.keyOf(leechKeys.publicKey);
  await until(() => seeder.provider.account(key)!.earned === expected, 'all payments accepted');
  assert.equal(lreq.paid, expected);

  // Done: the leecher withdraws its bid; the seeder closes the channel on the ledger with the last state.
  await leech.tick();
  assert.equal(leech.bidder.bid, 0n);
  await until(() => sext.peerBid === 0n, 'bid withdrawn at the seeder');
  choker.rechoke({ peers: [{ id: leechId, interested: false, downloadRate: 0, uploadRate: 0, connectedAt: clock, unchoked: true }], now: clock, seeding: true, slots: 3 });
  assert.equal(seeder.uploadPriority(leechId), PRIORITY_NORMAL, 'no longer paying: normal priority');
  await seeder.shutdown();
  assert.equal((await ledger.account(seederKeys.publicKey)).balance, expected);
  assert.equal((await ledger.account(leechKeys.publicKey)).balance, START - expected);
  const info = await ledger.ledgerInfo();
  assert.equal(info.openChannels, 0);
  assert.equal(info.supply, supply);
  assert.deepEqual(events, []);
});

test('a requester that stops paying: the provider loses ≤ K pieces, chokes it, bans it, and rejects its reconnect', async (t) => {
  let clock = 1_700_000_000_000;
  const now = () => clock;
  const seederKeys = keyPairFromSeed(Buffer.alloc(32, 0x12));
  const leechKeys = keyPairFromSeed(Buffer.alloc(32, 0x13));
  const ledger = await openLedger(t, now, leechKeys.publicKey, 1000n * BTT);
  const ledgerId = ledger.ledgerIdBuf;
  const RESERVE = 7n;
  const seeder = new SpeedAgent({ ledger, ledgerId, keys: seederKeys, now, pieceLength: PIECE, remainingBytes: () => 0, bidding: { enabled: false }, reservePrice: RESERVE, provider: { maxUnpaid: 1, paymentTimeoutMs: 5_000, maxStrikes: 2, banMs: 3_600_000 }, rng: () => 0.5 });
  // The cheat runs an honest agent but never reports verified pieces, so it never pays.
  const cheat = new SpeedAgent({ ledger, ledgerId, keys: leechKeys, now, pieceLength: PIECE, remainingBytes: () => PIECES * PIECE });
  const chokes: string[] = [];
  const bans: string[] = [];
  seeder.on('choke-peer', (id: string) => chokes.push(id));
  seeder.on('ban-peer', (id: string) => bans.push(id));
  const { sw } = await connect(seeder, cheat, t);
  await until(() => seeder.peerIds().length === 1 && cheat.peerIds().length === 1, 'ready');
  const cheatId = seeder.peerIds()[0];
  await cheat.refreshBalance();
  await cheat.tick();
  const choker = seeder.choker();
  const sext = sw.getExtension<import('../src/extension.js').SpeedWireExtension>('bt_speed')!;
  await until(() => sext.peerBid > 0n, 'bid');
  choker.rechoke({ peers: [{ id: cheatId, interested: true, downloadRate: 0, uploadRate: 0, connectedAt: clock, unchoked: false }], now: clock, seeding: true, slots: 3 });
  const key = seeder.provider.keyOf(leechKeys.publicKey);
  await until(() => seeder.provider.account(key)?.channel !== undefined, 'channel verified');

  // Serve as much as the gate allows: exactly one piece.
  let served = 0;
  for (let i = 0; i < PIECES; i++) {
    if (!seeder.mayUpload(cheatId, i)) break;
    for (let off = 0; off < PIECE; off += 16384) {
      sw.piece(i, off, Buffer.alloc(16384));
      seeder.onBlockUploaded(cheatId, i, 16384);
    }
    served++;
  }
  assert.equal(served, 1);
  seeder.provider.onHave(key, 0, clock);
  // Payment timeout: choke; another timeout: ban, disconnect.
  clock += 5_000;
  await seeder.tick();
  assert.deepEqual(chokes, [cheatId]);
  assert.equal(seeder.mayUpload(cheatId, 1), false);
  clock += 5_000;
  await seeder.tick();
  assert.deepEqual(bans, [cheatId]);
  await until(() => sw.destroyed, 'banned peer disconnected');
  assert.equal(seeder.provider.account(key)!.owed, RESERVE * BigInt(PIECE)); // the loss: one piece
  assert.equal(seeder.provider.account(key)!.earned, 0n);

  // It reconnects: refused at AUTH time and disconnected.
  const again = await connect(seeder, cheat, t);
  await until(() => again.sw.destroyed, 'reconnect refused');
  assert.equal(seeder.peerIds().length, 0);
  // Nothing was paid; the cheat's deposit sits in a channel that expires back to it.
  assert.equal((await ledger.account(seederKeys.publicKey)).balance, 0n);
});

test('a provider whose data fails the hash check is paid nothing and banned by the requester', async (t) => {
  let clock = 1_700_000_000_000;
  const now = () => clock;
  const seederKeys = keyPairFromSeed(Buffer.alloc(32, 0x22));
  const leechKeys = keyPairFromSeed(Buffer.alloc(32, 0x23));
  const ledger = await openLedger(t, now, leechKeys.publicKey, 1000n * BTT);
  const ledgerId = ledger.ledgerIdBuf;
  const seeder = new SpeedAgent({ ledger, ledgerId, keys: seederKeys, now, pieceLength: PIECE, remainingBytes: () => 0, bidding: { enabled: false }, reservePrice: 5n, provider: { maxUnpaid: 2 }, rng: () => 0.5 });
  const leech = new SpeedAgent({ ledger, ledgerId, keys: leechKeys, now, pieceLength: PIECE, remainingBytes: () => PIECES * PIECE });
  const bans: string[] = [];
  leech.on('ban-peer', (id: string) => bans.push(id));
  const { lw, sw } = await connect(seeder, leech, t);
  await until(() => seeder.peerIds().length === 1 && leech.peerIds().length === 1, 'ready');
  const leechId = seeder.peerIds()[0];
  const seederId = leech.peerIds()[0];
  await leech.refreshBalance();
  await leech.tick();
  const sext = sw.getExtension<import('../src/extension.js').SpeedWireExtension>('bt_speed')!;
  await until(() => sext.peerBid > 0n, 'bid');
  seeder.choker().rechoke({ peers: [{ id: leechId, interested: true, downloadRate: 0, uploadRate: 0, connectedAt: clock, unchoked: false }], now: clock, seeding: true, slots: 3 });
  const lreq = leech.requesterState(seederId)!;
  await until(() => lreq.currentPrice === 5n && seeder.mayUpload(leechId, 0), 'won and channel verified');
  for (const i of [0, 1]) {
    for (let off = 0; off < PIECE; off += 16384) {
      sw.piece(i, off, Buffer.alloc(16384, 0xee)); // garbage
      seeder.onBlockUploaded(leechId, i, 16384);
    }
  }
  await until(() => lreq.owedFor(1) === 5n * BigInt(PIECE), 'blocks received');
  leech.onPieceFailed(0, [seederId]);
  assert.deepEqual(bans, []);
  // The provider gets the reject (a strike against the requester: it cannot tell who lies) and stops charging it.
  const skey = seeder.provider.keyOf(leechKeys.publicKey);
  await until(() => seeder.provider.account(skey)!.strikes === 1, 'reject received');
  leech.onPieceFailed(1, [seederId]);
  assert.deepEqual(bans, [seederId]);
  await until(() => lw.destroyed, 'provider disconnected');
  assert.equal(leech.totalPaid(), 0n);
});
