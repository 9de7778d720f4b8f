import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encode } from '@bitorrent/core';
import {
  crc32c,
  isSecureNodeId,
  secureNodeId,
  seededRng,
  commonPrefixBits,
  randomIdInBucket,
  RoutingTable,
  PeerStore,
  TokenManager,
  verifyItem,
  signItem,
  signedBuffer,
  mutableTarget,
  immutableTarget,
  keyPairFromSeed,
  validateItem,
  createDht,
  encodeLsdAnnounce,
  parseLsdAnnounce,
  Lsd,
  VirtualClock,
  bloomAdd,
  bloomEstimate,
} from '../src/index.js';

test('crc32c matches the Castagnoli check value', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
});

test('BEP 42 test vectors and generated IDs conform', () => {
  const vectors: [string, string, string][] = [
    ['124.31.75.21', '5fbfbf', '01'],
    ['21.75.31.124', '5a3ce9', '56'],
    ['65.23.51.170', 'a5d432', '16'],
    ['84.124.73.14', '1b0321', '41'],
    ['43.213.53.83', 'e56f6c', '5a'],
  ];
  for (const [ip, prefix, last] of vectors) {
    const id = Buffer.from(prefix + '00'.repeat(16) + last, 'hex');
    assert.ok(isSecureNodeId(id, ip), ip);
    const wrong = Buffer.from(id);
    wrong[0] ^= 0x40;
    assert.ok(!isSecureNodeId(wrong, ip));
  }
  const rng = seededRng(9);
  for (let i = 0; i < 50; i++) {
    const ip = `${20 + i}.${i * 3}.7.${i}`;
    assert.ok(isSecureNodeId(secureNodeId(ip, rng), ip));
  }
  assert.ok(isSecureNodeId(secureNodeId('2001:db8::5', rng), '2001:db8::5'));
  // Loopback and private addresses are exempt (as in libtorrent).
  assert.ok(isSecureNodeId(Buffer.alloc(20, 0xff), '127.0.0.5'));
  assert.ok(isSecureNodeId(Buffer.alloc(20, 0xff), '192.168.1.1'));
});

test('BEP 44 test vectors: signed buffer, targets, signatures (raw 32-byte key)', () => {
  const pub = Buffer.from('77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548', 'hex');
  const v = encode(Buffer.from('Hello World!'));
  assert.equal(signedBuffer(1, v).toString(), '3:seqi1e1:v12:Hello World!');
  assert.equal(signedBuffer(1, v, Buffer.from('foobar')).toString(), '4:salt6:foobar3:seqi1e1:v12:Hello World!');
  assert.equal(mutableTarget(pub).toString('hex'), '4a533d47ec9c7d95b1ad75f576cffc641853b750');
  assert.equal(mutableTarget(pub, Buffer.from('foobar')).toString('hex'), '411eba73b6f087ca51a3795d9c8c938d365e32c1');
  assert.equal(immutableTarget(Buffer.from('Hello World!')).toString('hex'), 'e5f96f6f38320f0f33959cb4d3d656452117aadb');
  const sig1 = Buffer.from('305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01', 'hex');
  const sig2 = Buffer.from('6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17ddf9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08', 'hex');
  assert.ok(verifyItem(pub, sig1, 1, v));
  assert.ok(verifyItem(pub, sig2, 1, v, Buffer.from('foobar')));
  assert.ok(!verifyItem(pub, sig1, 2, v));
  assert.ok(!verifyItem(pub, sig2, 1, v));
  // Our own signatures verify and validate as a 'get' response.
  const kp = keyPairFromSeed(Buffer.alloc(32, 1));
  const sig = signItem(kp.secretKey, 5, v, Buffer.from('s'));
  const target = mutableTarget(kp.publicKey, Buffer.from('s'));
  assert.ok(validateItem({ v: Buffer.from('Hello World!'), k: kp.publicKey, seq: 5, sig }, target, Buffer.from('s')));
  assert.equal(validateItem({ v: Buffer.from('Hello World?'), k: kp.publicKey, seq: 5, sig }, target, Buffer.from('s')), null);
  assert.equal(validateItem({ v: Buffer.from('Hello World!'), k: kp.publicKey, seq: 6, sig }, target, Buffer.from('s')), null);
});

test('routing table: splits around our ID, bounded buckets, replacements, per-IP restriction', () => {
  const rng = seededRng(5);
  let now = 0;
  const self = rng(20);
  const t = new RoutingTable(self, () => now, { k: 8 });
  let i = 0;
  const mk = (bits: number) => ({ id: randomIdInBucket(self, bits, rng), host: `30.0.${i >> 8}.${i++ & 255}`, port: 6881 });
  // 8 far nodes fill bucket 0; they do not split further once far.
  for (let j = 0; j < 8; j++) assert.equal(t.heard(mk(0), true), 'added');
  assert.equal(t.heard(mk(5), true), 'added'); // forces split(s): closer node gets a new bucket
  assert.ok(t.bucketCount() >= 2);
  assert.equal(t.heard(mk(0), true), 'replacement'); // bucket 0 full of good nodes
  for (let j = 0; j < 40; j++) t.heard(mk(10 + (j % 20)), true);
  assert.ok(t.size() <= t.bucketCount() * 8);
  for (const n of t.all()) assert.ok(commonPrefixBits(self, n.id) >= 0);
  // One entry per IP for public addresses; loopback exempt.
  const dupIp = { id: rng(20), host: '30.0.0.0', port: 7000 };
  assert.equal(t.heard(dupIp, true), 'rejected');
  assert.equal(t.heard({ id: rng(20), host: '127.0.0.1', port: 1 }, true) !== 'rejected', true);
  assert.equal(t.heard({ id: rng(20), host: '127.0.0.1', port: 2 }, true) !== 'rejected', true);
  // An address does not change its ID.
  const a = t.all()[0];
  assert.equal(t.heard({ id: rng(20), host: a.host, port: a.port }, true), 'rejected');
  // Failures evict and promote a replacement.
  const far = t.all().find((n) => commonPrefixBits(self, n.id) === 0)!;
  t.failed(far.host, far.port);
  assert.equal(t.getByAddr(far.host, far.port), undefined);
  assert.equal(t.closest(self, 8).length, 8);
  now += 16 * 60_000;
  assert.ok(t.staleBuckets(15 * 60_000).length > 0);
});

test('BEP 42 preference: a verified node displaces an unverified one in a full bucket', () => {
  const rng = seededRng(6);
  const self = Buffer.alloc(20, 0);
  const t = new RoutingTable(self, () => 0, { k: 2 });
  // Fill the far bucket with unverified public nodes (random IDs do not match their IPs).
  const far = () => {
    const id = rng(20);
    id[0] |= 0x80;
    return id;
  };
  // make sure bucket 0 cannot split: put a node in a close bucket first so bucket 0 is not the last one
  t.heard({ id: Buffer.from('00'.repeat(19) + '01', 'hex'), host: '40.0.0.1', port: 1 }, true);
  t.heard({ id: far(), host: '40.0.0.2', port: 1 }, true);
  t.heard({ id: far(), host: '40.0.0.3', port: 1 }, true);
  let vid = secureNodeId('50.1.2.3', rng);
  while (!(vid[0] & 0x80)) vid = secureNodeId('50.1.2.3', rng);
  assert.equal(t.heard({ id: vid, host: '50.1.2.3', port: 1 }, true), 'added');
  assert.ok(t.all().some((n) => n.host === '50.1.2.3' && n.verified));
});

test('peer store: expiry and bounds', () => {
  let now = 0;
  const s = new PeerStore(() => now, 3, 5, 1000);
  const rng = seededRng(1);
  for (let t = 0; t < 5; t++) for (let p = 0; p < 10; p++) s.add(Buffer.alloc(20, t), { host: `1.1.1.${p}`, port: 1 });
  assert.equal(s.torrentCount(), 3);
  assert.equal(s.peerCount(), 15);
  assert.equal(s.get(Buffer.alloc(20, 4), 2, rng).length, 2);
  now = 1001;
  assert.equal(s.get(Buffer.alloc(20, 4), 10, rng).length, 0);
  s.expire();
  assert.equal(s.peerCount(), 0);
});

test('tokens: valid for the issuing IP across one rotation only', () => {
  const tm = new TokenManager(seededRng(3));
  const tok = tm.issue('1.2.3.4');
  assert.ok(tm.check(tok, '1.2.3.4'));
  assert.ok(!tm.check(tok, '1.2.3.5'));
  tm.rotate();
  assert.ok(tm.check(tok, '1.2.3.4'));
  tm.rotate();
  assert.ok(!tm.check(tok, '1.2.3.4'));
});

test('virtual clock runs timers in order', () => {
  const c = new VirtualClock(0);
  const seen: number[] = [];
  c.setTimeout(() => seen.push(2), 20);
  const h = c.setTimeout(() => seen.push(99), 15);
  c.setTimeout(() => seen.push(1), 10);
  c.clearTimeout(h);
  c.advance(100);
  assert.deepEqual(seen, [1, 2]);
  assert.equal(c.now(), 100);
});

test('real UDP on loopback: two nodes find each other; routing table persists across restarts', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'dht-state-'));
  const closers: (() => Promise<void>)[] = [];
  t.after(async () => {
    for (const c of closers) await c();
    rmSync(dir, { recursive: true, force: true });
  });
  const stateFile = join(dir, 'dht.json');
  const a = await createDht({ host: '127.0.0.1', port: 0 });
  closers.push(() => a.close());
  const b = await createDht({ host: '127.0.0.2', port: 0, stateFile, bootstrap: [{ host: '127.0.0.1', port: a.port }] });
  const ih = Buffer.alloc(20, 0xab);
  const announced = new Promise<unknown>((resolve) => a.once('peer', (h: Buffer, p: unknown) => resolve({ h: h.toString('hex'), p })));
  // Called before the bootstrap finished: waits for it instead of running on an empty table.
  await b.announce(ih, 5555);
  assert.equal(b.nodeCount(), 1);
  assert.deepEqual(await announced, { h: ih.toString('hex'), p: { host: '127.0.0.2', port: 5555 } });
  const bId = b.id;
  await b.close();
  // Restart with no bootstrap: the saved routing table brings a back.
  const b2 = await createDht({ host: '127.0.0.2', port: 0, stateFile, waitForBootstrap: true });
  closers.push(() => b2.close());
  assert.ok(b2.id.equals(bId), 'node ID persisted');
  assert.equal(b2.nodeCount(), 1);
  // b2 finds the peer stored on a through a lookup.
  assert.deepEqual(await b2.getPeers(ih), [{ host: '127.0.0.2', port: 5555 }]);
  // A corrupt state file is ignored, not fatal.
  writeFileSync(join(dir, 'bad.json'), '{nope');
  const c = await createDht({ host: '127.0.0.3', port: 0, stateFile: join(dir, 'bad.json') });
  await c.close();
});

test('BEP 14 LSD: announce codec, own cookie filtered, rate limit', () => {
  const ih = Buffer.alloc(20, 0x11);
  const pkt = encodeLsdAnnounce(6881, [ih], 'abc');
  assert.ok(pkt.toString().startsWith('BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\nInfohash: 1111'));
  assert.deepEqual(parseLsdAnnounce(pkt), { port: 6881, infoHashes: [ih], cookie: 'abc' });
  assert.equal(parseLsdAnnounce(Buffer.from('GET / HTTP/1.1\r\n\r\n')), null);
  assert.equal(parseLsdAnnounce(Buffer.from('BT-SEARCH * HTTP/1.1\r\nPort: 99999\r\nInfohash: ' + '1'.repeat(40) + '\r\n\r\n')), null);
  let now = 0;
  const got: unknown[] = [];
  const lsd = new Lsd({ port: 7000, onPeer: (h, p) => got.push([h.toString('hex'), p]), now: () => now, autoStart: false }); // no multicast in tests
  const mine = lsd.announce(ih)!;
  assert.equal(lsd.announce(ih), null); // at most once a minute
  now += 60_000;
  assert.ok(lsd.announce(ih));
  lsd.handle(mine, { host: '192.168.1.5', port: 6771 }); // our own announce looped back
  assert.equal(got.length, 0);
  lsd.handle(encodeLsdAnnounce(51413, [ih]), { host: '192.168.1.6', port: 6771 });
  assert.deepEqual(got, [[ih.toString('hex'), { host: '192.168.1.6', port: 51413 }]]);
});

test('BEP 32: dual-stack nodes find each other over ::1 and answer want=n4,n6', async (t) => {
  const a = await createDht({ host: '127.0.0.1', port: 0, ipv6: '::1' });
  t.after(() => a.close());
  if (!a.port6) {
    t.skip('no IPv6 loopback');
    return;
  }
  const b = await createDht({ host: '127.0.0.2', port: 0, ipv6: '::1', bootstrap: [{ host: '127.0.0.1', port: a.port }, { host: '::1', port: a.port6 }], waitForBootstrap: true });
  t.after(() => b.close());
  assert.equal(b.node.nodeCount(), 1);
  assert.equal(b.node6!.nodeCount(), 1);
  const ih = Buffer.alloc(20, 0x66);
  assert.equal(await b.announceCount(ih, 6000), 2); // once per family
  const c = await createDht({ host: '127.0.0.3', port: 0, ipv6: '::1', bootstrap: [{ host: '::1', port: a.port6 }], waitForBootstrap: true });
  t.after(() => c.close());
  const peers = await c.getPeers(ih);
  assert.deepEqual(peers.sort((x, y) => x.host.localeCompare(y.host)), [{ host: '::1', port: 6000 }]);
  // A v6 query with want=[n4,n6] gets both node lists.
  const r = await new Promise<import('../src/index.js').KrpcResponse | null>((resolve) =>
    c.node6!.query({ host: '::1', port: a.port6! }, 'find_node', { id: c.node6!.id, target: Buffer.alloc(20), want: ['n4', 'n6'] }, resolve),
  );
  assert.ok(r && r.r.nodes instanceof Uint8Array && r.r.nodes6 instanceof Uint8Array);
  assert.equal((r.r.nodes as Uint8Array).length, 26); // a knows b over IPv4
});

test('close() settles running lookups', async () => {
  const d = await createDht({ host: '127.0.0.1', port: 0, queryTimeoutMs: 60_000 });
  const p = d.bootstrap([{ host: '127.0.0.1', port: 9 }]);
  await d.close();
  assert.equal(await p, 0);
});

test('BEP 33: bloom filter test vector and scrape estimate over loopback', async (t) => {
  const bits = new Uint8Array(256);
  for (let i = 0; i < 256; i++) bloomAdd(bits, `192.0.2.${i}`);
  for (let i = 0; i < 1000; i++) bloomAdd(bits, `2001:db8::${i.toString(16)}`);
  assert.equal(bloomEstimate(bits).toFixed(4), '1224.9309');
  assert.ok(Buffer.from(bits).toString('hex').startsWith('f6c3f5eaa07ffd91bde89f777f26fb2b'));
  const a = await createDht({ host: '127.0.0.1', port: 0 });
  t.after(() => a.close());
  const ih = Buffer.alloc(20, 0x33);
  for (let i = 0; i < 30; i++) a.node.peerStore.add(ih, { host: `10.0.0.${i}`, port: 1 }, i < 10);
  const b = await createDht({ host: '127.0.0.2', port: 0, bootstrap: [{ host: '127.0.0.1', port: a.port }] });
  t.after(() => b.close());
  const c = await b.scrape(ih);
  assert.ok(Math.abs(c.seeds - 10) <= 1 && Math.abs(c.peers - 20) <= 1, JSON.stringify(c));
});

test('getPeers: an aborted lookup resolves with what it has', async (t) => {
  const { createSocket } = await import('node:dgram');
  const hole = createSocket('udp4'); // receives queries, never answers
  await new Promise<void>((r) => hole.bind(0, '127.0.0.1', () => r()));
  const queried = new Promise<void>((r) => hole.once('message', () => r()));
  const d = await createDht({ host: '127.0.0.2', port: 0, queryTimeoutMs: 60_000, softTimeoutMs: 60_000 });
  t.after(async () => {
    await d.close();
    hole.close();
  });
  d.node.table.heard({ id: Buffer.alloc(20, 1), host: '127.0.0.1', port: hole.address().port }, true);
  const ih = Buffer.alloc(20, 2);
  d.node.peerStore.add(ih, { host: '127.0.0.9', port: 9 });
  const ac = new AbortController();
  const p = d.getPeers(ih, { signal: ac.signal });
  await queried;
  ac.abort();
  assert.deepEqual(await p, [{ host: '127.0.0.9', port: 9 }]);
});
