import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { AutoBidder, computeBid, bidBudget, PPM } from '../src/bidder.js';

test('computeBid is the whitepaper formula per byte, exact and floored', () => {
  assert.equal(computeBid(1_000_000n, 1000, PPM), 1000n);
  assert.equal(computeBid(1_000_000n, 1000, 500_000), 500n);
  assert.equal(computeBid(999n, 1000, PPM), 0n); // below one base unit per byte
  assert.equal(computeBid(10n ** 30n, 3n, PPM), 10n ** 30n / 3n);
  assert.equal(computeBid(5n, 0, PPM), 0n); // nothing remains: no division by zero
  assert.equal(computeBid(-5n, 10, PPM), 0n);
  assert.throws(() => computeBid(1n, 1, 1_000_001), /spending rate/);
  assert.throws(() => computeBid(1n, -1, 1), /remainingBytes/);
  assert.throws(() => computeBid(1n, 1.5, 1), /remainingBytes/);
  fc.assert(
    fc.property(fc.bigInt({ min: 0n, max: 10n ** 24n }), fc.bigInt({ min: 1n, max: 10n ** 12n }), fc.integer({ min: 0, max: PPM }), (bal, rem, ppm) => {
      const bid = computeBid(bal, rem, ppm);
      // Paying the bid on every remaining byte never exceeds rate × budget, and one more unit would.
      assert.ok(bid * rem * BigInt(PPM) <= BigInt(ppm) * bal);
      assert.ok((bid + 1n) * rem * BigInt(PPM) > BigInt(ppm) * bal);
    }),
  );
});

test('budget honours the per-torrent cap', () => {
  assert.equal(bidBudget({ balance: 100n, remainingBytes: 1, spent: 0n }), 100n);
  assert.equal(bidBudget({ balance: 100n, remainingBytes: 1, spent: 30n }, 50n), 20n);
  assert.equal(bidBudget({ balance: 100n, remainingBytes: 1, spent: 80n }, 50n), 0n);
  assert.equal(bidBudget({ balance: 10n, remainingBytes: 1, spent: 0n }, 50n), 10n);
});

test('in virtual time: initial bid at once, revisions only >10 % and ≥ 60 s apart, settings immediately, stop at the end', () => {
  let t = 0;
  const b = new AutoBidder({ now: () => t });
  const st = (balance: bigint, remainingBytes: number, spent = 0n) => ({ balance, remainingBytes, spent });
  assert.deepEqual(b.poll(st(1_000_000n, 1000)), { price: 1000n, reason: 'initial' });
  assert.equal(b.poll(st(1_000_000n, 1000)), null);
  // +50 % but only 30 s later: wait.
  t = 30_000;
  assert.equal(b.poll(st(1_000_000n, 666)), null);
  // After a minute it goes out.
  t = 60_000;
  assert.deepEqual(b.poll(st(1_000_000n, 666)), { price: 1501n, reason: 'revise' });
  // A 10 % change exactly is not enough; just above is.
  t = 200_000;
  assert.equal(b.poll(st(1_651_100n, 1000)), null); // 1651 vs 1501: +150 ≤ 150.1
  assert.deepEqual(b.poll(st(1_652_000n, 1000)), { price: 1652n, reason: 'revise' });
  // Settings change: immediately, even within the minute.
  t = 201_000;
  b.setSettings({ spendingRatePpm: 500_000 });
  assert.deepEqual(b.poll(st(1_652_000n, 1000)), { price: 826n, reason: 'settings' });
  // Cap: maxSpend 300_000, already spent 100_000 → budget 200_000 → 0.5 × 200 = 100/byte, sent at once.
  t = 202_000;
  b.setSettings({ maxSpend: 300_000n });
  assert.deepEqual(b.poll(st(1_652_000n, 1000, 100_000n)), { price: 100n, reason: 'settings' });
  // Budget exhausted: withdraw at once.
  t = 203_000;
  assert.deepEqual(b.poll(st(1_652_000n, 1000, 300_000n)), { price: 0n, reason: 'withdraw' });
  // Speed off then on.
  b.setSettings({ maxSpend: undefined, enabled: false });
  assert.equal(b.poll(st(1_652_000n, 1000)), null); // already 0
  b.setSettings({ enabled: true });
  assert.deepEqual(b.poll(st(1_652_000n, 1000)), { price: 826n, reason: 'settings' });
  // Download complete: withdraw and stop for good.
  t = 204_000;
  assert.deepEqual(b.poll(st(1_652_000n, 0)), { price: 0n, reason: 'complete' });
  assert.ok(b.stopped);
  t = 10_000_000;
  assert.equal(b.poll(st(10n ** 12n, 0)), null);
  assert.equal(b.poll(st(10n ** 12n, 100)), null);
});

test('invariants over random progress: ≤ 1 non-forced bid per minute, every sent bid within 10 % rule or forced', () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ dt: fc.integer({ min: 0, max: 40_000 }), bal: fc.bigInt({ min: 0n, max: 10n ** 9n }), rem: fc.integer({ min: 1, max: 10 ** 6 }) }), { maxLength: 60 }),
      (steps) => {
        let t = 0;
        const b = new AutoBidder({ now: () => t });
        let lastAt = -Infinity;
        let last = 0n;
        for (const s of steps) {
          t += s.dt;
          const u = b.poll({ balance: s.bal, remainingBytes: s.rem, spent: 0n });
          if (!u) continue;
          if (u.reason === 'revise') {
            assert.ok(t - lastAt >= 60_000);
            const d = u.price > last ? u.price - last : last - u.price;
            assert.ok(d * 10n > last);
          }
          if (u.reason === 'withdraw') assert.equal(u.price, 0n);
          assert.equal(u.price, computeBid(s.bal, s.rem, PPM));
          lastAt = t;
          last = u.price;
        }
      },
    ),
  );
});

test('bad settings are rejected clearly', () => {
  assert.throws(() => new AutoBidder({ now: () => 0, settings: { spendingRatePpm: 2_000_000 } }), /spending rate/);
  const b = new AutoBidder({ now: () => 0 });
  assert.throws(() => b.setSettings({ spendingRatePpm: 0.5 }), /spending rate/);
  assert.throws(() => b.setSettings({ maxSpend: -1n }), /maxSpend/);
});
