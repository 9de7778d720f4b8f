import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { PeerTable, SwarmStore, EVENT_NONE, EVENT_STARTED, EVENT_COMPLETED, EVENT_STOPPED } from '../src/swarm.js';
import { serializeStore, deserializeInto, StateFileError } from '../src/persist.js';

function v4(a: number, port: number): Buffer {
  const b = Buffer.alloc(6);
  b.writeUInt32BE(a >>> 0, 0);
  b.writeUInt16BE(port, 4);
  return b;
}
const IH = 'A'.repeat(20);

test('PeerTable matches a Map model under random add/remove/find (linear and indexed modes)', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.constantFrom('add', 'del', 'find'), fc.integer({ min: 0, max: 40 })), { maxLength: 400 }),
      (ops) => {
        const t = new PeerTable(6);
        const model = new Map<string, number>();
        for (const [op, k] of ops) {
          const key = v4(0x0a000000 + k * 97, 1000 + k);
          const hex = key.toString('hex');
          const i = t.find(key, 0);
          assert.equal(i >= 0, model.has(hex));
          if (op === 'add' && i < 0) {
            t.add(key, 0, k % 3 === 0 ? 0x80000000 | k : k);
            model.set(hex, k);
          } else if (op === 'del' && i >= 0) {
            t.removeAt(i);
            model.delete(hex);
          }
          assert.equal(t.n, model.size);
        }
        let seeders = 0;
        for (const [hex, k] of model) {
          const i = t.find(Buffer.from(hex, 'hex'), 0);
          assert.ok(i >= 0);
          assert.equal(t.meta(i) & 0x7fffffff, k);
          if (k % 3 === 0) seeders++;
        }
        assert.equal(t.seeders, seeders);
      },
    ),
    { numRuns: 150 },
  );
});

test('announce returns other peers, never the announcer; seeders get no seeders', () => {
  const s = new SwarmStore({ random: () => 0.5 });
  const a = v4(0x7f000001, 1001), b = v4(0x7f000002, 1002), c = v4(0x7f000003, 1003);
  let r = s.announce(IH, false, a, 0, EVENT_STARTED, true, 50);
  assert.equal(r.peers4Len, 0);
  assert.equal(r.complete, 1);
  r = s.announce(IH, false, b, 0, EVENT_STARTED, false, 50);
  assert.deepEqual(Buffer.from(r.peers4.subarray(0, r.peers4Len)), a);
  assert.equal(r.complete, 1);
  assert.equal(r.incomplete, 1);
  s.announce(IH, false, c, 0, EVENT_STARTED, true, 50);
  // Seeder a re-announces: only the leecher b comes back.
  r = s.announce(IH, false, a, 0, EVENT_NONE, true, 50);
  assert.deepEqual(Buffer.from(r.peers4.subarray(0, r.peers4Len)), b);
  // b completes: counted once, becomes a seeder.
  r = s.announce(IH, false, b, 0, EVENT_COMPLETED, true, 50);
  assert.equal(r.downloaded, 1);
  assert.equal(r.complete, 3);
  r = s.announce(IH, false, b, 0, EVENT_COMPLETED, true, 50);
  assert.equal(r.downloaded, 1);
  // numwant caps the list.
  r = s.announce(IH, false, v4(0x7f000009, 9), 0, EVENT_NONE, false, 2);
  assert.equal(r.peers4Len, 12);
  // stopped removes.
  r = s.announce(IH, false, a, 0, EVENT_STOPPED, true, 50);
  assert.equal(r.peers4Len, 0);
  assert.equal(s.totalPeers, 3);
  assert.equal(s.scrape(IH).complete, 2);
});

test('IPv6 peers are stored as 18-byte entries; HTTP-style announces get both families, UDP-style only their own', () => {
  const s = new SwarmStore();
  const p6 = Buffer.alloc(18);
  p6[15] = 1;
  p6.writeUInt16BE(6881, 16);
  s.announce(IH, true, p6, 0, EVENT_STARTED, false, 50);
  let r = s.announce(IH, false, v4(0x7f000001, 1), 0, EVENT_STARTED, false, 50, true);
  assert.equal(r.peers6Len, 18);
  assert.deepEqual(Buffer.from(r.peers6.subarray(0, 18)), p6);
  r = s.announce(IH, false, v4(0x7f000002, 2), 0, EVENT_STARTED, false, 50, false);
  assert.equal(r.peers6Len, 0);
  assert.equal(r.peers4Len, 6);
});

test('peers expire after the TTL (injected clock); empty swarms without history are dropped', () => {
  let now = 1_000_000_000_000;
  const s = new SwarmStore({ peerTtl: 60, now: () => now });
  s.announce(IH, false, v4(1, 1), 0, EVENT_STARTED, false, 0);
  now += 30_000;
  s.announce(IH, false, v4(2, 2), 0, EVENT_STARTED, false, 0);
  now += 40_000; // first is 70 s old, second 40 s
  assert.equal(s.sweep(), 1);
  assert.equal(s.totalPeers, 1);
  now += 61_000;
  assert.equal(s.sweep(), 1);
  assert.equal(s.swarms.size, 0);
});

test('global swarm cap: a flood of random info-hashes evicts one-peer swarms, keeps established ones', () => {
  const s = new SwarmStore({ maxSwarms: 100 });
  const big = 'B'.repeat(20);
  for (let i = 0; i < 50; i++) s.announce(big, false, v4(0x0b000000 + i, 1000 + i), 0, EVENT_STARTED, false, 0);
  const ih = Buffer.alloc(20);
  for (let i = 0; i < 20_000; i++) {
    ih.writeUInt32BE(i, 0);
    s.announce(ih.toString('latin1'), false, v4(0x0c000000 + i, 2000), 0, EVENT_STARTED, false, 0);
    assert.ok(s.swarms.size <= 100);
  }
  assert.equal(s.swarms.get(big)?.peers, 50);
  assert.ok(s.evictedSwarms >= 19_900);
  assert.equal(s.totalPeers, 50 + 99);
});

test('per-swarm and global peer caps refuse new peers but still answer', () => {
  const s = new SwarmStore({ maxPeersPerSwarm: 3, maxPeers: 5 });
  for (let i = 0; i < 10; i++) s.announce(IH, false, v4(i + 1, 1), 0, EVENT_STARTED, false, 0);
  assert.equal(s.totalPeers, 3);
  const r = s.announce('C'.repeat(20), false, v4(99, 1), 0, EVENT_STARTED, false, 50);
  assert.equal(r.stored, true);
  s.announce('C'.repeat(20), false, v4(98, 1), 0, EVENT_STARTED, false, 50);
  const r2 = s.announce('C'.repeat(20), false, v4(97, 1), 0, EVENT_STARTED, false, 50);
  assert.equal(r2.stored, false);
  assert.equal(r2.peers4Len, 12);
  assert.equal(s.totalPeers, 5);
  assert.ok(s.rejectedPeers >= 8);
});

test('memory: ≤ 100 bytes per stored peer (heapUsed + arrayBuffers delta), large and small swarms', () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const measure = (swarms: number, per: number): number => {
    const s = new SwarmStore({ maxSwarms: swarms + 1, maxPeers: swarms * per + 1 });
    const mem = (): number => {
      gc();
      gc();
      const m = process.memoryUsage();
      return m.heapUsed + m.arrayBuffers;
    };
    const keys: string[] = [];
    const ih = Buffer.alloc(20);
    for (let i = 0; i < swarms; i++) {
      ih.writeUInt32BE(i, 0);
      keys.push(ih.toString('latin1'));
    }
    const before = mem();
    const a = Buffer.alloc(6);
    for (let i = 0; i < swarms; i++) {
      for (let p = 0; p < per; p++) {
        a.writeUInt32BE((0x0a000000 + p * 131 + i) >>> 0, 0);
        a.writeUInt16BE(1024 + (p & 0x7fff), 4);
        s.announce(keys[i], false, a, 0, EVENT_STARTED, (p & 3) === 0, 0);
      }
    }
    const per_ = (mem() - before) / (swarms * per);
    assert.equal(s.totalPeers, swarms * per);
    return per_;
  };
  const large = measure(100, 2000);
  const small = measure(20_000, 5);
  assert.ok(large <= 100, `large swarms: ${large.toFixed(1)} bytes/peer`);
  assert.ok(small <= 100, `small swarms: ${small.toFixed(1)} bytes/peer`);
});

test('persistence: snapshot round-trips peers, seeders, completed counts and ages; corrupt files are refused', () => {
  let now = 1_700_000_000_000;
  const s = new SwarmStore({ peerTtl: 3600, now: () => now });
  s.announce(IH, false, v4(0x7f000001, 1), 0, EVENT_STARTED, true, 0);
  s.announce(IH, false, v4(0x7f000002, 2), 0, EVENT_COMPLETED, true, 0);
  const p6 = Buffer.alloc(18, 7);
  s.announce(IH, true, p6, 0, EVENT_STARTED, false, 0);
  now += 1000_000; // 1000 s later
  s.announce('D'.repeat(20), false, v4(0x7f000003, 3), 0, EVENT_STARTED, false, 0);
  const snap = serializeStore(s, Math.floor(now / 1000));
  now += 3000_000; // restart 3000 s later: the first three are 4000 s old (> TTL), the last 3000 s old
  const t = new SwarmStore({ peerTtl: 3600, now: () => now });
  const restored = deserializeInto(t, snap, Math.floor(now / 1000));
  assert.equal(restored, 1);
  assert.equal(t.scrape(IH).downloaded, 1);
  assert.equal(t.scrape('D'.repeat(20)).incomplete, 1);
  const t2 = new SwarmStore({ peerTtl: 36000, now: () => now });
  assert.equal(deserializeInto(t2, snap, Math.floor(now / 1000)), 4);
  assert.deepEqual(t2.scrape(IH), { complete: 2, incomplete: 1, downloaded: 1 });
  const bad = Buffer.from(snap);
  bad[40] ^= 1;
  assert.throws(() => deserializeInto(new SwarmStore(), bad, 0), StateFileError);
  assert.throws(() => deserializeInto(new SwarmStore(), snap.subarray(0, 30), 0), StateFileError);
});

test('PeerTable keeps leechers before seeders through add/remove/status changes/expiry; announce picks are valid', () => {
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.constantFrom('add', 'del', 'flip', 'expire', 'pick'), fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 12 })), { maxLength: 300 }),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
      (ops, seed) => {
        let r = seed;
        const t = new PeerTable(6);
        const model = new Map<string, { seed: boolean; time: number }>();
        for (const [op, k, w] of ops) {
          const key = v4(0x0a000000 + k * 131, 2000 + k);
          const hex = key.toString('hex');
          const i = t.find(key, 0);
          if (op === 'add' && i < 0) {
            const seed = (k + w) % 3 === 0;
            t.add(key, 0, (seed ? 0x80000000 : 0) | w);
            model.set(hex, { seed, time: w });
          } else if (op === 'del' && i >= 0) {
            t.removeAt(i);
            model.delete(hex);
          } else if (op === 'flip' && i >= 0) {
            const m = model.get(hex)!;
            m.seed = !m.seed;
            m.time = w;
            const j = t.setMeta(i, (m.seed ? 0x80000000 : 0) | w);
            assert.equal(t.find(key, 0), j, 'setMeta returns the new position');
          } else if (op === 'expire') {
            let gone = 0;
            for (const [h, m] of model) if (m.time < w) { model.delete(h); gone++; }
            assert.equal(t.expire(w), gone);
          }
          // Invariants: partition, counts, every model entry findable with its metadata.
          assert.equal(t.n, model.size);
          let seeders = 0;
          for (const m of model.values()) if (m.seed) seeders++;
          assert.equal(t.seeders, seeders);
          for (let j = 0; j < t.n; j++) assert.equal((t.meta(j) & 0x80000000) !== 0, j >= t.leechers, `entry ${j} on the wrong side`);
          for (const [h, m] of model) {
            const j = t.find(Buffer.from(h, 'hex'), 0);
            assert.ok(j >= 0);
            assert.equal(t.meta(j), ((m.seed ? 0x80000000 : 0) | m.time) >>> 0);
          }
        }
        // Announce through a store: the answer never holds the announcer, has no duplicates, a seeder gets
        // only leechers, and the count is min(numwant, candidates).
        const s = new SwarmStore({ random: () => ((r = (Math.imul(r, 1103515245) + 12345) >>> 0) / 2 ** 32) });
        const peers: Buffer[] = [];
        for (const [hex, m] of model) {
          const a = Buffer.from(hex, 'hex');
          peers.push(a);
          s.announce(IH, false, a, 0, EVENT_STARTED, m.seed, 0);
        }
        for (const a of peers) {
          for (const want of [1, 3, 50]) {
            const seed = model.get(a.toString('hex'))!.seed;
            const res = s.announce(IH, false, a, 0, EVENT_NONE, seed, want);
            const got = new Set<string>();
            for (let o = 0; o < res.peers4Len; o += 6) got.add(res.peers4.toString('hex', o, o + 6));
            assert.equal(got.size, res.peers4Len / 6, 'no duplicates');
            assert.ok(!got.has(a.toString('hex')), 'never the announcer');
            let cands = 0;
            for (const [h, m] of model) if (h !== a.toString('hex') && (!seed || !m.seed)) cands++;
            assert.equal(got.size, Math.min(want, cands));
            for (const h of got) assert.ok(model.has(h) && (!seed || !model.get(h)!.seed));
          }
        }
      },
    ),
    { numRuns: 120 },
  );
});

test('announce with a destination buffer writes own-family peers there (UDP replies without a copy)', () => {
  const s = new SwarmStore({ random: () => 0.5 });
  for (let i = 0; i < 20; i++) s.announce(IH, false, v4(0x7f000001, 3000 + i), 0, EVENT_STARTED, false, 0);
  const dst = Buffer.alloc(20 + 200 * 18, 0xee);
  const r = s.announce(IH, false, v4(0x7f000001, 4000), 0, EVENT_STARTED, false, 5, false, dst, 20);
  assert.equal(r.peers4Len, 30);
  assert.ok(dst.subarray(0, 20).every((b) => b === 0xee), 'the header area is left alone');
  for (let o = 20; o < 50; o += 6) {
    assert.equal(dst.readUInt32BE(o), 0x7f000001);
    const p = dst.readUInt16BE(o + 4);
    assert.ok(p >= 3000 && p < 3020);
  }
  assert.equal(dst[50], 0xee);
});
