import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { keyPairFromSeed, signPaymentState, type ChannelInfo } from '@bitorrent/ledger';
import { ProviderPayments, RequesterPayments, suggestDeposit, type ProviderAction } from '../src/payments.js';
import { SpeedErrorCode, encodeSpeedMessage, decodeSpeedMessage, type PaymentMessage } from '../src/messages.js';

const LEDGER = Buffer.alloc(32, 0x11);
const prov = keyPairFromSeed(Buffer.alloc(32, 1));
const reqK = keyPairFromSeed(Buffer.alloc(32, 2));
const other = keyPairFromSeed(Buffer.alloc(32, 3));
const BLOCK = 16384;
const PIECE = 4 * BLOCK;
const HOUR = 3_600_000;

let chanSeq = 0;
function channel(deposit: bigint, expiresAt: number, extra: Partial<ChannelInfo> = {}): ChannelInfo {
  const id = Buffer.alloc(32);
  id.writeUInt32BE(++chanSeq);
  return { id, ledgerId: LEDGER, requester: reqK.publicKey, provider: prov.publicKey, deposit, expiresAt, status: 'open', openedAt: 0, openSeq: 1, settled: 0n, ...extra };
}

function setup(opts: { K?: number } = {}) {
  const p = new ProviderPayments({ ledgerId: LEDGER, publicKey: prov.publicKey, maxUnpaid: opts.K ?? 1, paymentTimeoutMs: 30_000, maxStrikes: 3, banMs: HOUR, closeMarginMs: 600_000, minChannelTtlMs: 1_800_000, idleCloseMs: 120_000 });
  const r = new RequesterPayments({ ledgerId: LEDGER, publicKey: reqK.publicKey, secretKey: reqK.secretKey, providerKey: prov.publicKey });
  const key = p.connect(reqK.publicKey, 0)!;
  return { p, r, key };
}

/** Serve every block of `piece` through canServe/onBlockSent and the requester's onBlock. */
function servePiece(p: ProviderPayments, r: RequesterPayments, key: string, piece: number, now: number, len = PIECE): boolean {
  for (let off = 0; off < len; off += BLOCK) {
    if (!p.canServe(key, piece, now).ok) return false;
    const n = Math.min(BLOCK, len - off);
    p.onBlockSent(key, piece, n, now);
    r.onBlock(piece, n);
  }
  return true;
}

/**
 * One block of `piece` (4 blocks each) if the provider serves it now; true when that block completed the piece, which
 * is then marked verified (the caller pays for it).
 */
function serveOneBlock(p: ProviderPayments, r: RequesterPayments, key: string, piece: number, got: Map<number, number>, verified: Set<number>): boolean {
  if (verified.has(piece) || (got.get(piece) ?? 0) >= 4) return false;
  if (!p.canServe(key, piece, 0).ok) return false;
  p.onBlockSent(key, piece, BLOCK, 0);
  r.onBlock(piece, BLOCK);
  const n = (got.get(piece) ?? 0) + 1;
  got.set(piece, n);
  if (n < 4) return false;
  verified.add(piece);
  return true;
}

function openChannel(p: ProviderPayments, r: RequesterPayments, key: string, info: ChannelInfo, now: number): PaymentMessage[] {
  const { announce, payments } = r.onChannelOpened(info);
  assert.equal(p.onChannelAnnounced(key, Buffer.from(announce.channel)), 'fetch');
  assert.deepEqual(p.onChannelInfo(key, info, now), { ok: true });
  return payments;
}

test('happy path: owed amounts agree to the base unit, exposure stays ≤ K, tokens paid = tokens earned', () => {
  const { p, r, key } = setup();
  assert.deepEqual(r.onBidResponse(3n, 5n), { ok: true });
  p.setPrice(key, 3n);
  // Paid blocks need a verified channel first.
  assert.deepEqual(p.canServe(key, 0, 0), { ok: false, reason: 'no_channel' });
  const info = channel(10n ** 9n, 10 * HOUR);
  assert.deepEqual(openChannel(p, r, key, info, 0), []);
  assert.ok(servePiece(p, r, key, 0, 0));
  assert.equal(r.owedFor(0), 3n * BigInt(PIECE));
  // K = 1: nothing of another piece until piece 0 is paid.
  assert.deepEqual(p.canServe(key, 1, 0), { ok: false, reason: 'unpaid_limit' });
  p.onHave(key, 0, 1000);
  const pay = r.onPieceVerified(0);
  assert.equal(pay.type, 'payment');
  const msg = (pay as { message: PaymentMessage }).message;
  // Over the wire and back.
  const wireMsg = decodeSpeedMessage(encodeSpeedMessage(msg)) as PaymentMessage;
  const res = p.onPayment(key, wireMsg, 1000);
  assert.ok(res.ok);
  assert.equal(res.delta, 3n * BigInt(PIECE));
  assert.equal(res.stillOwed, 0n);
  assert.equal(res.ack.amount, 3n * BigInt(PIECE));
  assert.deepEqual(r.onAck(res.ack), {});
  assert.ok(p.canServe(key, 1, 1000).ok);
  // Last, shorter piece.
  assert.ok(servePiece(p, r, key, 1, 1000, 1000));
  const pay2 = r.onPieceVerified(1) as { message: PaymentMessage; amount: bigint };
  assert.equal(pay2.amount, 3000n);
  assert.ok(p.onPayment(key, pay2.message, 2000).ok);
  assert.equal(p.account(key)!.earned, r.paid);
  assert.equal(r.paid, 3n * BigInt(PIECE + 1000));
  assert.deepEqual(p.heldState(info.id), { sequence: 2n, cumulative: r.paid });
  // Free (price 0, e.g. legacy slot) blocks cost nothing and never block serving.
  p.setPrice(key, 0n);
  r.onChoke();
  assert.ok(servePiece(p, r, key, 2, 3000));
  assert.deepEqual(r.onPieceVerified(2), { type: 'nothing' });
});

test('replayed, reordered, above-deposit, forged and foreign payment states are refused', () => {
  const { p, r, key } = setup({ K: 4 });
  r.onBidResponse(1n, 1n);
  p.setPrice(key, 1n);
  const info = channel(3n * BigInt(PIECE), 10 * HOUR);
  openChannel(p, r, key, info, 0);
  servePiece(p, r, key, 0, 0);
  servePiece(p, r, key, 1, 0);
  const m1 = (r.onPieceVerified(0) as { message: PaymentMessage }).message;
  const m2 = (r.onPieceVerified(1) as { message: PaymentMessage }).message;
  assert.ok(p.onPayment(key, m2, 10).ok); // a later state first (covers both pieces)
  assert.equal(p.account(key)!.owed, 0n);
  // Reordered: the older state now arrives.
  const old = p.onPayment(key, m1, 11);
  assert.ok(!old.ok && /sequence not increasing/.test(old.reason));
  // Exact replay of the latest: idempotent, acknowledged, pays nothing more.
  const dup = p.onPayment(key, m2, 12);
  assert.ok(dup.ok && dup.duplicate && dup.delta === 0n);
  // Above the deposit (signed honestly, but more than escrowed).
  const sigOver = signPaymentState({ ledgerId: LEDGER, channelId: info.id, sequence: 9n, cumulative: info.deposit + 1n }, reqK.secretKey);
  const over = p.onPayment(key, { type: 'payment', channel: info.id, seq: 9n, amount: info.deposit + 1n, piece: 2, sig: sigOver }, 13);
  assert.ok(!over.ok && over.code === SpeedErrorCode.CHANNEL_EXHAUSTED);
  // Forged: signed by someone else.
  const forged = signPaymentState({ ledgerId: LEDGER, channelId: info.id, sequence: 9n, cumulative: info.deposit }, other.secretKey);
  const f = p.onPayment(key, { type: 'payment', channel: info.id, seq: 9n, amount: info.deposit, piece: 2, sig: forged }, 14);
  assert.ok(!f.ok && /bad signature/.test(f.reason));
  // Unknown channel.
  const u = p.onPayment(key, { ...m2, channel: Buffer.alloc(32, 0xee) }, 15);
  assert.ok(!u.ok && u.code === SpeedErrorCode.CHANNEL_INVALID);
  // Same sequence, different amount (equivocation) is not a duplicate.
  const eq = signPaymentState({ ledgerId: LEDGER, channelId: info.id, sequence: m2.seq, cumulative: m2.amount + 1n }, reqK.secretKey);
  assert.ok(!p.onPayment(key, { ...m2, amount: m2.amount + 1n, sig: eq }, 16).ok);
  assert.equal(p.heldState(info.id)!.cumulative, m2.amount);
});

test('channel announcements are checked against the ledger’s record', () => {
  const { p, key } = setup();
  const now = 1000;
  const bad = (info: ChannelInfo) => {
    p.onChannelAnnounced(key, info.id);
    const r = p.onChannelInfo(key, info, now);
    assert.ok(!r.ok);
    return r;
  };
  assert.match(bad(channel(100n, 10 * HOUR, { provider: other.publicKey })).reason, /does not pay us/);
  assert.match(bad(channel(100n, 10 * HOUR, { requester: other.publicKey })).reason, /payer/);
  assert.equal(bad(channel(100n, 10 * HOUR, { ledgerId: Buffer.alloc(32, 9) })).code, SpeedErrorCode.WRONG_LEDGER);
  assert.match(bad(channel(100n, now + 60_000)).reason, /expires too soon/);
  assert.match(bad(channel(100n, 10 * HOUR, { status: 'closed' })).reason, /closed/);
  assert.match(bad(channel(0n, 10 * HOUR)).reason, /deposit/);
  assert.deepEqual(p.canServe(key, 0, now), { ok: true, price: 0n });
  p.setPrice(key, 1n);
  assert.deepEqual(p.canServe(key, 0, now), { ok: false, reason: 'no_channel' });
});

test('before its first channel, a requester seen holding funds on the ledger gets up to K pieces on credit, never more than it can pay', () => {
  const K = 3;
  const price = 2n;
  const { p, r, key } = setup({ K });
  assert.deepEqual(r.onBidResponse(price, 5n), { ok: true });
  p.setPrice(key, price);
  // Not looked up yet: unknown, and nothing paid is served without a channel.
  assert.equal(p.mayFund(key), undefined);
  assert.deepEqual(p.canServe(key, 0, 0), { ok: false, reason: 'no_channel' });
  p.onRequesterFunds(key, 10n ** 12n);
  assert.equal(p.mayFund(key), true);
  for (let i = 0; i < K; i++) assert.ok(servePiece(p, r, key, i, 0), `piece ${i} on credit`);
  assert.deepEqual(p.canServe(key, K, 0), { ok: false, reason: 'unpaid_limit' });
  // The requester verifies them with no channel yet: it owes, it cannot pay yet.
  for (let i = 0; i < K; i++) {
    p.onHave(key, i, 10);
    assert.equal(r.onPieceVerified(i).type, 'need_channel');
  }
  // Its channel opens: one state pays all three; the provider checks the channel and accepts it; serving goes on.
  const info = channel(10n ** 9n, 10 * HOUR);
  const pays = openChannel(p, r, key, info, 20);
  assert.ok(pays.length >= 1);
  for (const m of pays) assert.ok(p.onPayment(key, decodeSpeedMessage(encodeSpeedMessage(m)) as PaymentMessage, 20).ok);
  assert.equal(p.account(key)!.earned, price * BigInt(K * PIECE));
  assert.equal(r.paid, p.account(key)!.earned);
  assert.ok(servePiece(p, r, key, K, 30));
  p.onHave(key, K, 40);
  const payK = r.onPieceVerified(K);
  assert.equal(payK.type, 'payment');
  assert.ok(p.onPayment(key, (payK as { message: PaymentMessage }).message, 40).ok);
  // Once it has had a channel, credit is over: a closing channel (here: near its expiry) means waiting for the next,
  // whatever balance we saw before its deposits.
  const closingAt = 10 * HOUR - 600_000;
  p.tick(closingAt);
  assert.deepEqual(p.canServe(key, K + 1, closingAt), { ok: false, reason: 'no_channel' });

  // Funds for less than a piece: one piece on credit, not a second.
  const poor = setup({ K });
  poor.r.onBidResponse(price, 5n);
  poor.p.setPrice(poor.key, price);
  poor.p.onRequesterFunds(poor.key, price * BigInt(PIECE) - 1n);
  assert.ok(servePiece(poor.p, poor.r, poor.key, 0, 0));
  assert.deepEqual(poor.p.canServe(poor.key, 1, 0), { ok: false, reason: 'no_channel' });
  // An empty account: nothing on credit, and not a funded bidder.
  const empty = setup({ K });
  empty.p.setPrice(empty.key, price);
  empty.p.onRequesterFunds(empty.key, 0n);
  assert.equal(empty.p.mayFund(empty.key), false);
  assert.deepEqual(empty.p.canServe(empty.key, 0, 0), { ok: false, reason: 'no_channel' });
});

test('a requester that stops paying: provider loses ≤ K pieces, chokes it, then bans it; reconnects rejected', () => {
  for (const K of [1, 2, 3]) {
    const { p, r, key } = setup({ K });
    r.onBidResponse(2n, 2n);
    p.setPrice(key, 2n);
    openChannel(p, r, key, channel(10n ** 12n, 10 * HOUR), 0);
    let served = 0;
    let t = 0;
    const actions: ProviderAction[] = [];
    for (let piece = 0; piece < 20; piece++) {
      if (servePiece(p, r, key, piece, t)) {
        served++;
        p.onHave(key, piece, t);
      }
      t += 10_000;
      actions.push(...p.tick(t));
      if (actions.some((a) => a.type === 'choke') && !actions.some((a) => a.type === 'ban')) p.setPrice(key, 2n); // integration would choke; keep trying
    }
    for (let i = 0; i < 20; i++) actions.push(...p.tick((t += 31_000)));
    assert.equal(served, K, `served ${served} unpaid pieces with K=${K}`);
    assert.equal(p.account(key)!.owed, BigInt(K) * 2n * BigInt(PIECE));
    assert.ok(actions.some((a) => a.type === 'choke'));
    const ban = actions.find((a) => a.type === 'ban');
    assert.ok(ban && ban.type === 'ban');
    assert.ok(!p.canServe(key, 99, t).ok);
    assert.equal(p.connect(reqK.publicKey, t), undefined);
    // Its channel is closed (nothing was paid: abandoned, the ledger refunds it at expiry).
    assert.ok(actions.some((a) => a.type === 'abandon'));
    // The ban lapses.
    assert.equal(p.connect(reqK.publicKey, ban.until), key);
  }
});

test('a late payment lifts the suspension', () => {
  const { p, r, key } = setup();
  r.onBidResponse(2n, 2n);
  p.setPrice(key, 2n);
  openChannel(p, r, key, channel(10n ** 12n, 10 * HOUR), 0);
  servePiece(p, r, key, 0, 0);
  p.onHave(key, 0, 0);
  const acts = p.tick(30_000);
  assert.deepEqual(acts.map((a) => a.type), ['choke']);
  assert.equal(p.canServe(key, 0, 30_000).ok, false);
  const m = (r.onPieceVerified(0) as { message: PaymentMessage }).message;
  assert.ok(p.onPayment(key, m, 40_000).ok);
  assert.ok(p.canServe(key, 1, 40_000).ok);
  assert.equal(p.account(key)!.strikes, 1);
});

test('a provider that sends corrupt data: the requester pays nothing for it and bans it', () => {
  const { p, r, key } = setup({ K: 3 });
  r.onBidResponse(5n, 5n);
  p.setPrice(key, 5n);
  openChannel(p, r, key, channel(10n ** 12n, 10 * HOUR), 0);
  servePiece(p, r, key, 0, 0);
  const f1 = r.onPieceFailed(0);
  assert.deepEqual(f1, { reject: { type: 'reject', piece: 0 }, ban: false });
  p.onReject(key, 0, 1);
  servePiece(p, r, key, 1, 2);
  const f2 = r.onPieceFailed(1);
  assert.equal(f2.ban, true);
  assert.equal(r.paid, 0n);
  assert.equal(r.owedFor(0), 0n);
  // A piece that later verifies after re-download from someone else owes this provider nothing.
  assert.deepEqual(r.onPieceVerified(0), { type: 'nothing' });
});

test('an exhausted channel: next payment waits for a new channel; the old one is closed with its last state', () => {
  const { p, r, key } = setup({ K: 2 });
  r.onBidResponse(1n, 1n);
  p.setPrice(key, 1n);
  const c1 = channel(2n * BigInt(PIECE), 10 * HOUR);
  openChannel(p, r, key, c1, 0);
  for (const piece of [0, 1]) {
    servePiece(p, r, key, piece, 0);
    assert.ok(p.onPayment(key, (r.onPieceVerified(piece) as { message: PaymentMessage }).message, 0).ok);
  }
  servePiece(p, r, key, 2, 0);
  const need = r.onPieceVerified(2);
  assert.deepEqual(need, { type: 'need_channel', piece: 2, amount: BigInt(PIECE) });
  assert.equal(r.pendingAmount, BigInt(PIECE));
  assert.equal(suggestDeposit(1n, PIECE, 64, r.pendingAmount, 10n ** 6n), 10n ** 6n);
  assert.equal(suggestDeposit(1n, PIECE, 64, r.pendingAmount, 10n ** 9n), 64n * BigInt(PIECE));
  const c2 = channel(5n * BigInt(PIECE), 10 * HOUR);
  const flushed = openChannel(p, r, key, c2, 100);
  assert.equal(flushed.length, 1);
  assert.ok(p.onPayment(key, flushed[0], 100).ok);
  const acts = p.tick(200);
  assert.equal(acts.length, 1);
  const close = acts[0];
  assert.ok(close.type === 'close' && close.reason === 'superseded' && close.channelId.equals(c1.id));
  assert.equal(close.state.cumulative, 2n * BigInt(PIECE));
  assert.equal(close.state.sequence, 2n);
  // Payments on the superseded channel are refused now.
  assert.equal(p.account(key)!.earned, r.paid);
  assert.equal(r.paid, 3n * BigInt(PIECE));
});

test('channels are closed before expiry with the margin, after idleness, and after a crash from persisted state', () => {
  const { p, r, key } = setup();
  r.onBidResponse(1n, 1n);
  p.setPrice(key, 1n);
  const c = channel(10n ** 9n, 2 * HOUR);
  openChannel(p, r, key, c, 0);
  servePiece(p, r, key, 0, 0);
  assert.ok(p.onPayment(key, (r.onPieceVerified(0) as { message: PaymentMessage }).message, 0).ok);
  assert.deepEqual(p.tick(2 * HOUR - 600_001), []);
  // Crash here: a fresh instance restores from what was persisted.
  const saved = p.exportChannels();
  const p2 = new ProviderPayments({ ledgerId: LEDGER, publicKey: prov.publicKey, closeMarginMs: 600_000, minChannelTtlMs: 1_800_000 });
  p2.importChannels(saved, 2 * HOUR - 600_001);
  const acts = p2.tick(2 * HOUR - 600_000);
  assert.equal(acts.length, 1);
  assert.ok(acts[0].type === 'close' && acts[0].reason === 'expiry' && acts[0].state.cumulative === BigInt(PIECE));
  // If the ledger was unreachable, it retries on a later tick, still before expiry.
  p2.onCloseFailed(c.id);
  const again = p2.tick(2 * HOUR - 300_000);
  assert.equal(again.length, 1);
  p2.onChannelClosed(c.id);
  assert.deepEqual(p2.tick(2 * HOUR - 1), []);
  // Idle close: the requester disconnects and does not come back.
  p.disconnect(key, 1000);
  assert.deepEqual(p.tick(100_000), []);
  const idle = p.tick(121_000);
  assert.ok(idle.length === 1 && idle[0].type === 'close' && idle[0].reason === 'idle');
});

test('resync after reconnect: provider lost state → requester re-sends; requester lost state → adopts its own signed state', () => {
  const { p, r, key } = setup();
  r.onBidResponse(1n, 1n);
  p.setPrice(key, 1n);
  const c = channel(10n ** 9n, 10 * HOUR);
  openChannel(p, r, key, c, 0);
  servePiece(p, r, key, 0, 0);
  const m = (r.onPieceVerified(0) as { message: PaymentMessage }).message;
  // Payment lost in flight; the provider restarts knowing only the channel.
  const fresh = new ProviderPayments({ ledgerId: LEDGER, publicKey: prov.publicKey });
  const k2 = fresh.connect(reqK.publicKey, 0)!;
  fresh.onChannelAnnounced(k2, c.id);
  fresh.onChannelInfo(k2, c, 0);
  const ack = fresh.resyncAck(k2)!;
  assert.equal(ack.amount, 0n);
  const { resend } = r.onAck(ack);
  assert.ok(resend);
  assert.equal(resend.amount, m.amount);
  assert.ok(fresh.onPayment(k2, resend, 1).ok);
  // Requester restarted with no memory of the channel's state: the provider's ack restores it.
  const r2 = new RequesterPayments({ ledgerId: LEDGER, publicKey: reqK.publicKey, secretKey: reqK.secretKey, providerKey: prov.publicKey });
  r2.onChannelOpened(c);
  const ack2 = fresh.resyncAck(k2)!;
  assert.deepEqual(r2.onAck(ack2), { adopted: true });
  assert.equal(r2.channelRemaining, c.deposit - m.amount);
  // A forged ack claiming more than we signed is ignored.
  assert.match(r2.onAck({ ...ack2, amount: ack2.amount + 5n }).error!, /did not sign/);
});

test('a price above our bid is refused', () => {
  const { r } = setup();
  const res = r.onBidResponse(11n, 10n);
  assert.ok(!res.ok && res.code === SpeedErrorCode.PRICE_ABOVE_BID);
  assert.equal(r.currentPrice, 0n);
  assert.ok(!r.onBidResponse(1n, undefined).ok);
});

test('property: for any interleaving, requester paid = provider earned = Σ price × bytes of verified pieces; failed pieces cost 0', () => {
  const op = fc.oneof(
    fc.record({ t: fc.constant('price' as const), price: fc.bigInt({ min: 0n, max: 50n }) }),
    fc.record({ t: fc.constant('block' as const), piece: fc.integer({ min: 0, max: 5 }), bytes: fc.integer({ min: 1, max: BLOCK }) }),
    fc.record({ t: fc.constant('verify' as const), piece: fc.integer({ min: 0, max: 5 }) }),
    fc.record({ t: fc.constant('fail' as const), piece: fc.integer({ min: 0, max: 5 }) }),
  );
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), fc.bigInt({ min: 1n, max: 10n ** 7n }), (ops, deposit) => {
      const { p, r, key } = setup({ K: 6 });
      openChannel(p, r, key, channel(deposit, 10 * HOUR), 0);
      let expected = 0n;
      const owed = new Map<number, bigint>();
      let price = 0n;
      let chanDeposit = deposit;
      for (const o of ops) {
        if (o.t === 'price') {
          price = o.price;
          p.setPrice(key, price);
          if (price === 0n) r.onChoke();
          else assert.ok(r.onBidResponse(price, price).ok);
        } else if (o.t === 'block') {
          if (!p.canServe(key, o.piece, 0).ok) continue;
          p.onBlockSent(key, o.piece, o.bytes, 0);
          r.onBlock(o.piece, o.bytes);
          owed.set(o.piece, (owed.get(o.piece) ?? 0n) + price * BigInt(o.bytes));
        } else if (o.t === 'verify') {
          const res = r.onPieceVerified(o.piece);
          expected += owed.get(o.piece) ?? 0n;
          owed.delete(o.piece);
          const msgs: PaymentMessage[] = res.type === 'payment' ? [res.message] : [];
          if (res.type === 'need_channel') {
            chanDeposit = r.pendingAmount * 2n;
            const c = channel(chanDeposit, 10 * HOUR);
            msgs.push(...openChannel(p, r, key, c, 0));
          }
          for (const m of msgs) assert.ok(p.onPayment(key, m, 0).ok);
        } else {
          r.onPieceFailed(o.piece);
          owed.delete(o.piece);
          p.onReject(key, o.piece, 0);
        }
      }
      assert.equal(r.paid, expected);
      assert.equal(p.account(key)!.earned, expected);
    }),
    { numRuns: 200 },
  );
});

test('property: exposure bound — provider unpaid pieces ≤ K at every step, requester never pays before verifying; pipelined acks cause no re-sends', () => {
  const op = fc.oneof(
    { weight: 6, arbitrary: fc.record({ t: fc.constant('block' as const), piece: fc.integer({ min: 0, max: 5 }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('deliver' as const), n: fc.integer({ min: 1, max: 3 }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('ack' as const), n: fc.integer({ min: 1, max: 3 }) }) },
  );
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 4 }), fc.array(op, { maxLength: 120 }), (K, ops) => {
      const { p, r, key } = setup({ K });
      const PRICE = 3n;
      assert.ok(r.onBidResponse(PRICE, PRICE).ok);
      p.setPrice(key, PRICE);
      openChannel(p, r, key, channel(10n ** 12n, 10 * HOUR), 0);
      const got = new Map<number, number>(); // blocks of each piece received by the requester
      const verified = new Set<number>();
      const toProvider: PaymentMessage[] = []; // payments in flight (TCP: in order)
      const toRequester: ReturnType<ProviderPayments['onPayment']>[] = []; // acks in flight
      let paidValue = 0n; // value of verified pieces (what the requester may have paid at most)
      let resends = 0;
      for (const o of ops) {
        if (o.t === 'block') {
          if (!serveOneBlock(p, r, key, o.piece, got, verified)) continue;
          {
            // Verified: the requester pays for it (and only now).
            paidValue += PRICE * BigInt(PIECE);
            const res = r.onPieceVerified(o.piece);
            assert.equal(res.type, 'payment');
            toProvider.push((res as { message: PaymentMessage }).message);
          }
        } else if (o.t === 'deliver') {
          for (const m of toProvider.splice(0, o.n)) {
            const res = p.onPayment(key, m, 0);
            assert.ok(res.ok);
            toRequester.push(res);
          }
        } else {
          for (const a of toRequester.splice(0, o.n)) {
            const back = r.onAck((a as { ack: Parameters<RequesterPayments['onAck']>[0] }).ack);
            assert.equal(back.error, undefined);
            if (back.resend) resends++;
          }
        }
        const acc = p.account(key)!;
        assert.ok(acc.unpaidPieces <= K, `unpaid ${acc.unpaidPieces} > K ${K}`);
        assert.ok(r.paid <= paidValue, 'requester paid ahead of verification');
      }
      assert.equal(resends, 0, 'acks for older states while later payments are in flight must not trigger re-sends');
      // Everything lands: paid = earned = value of verified pieces, to the base unit.
      for (const m of toProvider.splice(0)) assert.ok(p.onPayment(key, m, 0).ok);
      assert.equal(r.paid, paidValue);
      assert.equal(p.account(key)!.earned, paidValue);
    }),
    { numRuns: 200 },
  );
});

test('pipelined payments: an ack for an older state while a later payment is in flight triggers no re-send (no ack storm)', () => {
  const { p, r, key } = setup({ K: 2 });
  assert.ok(r.onBidResponse(1n, 1n).ok);
  p.setPrice(key, 1n);
  openChannel(p, r, key, channel(10n ** 9n, 10 * HOUR), 0);
  assert.ok(servePiece(p, r, key, 0, 0));
  const m1 = (r.onPieceVerified(0) as { message: PaymentMessage }).message;
  assert.ok(servePiece(p, r, key, 1, 0));
  const m2 = (r.onPieceVerified(1) as { message: PaymentMessage }).message;
  const a1 = p.onPayment(key, m1, 0);
  const a2 = p.onPayment(key, m2, 0);
  assert.ok(a1.ok && a2.ok);
  assert.deepEqual(r.onAck(a1.ack), {}, 'm2 is still on its way: nothing to re-send');
  assert.deepEqual(r.onAck(a2.ack), {});
  // A duplicate of an old ack after everything was acknowledged means the provider holds less: re-send.
  assert.equal(r.onAck(a1.ack).resend?.amount, m2.amount);
});

test('property: batched payments (setProviderLimit K) — ⌊K/2⌋ pieces per state from K ≥ 4, exposure ≤ K, never a stall, exact totals after a flush', () => {
  const op = fc.oneof(
    { weight: 8, arbitrary: fc.record({ t: fc.constant('block' as const), piece: fc.integer({ min: 0, max: 11 }) }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant('deliver' as const), n: fc.integer({ min: 1, max: 3 }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('ack' as const), n: fc.integer({ min: 1, max: 3 }) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('flush' as const) }) },
  );
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 10 }), fc.array(op, { maxLength: 200 }), (K, ops) => {
      const { p, r, key } = setup({ K });
      const PRICE = 7n;
      assert.ok(r.onBidResponse(PRICE, PRICE).ok);
      r.setProviderLimit(K);
      p.setPrice(key, PRICE);
      openChannel(p, r, key, channel(10n ** 12n, 10 * HOUR), 0);
      const batch = K >= 4 ? Math.floor(K / 2) : 1;
      const got = new Map<number, number>();
      const verified = new Set<number>();
      const toProvider: PaymentMessage[] = [];
      const toRequester: ReturnType<ProviderPayments['onPayment']>[] = [];
      let value = 0n;
      let deferredRun = 0; // verified pieces since the last payment
      const send = (res: ReturnType<RequesterPayments['onPieceVerified']>) => {
        if (res.type === 'payment') {
          toProvider.push(res.message);
          deferredRun = 0;
        } else assert.equal(res.type, 'nothing');
      };
      for (const o of ops) {
        if (o.t === 'block') {
          if (!serveOneBlock(p, r, key, o.piece, got, verified)) continue;
          {
            value += PRICE * BigInt(PIECE);
            const res = r.onPieceVerified(o.piece);
            deferredRun++;
            if (res.type === 'deferred') assert.ok(deferredRun < batch, `held ${deferredRun} pieces with a batch of ${batch}`);
            else send(res);
          }
        } else if (o.t === 'deliver') {
          for (const m of toProvider.splice(0, o.n)) {
            const res = p.onPayment(key, m, 0);
            assert.ok(res.ok);
            toRequester.push(res);
          }
        } else if (o.t === 'ack') {
          for (const a of toRequester.splice(0, o.n)) assert.equal(r.onAck((a as { ack: Parameters<RequesterPayments['onAck']>[0] }).ack).error, undefined);
        } else send(r.flushDue());
        const acc = p.account(key)!;
        assert.ok(acc.unpaidPieces <= K, `unpaid ${acc.unpaidPieces} > K ${K}`);
        assert.ok(r.paid <= value, 'paid ahead of verification');
        // Never a stall: with nothing in flight, the provider is not held at K by pieces the requester verified.
        if (toProvider.length === 0 && acc.unpaidPieces === K) {
          const open = [...got].filter(([i, n]) => n < 4 && !verified.has(i)).length;
          assert.ok(open > 0, `provider at K=${K} with every unpaid piece verified and no payment in flight`);
        }
      }
      send(r.flushDue());
      for (const m of toProvider.splice(0)) assert.ok(p.onPayment(key, m, 0).ok);
      assert.equal(r.dueAmount, 0n);
      assert.equal(r.paid, value);
      assert.equal(p.account(key)!.earned, value);
    }),
    { numRuns: 300 },
  );
});

test('batched payments: K = 8 pays 4 pieces per signed state; K < 4 pays every piece', () => {
  for (const [K, perState] of [[8, 4], [4, 2], [3, 1], [1, 1]] as const) {
    const { p, r, key } = setup({ K });
    assert.ok(r.onBidResponse(2n, 2n).ok);
    r.setProviderLimit(K);
    p.setPrice(key, 2n);
    openChannel(p, r, key, channel(10n ** 12n, 10 * HOUR), 0);
    let payments = 0;
    for (let piece = 0; piece < 16; piece++) {
      assert.ok(servePiece(p, r, key, piece, 0), `K=${K} piece ${piece} refused`);
      const res = r.onPieceVerified(piece);
      if (res.type === 'payment') {
        payments++;
        assert.ok(p.onPayment(key, res.message, 0).ok);
      }
    }
    assert.equal(payments, 16 / perState, `K=${K}`);
    assert.equal(p.account(key)!.earned, 2n * 16n * BigInt(PIECE));
  }
});
