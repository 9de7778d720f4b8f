import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { PiecePicker, filePrioritiesToPieces, PickerError, type BlockRequest, type PickerPeer } from '../src/picker.js';

/** mulberry32 as a RandomInt. */
function seeded(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

const key = (r: BlockRequest) => `${r.index}:${r.begin}`;

function peerOf(id: string, has: Set<number> | 'all', extra: Partial<PickerPeer> = {}): PickerPeer {
  return has === 'all' ? { id, has: () => true, hasAll: true, ...extra } : { id, has: (i) => has.has(i), ...extra };
}

test('geometry and validation', () => {
  const p = new PiecePicker({ pieceCount: 3, pieceLength: 32768, totalLength: 32768 * 2 + 100, rng: seeded(1) });
  assert.equal(p.blocksIn(0), 2);
  assert.equal(p.blocksIn(2), 1);
  assert.equal(p.pieceSize(2), 100);
  assert.throws(() => new PiecePicker({ pieceCount: 2, pieceLength: 16384, totalLength: 16384 * 3 }), PickerError);
  p.peerHasAll();
  const reqs = p.pickBlocks(peerOf('a', 'all'), 10);
  assert.equal(reqs.length, 5);
  const last = reqs.find((r) => r.index === 2)!;
  assert.deepEqual(last, { index: 2, begin: 0, length: 100 });
  assert.throws(() => p.blockReceived({ index: 0, begin: 1, length: 16384 }, 'a'), PickerError);
  assert.throws(() => p.blockReceived({ index: 0, begin: 0, length: 5 }, 'a'), PickerError);
  assert.throws(() => p.blockReceived({ index: 9, begin: 0, length: 16384 }, 'a'), PickerError);
  assert.throws(() => p.setPiecePriority(0, 8), PickerError);
});

test('prefers finishing partial pieces; never re-requests outstanding blocks', () => {
  const p = new PiecePicker({ pieceCount: 10, pieceLength: 4 * 16384, totalLength: 10 * 4 * 16384, rng: seeded(2), firstRandomPieces: 0 });
  p.peerHasAll();
  const a = p.pickBlocks(peerOf('a', 'all'), 2);
  assert.equal(a.length, 2);
  assert.equal(a[0].index, a[1].index);
  const b = p.pickBlocks(peerOf('b', 'all'), 2);
  assert.deepEqual(b.map((r) => r.index), [a[0].index, a[0].index], 'second peer finishes the same piece');
  assert.notDeepEqual(new Set(b.map(key)), new Set(a.map(key)));
  const c = p.pickBlocks(peerOf('c', 'all'), 1);
  assert.notEqual(c[0].index, a[0].index);
  assert.equal(p.piecesInFlight, 2);
});

test('rarest first: picks a piece of minimal availability among those the peer has', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 60 }), fc.array(fc.array(fc.boolean(), { minLength: 60, maxLength: 60 }), { minLength: 1, maxLength: 12 }), fc.integer(), (n, bitsets, seed) => {
      const p = new PiecePicker({ pieceCount: n, pieceLength: 16384, totalLength: n * 16384, rng: seeded(seed), firstRandomPieces: 0 });
      for (const bs of bitsets) p.peerBitfield({ has: (i) => bs[i] });
      const mine = bitsets[0];
      const got = p.pickBlocks(peerOf('x', new Set(mine.map((b, i) => (b ? i : -1)).filter((i) => i >= 0 && i < n))), 1);
      const candidates = [...Array(n).keys()].filter((i) => mine[i]);
      if (candidates.length === 0) return assert.equal(got.length, 0);
      assert.equal(got.length, 1);
      const min = Math.min(...candidates.map((i) => p.availability(i)));
      assert.equal(p.availability(got[0].index), min);
    }),
  );
});

test('random tie-break spreads first picks across equally rare pieces', () => {
  const seen = new Set<number>();
  for (let s = 0; s < 50; s++) {
    const p = new PiecePicker({ pieceCount: 20, pieceLength: 16384, totalLength: 20 * 16384, rng: seeded(s), firstRandomPieces: 0 });
    p.peerHasAll();
    seen.add(p.pickBlocks(peerOf('a', 'all'), 1)[0].index);
  }
  assert.ok(seen.size >= 8, `only ${seen.size} distinct first picks`);
});

test('priorities: higher first, 0 never; file priorities map to overlapping pieces', () => {
  const pp = filePrioritiesToPieces([{ length: 10 }, { length: 25 }, { length: 0 }, { length: 5 }], [0, 7, 3, 1], 10);
  assert.deepEqual([...pp], [0, 7, 7, 7]);
  const padded = filePrioritiesToPieces([{ length: 10, offset: 0 }, { length: 10, offset: 10, pad: true }, { length: 10, offset: 20 }], [1, 7, 2], 10);
  assert.deepEqual([...padded], [1, 0, 2]);
  const p = new PiecePicker({ pieceCount: 4, pieceLength: 16384, totalLength: 4 * 16384, rng: seeded(3), firstRandomPieces: 0 });
  p.setFilePriorities([{ length: 16384 }, { length: 16384 * 2 }, { length: 16384 }], [0, 1, 6]);
  p.peerHasAll();
  const order = p.pickBlocks(peerOf('a', 'all'), 10).map((r) => r.index);
  assert.equal(order[0], 3);
  assert.deepEqual(order.slice(1).sort(), [1, 2]);
  assert.ok(!order.includes(0));
  assert.equal(p.wantedRemaining, 3);
});

test('sequential mode picks lowest index first', () => {
  const p = new PiecePicker({ pieceCount: 8, pieceLength: 16384, totalLength: 8 * 16384, rng: seeded(4) });
  p.setSequential(true);
  p.setHave(0);
  p.peerHasAll();
  assert.deepEqual(p.pickBlocks(peerOf('a', 'all'), 3).map((r) => r.index), [1, 2, 3]);
  assert.deepEqual(p.pickBlocks(peerOf('b', new Set([2, 5, 6])), 1).map((r) => r.index), [5]);
  // Partial pieces are finished in index order too.
  const q = new PiecePicker({ pieceCount: 4, pieceLength: 3 * 16384, totalLength: 12 * 16384, rng: seeded(4) });
  q.setSequential(true);
  q.peerHasAll();
  const first = q.pickBlocks(peerOf('a', 'all'), 4);
  assert.deepEqual(first.map((r) => [r.index, r.begin / 16384]), [[0, 0], [0, 1], [0, 2], [1, 0]]);
  q.requestCancelled(first[1], 'a');
  assert.deepEqual(q.pickBlocks(peerOf('b', 'all'), 3).map((r) => [r.index, r.begin / 16384]), [[0, 1], [1, 1], [1, 2]]);
});

test('helpers: isInteresting, bitfield, requestsOf, outstanding', () => {
  const p = new PiecePicker({ pieceCount: 10, pieceLength: 16384, totalLength: 10 * 16384, rng: seeded(9) });
  p.setHave(0);
  p.setHave(9);
  p.setPiecePriority(5, 0);
  assert.deepEqual([...p.bitfield()], [0x80, 0x40]);
  assert.equal(p.isInteresting(peerOf('x', new Set([0, 9, 5]))), false);
  assert.equal(p.isInteresting(peerOf('x', new Set([0, 3]))), true);
  assert.equal(p.isInteresting(peerOf('x', 'all')), true);
  const got = p.pickBlocks(peerOf('x', new Set([3, 4])), 5);
  assert.equal(got.length, 2);
  assert.deepEqual(p.requestsOf('x').map(key).sort(), got.map(key).sort());
  assert.equal(p.outstanding('x'), 2);
  p.peerBitfield(Uint8Array.from([0xff, 0xc0]));
  assert.equal(p.availability(3), 1);
  p.peerLost(Uint8Array.from([0xff, 0xc0]));
  assert.equal(p.availability(3), 0);
});

test('choked: only allowed-fast pieces', () => {
  const p = new PiecePicker({ pieceCount: 8, pieceLength: 16384, totalLength: 8 * 16384, rng: seeded(5) });
  p.peerHasAll();
  assert.deepEqual(p.pickBlocks(peerOf('a', 'all', { choked: true }), 5), []);
  const got = p.pickBlocks(peerOf('a', 'all', { choked: true, fastAllowed: new Set([6, 2, 99]) }), 5).map((r) => r.index).sort();
  assert.deepEqual(got, [2, 6]);
});

test('end-game: ≤ 2 copies, cancel list, hash failure and contributors, peerGone', () => {
  const p = new PiecePicker({ pieceCount: 2, pieceLength: 2 * 16384, totalLength: 4 * 16384, rng: seeded(6) });
  p.peerHasAll();
  const a = p.pickBlocks(peerOf('a', 'all'), 10);
  assert.equal(a.length, 4);
  assert.ok(p.inEndgame);
  const b = p.pickBlocks(peerOf('b', 'all'), 10);
  assert.equal(b.length, 4, 'duplicates in end-game');
  assert.equal(p.pickBlocks(peerOf('c', 'all'), 10).length, 0, 'at most 2 copies');
  assert.equal(p.pickBlocks(peerOf('a', 'all'), 10).length, 0, 'never twice to the same peer');
  const r0 = p.blockReceived(a[0], 'b');
  assert.deepEqual(r0.cancel, ['a']);
  assert.equal(r0.pieceComplete, false);
  assert.equal(p.blockReceived(a[0], 'a').duplicate, true);
  const sibling = a.find((r) => r.index === a[0].index && r.begin !== a[0].begin)!;
  const r1 = p.blockReceived(sibling, 'a');
  assert.equal(r1.pieceComplete, true);
  assert.deepEqual(r1.cancel, ['b']);
  assert.deepEqual(p.contributors(a[0].index).sort(), ['a', 'b']);
  assert.deepEqual(p.pieceFailed(a[0].index).sort(), ['a', 'b']);
  assert.deepEqual(p.contributors(a[0].index).sort(), ['a', 'b']);
  assert.equal(p.inEndgame, false);
  const again = p.pickBlocks(peerOf('c', 'all'), 10);
  assert.deepEqual(again.map(key).sort(), [a[0], sibling].map(key).sort(), 'failed piece is requestable again');
  // The other piece: a and b each hold both blocks; when a leaves, b still has them, no free blocks appear.
  p.peerGone('a');
  assert.equal(p.outstanding('a'), 0);
  assert.equal(p.pickBlocks(peerOf('d', 'all'), 10).length, 4, 'd duplicates the blocks b and c each hold alone');
  p.peerGone('b');
  p.peerGone('c');
  p.peerGone('d');
  assert.equal(p.pickBlocks(peerOf('e', 'all'), 10).length, 4, 'everything requestable again');
});

test('property: random swarm operations keep invariants and the download always completes', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 24 }),
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 0, max: 3 }),
      fc.integer(),
      fc.boolean(),
      fc.array(fc.integer({ min: 0, max: 7 }), { minLength: 24, maxLength: 24 }),
      (pieces, blocksPerPiece, blockSize, tail, seed, sequential, prios) => {
        const pieceLength = blocksPerPiece * blockSize;
        const totalLength = pieces * pieceLength - Math.min(tail, pieceLength - 1);
        const rnd = seeded(seed ^ 0x5bd1e995);
        const p = new PiecePicker({ pieceCount: pieces, pieceLength, totalLength, blockSize, rng: seeded(seed), firstRandomPieces: 2 });
        p.setSequential(sequential);
        for (let i = 0; i < pieces; i++) p.setPiecePriority(i, prios[i]);
        // Peers: random subsets plus one seed that comes and goes.
        const peers = new Map<string, { peer: PickerPeer; has: Set<number> | 'all'; out: BlockRequest[]; present: boolean }>();
        for (let k = 0; k < 4; k++) {
          const has = new Set<number>();
          for (let i = 0; i < pieces; i++) if (rnd(2)) has.add(i);
          peers.set(`p${k}`, { peer: peerOf(`p${k}`, has), has, out: [], present: true });
          p.peerBitfield({ has: (i) => has.has(i) });
        }
        peers.set('seed', { peer: peerOf('seed', 'all'), has: 'all', out: [], present: true });
        p.peerHasAll();
        const owners = new Map<string, Set<string>>();
        const received = new Set<string>();
        let failedOnce = false;
        for (let step = 0; step < 20000 && !p.isDone(); step++) {
          const ids = [...peers.keys()];
          const id = ids[rnd(ids.length)];
          const st = peers.get(id)!;
          const op = rnd(10);
          if (!st.present) {
            if (op < 3) {
              st.present = true;
              if (st.has === 'all') p.peerHasAll();
              else p.peerBitfield({ has: (i) => (st.has as Set<number>).has(i) });
            }
            continue;
          }
          if (op < 4) {
            const endBefore = p.inEndgame;
            const got = p.pickBlocks(st.peer, 1 + rnd(4));
            for (const r of got) {
              assert.ok(st.has === 'all' || st.has.has(r.index), 'picked a piece the peer lacks');
              assert.ok(p.piecePriority(r.index) > 0, 'picked a skipped piece');
              assert.ok(!p.have(r.index), 'picked a piece we have');
              assert.ok(!received.has(key(r)), 'picked a received block');
              const o = owners.get(key(r)) ?? new Set();
              assert.ok(!o.has(id), 'same block twice to one peer');
              if (o.size > 0) assert.ok(endBefore || p.inEndgame, 'duplicate request outside end-game');
              o.add(id);
              assert.ok(o.size <= 2, 'more than 2 copies');
              owners.set(key(r), o);
              st.out.push(r);
            }
          } else if (op < 8 && st.out.length > 0) {
            const r = st.out.splice(rnd(st.out.length), 1)[0];
            const res = p.blockReceived(r, id);
            owners.get(key(r))?.delete(id);
            if (!res.duplicate) {
              received.add(key(r));
              for (const c of res.cancel) {
                owners.get(key(r))!.delete(c);
                const other = peers.get(c)!;
                other.out = other.out.filter((x) => key(x) !== key(r));
              }
            }
            if (res.pieceComplete) {
              if (!failedOnce && rnd(4) === 0) {
                failedOnce = true;
                p.pieceFailed(r.index);
                for (const k of [...received]) if (k.startsWith(`${r.index}:`)) received.delete(k);
              } else p.setHave(r.index);
            }
          } else if (op === 8 && st.out.length > 0) {
            const r = st.out.splice(rnd(st.out.length), 1)[0];
            p.requestCancelled(r, id);
            owners.get(key(r))?.delete(id);
          } else if (op === 9 && rnd(5) === 0) {
            p.peerGone(id);
            if (st.has === 'all') p.peerLost('all');
            else p.peerLost({ has: (i) => (st.has as Set<number>).has(i) });
            for (const r of st.out) owners.get(key(r))?.delete(id);
            st.out = [];
            st.present = false;
          }
          assert.equal(p.outstanding(id), st.present ? st.out.length : 0);
        }
        assert.ok(p.isDone(), `download did not complete (${p.wantedRemaining} pieces left)`);
        for (let i = 0; i < pieces; i++) assert.equal(p.have(i), prios[i] > 0);
      },
    ),
    { numRuns: 300 },
  );
});

test('micro-benchmark: 1 GiB torrent, 16 KiB blocks (65,536 blocks), 100 peers', () => {
  const pieceLength = 256 * 1024;
  const pieceCount = 4096;
  const p = new PiecePicker({ pieceCount, pieceLength, totalLength: pieceCount * pieceLength, rng: seeded(42) });
  const rnd = seeded(99);
  const peers: { peer: PickerPeer; out: BlockRequest[] }[] = [];
  for (let k = 0; k < 100; k++) {
    if (k < 20) {
      p.peerHasAll();
      peers.push({ peer: peerOf(`s${k}`, 'all'), out: [] });
    } else {
      const bits = new Uint8Array(pieceCount);
      for (let i = 0; i < pieceCount; i++) bits[i] = rnd(10) < 7 ? 1 : 0;
      p.peerBitfield({ has: (i) => bits[i] === 1 });
      peers.push({ peer: { id: `l${k}`, has: (i) => bits[i] === 1 }, out: [] });
    }
  }
  let picks = 0, calls = 0;
  const t0 = performance.now();
  let k = 0;
  while (!p.isComplete() && calls < 10_000_000) {
    const st = peers[k++ % peers.length];
    // Deliver what this peer had outstanding, then refill its pipeline (16 blocks).
    for (const r of st.out) {
      const res = p.blockReceived(r, st.peer.id);
      for (const c of res.cancel) {
        const o = peers.find((x) => x.peer.id === c)!;
        o.out = o.out.filter((x) => x.index !== r.index || x.begin !== r.begin);
      }
      if (res.pieceComplete) p.setHave(r.index);
    }
    st.out = p.pickBlocks(st.peer, 16);
    picks += st.out.length;
    calls++;
  }
  const ms = performance.now() - t0;
  assert.ok(p.isComplete());
  const line = `picker bench: ${picks} blocks picked in ${calls} calls, ${ms.toFixed(0)} ms → ${Math.round((picks / ms) * 1000).toLocaleString('en')} blocks/s (${((picks * 16384) / (ms / 1000) / 1e9).toFixed(1)} GB/s of requests), including blockReceived/setHave`;
  console.log(line);
});

test('piece affinity: a much slower peer does not join a piece a fast peer is finishing; comparable peers do', () => {
  const BS = 16384;
  const p = new PiecePicker({ pieceCount: 6, pieceLength: 4 * BS, totalLength: 6 * 4 * BS, rng: seeded(7), firstRandomPieces: 0 });
  p.peerHasAll();
  const fast = p.pickBlocks(peerOf('fast', 'all', { rate: 1_000_000 }), 2);
  const piece = fast[0].index;
  assert.ok(fast.every((r) => r.index === piece));
  // 20 KB/s vs 1 MB/s: another class. It starts a new piece rather than hold `piece` with its slow blocks.
  const slow = p.pickBlocks(peerOf('slow', 'all', { rate: 20_000 }), 2);
  assert.equal(slow.length, 2);
  assert.ok(slow.every((r) => r.index !== piece), 'slow peer stays out of the fast peer\'s piece');
  // 400 KB/s is within AFFINITY_RATIO of 1 MB/s: finishes the fast peer's piece first (plain step 1).
  const mid = p.pickBlocks(peerOf('mid', 'all', { rate: 400_000 }), 2);
  assert.deepEqual(mid.map((r) => r.index), [piece, piece]);
  // The starter gives up its requests (choke/disconnect): the piece is anyone's again.
  p.peerGone('fast');
  p.peerGone('mid');
  const slow2 = p.pickBlocks(peerOf('slow', 'all', { rate: 20_000 }), 8);
  assert.ok(slow2.some((r) => r.index === piece), 'abandoned piece is picked up by the slow peer');
});

test('piece affinity: a fast peer tries new pieces before joining a slow peer\'s piece, then finishes it', () => {
  const BS = 16384;
  const p = new PiecePicker({ pieceCount: 3, pieceLength: 4 * BS, totalLength: 3 * 4 * BS, rng: seeded(8), firstRandomPieces: 0 });
  p.peerHasAll();
  const slow = p.pickBlocks(peerOf('slow', 'all', { rate: 10_000 }), 1);
  const piece = slow[0].index;
  const fast = p.pickBlocks(peerOf('fast', 'all', { rate: 2_000_000 }), 12);
  // 8 blocks of the two untouched pieces first, then the 3 free blocks of the slow peer's piece and a second copy
  // of the block only the slow peer holds (the piece completes at the fast peer's speed).
  assert.equal(fast.length, 12);
  assert.deepEqual(fast.slice(0, 8).map((r) => r.index).sort(), [0, 1, 2].filter((i) => i !== piece).flatMap((i) => [i, i, i, i]));
  assert.ok(fast.slice(8).every((r) => r.index === piece));
  // Unclassed peers (no rate) keep the plain policy.
  const q = new PiecePicker({ pieceCount: 3, pieceLength: 4 * BS, totalLength: 3 * 4 * BS, rng: seeded(8), firstRandomPieces: 0 });
  q.peerHasAll();
  const a = q.pickBlocks(peerOf('a', 'all', { rate: 1_000_000 }), 1);
  const b = q.pickBlocks(peerOf('b', 'all'), 1);
  assert.equal(b[0].index, a[0].index);
});

test('maxPieces: requests stay within the peer\'s piece limit (whole pieces first), and more start as pieces finish', () => {
  const BS = 16384;
  const p = new PiecePicker({ pieceCount: 8, pieceLength: 4 * BS, totalLength: 8 * 4 * BS, rng: seeded(9), firstRandomPieces: 0 });
  p.peerHasAll();
  const peer = peerOf('prov', 'all', { maxPieces: 2 });
  const first = p.pickBlocks(peer, 100);
  assert.equal(first.length, 8, 'two whole pieces');
  assert.equal(new Set(first.map((r) => r.index)).size, 2);
  assert.deepEqual(p.pickBlocks(peer, 100), [], 'at the limit: nothing more');
  // Another peer takes a third piece; the limited peer still may not join it.
  const other = p.pickBlocks(peerOf('other', 'all'), 2);
  assert.ok(other.every((r) => !first.some((f) => f.index === r.index)));
  assert.deepEqual(p.pickBlocks(peer, 100), []);
  // One of its pieces completes: room for one more piece.
  const done = first[0].index;
  for (const r of first.filter((x) => x.index === done)) p.blockReceived(r, 'prov');
  p.setHave(done);
  const next = p.pickBlocks(peer, 100);
  assert.equal(new Set(next.map((r) => r.index)).size, 1);
  assert.ok(next.length >= 2);
  const all = [...first.filter((x) => x.index !== done), ...next];
  assert.ok(new Set(all.map((r) => r.index)).size <= 2);
  // Sequential mode honours the limit too.
  const q = new PiecePicker({ pieceCount: 8, pieceLength: 4 * BS, totalLength: 8 * 4 * BS, rng: seeded(9), firstRandomPieces: 0 });
  q.peerHasAll();
  q.setSequential(true);
  assert.deepEqual([...new Set(q.pickBlocks(peerOf('s', 'all', { maxPieces: 1 }), 100).map((r) => r.index))], [0]);
});

test('maxPieces (property): a limited peer never has requests in more pieces than its limit, whatever the others do', () => {
  // The picker skips building the limited peer's held set when the open pieces plus what one call can start fit under
  // the limit; this drives it on both sides of that bound (few and many open pieces, small and large calls).
  const BS = 16384;
  const op = fc.oneof(
    fc.record({ kind: fc.constant<'pick'>('pick'), who: fc.constantFrom('prov', 'other'), max: fc.integer({ min: 1, max: 80 }) }),
    fc.record({ kind: fc.constant<'recv'>('recv'), who: fc.constantFrom('prov', 'other'), n: fc.integer({ min: 1, max: 12 }), at: fc.nat() }),
  );
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 1000 }), fc.array(op, { maxLength: 60 }), (lim, seed, ops) => {
      const pieceCount = 48;
      // A short last piece (2 blocks of 4), as in most torrents.
      const p = new PiecePicker({ pieceCount, pieceLength: 4 * BS, totalLength: 47 * 4 * BS + 2 * BS, rng: seeded(seed), firstRandomPieces: 0 });
      p.peerHasAll();
      p.peerHasAll();
      const out = new Map<string, BlockRequest[]>([['prov', []], ['other', []]]);
      const got = new Map<number, Set<number>>();
      for (const o of ops) {
        if (o.kind === 'pick') {
          const reqs = p.pickBlocks(peerOf(o.who, 'all', o.who === 'prov' ? { maxPieces: lim } : {}), o.max);
          out.get(o.who)!.push(...reqs);
        } else {
          const list = out.get(o.who)!;
          for (let k = 0; k < o.n && list.length > 0; k++) {
            const r = list.splice(o.at % list.length, 1)[0];
            const res = p.blockReceived(r, o.who);
            const s = got.get(r.index) ?? new Set<number>();
            s.add(r.begin);
            got.set(r.index, s);
            for (const other of res.cancel) {
              const l = out.get(other)!;
              const i = l.findIndex((x) => x.index === r.index && x.begin === r.begin);
              if (i >= 0) l.splice(i, 1);
            }
            if (res.pieceComplete) {
              p.setHave(r.index);
              for (const l of out.values()) for (let i = l.length - 1; i >= 0; i--) if (l[i].index === r.index) l.splice(i, 1);
            }
          }
        }
        const pieces = new Set(out.get('prov')!.map((r) => r.index));
        assert.ok(pieces.size <= lim, `limit ${lim}, requests in ${pieces.size} pieces`);
      }
    }),
    { numRuns: 300 },
  );
});

test('maxPieces: a limited peer first finishes the pieces it sent blocks of, copying blocks others still owe', () => {
  const BS = 16384;
  const p = new PiecePicker({ pieceCount: 6, pieceLength: 4 * BS, totalLength: 6 * 4 * BS, rng: seeded(10), firstRandomPieces: 0 });
  p.peerHasAll();
  // An unlimited peer starts piece X with 3 blocks; the provider gets the 4th and sends it.
  const slow = p.pickBlocks(peerOf('slow', 'all'), 3);
  const x = slow[0].index;
  const prov = peerOf('prov', 'all', { maxPieces: 1 });
  const first = p.pickBlocks(prov, 1);
  assert.deepEqual(first.map((r) => r.index), [x]);
  p.blockReceived(first[0], 'prov');
  // X is unfinished and the provider contributed to it: X counts against its limit (no new piece), and it asks for
  // copies of the three blocks the other peer still owes, so X can complete from the provider alone.
  const next = p.pickBlocks(prov, 10);
  assert.equal(next.length, 3);
  assert.ok(next.every((r) => r.index === x));
  for (const r of next) assert.ok(slow.some((s) => s.index === r.index && s.begin === r.begin));
});
