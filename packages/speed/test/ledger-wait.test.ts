/**
 * A ledger outage longer than the payment timeout (virtual time, ProviderPayments + RequesterPayments):
 *  - a requester that says it waits on the ledger (error ledger_unavailable, repeated while it waits) is choked —
 *    no paid data beyond its K unpaid pieces — but never struck or banned, and is served again once it pays;
 *  - the same when the provider itself cannot reach the ledger to check the requester's new channel;
 *  - without such notices the same lateness is 3 strikes and a ban (unchanged), and the excuse lapses one payment
 *    timeout after the last notice.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { keyPairFromSeed, type ChannelInfo } from '@bitorrent/ledger';
import { ProviderPayments, RequesterPayments, type ProviderAction } from '../src/payments.js';
import type { PaymentMessage } from '../src/messages.js';

const LEDGER = Buffer.alloc(32, 0x21);
const prov = keyPairFromSeed(Buffer.alloc(32, 0x22));
const reqK = keyPairFromSeed(Buffer.alloc(32, 0x23));
const PIECE = 16_384;
const PRICE = 7n;
const TIMEOUT = 30_000;
const T0 = 1_800_000_000_000;

let chanSeq = 0;
function channel(deposit: bigint): ChannelInfo {
  const id = Buffer.alloc(32, 0x40);
  id.writeUInt32BE(++chanSeq);
  return { id, ledgerId: LEDGER, requester: reqK.publicKey, provider: prov.publicKey, deposit, expiresAt: T0 + 7_200_000, status: 'open', openedAt: T0, openSeq: 1, settled: 0n };
}

/**
 * Piece 0 paid on a channel that then has no room left; piece 1 served and verified: its payment needs a new
 * channel, and the ledger is down from `T0 + 1 s`. Returns the pieces of the scenario.
 */
function scenario() {
  const p = new ProviderPayments({ ledgerId: LEDGER, publicKey: prov.publicKey, maxUnpaid: 1, paymentTimeoutMs: TIMEOUT, maxStrikes: 3, banMs: 3_600_000 });
  const r = new RequesterPayments({ ledgerId: LEDGER, publicKey: reqK.publicKey, secretKey: reqK.secretKey, providerKey: prov.publicKey });
  const key = p.connect(reqK.publicKey, T0)!;
  p.setPrice(key, PRICE);
  assert.deepEqual(r.onBidResponse(PRICE, PRICE), { ok: true });
  const ch1 = channel(PRICE * BigInt(PIECE));
  const { announce } = r.onChannelOpened(ch1);
  assert.equal(p.onChannelAnnounced(key, Buffer.from(announce.channel)), 'fetch');
  assert.deepEqual(p.onChannelInfo(key, ch1, T0), { ok: true });
  const serve = (piece: number, now: number) => {
    const d = p.canServe(key, piece, now);
    if (!d.ok) return d.reason;
    p.onBlockSent(key, piece, PIECE, now);
    r.onBlock(piece, PIECE);
    return 'ok';
  };
  assert.equal(serve(0, T0), 'ok');
  const pay0 = r.onPieceVerified(0);
  assert.equal(pay0.type, 'payment');
  const ok0 = p.onPayment(key, (pay0 as { message: PaymentMessage }).message, T0);
  assert.ok(ok0.ok && ok0.delta === PRICE * BigInt(PIECE));
  assert.equal(serve(1, T0), 'ok');
  assert.equal(serve(2, T0), 'unpaid_limit', 'K = 1 unpaid piece');
  assert.deepEqual(r.onPieceVerified(1), { type: 'need_channel', piece: 1, amount: PRICE * BigInt(PIECE) });
  p.onHave(key, 1, T0);
  return { p, r, key, serve };
}

/** Tick every second from T0+1 s to `end`; `each(now)` runs before each tick. Returns every action. */
function run(p: ProviderPayments, from: number, end: number, each: (now: number) => void = () => {}): { at: number; a: ProviderAction }[] {
  const out: { at: number; a: ProviderAction }[] = [];
  for (let now = from; now <= end; now += 1_000) {
    each(now);
    for (const a of p.tick(now)) out.push({ at: now, a });
  }
  return out;
}

test('requester waiting on the ledger for 10 min (20× the timeout): choked once, never struck or banned; pays and is served again', () => {
  const { p, r, key, serve } = scenario();
  const end = T0 + 600_000;
  // The requester's channel open fails every 2 s (agent retry) and each failure tells the provider.
  const actions = run(p, T0 + 1_000, end, (now) => {
    if ((now - T0) % 2_000 === 0) p.onLedgerWait(key, now);
  });
  assert.deepEqual(actions.map((x) => [x.at - T0, x.a.type]), [[TIMEOUT, 'choke']]);
  assert.match((actions[0].a as { reason: string }).reason, /waits for the ledger/);
  const acct = p.account(key)!;
  assert.equal(acct.strikes, 0);
  assert.equal(acct.suspended, true);
  assert.equal(acct.unpaidPieces, 1);
  assert.equal(acct.owed, PRICE * BigInt(PIECE));
  assert.equal(p.isBanned(key, end), false);
  assert.equal(serve(2, end), 'suspended', 'exposure: nothing more while it cannot pay');
  // The ledger is back: a new channel, the queued payment, service resumes.
  const ch2 = channel(10n * PRICE * BigInt(PIECE));
  const { announce, payments } = r.onChannelOpened(ch2);
  assert.equal(p.onChannelAnnounced(key, Buffer.from(announce.channel)), 'fetch');
  assert.deepEqual(p.onChannelInfo(key, ch2, end), { ok: true });
  assert.equal(payments.length, 1);
  const res = p.onPayment(key, payments[0], end);
  assert.ok(res.ok && res.delta === PRICE * BigInt(PIECE) && res.stillOwed === 0n);
  assert.deepEqual(p.account(key), { price: PRICE, unpaidPieces: 0, owed: 0n, strikes: 0, suspended: false, earned: 2n * PRICE * BigInt(PIECE), paidPieces: 2, channel: ch2.id.toString('hex') });
  assert.equal(serve(2, end), 'ok');
  assert.equal(r.paid, 2n * PRICE * BigInt(PIECE));
});

test('provider cannot reach the ledger to check the new channel: no strikes while its lookups fail', () => {
  const { p, r, key } = scenario();
  const ch2 = channel(10n * PRICE * BigInt(PIECE));
  const { announce, payments } = r.onChannelOpened(ch2);
  // Announced at T0 + 5 s; the provider's lookup fails, and again each time the requester re-announces (2 s).
  assert.equal(p.onChannelAnnounced(key, Buffer.from(announce.channel)), 'fetch');
  const pending = p.onPayment(key, payments[0], T0 + 5_000);
  assert.ok(!pending.ok && pending.pending);
  const end = T0 + 300_000;
  const actions = run(p, T0 + 1_000, end, (now) => {
    if (now >= T0 + 5_000 && (now - T0) % 2_000 === 0) p.onLedgerUnavailable(now);
  });
  assert.deepEqual(actions.map((x) => x.a.type), ['choke']);
  assert.equal(p.account(key)!.strikes, 0);
  assert.deepEqual(p.onChannelInfo(key, ch2, end), { ok: true });
  const res = p.onPayment(key, payments[0], end);
  assert.ok(res.ok && res.stillOwed === 0n);
  assert.equal(p.account(key)!.suspended, false);
});

test('no notice: the same lateness is struck every timeout and banned at the 3rd; a lapsed notice excuses nothing', () => {
  {
    const { p, key } = scenario();
    const actions = run(p, T0 + 1_000, T0 + 200_000);
    assert.deepEqual(actions.map((x) => [x.at - T0, x.a.type]), [[30_000, 'choke'], [90_000, 'ban'], [90_000, 'close']]); // a ban closes its channel
    assert.equal(p.account(key)!.strikes, 3);
  }
  {
    // Notices until T0 + 100 s, then silence: the excuse lasts one timeout past the last notice, then strikes resume.
    const { p, key } = scenario();
    const actions = run(p, T0 + 1_000, T0 + 400_000, (now) => {
      if (now <= T0 + 100_000 && (now - T0) % 10_000 === 0) p.onLedgerWait(key, now);
    });
    const ban = actions.find((x) => x.a.type === 'ban');
    assert.ok(ban, 'banned once the notices stopped');
    // Last notice at 100 s → excused until 130 s; overdue checks fall every 30 s from 30 s: strikes at 150, 180, 210.
    assert.equal(ban.at - T0, 210_000);
  }
});

test('property: with notices at most one timeout apart, any outage length ends unbanned, exposure ≤ K throughout', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 29 }), fc.integer({ min: 1, max: 900 }), (everyS, outageS) => {
      const { p, key, serve } = scenario();
      let maxUnpaid = 0;
      run(p, T0 + 1_000, T0 + outageS * 1_000, (now) => {
        if (((now - T0) / 1_000) % everyS === 0 || now === T0 + 1_000) p.onLedgerWait(key, now);
        serve(2, now);
        maxUnpaid = Math.max(maxUnpaid, p.account(key)!.unpaidPieces);
      });
      const a = p.account(key)!;
      return a.strikes === 0 && !p.isBanned(key, T0 + outageS * 1_000) && maxUnpaid <= 1;
    }),
    { numRuns: 60 },
  );
});
