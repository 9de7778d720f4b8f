import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { runAuction, AuctionChoker, type AuctionPeer, type OptimisticState } from '../src/auction.js';
import { StandardChoker } from '../src/core-choker.js';

/** Deterministic PRNG (mulberry32) so two runs can be fed identical random streams. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const arbPeer = (i: number) =>
  fc.record({
    interested: fc.boolean(),
    downloadRate: fc.integer({ min: 0, max: 5 }).map((x) => x * 1000),
    uploadRate: fc.integer({ min: 0, max: 5 }).map((x) => x * 1000),
    isSeed: fc.boolean(),
    connectedAt: fc.integer({ min: 0, max: 100_000 }),
    lastUnchokedAt: fc.option(fc.integer({ min: 0, max: 3 }).map((x) => x * 10_000), { nil: undefined }),
    unchoked: fc.boolean(),
    snubbed: fc.boolean(),
    bid: fc.option(fc.bigInt({ min: 0n, max: 20n }), { nil: undefined }),
    funded: fc.boolean(),
    banned: fc.constant(false),
  }).map((p): AuctionPeer => ({ id: `p${i}`, ...p }));

const arbPeers = fc.integer({ min: 0, max: 12 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => arbPeer(i))));

test('with no bids the auction is exactly the legacy choker, round after round', () => {
  fc.assert(
    fc.property(fc.array(arbPeers, { minLength: 1, maxLength: 6 }), fc.integer({ min: 0, max: 5 }), fc.boolean(), fc.integer(), (rounds, slots, seeding, seed) => {
      const a = new StandardChoker({ rng: prng(seed) });
      const b = new StandardChoker({ rng: prng(seed) });
      let opt: OptimisticState = {};
      rounds.forEach((peers, r) => {
        const noBids = peers.map((p) => ({ ...p, bid: undefined }));
        const now = 100_000 + r * 10_000;
        const legacy = a.rechoke({ peers: noBids, now, seeding, slots });
        const auc = runAuction({ peers: noBids, slots, reservePrice: 0n, seeding, now, legacy: b, rng: prng(seed + r), optimistic: opt });
        opt = auc.optimisticState;
        assert.deepEqual([...auc.unchoke].sort(), [...legacy.unchoke].sort());
        assert.equal(auc.optimistic, legacy.optimistic);
        assert.equal(auc.winners.size, 0);
      });
    }),
    { numRuns: 500 },
  );
});

test('prices: ≥ reserve, ≤ every winner’s bid, equal to the highest losing eligible bid; at most slots+1 unchoked', () => {
  fc.assert(
    fc.property(arbPeers, fc.integer({ min: 0, max: 5 }), fc.bigInt({ min: 0n, max: 10n }), fc.boolean(), fc.integer(), (peers, slots, reserve, seeding, seed) => {
      const r = runAuction({ peers, slots, reservePrice: reserve, seeding, now: 200_000, legacy: new StandardChoker({ rng: prng(seed) }), rng: prng(seed) });
      assert.ok(r.unchoke.size <= slots + 1);
      assert.ok(r.winners.size <= slots);
      const byId = new Map(peers.map((p) => [p.id, p]));
      const eligible = peers.filter((p) => p.interested && p.funded && (p.bid ?? 0n) > 0n && (p.bid ?? 0n) >= reserve);
      assert.equal(r.winners.size, Math.min(slots, eligible.length));
      const losers = eligible.filter((p) => !r.winners.has(p.id));
      const highestLosing = losers.reduce((m, p) => (p.bid! > m ? p.bid! : m), 0n);
      for (const [id, price] of r.winners) {
        const p = byId.get(id)!;
        assert.ok(r.unchoke.has(id));
        assert.ok(price >= reserve, 'price below reserve');
        assert.ok(price <= p.bid!, 'price above own bid');
        assert.equal(price, highestLosing > reserve ? highestLosing : reserve);
        // Every winner outbids every loser.
        for (const l of losers) assert.ok(p.bid! >= l.bid!);
      }
      if (r.optimistic !== undefined) assert.ok(!r.winners.has(r.optimistic));
    }),
    { numRuns: 1000 },
  );
});

test('raising a bid never lowers a peer’s rank (and never makes it lose)', () => {
  fc.assert(
    fc.property(arbPeers.filter((ps) => ps.length > 0), fc.nat(), fc.bigInt({ min: 1n, max: 10n }), fc.integer({ min: 0, max: 5 }), fc.bigInt({ min: 0n, max: 5n }), fc.integer(), (peers, pick, raise, slots, reserve, seed) => {
      const i = pick % peers.length;
      const run = (ps: AuctionPeer[]) =>
        runAuction({ peers: ps, slots, reservePrice: reserve, seeding: false, now: 200_000, legacy: new StandardChoker({ rng: prng(seed) }), rng: prng(seed) });
      const before = run(peers);
      const raised = peers.map((p, j) => (j === i ? { ...p, bid: (p.bid ?? 0n) + raise } : p));
      const after = run(raised);
      const id = peers[i].id;
      const rb = before.ranking.indexOf(id), ra = after.ranking.indexOf(id);
      if (rb >= 0) assert.ok(ra >= 0 && ra <= rb, `rank went from ${rb} to ${ra}`);
      if (before.winners.has(id)) assert.ok(after.winners.has(id));
    }),
    { numRuns: 1000 },
  );
});

test('worked example: 3 slots, 5 bidders, reserve 2 → top 3 pay the 4th bid', () => {
  const mk = (id: string, bid: bigint, rate = 0): AuctionPeer => ({ id, interested: true, downloadRate: rate, uploadRate: rate, connectedAt: 0, unchoked: false, bid, funded: true });
  const peers = [mk('a', 10n), mk('b', 7n), mk('c', 9n), mk('d', 5n), mk('e', 3n), { ...mk('x', 0n, 9999) }];
  const r = runAuction({ peers, slots: 3, reservePrice: 2n, seeding: true, now: 0, legacy: new StandardChoker({ rng: () => 0 }), rng: () => 0.5 });
  assert.deepEqual(r.ranking, ['a', 'c', 'b', 'd', 'e']);
  assert.deepEqual([...r.winners].sort(), [['a', 5n], ['b', 5n], ['c', 5n]]);
  assert.equal(r.clearingPrice, 5n);
  // No regular slot left; the optimistic slot goes to one of the others.
  assert.equal(r.unchoke.size, 4);
  // Fewer bidders than slots: price is the reserve; the free slot goes to the fastest reciprocating peer.
  const r2 = runAuction({ peers: [mk('a', 10n), mk('b', 1n), mk('x', 0n, 9999), mk('y', 0n, 1)], slots: 2, reservePrice: 2n, seeding: true, now: 0, legacy: new StandardChoker({ rng: () => 0.99 }), rng: () => 0.5 });
  assert.deepEqual([...r2.winners], [['a', 2n]]);
  assert.ok(r2.unchoke.has('x'));
  // Equal bids: the data rate breaks the tie.
  const r3 = runAuction({ peers: [mk('a', 4n, 10), mk('b', 4n, 20)], slots: 1, reservePrice: 0n, seeding: true, now: 0, legacy: new StandardChoker({ rng: () => 0 }), rng: () => 0.5 });
  assert.deepEqual([...r3.winners], [['b', 4n]]);
});

test('banned and unfunded bidders never win; banned peers are never unchoked', () => {
  const mk = (id: string, bid: bigint, extra: Partial<AuctionPeer> = {}): AuctionPeer => ({ id, interested: true, downloadRate: 0, uploadRate: 5, connectedAt: 0, unchoked: false, bid, funded: true, ...extra });
  const r = runAuction({
    peers: [mk('rich-banned', 100n, { banned: true }), mk('unfunded', 50n, { funded: false }), mk('ok', 1n)],
    slots: 1, reservePrice: 0n, seeding: true, now: 0, legacy: new StandardChoker({ rng: () => 0 }), rng: () => 0.5,
  });
  // No other eligible bid and reserve 0: the sole winner pays the reserve, 0.
  assert.deepEqual([...r.winners], [['ok', 0n]]);
  assert.ok(!r.unchoke.has('rich-banned'));
});

test('optimistic slot: bids only break ties among peers choked equally long, and the pick is kept until rotation', () => {
  const mk = (id: string, extra: Partial<AuctionPeer>): AuctionPeer => ({ id, interested: true, downloadRate: 0, uploadRate: 0, connectedAt: 0, unchoked: false, ...extra });
  // Regular slots 0: only the optimistic slot exists. Legacy picks `n1` (rng 0 → first in pool).
  const peers = [mk('n1', {}), mk('n2', { bid: 3n, funded: true }), mk('old', { lastUnchokedAt: 5, bid: 9n, funded: true })];
  const legacy = new StandardChoker({ rng: () => 0 });
  const r = runAuction({ peers, slots: 0, reservePrice: 0n, seeding: true, now: 1_000_000, legacy, rng: () => 0.5 });
  // n1 and n2 were never unchoked (tie); n2 bids, so it takes the slot. `old` (bid 9) waited a different time: no.
  assert.equal(r.optimistic, 'n2');
  assert.deepEqual([...r.unchoke], ['n2']);
  assert.equal(r.winners.size, 0); // optimistic slot is free
  // Next round (no rotation): the legacy keeps n1, we keep n2.
  const r2 = runAuction({ peers, slots: 0, reservePrice: 0n, seeding: true, now: 1_010_000, legacy, rng: () => 0.5, optimistic: r.optimisticState });
  assert.equal(r2.optimistic, 'n2');
  // A legacy pick with a different wait time than any bidder stays untouched.
  const r3 = runAuction({ peers: [mk('n1', {}), mk('old', { lastUnchokedAt: 5, bid: 9n, funded: true })], slots: 0, reservePrice: 0n, seeding: true, now: 1_000_000, legacy: new StandardChoker({ rng: () => 0 }), rng: () => 0.5 });
  assert.equal(r3.optimistic, 'n1');
});

test('AuctionChoker implements the engine policy and reports winners before returning', () => {
  const bids = new Map([['a', { bid: 4n, funded: true }], ['b', { bid: 2n, funded: true }]]);
  const seen: string[] = [];
  const ch = new AuctionChoker({ legacy: new StandardChoker({ rng: () => 0 }), bidOf: (id) => bids.get(id), reservePrice: () => 1n, rng: () => 0.5, onResult: (r) => seen.push(...[...r.winners].map(([k, v]) => `${k}:${v}`)) });
  const peer = (id: string) => ({ id, interested: true, downloadRate: 0, uploadRate: 0, connectedAt: 0, unchoked: false });
  const res = ch.rechoke({ peers: [peer('a'), peer('b'), peer('c')], now: 0, seeding: true, slots: 1 });
  assert.deepEqual(seen, ['a:2']);
  assert.ok(res.unchoke.has('a'));
  assert.equal(res.unchoke.size, 2);
  assert.equal(ch.lastResult?.clearingPrice, 2n);
});
