/**
 * The per-datagram shortcuts of the UDP path (issue #6) change nothing observable: the info-hash string cache,
 * the connection-id cache, the last-source address cache, and the reused reply views.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { InfoHashCache } from '../src/ihcache.js';
import { ConnectionIds } from '../src/connid.js';
import { Tracker } from '../src/tracker.js';
import { decodeCompactPeers } from '@bitorrent/core';
import { udpConnect, udpAnnounce } from './udp-packets.js';

test('InfoHashCache returns the latin1 string of the 20 bytes, hits on repeats, stays bounded', () => {
  fc.assert(
    fc.property(
      fc.array(fc.uint8Array({ minLength: 20, maxLength: 20 }), { minLength: 1, maxLength: 12 }),
      fc.array(fc.nat(), { minLength: 1, maxLength: 200 }),
      fc.integer({ min: 0, max: 9 }),
      fc.integer(),
      (keys, picks, offset, seed) => {
        const c = new InfoHashCache(4, seed); // tiny: forces collisions and evictions
        const buf = Buffer.alloc(offset + 20 + 3, 0xee);
        for (const p of picks) {
          const k = keys[p % keys.length];
          buf.set(k, offset);
          assert.equal(c.get(buf, offset), Buffer.from(k).toString('latin1'));
          const hits = c.hits;
          assert.equal(c.get(buf, offset), Buffer.from(k).toString('latin1'));
          assert.equal(c.hits, hits + 1, 'an immediate repeat is a hit');
        }
        assert.equal(c.hits + c.misses, picks.length * 2);
      },
    ),
  );
  // Keys that differ only in their last byte are told apart.
  const c = new InfoHashCache(8, 1);
  const a = Buffer.alloc(20, 1);
  const b = Buffer.alloc(20, 1);
  b[19] = 2;
  assert.equal(c.get(a, 0), a.toString('latin1'));
  assert.equal(c.get(b, 0), b.toString('latin1'));
  assert.equal(c.get(a, 0), a.toString('latin1'));
});

test('ConnectionIds with its per-address cache accepts exactly what a fresh instance accepts', () => {
  const secret = Buffer.alloc(32, 9);
  const addrs = ['10.0.0.1', '10.0.0.2', '::1', '::ffff:10.0.0.1', ''];
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          op: fc.constantFrom('issue', 'verify', 'verify-forged', 'tick'),
          a: fc.nat({ max: addrs.length - 1 }),
          b: fc.nat({ max: addrs.length - 1 }),
          dt: fc.integer({ min: 0, max: 200_000 }),
        }),
        { minLength: 1, maxLength: 60 },
      ),
      (ops) => {
        let now = 1_000_000;
        const cached = new ConnectionIds({ secret, now: () => now });
        const fresh = (): ConnectionIds => new ConnectionIds({ secret, now: () => now });
        const issued: { addr: string; id: Buffer }[] = [];
        for (const o of ops) {
          if (o.op === 'tick') now += o.dt;
          else if (o.op === 'issue') {
            const id = Buffer.alloc(8);
            cached.issue(addrs[o.a], id, 0);
            const ref = Buffer.alloc(8);
            fresh().issue(addrs[o.a], ref, 0);
            assert.deepEqual(id, ref);
            issued.push({ addr: addrs[o.a], id });
          } else if (issued.length > 0) {
            const { id } = issued[o.a % issued.length];
            const probe = Buffer.from(id);
            if (o.op === 'verify-forged') probe[o.b % 8] ^= 1 << (o.dt % 8);
            // Same answer as an instance that has never cached anything (wrong address, old id, forged bytes).
            assert.equal(cached.verify(addrs[o.b], probe, 0), fresh().verify(addrs[o.b], probe, 0));
          }
        }
      },
    ),
  );
});

test('UDP announces from interleaved sources: every peer is stored under its own address; replies keep their bytes after detachOutput', () => {
  const t = new Tracker({ random: () => 0 });
  const ih = Buffer.alloc(20, 0x5a);
  const sources = [
    { ip: '127.0.0.2', port: 6001 },
    { ip: '::1', port: 6002 },
    { ip: '127.0.0.3', port: 6003 },
    { ip: '::ffff:127.0.0.4', port: 6004 },
    { ip: '127.0.0.2', port: 6005 }, // same IP again, other announced port
    { ip: 'not-an-ip', port: 6006 },
  ];
  const conns = sources.map((s) => Buffer.from(t.udp(udpConnect(), s.ip, 40000)!.subarray(8, 16)));
  const replies: Buffer[] = [];
  for (let round = 0; round < 2; round++) {
    sources.forEach((s, i) => {
      const r = t.udp(udpAnnounce({ conn: conns[i], infoHash: ih, port: s.port, left: 5n, tx: i, numwant: 50 }), s.ip, 40000);
      if (s.ip === 'not-an-ip') {
        assert.equal(r, null, 'unparseable source: no reply');
        return;
      }
      assert.ok(r !== null);
      assert.equal(r.readUInt32BE(0), 1);
      assert.equal(r.readUInt32BE(4), i);
      replies.push(r);
      const copy = Buffer.from(r);
      t.detachOutput(); // as the server does when the reply is still queued
      assert.deepEqual(replies[replies.length - 1], copy, 'a detached reply is not overwritten');
    });
  }
  // The last IPv4 reply (from 127.0.0.2:6005) lists the other IPv4 peers with their own IPs and ports.
  const last = replies[replies.length - 1];
  const peers = decodeCompactPeers(last.subarray(20)).map((p) => `${p.host}:${p.port}`).sort();
  assert.deepEqual(peers, ['127.0.0.2:6001', '127.0.0.3:6003', '127.0.0.4:6004']);
  assert.equal(t.store.totalPeers, 5);
  // The IPv6 peer was stored as ::1.
  const v6 = t.store.swarms.get(ih.toString('latin1'))!.v6!;
  assert.equal(v6.n, 1);
  const a6 = Buffer.alloc(18);
  v6.copyAddr(0, a6, 0);
  assert.equal(a6[15], 1);
  assert.equal(a6.readUInt16BE(16), 6002);
});
