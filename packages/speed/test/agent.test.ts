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
import { PeerWire } from '@bitorrent/core';
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

  // Loopback connection, both wires with the agent's extension.
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
  const choker = seeder.choker();
  const res = choker.rechoke({ peers: [{ id: leechId, interested: true, downloadRate: 0, uploadRate: 0, connectedAt: clock, unchoked: false }], now: clock, seeding: true, slots: 3 });
  assert.ok(res.unchoke.has(leechId));
  sw.unchoke();
  const lreq = leech.requesterState(seederId)!;
  await until(() => lreq.currentPrice === RESERVE && lreq.channelRemaining > 0n, 'bid_response and channel opened on the ledger');
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
  await seeder.shutdown();
  assert.equal((await ledger.account(seederKeys.publicKey)).balance, expected);
  assert.equal((await ledger.account(leechKeys.publicKey)).balance, START - expected);
  const info = await ledger.ledgerInfo();
  assert.equal(info.openChannels, 0);
  assert.equal(info.supply, supply);
  assert.deepEqual(events, []);
});
