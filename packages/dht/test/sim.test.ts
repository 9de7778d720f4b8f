/** A 200-node DHT in one process on a virtual clock and simulated UDP: lookups, announces, BEP 44, churn. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PeerAddress } from '@bitorrent/core';
import { buildSimSwarm, seededRng, randInt, generateKeyPair, mutableTarget, DhtNode, isSecureNodeId, type LookupResult, type DhtItem, type SimSwarm } from '../src/index.js';

function run<T>(sw: SimSwarm, start: (done: (v: T) => void) => void): T {
  let out: { v: T } | undefined;
  start((v) => (out = { v }));
  sw.clock.runUntil(() => out !== undefined, 10 * 60_000);
  assert.ok(out, 'operation finished in virtual time');
  return out.v;
}

test('200-node simulated network (10% unresponsive): every lookup finds the announced peer', () => {
  const rng = seededRng(2024);
  const sw = buildSimSwarm({ nodes: 200, rng, deadFraction: 0.1 });
  const avgTable = sw.nodes.reduce((a, n) => a + n.nodeCount(), 0) / sw.nodes.length;
  assert.ok(avgTable >= 10, `average routing table ${avgTable}`);
  const rts: number[] = [];
  const LOOKUPS = 40;
  let found = 0;
  for (let j = 0; j < LOOKUPS; j++) {
    const ih = rng(20);
    const announcer = sw.nodes[sw.live[randInt(rng, sw.live.length)]];
    const acked = run<number>(sw, (done) => announcer.announce(ih, 20000 + j, (n) => done(n)));
    assert.ok(acked >= 4, `announce stored on ${acked} nodes`);
    let searcher = sw.nodes[sw.live[randInt(rng, sw.live.length)]];
    while (searcher === announcer) searcher = sw.nodes[sw.live[randInt(rng, sw.live.length)]];
    const streamed: PeerAddress[] = [];
    const r = run<LookupResult>(sw, (done) => searcher.getPeers(ih, (p) => streamed.push(...p), done));
    const want = sw.addrs[sw.nodes.indexOf(announcer)].host;
    if (r.peers.some((p) => p.host === want && p.port === 20000 + j)) found++;
    assert.deepEqual(streamed.length, r.peers.length);
    rts.push(r.stats.roundTrips);
  }
  assert.equal(found, LOOKUPS);
  rts.sort((a, b) => a - b);
  assert.ok(rts[LOOKUPS >> 1] <= 4, `median round trips ${rts[LOOKUPS >> 1]}`);
  // Incoming announces land in bounded peer stores spread over the closest nodes.
  const stored = sw.nodes.reduce((a, n) => a + n.peerStore.peerCount(), 0);
  assert.ok(stored >= LOOKUPS * 4);
});

test('BEP 44 in the simulated network: immutable and mutable (salt, seq, CAS) items', () => {
  const rng = seededRng(44);
  const sw = buildSimSwarm({ nodes: 120, rng });
  const a = sw.nodes[3];
  const b = sw.nodes[77];
  // Immutable
  const { stored, target } = run<{ stored: number; target: Buffer }>(sw, (done) => a.putItem({ v: Buffer.from('Hello World!') }, (stored, target) => done({ stored, target })));
  assert.ok(stored >= 4);
  assert.equal(target.toString('hex'), 'e5f96f6f38320f0f33959cb4d3d656452117aadb');
  const got = run<DhtItem | null>(sw, (done) => b.getItem(target, {}, done));
  assert.equal(Buffer.from(got!.v as Uint8Array).toString(), 'Hello World!');
  // Mutable with salt
  const keyPair = generateKeyPair();
  const salt = Buffer.from('foobar');
  const t1 = run<Buffer>(sw, (done) => a.putItem({ v: Buffer.from('v1'), keyPair, seq: 1, salt }, (_n, t) => done(t)));
  assert.ok(t1.equals(mutableTarget(keyPair.publicKey, salt)));
  let item = run<DhtItem | null>(sw, (done) => b.getItem(t1, { salt }, done));
  assert.equal(item?.seq, 1);
  assert.equal(Buffer.from(item!.v as Uint8Array).toString(), 'v1');
  // Newer seq replaces; CAS with the right seq succeeds, with a stale one is refused (301) everywhere.
  run(sw, (done) => a.putItem({ v: Buffer.from('v2'), keyPair, seq: 2, salt, cas: 1 }, (n) => done(n)));
  item = run<DhtItem | null>(sw, (done) => b.getItem(t1, { salt }, done));
  assert.equal(item?.seq, 2);
  const refused = run<number>(sw, (done) => a.putItem({ v: Buffer.from('v3'), keyPair, seq: 3, salt, cas: 1 }, (n) => done(n)));
  assert.equal(refused, 0);
  const older = run<number>(sw, (done) => a.putItem({ v: Buffer.from('v0'), keyPair, seq: 0, salt }, (n) => done(n)));
  assert.equal(older, 0);
  item = run<DhtItem | null>(sw, (done) => b.getItem(t1, { salt }, done));
  assert.equal(Buffer.from(item!.v as Uint8Array).toString(), 'v2');
  // Without the salt the target differs and the item is not found.
  assert.equal(run<DhtItem | null>(sw, (done) => b.getItem(mutableTarget(keyPair.publicKey), {}, done)), null);
});

test('churn: after a third of the nodes die, the table refresh keeps lookups working', () => {
  const rng = seededRng(7);
  const sw = buildSimSwarm({ nodes: 150, rng });
  const ih = rng(20);
  run(sw, (done) => sw.nodes[1].announce(ih, 4242, (n) => done(n)));
  for (let i = 50; i < 100; i++) sw.net.setUnresponsive(sw.addrs[i]);
  sw.clock.advance(20 * 60_000); // bucket refreshes, failed nodes evicted
  const r = run<LookupResult>(sw, (done) => sw.nodes[140].getPeers(ih, undefined, done));
  // The announce may have landed on dead nodes only partially; the peer must still be found.
  assert.ok(r.peers.some((p) => p.port === 4242), `found ${JSON.stringify(r.peers)}`);
  const deadInTables = sw.nodes.slice(100).reduce((a, n) => a + n.table.all().filter((x) => {
    const i = sw.addrs.findIndex((ad) => ad.host === x.host);
    return i >= 50 && i < 100 && x.fails === 0 && x.lastResponse > sw.clock.now() - 10 * 60_000;
  }).length, 0);
  assert.equal(deadInTables, 0, 'no dead node is counted as recently good');
});

test('BEP 42: a node with a random ID adopts a secure ID once responders agree on its external IP', () => {
  const rng = seededRng(42);
  const sw = buildSimSwarm({ nodes: 40, rng });
  const addr = { host: '77.1.2.3', port: 6881 };
  const node = new DhtNode({ transport: sw.net.createTransport(addr), clock: sw.clock, rng });
  const before = Buffer.from(node.id);
  assert.ok(!isSecureNodeId(before, addr.host));
  run(sw, (done) => node.bootstrap([sw.addrs[0], sw.addrs[1]], done));
  sw.clock.advance(30_000);
  assert.equal(node.externalIp, '77.1.2.3');
  assert.ok(isSecureNodeId(node.id, addr.host));
  assert.ok(!node.id.equals(before));
  assert.ok(node.nodeCount() > 5, 'table rebuilt around the new ID');
  // Other nodes see it as verified.
  const seen = sw.nodes.flatMap((n) => n.table.all()).filter((x) => x.host === addr.host && x.id.equals(node.id));
  assert.ok(seen.length > 0 && seen.every((x) => x.verified));
});
