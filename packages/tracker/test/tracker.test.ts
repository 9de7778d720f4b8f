import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decode, asDict, asBytes, asInt, asList, decodeCompactPeers, type BencodeDict } from '@bitorrent/core';
import { Tracker, parseIPv4, compactAddress, bep41Passkey, hexToInfoHash } from '../src/tracker.js';
import { ConnectionIds, halfSipHash64 } from '../src/connid.js';
import { RateLimiter } from '../src/ratelimit.js';
import { udpConnect, udpAnnounce as announcePacket } from './udp-packets.js';

const pct = (b: Buffer): string => [...b].map((x) => '%' + x.toString(16).padStart(2, '0')).join('');
const IH = Buffer.alloc(20, 0xab);
const fixedBytes = (n: number): Buffer => Buffer.alloc(n, 0x42);

function announceUrl(opts: { ih?: Buffer; pid?: string; port?: number; left?: number; extra?: string; path?: string } = {}): string {
  return `${opts.path ?? '/announce'}?info_hash=${pct(opts.ih ?? IH)}&peer_id=${opts.pid ?? '-BT0001-000000000001'}&port=${opts.port ?? 6881}&uploaded=0&downloaded=0&left=${opts.left ?? 100}${opts.extra ?? ''}`;
}

function body(t: Tracker, url: string, ip = '127.0.0.1'): BencodeDict {
  const r = t.http(url, ip);
  assert.equal(r.status, 200);
  return asDict(decode(r.body), 'response');
}

test('parseIPv4 / compactAddress', () => {
  const b = Buffer.alloc(18);
  assert.equal(parseIPv4('10.1.2.3', b, 0), true);
  assert.deepEqual([...b.subarray(0, 4)], [10, 1, 2, 3]);
  assert.equal(parseIPv4('::ffff:127.0.0.9', b, 0), true);
  assert.equal(b[3], 9);
  for (const bad of ['1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', 'a.b.c.d', '', '::1', '1.2.3.4 ']) assert.equal(parseIPv4(bad, b, 0), false, bad);
  assert.equal(compactAddress('127.0.0.1', 6881, b), 6);
  assert.equal(b.readUInt16BE(4), 6881);
  assert.equal(compactAddress('::1', 80, b), 18);
  assert.equal(b[15], 1);
  assert.equal(compactAddress('not an ip', 80, b), 0);
});

test('halfSipHash64 is keyed and deterministic; connection ids are per-source and rotate', () => {
  const out1 = Buffer.alloc(8), out2 = Buffer.alloc(8), out3 = Buffer.alloc(8);
  const m = Buffer.from('127.0.0.1\x1a\xe1', 'latin1');
  halfSipHash64(1, 2, m, m.length, out1, 0);
  halfSipHash64(1, 2, m, m.length, out2, 0);
  halfSipHash64(1, 3, m, m.length, out3, 0);
  assert.deepEqual(out1, out2);
  assert.notDeepEqual(out1, out3);
  let now = 0;
  let seed = 1;
  const ids = new ConnectionIds({ now: () => now, rotateMs: 120_000, randomBytes: (n) => Buffer.alloc(n, seed++) });
  const id = Buffer.alloc(8);
  ids.issue('10.0.0.1', id, 0);
  assert.equal(ids.verify('10.0.0.1', id, 0), true);
  assert.equal(ids.verify('10.0.0.2', id, 0), false);
  assert.equal(ids.verify('::ffff:10.0.0.1', id, 0), false);
  now += 130_000; // one rotation: still accepted (previous key)
  assert.equal(ids.verify('10.0.0.1', id, 0), true);
  now += 120_000; // two rotations: rejected
  assert.equal(ids.verify('10.0.0.1', id, 0), false);
});

test('HTTP announce: compact (BEP 23), IPv6 peers6 (BEP 7), non-compact dicts, counts', () => {
  const t = new Tracker({ interval: 1800, random: () => 0 });
  let d = body(t, announceUrl({ port: 1111, left: 0 }), '127.0.0.2');
  assert.equal(asInt(d.interval, 'interval'), 1800);
  assert.equal(asInt(d['min interval'], 'mi'), 900);
  assert.equal(asBytes(d.peers, 'peers').length, 0);
  body(t, announceUrl({ port: 2222 }), '::1');
  d = body(t, announceUrl({ port: 3333 }), '::ffff:127.0.0.3');
  assert.deepEqual(decodeCompactPeers(asBytes(d.peers, 'peers')), [{ host: '127.0.0.2', port: 1111 }]);
  const p6 = asBytes(d.peers6, 'peers6');
  assert.equal(p6.length, 18);
  assert.equal(p6.readUInt16BE(16), 2222);
  assert.equal(asInt(d.complete, 'c'), 1);
  assert.equal(asInt(d.incomplete, 'i'), 2);
  d = body(t, announceUrl({ port: 4444, extra: '&compact=0&numwant=10' }), '127.0.0.4');
  const list = asList(d.peers, 'peers').map((p) => {
    const x = asDict(p, 'peer');
    return `${Buffer.from(asBytes(x.ip, 'ip')).toString()}:${asInt(x.port, 'port')}`;
  });
  assert.deepEqual(list.sort(), ['0:0:0:0:0:0:0:1:2222', '127.0.0.2:1111', '127.0.0.3:3333']);
  d = body(t, announceUrl({ port: 4444, extra: '&event=completed&numwant=0' }), '127.0.0.4');
  assert.equal(asInt(d.downloaded, 'downloaded'), 1);
  assert.equal(asBytes(d.peers, 'peers').length, 0);
  d = body(t, announceUrl({ port: 4444, extra: '&event=stopped&key=abc&trackerid=x' }), '127.0.0.4');
  assert.equal(t.store.totalPeers, 3);
});

test('HTTP scrape (BEP 48): requested hashes, unknown ones as zeros, limits', () => {
  const t = new Tracker();
  body(t, announceUrl({ left: 0 }));
  const other = Buffer.alloc(20, 1);
  const d = body(t, `/scrape?info_hash=${pct(IH)}&info_hash=${pct(other)}`);
  const files = asDict(d.files, 'files');
  assert.deepEqual(Object.keys(files).sort(), [other.toString('latin1'), IH.toString('latin1')].sort());
  const f = asDict(files[IH.toString('latin1')], 'f');
  assert.equal(asInt(f.complete, 'c'), 1);
  assert.equal(asInt(asDict(files[other.toString('latin1')], 'o').complete, 'c'), 0);
  assert.ok(body(t, '/scrape')['failure reason']);
  const many = Array.from({ length: 101 }, () => `info_hash=${pct(IH)}`).join('&');
  assert.match(Buffer.from(asBytes(body(t, `/scrape?${many}`)['failure reason'], 'f')).toString(), /too many/);
});

test('HTTP: malformed announces get a bencoded failure reason, never an exception (fuzz)', () => {
  const t = new Tracker();
  const reason = (url: string): string => Buffer.from(asBytes(body(t, url)['failure reason'], 'reason')).toString();
  assert.match(reason('/announce'), /missing info_hash/);
  assert.match(reason('/announce?info_hash=abc&peer_id=x&port=1'), /20 bytes/);
  assert.match(reason(`/announce?info_hash=${pct(IH)}&peer_id=-BT0001-000000000001&port=0`), /port/);
  assert.match(reason(`/announce?info_hash=${pct(IH)}&peer_id=-BT0001-000000000001&port=99999`), /port/);
  assert.match(reason(`/announce?info_hash=${pct(IH)}&peer_id=-BT0001-000000000001&port=1&event=bogus`), /event/);
  assert.match(reason(`/announce?info_hash=%G1${pct(IH).slice(3)}&peer_id=-BT0001-000000000001&port=1`), /20 bytes/);
  assert.match(reason(`/announce?info_hash=${pct(IH)}%&peer_id=-BT0001-000000000001&port=1`), /20 bytes/);
  assert.match(reason(`/announce?info_hash=${pct(IH)}&peer_id=-BT0001-000000000001&port=1&numwant=-5`), /numwant/);
  const keys = ['info_hash', 'peer_id', 'port', 'left', 'numwant', 'compact', 'event', 'key', '', '&', '='];
  fc.assert(
    fc.property(
      fc.array(fc.tuple(fc.constantFrom(...keys), fc.string({ unit: 'binary', maxLength: 30 })), { maxLength: 8 }),
      fc.constantFrom('/announce', '/scrape', '/x/announce', '/stats', '/metrics', '/nope'),
      (pairs, path) => {
        const url = `${path}?${pairs.map(([k, v]) => `${k}=${v}`).join('&')}`;
        const r = t.http(url, '127.0.0.1');
        assert.ok(r.status === 200 || r.status === 404);
        if (path === '/announce' || path === '/scrape') {
          const d = asDict(decode(r.body), 'resp');
          assert.ok(d['failure reason'] !== undefined || d.peers !== undefined || d.files !== undefined);
        }
      },
    ),
    { numRuns: 500 },
  );
});

test('private mode: passkey in path and allow-list; BEP 41 URL data carries the passkey over UDP', () => {
  const t = new Tracker({ passkeys: new Set(['s3cret']), allow: new Set([IH.toString('latin1')]) });
  const reason = (url: string): string | undefined => {
    const f = body(t, url)['failure reason'];
    return f === undefined ? undefined : Buffer.from(asBytes(f, 'f')).toString();
  };
  assert.match(reason(announceUrl())!, /private/);
  assert.match(reason(announceUrl({ path: '/wrong/announce' }))!, /unknown passkey/);
  assert.equal(reason(announceUrl({ path: '/s3cret/announce' })), undefined);
  assert.match(reason(announceUrl({ path: '/s3cret/announce', ih: Buffer.alloc(20, 9) }))!, /not allowed/);
  assert.equal(reason(`/s3cret/scrape?info_hash=${pct(IH)}`), undefined);
  const pkt = Buffer.alloc(98 + 2 + 16 + 1);
  pkt.write('\x02\x10/s3cret/announce\x00', 98, 'latin1');
  assert.equal(bep41Passkey(pkt), 's3cret');
  assert.equal(bep41Passkey(Buffer.alloc(98)), null);
  assert.equal(bep41Passkey(Buffer.concat([Buffer.alloc(98), Buffer.from([2, 200, 1, 2])])), null);
  assert.equal(hexToInfoHash('ab'.repeat(20)), IH.toString('latin1'));
  assert.throws(() => hexToInfoHash('xyz'), /40-character/);
});

function udpAnnounce(conn: Buffer, port: number, left: bigint, event = 2, numwant = -1, ih = IH): Buffer {
  return announcePacket({ conn, port, left, event, numwant, infoHash: ih, tx: 99, peerId: fixedBytes(20) });
}

test('UDP (BEP 15): connect, announce v4 and v6, scrape, error', () => {
  const t = new Tracker({ interval: 600 });
  const c = t.udp(udpConnect(), '127.0.0.1', 5000)!;
  assert.equal(c.length, 16);
  assert.equal(c.readUInt32BE(0), 0);
  assert.equal(c.readUInt32BE(4), 7);
  const conn = Buffer.from(c.subarray(8, 16));
  let r = Buffer.from(t.udp(udpAnnounce(conn, 6881, 0n), '127.0.0.1', 5000)!);
  assert.equal(r.readUInt32BE(0), 1);
  assert.equal(r.readUInt32BE(4), 99);
  assert.equal(r.readUInt32BE(8), 600);
  assert.equal(r.readUInt32BE(16), 1); // seeders
  assert.equal(r.length, 20);
  const c2 = Buffer.from(t.udp(udpConnect(), '127.0.0.2', 5001)!.subarray(8, 16));
  r = Buffer.from(t.udp(udpAnnounce(c2, 6882, 5n), '127.0.0.2', 5001)!);
  assert.deepEqual(decodeCompactPeers(r.subarray(20)), [{ host: '127.0.0.1', port: 6881 }]);
  assert.equal(r.readUInt32BE(12), 1); // leechers
  // IPv6 source gets 18-byte entries of v6 peers only.
  const c6 = Buffer.from(t.udp(udpConnect(), '::1', 5002)!.subarray(8, 16));
  t.udp(udpAnnounce(c6, 7000, 5n), '::1', 5002);
  const c7 = Buffer.from(t.udp(udpConnect(), '::2', 5003)!.subarray(8, 16));
  r = Buffer.from(t.udp(udpAnnounce(c7, 7001, 5n), '::2', 5003)!);
  assert.equal(r.length, 20 + 18);
  assert.equal(r.readUInt16BE(20 + 16), 7000);
  // Scrape two hashes.
  const s = Buffer.alloc(16 + 40);
  conn.copy(s, 0);
  s.writeUInt32BE(2, 8);
  s.writeUInt32BE(5, 12);
  IH.copy(s, 16);
  r = Buffer.from(t.udp(s, '127.0.0.1', 5000)!);
  assert.equal(r.length, 8 + 24);
  assert.deepEqual([r.readUInt32BE(8), r.readUInt32BE(12), r.readUInt32BE(16)], [1, 0, 3]);
  assert.deepEqual([r.readUInt32BE(20), r.readUInt32BE(24), r.readUInt32BE(28)], [0, 0, 0]);
  // Stale id from another source: error, no larger than the request.
  r = Buffer.from(t.udp(udpAnnounce(conn, 1, 0n), '127.0.0.9', 5000)!);
  assert.equal(r.readUInt32BE(0), 3);
  assert.match(r.subarray(8).toString(), /connection id/);
  // Unknown action with a valid id.
  const u = Buffer.from(s);
  u.writeUInt32BE(9, 8);
  assert.equal(t.udp(u, '127.0.0.1', 5000)!.readUInt32BE(0), 3);
  // Short packets and bad magic are dropped.
  assert.equal(t.udp(Buffer.alloc(10), '127.0.0.1', 1), null);
  const bad = udpConnect();
  bad[0] = 1;
  assert.equal(t.udp(bad, '127.0.0.1', 1), null);
});

test('UDP: no amplification — unverified sources never get more bytes than they sent; only connect is answered', () => {
  const t = new Tracker();
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), fc.integer({ min: 0, max: 3 }), (bytes, action) => {
      const msg = Buffer.from(bytes);
      if (msg.length >= 12) msg.writeUInt32BE(action, 8);
      const r = t.udp(msg, '198.51.100.7', 4242);
      if (r === null) return;
      assert.ok(r.length <= msg.length, `reply ${r.length} > request ${msg.length}`);
      const isConnect = msg.length >= 16 && msg.readUInt32BE(8) === 0;
      if (isConnect) assert.equal(r.readUInt32BE(0), 0);
      else assert.equal(r.readUInt32BE(0), 3); // only errors
    }),
    { numRuns: 3000 },
  );
  assert.equal(t.store.totalPeers, 0);
});

test('rate limiter: token bucket per key with bounded memory', () => {
  let now = 0;
  const rl = new RateLimiter(10, 20, () => now, 1000);
  let ok = 0;
  for (let i = 0; i < 50; i++) if (rl.take('a')) ok++;
  assert.equal(ok, 20);
  now += 1000;
  ok = 0;
  for (let i = 0; i < 50; i++) if (rl.take('a')) ok++;
  assert.equal(ok, 10);
  for (let i = 0; i < 100_000; i++) rl.take(`k${i}`);
  assert.ok(rl.size <= 1000);
  const t = new Tracker({ rateLimit: { perSecond: 1, burst: 2 }, now: () => now });
  body(t, announceUrl());
  body(t, announceUrl());
  assert.match(Buffer.from(asBytes(body(t, announceUrl())['failure reason'], 'f')).toString(), /rate limit/);
  assert.equal(t.udp(udpConnect(), '127.0.0.1', 1), null);
});

test('stats page (HTML and JSON) and Prometheus metrics', () => {
  const t = new Tracker();
  body(t, announceUrl());
  const j = JSON.parse(t.http('/stats?format=json', '127.0.0.1').body.toString());
  assert.equal(j.peers, 1);
  assert.equal(j.http_announces, 1);
  assert.match(t.http('/stats', '127.0.0.1').contentType, /html/);
  const m = t.http('/metrics', '127.0.0.1').body.toString();
  assert.match(m, /^bitorrent_tracker_peers 1$/m);
  assert.match(m, /bitorrent_tracker_requests_total\{proto="http",kind="announce"\} 1/);
  assert.equal(t.http('/nothing', '127.0.0.1').status, 404);
});
