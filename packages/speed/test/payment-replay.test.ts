/**
 * Replayed, reordered and over-deposit payment states sent over a live Speed connection (real sockets, real
 * ledger), and after a provider restart. payments.test.ts checks ProviderPayments.onPayment on its own; this checks
 * what the agent does with them on the wire: an ERROR with the right code back to the sender, nothing earned,
 * nothing persisted, the held state untouched, and the transfer (and the ledger) unaffected afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BTT, signPaymentState } from '@bitorrent/ledger';
import type { Peer } from '@bitorrent/core';
import type { SpeedWireExtension } from '../src/extension.js';
import { SpeedErrorCode, type PaymentMessage, type SpeedMessage } from '../src/messages.js';
import { ProviderPayments, type PersistedChannel } from '../src/payments.js';
import { tempDir, wallet, openLedger, makePayload, startPeer, ticker, withTimeout, until } from './speed-swarm.js';

const PIECE = 16 * 1024;
const PIECES = 8;
const RESERVE = 1000n;
const START = 1000n * BTT;

test('replayed, reordered and above-deposit payments on a live connection are refused with an ERROR; nothing earned or persisted; ledger exact', async (t) => {
  const dir = tempDir(t, 'speed-replay-');
  const seederKeys = wallet(0xb1);
  const bidderKeys = wallet(0xb2);
  const ledger = await openLedger(t, dir, [bidderKeys.publicKey], START);
  const ledgerId = ledger.ledgerIdBuf;
  const { seedDir, data, torrent } = await makePayload(dir, PIECES * PIECE, PIECE);
  const persisted: PersistedChannel[][] = [];
  let hold = false;
  const seeder = await startPeer(t, {
    torrent,
    path: seedDir,
    seed: true,
    agent: { ledger, ledgerId, keys: seederKeys, now: Date.now, pieceLength: PIECE, bidding: { enabled: false }, reservePrice: RESERVE, provider: { maxUnpaid: 1 }, persist: (l) => persisted.push(l) },
    // The test pauses serving (connection kept) to replay payments while nothing else is in flight.
    gate: (g) => ({ mayUpload: (k, p) => !hold && g.mayUpload(k, p), onBlockUploaded: (k, p, n) => g.onBlockUploaded?.(k, p, n) }),
  });
  const received: PaymentMessage[] = [];
  seeder.torrent.on('peer', (p: Peer) => p.wire.on('speed-message', (m: SpeedMessage) => m.type === 'payment' && received.push(m)));
  const sAgent = seeder.agent!;
  const bidder = await startPeer(t, { torrent, path: join(dir, 'bidder'), peers: [{ host: '127.0.0.1', port: seeder.session.port }], agent: { ledger, ledgerId, keys: bidderKeys, now: Date.now, pieceLength: PIECE } });
  const bAgent = bidder.agent!;
  const errors: { code: number; text?: string }[] = [];
  bidder.torrent.on('peer', (p: Peer) => p.wire.on('speed-message', (m: SpeedMessage) => m.type === 'error' && errors.push({ code: m.code, text: m.text })));
  const warnings: string[] = [];
  bAgent.on('warning', (m: string) => warnings.push(m));
  await bAgent.refreshBalance();
  ticker(t, () => [sAgent, bAgent]);

  // Three pieces paid, then serving pauses; wait until every signed payment has been accepted.
  const earnedEvents: bigint[] = [];
  sAgent.on('earned', (_id: string, d: bigint) => {
    earnedEvents.push(d);
    if (earnedEvents.length === 3) hold = true;
  });
  await until(() => hold && bAgent.totalPaid() === sAgent.provider.totalEarned() && received.length === earnedEvents.length, () => `3 payments accepted: paid ${bAgent.totalPaid()} earned ${sAgent.provider.totalEarned()}`, 15_000, [sAgent], ['earned']);
  const earned = sAgent.provider.totalEarned();
  const nPersisted = persisted.length;
  const last = received[received.length - 1];
  const first = received[0];
  assert.ok(last.seq > first.seq && Buffer.from(last.channel).equals(first.channel), 'payments on one channel');
  const ch = (await ledger.channel(Buffer.from(last.channel)))!;
  const bidderWire = bidder.torrent.peerList().find((p) => p.wire.getExtension<SpeedWireExtension>('bt_speed')?.state === 'ready')!;
  const ext = bidderWire.wire.getExtension<SpeedWireExtension>('bt_speed')!;
  const answers = () => errors.length;

  // 1. An older state after a newer one (reordered / replayed old): refused.
  ext.send(first);
  await until(() => answers() === 1, () => 'error for the reordered state', 5_000);
  assert.equal(errors[0].code, SpeedErrorCode.PAYMENT_INVALID);
  assert.match(errors[0].text ?? '', /sequence not increasing/);
  // 2. A state above the deposit, honestly signed by the requester: refused (the ledger would refuse its close too).
  const overState = { ledgerId, channelId: Buffer.from(last.channel), sequence: last.seq + 1n, cumulative: ch.deposit + 1n };
  ext.send({ type: 'payment', channel: last.channel, seq: overState.sequence, amount: overState.cumulative, piece: 0, sig: signPaymentState(overState, bidderKeys.secretKey) });
  await until(() => answers() === 2, () => 'error for the above-deposit state', 5_000);
  assert.equal(errors[1].code, SpeedErrorCode.CHANNEL_EXHAUSTED);
  // 3. The same sequence with a higher amount (equivocation), and a payment on a channel that does not exist.
  const eqState = { ledgerId, channelId: Buffer.from(last.channel), sequence: last.seq, cumulative: last.amount + 1n };
  ext.send({ ...last, amount: eqState.cumulative, sig: signPaymentState(eqState, bidderKeys.secretKey) });
  ext.send({ ...last, channel: Buffer.alloc(32, 0xee) });
  await until(() => answers() === 4, () => 'errors for the equivocating and unknown-channel states', 5_000);
  assert.deepEqual(errors.slice(2).map((e) => e.code), [SpeedErrorCode.PAYMENT_INVALID, SpeedErrorCode.CHANNEL_INVALID]);
  // 4. The exact latest state again (a retransmission): acknowledged, worth nothing.
  ext.send(last);
  // Nothing of it counted: same earnings, nothing persisted, same held state; the bidder was told each time.
  await until(() => warnings.length >= 4, () => `bidder warnings: ${JSON.stringify(warnings)}`, 5_000);
  assert.equal(sAgent.provider.totalEarned(), earned);
  assert.equal(persisted.length, nPersisted);
  assert.deepEqual(sAgent.provider.heldState(Buffer.from(last.channel)), { sequence: last.seq, cumulative: last.amount });
  assert.equal(earnedEvents.length, 3);

  // The transfer then completes normally, and the ledger pays exactly the reserve price for every byte.
  hold = false;
  await withTimeout(bidder.torrent.done, 20_000, () => JSON.stringify(bidder.torrent.stats()));
  const expected = RESERVE * BigInt(PIECES * PIECE);
  await until(() => sAgent.provider.totalEarned() === expected, () => `earned ${sAgent.provider.totalEarned()}`, 10_000);
  assert.equal(bAgent.totalPaid(), expected);
  await sAgent.shutdown();
  assert.equal((await ledger.account(seederKeys.publicKey)).balance, expected);
  const escrow = (await ledger.channels(bidderKeys.publicKey)).filter((c) => c.status === 'open').reduce((a, c) => a + c.deposit, 0n);
  assert.equal((await ledger.account(bidderKeys.publicKey)).balance + escrow, START - expected);
  assert.ok(readFileSync(join(dir, 'bidder', 'payload.bin')).equals(data));

  // After a provider restart from persisted state: an old state replayed is refused, the latest is a duplicate,
  // and only a genuinely newer state counts.
  const restored = new ProviderPayments({ ledgerId, publicKey: seederKeys.publicKey });
  restored.importChannels(persisted[nPersisted - 1], Date.now());
  const key = restored.connect(bidderKeys.publicKey, Date.now())!;
  const old = restored.onPayment(key, first, Date.now());
  assert.ok(!old.ok && /sequence not increasing/.test(old.reason));
  const dup = restored.onPayment(key, last, Date.now());
  assert.ok(dup.ok && dup.duplicate && dup.delta === 0n);
  const nextState = { ledgerId, channelId: Buffer.from(last.channel), sequence: last.seq + 1n, cumulative: last.amount + 5n };
  const next = restored.onPayment(key, { type: 'payment', channel: last.channel, seq: nextState.sequence, amount: nextState.cumulative, piece: 0, sig: signPaymentState(nextState, bidderKeys.secretKey) }, Date.now());
  assert.ok(next.ok && next.delta === 5n);
});
