import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { VirtualClock } from '../src/clock.js';
import { TokenBucket, RateLimiter, RateLimitError, PRIORITY_HIGH, PRIORITY_NORMAL, NORMAL_SHARE, type Priority } from '../src/rate-limit.js';

test('unlimited bucket always allows', async () => {
  const b = new TokenBucket({ rate: 0, clock: new VirtualClock() });
  assert.equal(b.tryTake(1e12), true);
  assert.equal(b.delayFor(1e12), 0);
  await b.take(1e9);
});

test('tryTake honours burst and refills exactly', () => {
  const clock = new VirtualClock();
  const b = new TokenBucket({ rate: 1000, burst: 1000, clock });
  assert.equal(b.tryTake(600), true);
  assert.equal(b.tryTake(600), false);
  assert.equal(b.delayFor(600), 200);
  clock.advance(199);
  assert.equal(b.tryTake(600), false);
  clock.advance(1);
  assert.equal(b.tryTake(600), true);
  assert.equal(b.available(), 0);
  clock.advance(10_000);
  assert.equal(b.available(), 1000, 'capped at burst');
});

test('no drift: over a long run the granted bytes equal rate × time + burst exactly', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 5_000_000 }), fc.array(fc.integer({ min: 1, max: 977 }), { minLength: 1, maxLength: 200 }), (rate, steps) => {
      const clock = new VirtualClock();
      const burst = Math.max(16384, rate);
      const b = new TokenBucket({ rate, burst, clock });
      assert.equal(b.tryTake(burst), true); // drain first: time spent full is (by design) not accumulated
      let granted = burst;
      let elapsed = 0;
      for (const dt of steps) {
        clock.advance(dt);
        elapsed += dt;
        // Take everything available, one byte granularity.
        const avail = b.available();
        if (avail > 0 && b.tryTake(avail)) granted += avail;
      }
      const ideal = burst + (rate * elapsed) / 1000;
      assert.ok(granted <= ideal, `granted ${granted} > ideal ${ideal}`);
      // Only the sub-byte remainder is unclaimed (the cap never binds: we drain at every step and steps are < 1 s).
      assert.ok(ideal - granted < 1, `granted ${granted}, ideal ${ideal}`);
    }),
  );
});

test('take() waits FIFO on the injected clock; requests above burst go into debt', async () => {
  const clock = new VirtualClock();
  const b = new TokenBucket({ rate: 1000, burst: 1000, clock });
  const order: string[] = [];
  const p1 = b.take(1000).then(() => order.push('a'));
  const p2 = b.take(3000).then(() => order.push('b'));
  const p3 = b.take(100).then(() => order.push('c'));
  await p1;
  assert.deepEqual(order, ['a']);
  assert.equal(b.tryTake(1), false, 'tryTake does not jump the queue');
  clock.advance(999);
  await Promise.resolve();
  assert.deepEqual(order, ['a']);
  clock.advance(1); // bucket full again: the 3000-byte take is granted and leaves a 2000-byte debt
  await p2;
  assert.deepEqual(order, ['a', 'b']);
  clock.advance(2099);
  await Promise.resolve();
  assert.deepEqual(order, ['a', 'b']);
  clock.advance(1);
  await p3;
  assert.deepEqual(order, ['a', 'b', 'c']);
});

test('setRate re-times waiters; abort and close reject', async () => {
  const clock = new VirtualClock();
  const b = new TokenBucket({ rate: 100, burst: 100, clock });
  assert.equal(b.tryTake(100), true);
  let done = false;
  const p = b.take(100).then(() => (done = true));
  clock.advance(500);
  await Promise.resolve();
  assert.equal(done, false);
  b.setRate(0);
  await p;
  assert.equal(done, true);
  b.setRate(10, 10);
  assert.equal(b.tryTake(10), true);
  const ac = new AbortController();
  const aborted = b.take(10, ac.signal);
  ac.abort(new Error('gone'));
  await assert.rejects(aborted, /gone/);
  const closed = b.take(10);
  b.close();
  await assert.rejects(closed, RateLimitError);
  assert.throws(() => new TokenBucket({ rate: -1 }), RateLimitError);
  assert.throws(() => b.tryTake(NaN), RateLimitError);
});

test('RateLimiter: both global and per-torrent buckets must allow', async () => {
  const clock = new VirtualClock();
  const global = new TokenBucket({ rate: 1000, burst: 1000, clock });
  const t1 = new RateLimiter({ global, local: new TokenBucket({ rate: 500, burst: 500, clock }) });
  const t2 = new RateLimiter({ global, local: new TokenBucket({ rate: 0, clock }) });
  assert.equal(t1.tryTake(500), true);
  assert.equal(t1.tryTake(1), false, 'local exhausted');
  assert.equal(t2.tryTake(500), true);
  assert.equal(t2.tryTake(1), false, 'global exhausted');
  assert.equal(t1.delayFor(500), 1000, 'local needs 1000 ms');
  assert.equal(t2.delayFor(500), 500, 'global needs 500 ms');
  let got = false;
  const p = t2.take(500).then(() => (got = true));
  clock.advance(499);
  await Promise.resolve();
  assert.equal(got, false);
  clock.advance(1);
  await p;
  assert.equal(global.available(), 0);
});

/**
 * Consumers that each want blocks back to back (as torrent.ts serveQueued does: tryTake, else take), on a virtual
 * clock stepped 1 ms at a time; returns the bytes each one was granted.
 */
async function contend(bucket: { tryTake(n: number, p?: Priority): boolean; take(n: number, s?: AbortSignal, p?: Priority): Promise<void> }, clock: VirtualClock, priorities: Priority[], ms: number, block = 16384): Promise<number[]> {
  const got = priorities.map(() => 0);
  let stop = false;
  const loops = priorities.map(async (p, i) => {
    while (!stop) {
      if (!bucket.tryTake(block, p)) await bucket.take(block, undefined, p);
      got[i] += block;
      await Promise.resolve();
    }
  });
  for (let t = 0; t < ms; t++) {
    clock.advance(1);
    for (let k = 0; k < 5; k++) await Promise.resolve();
  }
  stop = true;
  void loops;
  return got;
}

test('priority: paid (high) transfers go first, normal ones keep NORMAL_SHARE of a contended limit', async () => {
  const clock = new VirtualClock();
  const rate = 1024 * 1024;
  const b = new TokenBucket({ rate, clock });
  // 4 high-priority consumers and 1 normal one, 20 s: FIFO would give each 20%.
  const got = await contend(b, clock, [PRIORITY_HIGH, PRIORITY_HIGH, PRIORITY_HIGH, PRIORITY_HIGH, PRIORITY_NORMAL], 20_000);
  const total = got.reduce((x, y) => x + y, 0);
  assert.ok(total <= rate * 20 + rate + 16384 * 5, `never more than the rate allows (${total})`);
  assert.ok(total >= rate * 19, `the limit is used (${total})`);
  const normalShare = got[4] / total;
  assert.ok(Math.abs(normalShare - NORMAL_SHARE) < 0.03, `normal share ${normalShare.toFixed(3)}, expected about ${NORMAL_SHARE}`);
  for (let i = 0; i < 4; i++) assert.ok(Math.abs(got[i] / total - (1 - NORMAL_SHARE) / 4) < 0.03, `high consumer ${i}: ${(got[i] / total).toFixed(3)}`);
});

test('priority: with one class alone it gets the whole limit; RateLimiter honours priority too', async () => {
  const clock = new VirtualClock();
  const rate = 512 * 1024;
  const normalOnly = await contend(new TokenBucket({ rate, clock }), clock, [PRIORITY_NORMAL, PRIORITY_NORMAL], 10_000);
  assert.ok(normalOnly[0] + normalOnly[1] >= rate * 9.5, `normal alone uses the limit (${normalOnly})`);
  assert.ok(Math.abs(normalOnly[0] - normalOnly[1]) <= 16384 * 2, `FIFO within a class is fair (${normalOnly})`);
  const clock2 = new VirtualClock();
  const limiter = new RateLimiter({ global: new TokenBucket({ rate, clock: clock2 }), local: new TokenBucket({ rate: rate * 2, clock: clock2 }), clock: clock2 });
  const mixed = await contend(limiter, clock2, [PRIORITY_HIGH, PRIORITY_NORMAL], 10_000);
  const share = mixed[1] / (mixed[0] + mixed[1]);
  assert.ok(Math.abs(share - NORMAL_SHARE) < 0.03, `normal share through a RateLimiter ${share.toFixed(3)}`);
});

test('priority: a high tryTake passes queued normal waiters only while normal traffic has its share', async () => {
  const clock = new VirtualClock();
  const b = new TokenBucket({ rate: 1000, burst: 1000, clock });
  assert.equal(b.tryTake(1000, PRIORITY_HIGH), true); // recent grants: all high, so normal is owed
  let normalDone = false;
  const waiting = b.take(500, undefined, PRIORITY_NORMAL).then(() => (normalDone = true));
  clock.advance(400); // 400 bytes available, the normal waiter needs 500
  assert.equal(b.tryTake(300, PRIORITY_HIGH), false, 'normal is owed: high waits its turn');
  clock.advance(100);
  await waiting;
  assert.equal(normalDone, true);
  // Normal has now had 500 of 1500 bytes (more than NORMAL_SHARE): high passes a queued normal waiter.
  const late = b.take(100, undefined, PRIORITY_NORMAL);
  clock.advance(50);
  assert.equal(b.tryTake(40, PRIORITY_HIGH), true, 'high goes ahead of the normal waiter');
  assert.equal(b.tryTake(5, PRIORITY_NORMAL), false, 'normal still does not jump its own queue');
  clock.advance(100);
  await late;
});
