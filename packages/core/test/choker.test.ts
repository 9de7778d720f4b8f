import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { StandardChoker, type ChokerPeer } from '../src/choker.js';

/** Deterministic RandomInt from a seed (LCG). */
function seeded(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
}

const peerArb = fc.record({
  interested: fc.boolean(),
  downloadRate: fc.integer({ min: 0, max: 1_000_000 }),
  uploadRate: fc.integer({ min: 0, max: 1_000_000 }),
  isSeed: fc.boolean(),
  connectedAt: fc.integer({ min: 0, max: 1_000_000 }),
  unchoked: fc.boolean(),
  snubbed: fc.boolean(),
});

function mkPeers(list: Omit<ChokerPeer, 'id'>[]): ChokerPeer[] {
  return list.map((p, i) => ({ ...p, id: `p${i}` }));
}

test('properties: ≤ slots+1 unchoked, uninterested/snubbed never take regular slots, deterministic', () => {
  fc.assert(
    fc.property(fc.array(peerArb, { maxLength: 40 }), fc.integer({ min: 0, max: 8 }), fc.boolean(), fc.integer(), fc.integer({ min: 1, max: 6 }), (raw, slots, seeding, seed, rounds) => {
      const peers = mkPeers(raw);
      const a = new StandardChoker({ rng: seeded(seed) });
      const b = new StandardChoker({ rng: seeded(seed) });
      for (let r = 0; r < rounds; r++) {
        const now = 1_000_000 + r * 10_000;
        const ra = a.rechoke({ peers, now, seeding, slots });
        const rb = b.rechoke({ peers, now, seeding, slots });
        assert.deepEqual([...ra.unchoke].sort(), [...rb.unchoke].sort());
        assert.equal(ra.optimistic, rb.optimistic);
        assert.ok(ra.unchoke.size <= slots + 1);
        const regular = [...ra.unchoke].filter((id) => id !== ra.optimistic);
        assert.ok(regular.length <= slots);
        for (const id of regular) {
          const p = peers.find((x) => x.id === id)!;
          assert.ok(p.interested, 'uninterested peer in a regular slot');
          assert.ok(!p.snubbed, 'snubbed peer in a regular slot');
        }
        if (ra.optimistic !== undefined) {
          assert.ok(ra.unchoke.has(ra.optimistic));
          assert.ok(peers.find((x) => x.id === ra.optimistic)!.interested);
        }
      }
    }),
  );
});

test('leeching ranks by download rate, seeding by upload rate', () => {
  const base = { interested: true, connectedAt: 0, unchoked: false };
  const peers: ChokerPeer[] = [
    { ...base, id: 'a', downloadRate: 100, uploadRate: 900 },
    { ...base, id: 'b', downloadRate: 500, uploadRate: 100 },
    { ...base, id: 'c', downloadRate: 300, uploadRate: 500 },
    { ...base, id: 'd', downloadRate: 0, uploadRate: 0, interested: false },
  ];
  const leech = new StandardChoker({ rng: seeded(1) }).rechoke({ peers, now: 100_000, seeding: false, slots: 2 });
  assert.ok(leech.unchoke.has('b') && leech.unchoke.has('c'));
  assert.equal(leech.optimistic, 'a', 'the only remaining interested peer gets the optimistic slot');
  const seed = new StandardChoker({ rng: seeded(1) }).rechoke({ peers, now: 100_000, seeding: true, slots: 2 });
  assert.ok(seed.unchoke.has('a') && seed.unchoke.has('c'));
  assert.equal(seed.optimistic, 'b');
  assert.ok(!seed.unchoke.has('d'));
});

test('optimistic unchoke rotates every 30 s of the clock and new peers get 3x the chance', () => {
  const peers: ChokerPeer[] = [];
  for (let i = 0; i < 10; i++) peers.push({ id: `old${i}`, interested: true, downloadRate: 0, uploadRate: 0, connectedAt: 0, unchoked: false });
  for (let i = 0; i < 10; i++) peers.push({ id: `new${i}`, interested: true, downloadRate: 0, uploadRate: 0, connectedAt: 0, unchoked: false });
  const c = new StandardChoker({ rng: seeded(7) });
  let newCount = 0, total = 0;
  let prev: string | undefined;
  for (let r = 0; r < 3000; r++) {
    const now = 1_000_000 + r * 10_000; // the 10 s rounds
    for (const p of peers) if (p.id.startsWith('new')) p.connectedAt = now - 10_000; // always "new" (< 60 s)
    const res = c.rechoke({ peers, now, seeding: false, slots: 0 });
    assert.equal(res.unchoke.size, 1);
    if (r % 3 !== 0) assert.equal(res.optimistic, prev, 'kept between rotations');
    else {
      total++;
      if (res.optimistic!.startsWith('new')) newCount++;
    }
    prev = res.optimistic;
  }
  const share = newCount / total; // expected 30/40 = 0.75
  assert.ok(share > 0.68 && share < 0.82, `new-peer share ${share}`);
});

test('extra rechokes (interest changes, bids) do not rotate the optimistic slot: only the clock does', () => {
  const peers: ChokerPeer[] = [];
  for (let i = 0; i < 20; i++) peers.push({ id: `p${i}`, interested: true, downloadRate: 0, uploadRate: 0, connectedAt: 0, unchoked: false });
  const c = new StandardChoker({ rng: seeded(3) });
  const first = c.rechoke({ peers, now: 100_000, seeding: false, slots: 0 }).optimistic;
  for (let k = 1; k <= 500; k++) assert.equal(c.rechoke({ peers, now: 100_000 + k * 50, seeding: false, slots: 0 }).optimistic, first);
  // 30 s after the pick, the next call draws again; over a few intervals the pick changes.
  const later = new Set<string | undefined>();
  for (let k = 1; k <= 10; k++) later.add(c.rechoke({ peers, now: 100_000 + k * 30_000, seeding: false, slots: 0 }).optimistic);
  assert.ok(later.size > 1, 'rotated on the clock');
});

test('optimistic peer that leaves or loses interest is replaced immediately', () => {
  const mk = (id: string, interested = true): ChokerPeer => ({ id, interested, downloadRate: 0, uploadRate: 0, connectedAt: 0, unchoked: false });
  const c = new StandardChoker({ rng: seeded(3) });
  const first = c.rechoke({ peers: [mk('x'), mk('y')], now: 0, seeding: false, slots: 0 }).optimistic!;
  const other = first === 'x' ? 'y' : 'x';
  const second = c.rechoke({ peers: [mk(first, false), mk(other)], now: 0, seeding: false, slots: 0 });
  assert.equal(second.optimistic, other);
  const third = c.rechoke({ peers: [], now: 0, seeding: false, slots: 4 });
  assert.equal(third.optimistic, undefined);
  assert.equal(third.unchoke.size, 0);
});

test('accepts a Math.random-style rng (float in [0,1)) as well as a RandomInt', () => {
  const peers: ChokerPeer[] = [];
  for (let i = 0; i < 4; i++) peers.push({ id: `p${i}`, interested: true, downloadRate: 0, uploadRate: 0, connectedAt: 0, unchoked: false });
  const floats = [0.1, 0.3, 0.6, 0.9];
  let k = 0;
  const c = new StandardChoker({ rng: () => floats[k++ % 4], optimisticIntervalMs: 0 });
  const picked = floats.map(() => c.rechoke({ peers, now: 1e9, seeding: false, slots: 0 }).optimistic);
  assert.deepEqual(picked, ['p0', 'p1', 'p2', 'p3']);
});
