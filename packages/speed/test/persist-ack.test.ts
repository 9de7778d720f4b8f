/**
 * A provider whose persist() is asynchronous (the CLI's group commit): an accepted payment's ACK goes out only after
 * the save holding that state has resolved, never before; a failed save sends no ACK. Serving goes on meanwhile (the
 * gate counts the payment as soon as it is accepted), and the books are exact in the end. Real sockets, real ledger.
 * Also: with K = 8 (from the bid_response) the requester pays for 4 pieces per signed state, and pays what it held
 * back once the download completes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BTT } from '@bitorrent/ledger';
import type { Peer } from '@bitorrent/core';
import type { AckMessage, PaymentMessage, SpeedMessage } from '../src/messages.js';
import type { PersistedChannel } from '../src/payments.js';
import { tempDir, wallet, openLedger, makePayload, startPeer, ticker, until, withTimeout } from './speed-swarm.js';

const PIECE = 16 * 1024;
const RESERVE = 1000n;
const START = 1000n * BTT;

test('asynchronous persist: ACKs wait for the durable save; a failed save is never ACKed; totals exact', async (t) => {
  const dir = tempDir(t, 'speed-persist-ack-');
  const seederKeys = wallet(0xc1);
  const bidderKeys = wallet(0xc2);
  const ledger = await openLedger(t, dir, [bidderKeys.publicKey], START);
  const ledgerId = ledger.ledgerIdBuf;
  const PIECES = 12;
  const { seedDir, data, torrent } = await makePayload(dir, PIECES * PIECE, PIECE);
  // Saves are held until the test releases them; the first one fails.
  const saves: { list: PersistedChannel[]; resolve: () => void; reject: (e: Error) => void }[] = [];
  const durable: bigint[] = []; // highest cumulative of each save that resolved
  let autoRelease = false;
  const persist = (list: PersistedChannel[]) =>
    new Promise<void>((resolve, reject) => {
      const s = { list, resolve: () => (durable.push(list.reduce((m, c) => (c.cumulative > m ? c.cumulative : m), 0n)), resolve()), reject };
      if (autoRelease) s.resolve();
      else saves.push(s);
    });
  const seeder = await startPeer(t, {
    torrent,
    path: seedDir,
    seed: true,
    agent: { ledger, ledgerId, keys: seederKeys, now: Date.now, pieceLength: PIECE, bidding: { enabled: false }, reservePrice: RESERVE, provider: { maxUnpaid: 2 }, persist },
    // Serving pauses (connection kept) while the test holds saves: the ACKs must travel on a live connection.
    gate: (g) => ({ mayUpload: (k, p) => autoRelease || saves.length < 2 ? g.mayUpload(k, p) : false, onBlockUploaded: (k, p, n) => g.onBlockUploaded?.(k, p, n) }),
  });
  const sAgent = seeder.agent!;
  const warnings: string[] = [];
  sAgent.on('warning', (m: string) => warnings.push(m));
  const bidder = await startPeer(t, { torrent, path: join(dir, 'bidder'), peers: [{ host: '127.0.0.1', port: seeder.session.port }], agent: { ledger, ledgerId, keys: bidderKeys, now: Date.now, pieceLength: PIECE } });
  const bAgent = bidder.agent!;
  const acks: AckMessage[] = [];
  const payments: PaymentMessage[] = [];
  bidder.torrent.on('peer', (p: Peer) => p.wire.on('speed-message', (m: SpeedMessage) => m.type === 'ack' && acks.push(m)));
  seeder.torrent.on('peer', (p: Peer) => p.wire.on('speed-message', (m: SpeedMessage) => m.type === 'payment' && payments.push(m)));
  await bAgent.refreshBalance();
  ticker(t, () => [sAgent, bAgent]);

  // Two payments accepted (K = 2 lets the transfer go on while their saves are held): no ACK yet.
  await until(() => saves.length >= 2, () => `2 saves requested, got ${saves.length}`, 15_000, [sAgent], ['earned']);
  await new Promise<void>((r) => setTimeout(r, 50)); // let an early ACK, if any were sent, arrive (asserting an absence)
  assert.equal(acks.length, 0, 'no ACK before its state is durable');
  // The first save fails: no ACK for it, a warning. The others succeed: an ACK arrives, for a state they held.
  saves[0].reject(new Error('disk full'));
  await until(() => warnings.some((w) => /not saved \(disk full\): not acknowledged/.test(w)), () => warnings.join('\n'), 5_000);
  // ACKs are cumulative: once the saves after it have landed too, the newest state's ACK goes out (one for all).
  for (const s of saves.slice(1)) s.resolve();
  await until(() => acks.length >= 1, () => 'ACK after the saves resolved', 5_000);
  for (const a of acks) assert.ok(durable.some((d) => d >= a.amount), `ACK for ${a.amount} with durable ${durable}`);
  // From now on saves succeed at once: the transfer completes, every ACK covered by a save, books exact.
  autoRelease = true;
  for (const s of saves.splice(2)) s.resolve();
  seeder.torrent.resumeUploads();
  await withTimeout(bidder.torrent.done, 30_000, () => `download: ${bidder.torrent.stats().progress}`);
  assert.ok(readFileSync(join(dir, 'bidder', 'payload.bin')).equals(data), 'byte-exact');
  await until(() => sAgent.provider.totalEarned() === bAgent.totalPaid() && bAgent.totalPaid() === RESERVE * BigInt(PIECES * PIECE), () => `paid ${bAgent.totalPaid()} earned ${sAgent.provider.totalEarned()}`, 10_000);
  // The newest state is durable (its ACK may be cut off: the provider drops a peer that became a seed).
  await until(() => durable.length > 0 && durable[durable.length - 1] === bAgent.totalPaid(), () => `last durable ${durable[durable.length - 1]}`, 10_000);
  for (const a of acks) assert.ok(durable.some((d) => d >= a.amount), `ACK for ${a.amount} not covered by a durable save`);
  assert.ok(payments.length > 0);
});

test('K = 8: the requester pays 4 pieces per signed state and pays what it held back when the download completes', async (t) => {
  const dir = tempDir(t, 'speed-batch-');
  const seederKeys = wallet(0xc3);
  const bidderKeys = wallet(0xc4);
  const ledger = await openLedger(t, dir, [bidderKeys.publicKey], START);
  const ledgerId = ledger.ledgerIdBuf;
  const PIECES = 18; // not a multiple of 4: the last 2 are held back until the download completes
  const { seedDir, data, torrent } = await makePayload(dir, PIECES * PIECE, PIECE);
  const seeder = await startPeer(t, {
    torrent,
    path: seedDir,
    seed: true,
    agent: { ledger, ledgerId, keys: seederKeys, now: Date.now, pieceLength: PIECE, bidding: { enabled: false }, reservePrice: RESERVE, provider: { maxUnpaid: 8 } },
  });
  const sAgent = seeder.agent!;
  const bidder = await startPeer(t, { torrent, path: join(dir, 'bidder'), peers: [{ host: '127.0.0.1', port: seeder.session.port }], agent: { ledger, ledgerId, keys: bidderKeys, now: Date.now, pieceLength: PIECE } });
  const bAgent = bidder.agent!;
  const payments: PaymentMessage[] = [];
  seeder.torrent.on('peer', (p: Peer) => p.wire.on('speed-message', (m: SpeedMessage) => m.type === 'payment' && payments.push(m)));
  await bAgent.refreshBalance();
  // No ticker: the held-back payment must not depend on tick() (it comes with the completion).
  await bAgent.tick();
  const ticks = ticker(t, () => [sAgent], 100);
  await withTimeout(bidder.torrent.done, 30_000, () => `download: ${bidder.torrent.stats().progress}`);
  assert.ok(readFileSync(join(dir, 'bidder', 'payload.bin')).equals(data), 'byte-exact');
  const total = RESERVE * BigInt(PIECES * PIECE);
  await until(() => sAgent.provider.totalEarned() === total, () => `earned ${sAgent.provider.totalEarned()} of ${total}`, 10_000, [sAgent], ['earned']);
  ticks.stop();
  assert.equal(bAgent.totalPaid(), total);
  // One signed state per 4 pieces (a state may cover more when the channel opened late), the rest at completion.
  const perPiece = RESERVE * BigInt(PIECE);
  const deltas = payments.map((m, i) => m.amount - (i > 0 ? payments[i - 1].amount : 0n));
  assert.ok(payments.length <= Math.ceil(PIECES / 4) + 1, `${payments.length} payments for ${PIECES} pieces: ${deltas}`);
  assert.ok(deltas.some((d) => d >= 4n * perPiece), `no state paid for 4 pieces: ${deltas}`);
  assert.equal(deltas.reduce((a, b) => a + b, 0n), total);
});
