import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { encodeCompactPeers, encodeCompactPeers6 } from '../src/compact.js';
import { VirtualClock } from '../src/clock.js';
import {
  httpAnnounce, httpScrape, buildAnnounceUrl, scrapeUrlFor, percentEncodeBytes, TrackerError, MAX_TRACKER_RESPONSE,
  UdpTrackerClient, parseUdpUrl, Announcer, type AnnounceParams, type AnnounceResponse,
} from '../src/tracker-client/index.js';
import { fakeHttpTracker, fakeUdpTracker, udpAnnounceReply, udpError, rawQuery } from './tracker-client-fakes.js';

const infoHash = Buffer.from('00ff2025263f41a0e1ce7e20fa7f0a11223344ff', 'hex');
const peerId = Buffer.from('-BT0001-\x00\x01 &%?=+abcd', 'latin1');
const params = (extra: Partial<AnnounceParams> = {}): AnnounceParams => ({ infoHash, peerId, port: 6881, uploaded: 10, downloaded: 20, left: 30, ...extra });

// ------------------------------------------------------------------------------------------ HTTP

test('http: BEP 3 query encoding, compact + peers6, intervals, tracker id, warning', async (t) => {
  let q: Map<string, Buffer[]> | undefined;
  const tr = await fakeHttpTracker((_req, query) => {
    q = query;
    return {
      interval: 1200,
      'min interval': 60,
      complete: 5,
      incomplete: 7,
      'tracker id': 'tid-1',
      'warning message': 'be nice',
      peers: encodeCompactPeers([{ host: '10.0.0.1', port: 51413 }]),
      peers6: encodeCompactPeers6([{ host: '2001:db8::1', port: 6881 }]),
    };
  });
  t.after(() => tr.close());
  const res = await httpAnnounce(tr.url + '?passkey=abc', params({ event: 'started', key: 0xdeadbeef, numwant: 80, trackerId: 'old' }));
  assert.deepEqual(res, {
    interval: 1200, minInterval: 60, complete: 5, incomplete: 7, trackerId: 'tid-1', warning: 'be nice',
    peers: [{ host: '10.0.0.1', port: 51413 }, { host: '2001:db8::1', port: 6881 }],
  });
  assert.ok(q);
  assert.deepEqual(q.get('info_hash'), [infoHash]);
  assert.deepEqual(q.get('peer_id'), [peerId]);
  assert.equal(q.get('passkey')![0].toString(), 'abc');
  for (const [k, v] of [['port', '6881'], ['uploaded', '10'], ['downloaded', '20'], ['left', '30'], ['compact', '1'], ['event', 'started'], ['numwant', '80'], ['key', 'deadbeef'], ['trackerid', 'old']]) {
    assert.equal(q.get(k)![0].toString(), v, k);
  }
});

test('http: percent encoding keeps unreserved bytes only', () => {
  assert.equal(percentEncodeBytes(Buffer.from([0x41, 0x7e, 0x20, 0x00, 0xff, 0x2e])), 'A~%20%00%FF.');
  const u = buildAnnounceUrl('http://t/announce?x=1#frag', params());
  assert.ok(u.startsWith('http://t/announce?x=1&info_hash='));
  assert.equal(rawQuery(u).get('info_hash')![0].equals(infoHash), true);
  assert.equal(scrapeUrlFor('http://t/a/announce.php?k=1'), 'http://t/a/scrape.php?k=1');
  assert.equal(scrapeUrlFor('http://t/announcex'), 'http://t/scrapex');
  assert.equal(scrapeUrlFor('http://t/a/ann'), undefined);
});

test('http: non-compact dictionary peers; unusable entries skipped', async (t) => {
  const tr = await fakeHttpTracker(() => ({
    interval: 900,
    peers: [
      { ip: '192.168.1.2', port: 6881, 'peer id': Buffer.alloc(20, 1) },
      { ip: 'peer.example', port: 80 },
      { ip: '1.2.3.4', port: 0 },
      { ip: '1.2.3.4' },
      'garbage',
    ],
  }));
  t.after(() => tr.close());
  const res = await httpAnnounce(tr.url, params({ compact: false }));
  assert.deepEqual(res.peers, [{ host: '192.168.1.2', port: 6881 }, { host: 'peer.example', port: 80 }]);
  assert.equal(rawQuery(tr.requests[0]).get('compact'), undefined);
});

test('http: failure reason becomes a TrackerError with that text (also on HTTP 4xx)', async (t) => {
  let status = 200;
  const tr = await fakeHttpTracker(() => (res) => {
    res.writeHead(status);
    res.end(Buffer.from('d14:failure reason22:torrent not registerede'));
  });
  t.after(() => tr.close());
  await assert.rejects(httpAnnounce(tr.url, params()), (e: unknown) => e instanceof TrackerError && e.fromTracker && /torrent not registered/.test(e.message) && e.message.includes(tr.url));
  status = 403;
  await assert.rejects(httpAnnounce(tr.url, params()), /torrent not registered/);
});

test('http: malformed responses are TrackerErrors, never crashes', async (t) => {
  const bodies: (Buffer | (() => unknown))[] = [
    Buffer.from('<html>hello</html>'),
    Buffer.from('li1ei2ee'),
    Buffer.from('d8:intervali10e5:peers5:abcdee'),
    Buffer.from('d8:intervali-5ee'),
    Buffer.from('d8:intervali1800e5:peersi3ee'),
    Buffer.from('d8:intervali1800e6:peers67:abcdefe'),
    Buffer.from('d8:intervali1800e5:peers'),
  ];
  let i = 0;
  const tr = await fakeHttpTracker(() => bodies[i] as Buffer);
  t.after(() => tr.close());
  for (i = 0; i < bodies.length; i++) {
    await assert.rejects(httpAnnounce(tr.url, params()), TrackerError, `body ${i}`);
  }
});

test('http: non-200 without failure reason, oversize body, timeout, refused connection', async (t) => {
  let mode = 'status';
  const tr = await fakeHttpTracker(() => (res) => {
    if (mode === 'status') {
      res.writeHead(500);
      res.end('oops');
    } else if (mode === 'huge') {
      res.writeHead(200);
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      let sent = 0;
      const pump = () => {
        while (sent <= MAX_TRACKER_RESPONSE + chunk.length) {
          sent += chunk.length;
          if (!res.write(chunk)) return res.once('drain', pump);
        }
        res.end();
      };
      pump();
    } else {
      // never answer
    }
  });
  t.after(() => tr.close());
  await assert.rejects(httpAnnounce(tr.url, params()), /HTTP status 500/);
  mode = 'huge';
  await assert.rejects(httpAnnounce(tr.url, params()), /too large/);
  mode = 'hang';
  await assert.rejects(httpAnnounce(tr.url, params(), { timeoutMs: 150 }), /timed out after 150 ms/);
  const ac = new AbortController();
  const p = httpAnnounce(tr.url, params(), { signal: ac.signal });
  ac.abort();
  await assert.rejects(p, /aborted/);
  await assert.rejects(httpAnnounce('http://127.0.0.1:1/announce', params()), /connection failed/);
  await assert.rejects(httpAnnounce('ftp://x/announce', params()), /unsupported protocol/);
  await assert.rejects(httpAnnounce(tr.url, params({ infoHash: Buffer.alloc(3) })), /20 bytes/);
});

test('http: redirects followed up to 3, loops refused', async (t) => {
  const final = await fakeHttpTracker(() => ({ interval: 100, peers: Buffer.alloc(0) }));
  t.after(() => final.close());
  let hops = 0;
  const redir = await fakeHttpTracker((req) => (res) => {
    hops++;
    const n = Number(new URL(req.url!, 'http://x').searchParams.get('hop') ?? '0');
    const query = req.url!.slice(req.url!.indexOf('?') + 1).replace(/^hop=\d+&?/, '');
    const next = req.url!.startsWith('/loop') ? `/loop?hop=${n + 1}&${query}` : n < 2 ? `/r?hop=${n + 1}&${query}` : `${final.url}?${query}`;
    res.writeHead(302, { location: next });
    res.end();
  });
  t.after(() => redir.close());
  const res = await httpAnnounce(`http://127.0.0.1:${redir.port}/r`, params());
  assert.equal(res.interval, 100);
  assert.equal(hops, 3);
  assert.equal(final.requests.length, 1);
  assert.deepEqual(rawQuery(final.requests[0]).get('info_hash'), [infoHash], 'query preserved through redirects');
  await assert.rejects(httpAnnounce(`http://127.0.0.1:${redir.port}/loop`, params()), /too many redirects/);
});

test('http: scrape (BEP 48)', async (t) => {
  const other = Buffer.alloc(20, 7);
  const tr = await fakeHttpTracker((req) => {
    assert.ok(req.url!.startsWith('/scrape?'));
    return { files: new Map([[infoHash, { complete: 3, incomplete: 4, downloaded: 9 }]]) };
  });
  t.after(() => tr.close());
  const res = await httpScrape(tr.url, [infoHash, other]);
  assert.deepEqual(res, [{ infoHash, complete: 3, incomplete: 4, downloaded: 9 }]);
  assert.deepEqual(rawQuery(tr.requests[0]).get('info_hash'), [infoHash, other]);
  await assert.rejects(httpScrape('http://127.0.0.1:1/tracker', [infoHash]), /does not support scrape/);
});

// ------------------------------------------------------------------------------------------ UDP

test('udp: connect + announce (IPv4), connection id reused, fields encoded per BEP 15', async (t) => {
  const tr = await fakeUdpTracker((r) => (r.action === 1 ? udpAnnounceReply(r.tid, 1800, 4, 2, encodeCompactPeers([{ host: '10.1.2.3', port: 6000 }, { host: '10.1.2.4', port: 6001 }])) : 'default'));
  t.after(() => tr.close());
  const client = new UdpTrackerClient({ timeoutMs: 200 });
  t.after(() => client.close());
  const res = await client.announce(tr.url, params({ event: 'started', key: 0x01020304, numwant: 33 }));
  assert.deepEqual(res, { interval: 1800, incomplete: 4, complete: 2, peers: [{ host: '10.1.2.3', port: 6000 }, { host: '10.1.2.4', port: 6001 }] });
  const ann = tr.requests.find((r) => r.action === 1)!;
  assert.equal(ann.connId.readBigUInt64BE(0), 0x0102030405060708n);
  const b = ann.body;
  assert.equal(b.length, 82);
  assert.ok(b.subarray(0, 20).equals(infoHash));
  assert.ok(b.subarray(20, 40).equals(peerId));
  assert.equal(b.readBigUInt64BE(40), 20n);
  assert.equal(b.readBigUInt64BE(48), 30n);
  assert.equal(b.readBigUInt64BE(56), 10n);
  assert.equal(b.readUInt32BE(64), 2);
  assert.equal(b.readUInt32BE(72), 0x01020304);
  assert.equal(b.readInt32BE(76), 33);
  assert.equal(b.readUInt16BE(80), 6881);
  await client.announce(tr.url, params({ event: 'completed' }));
  assert.equal(tr.requests.filter((r) => r.action === 0).length, 1, 'connection id cached');
  assert.equal(tr.requests.filter((r) => r.action === 1)[1].body.readUInt32BE(64), 1);
});

test('udp: IPv6 tracker replies carry 18-byte peers', async (t) => {
  let tr;
  try {
    tr = await fakeUdpTracker((r) => (r.action === 1 ? udpAnnounceReply(r.tid, 60, 0, 1, encodeCompactPeers6([{ host: '2001:db8::7', port: 7000 }])) : 'default'), 6);
  } catch (e) {
    t.skip(`no IPv6 loopback here: ${(e as Error).message}`);
    return;
  }
  t.after(() => tr.close());
  const client = new UdpTrackerClient({ timeoutMs: 200 });
  t.after(() => client.close());
  const res = await client.announce(tr.url, params());
  assert.deepEqual(res.peers, [{ host: '2001:db8::7', port: 7000 }]);
});

test('udp: error action → TrackerError with the text; malformed replies rejected', async (t) => {
  let mode = 'error';
  const tr = await fakeUdpTracker((r) => {
    if (r.action === 0) return 'default';
    if (mode === 'error') return udpError(r.tid, 'info hash not whitelisted');
    if (mode === 'short') return Buffer.concat([udpAnnounceReply(r.tid, 1, 0, 0, Buffer.alloc(0)).subarray(0, 12)]);
    return udpAnnounceReply(r.tid, 60, 0, 0, Buffer.alloc(7));
  });
  t.after(() => tr.close());
  const client = new UdpTrackerClient({ timeoutMs: 200, maxRetries: 0 });
  t.after(() => client.close());
  await assert.rejects(client.announce(tr.url, params()), (e: unknown) => e instanceof TrackerError && e.fromTracker && /info hash not whitelisted/.test(e.message));
  mode = 'short';
  await assert.rejects(client.announce(tr.url, params()), /too short/);
  mode = 'odd';
  await assert.rejects(client.announce(tr.url, params()), /not a multiple of 6/);
  assert.throws(() => parseUdpUrl('udp://host'), /port/);
  await assert.rejects(client.announce('udp://127.0.0.1/announce', params()), /port/);
});

test('udp: retransmits after the timeout, ignores spoofed and mismatched packets', async (t) => {
  let dropped = 0;
  const spoofer = await fakeUdpTracker(() => undefined);
  t.after(() => spoofer.close());
  const tr = await fakeUdpTracker((r, reply) => {
    if (r.action === 0 && dropped === 0) {
      dropped++;
      return undefined; // lose the first connect: the client must retransmit
    }
    if (r.action === 1) {
      // A packet with the right transaction id from another port, and one with the wrong action, both ignored.
      spoofer.socket.send(udpAnnounceReply(r.tid, 1, 0, 0, encodeCompactPeers([{ host: '6.6.6.6', port: 666 }])), r.from.port, r.from.address);
      const wrong = udpAnnounceReply(r.tid, 1, 0, 0, Buffer.alloc(0));
      wrong.writeUInt32BE(2, 0);
      reply(wrong);
      setTimeout(() => reply(udpAnnounceReply(r.tid, 99, 0, 0, encodeCompactPeers([{ host: '1.1.1.1', port: 1 }]))), 30);
      return undefined;
    }
    return 'default';
  });
  t.after(() => tr.close());
  const client = new UdpTrackerClient({ timeoutMs: 100, maxRetries: 2 });
  t.after(() => client.close());
  const res = await client.announce(tr.url, params());
  assert.equal(res.interval, 99);
  assert.deepEqual(res.peers, [{ host: '1.1.1.1', port: 1 }]);
  assert.equal(tr.requests.filter((r) => r.action === 0).length, 2, 'connect retransmitted once');
});

test('udp: gives up after maxRetries with a clear error; overall deadline and close()', async (t) => {
  const tr = await fakeUdpTracker(() => undefined);
  t.after(() => tr.close());
  const client = new UdpTrackerClient({ timeoutMs: 20, maxRetries: 2 });
  await assert.rejects(client.announce(tr.url, params()), /no reply after 3 attempts/);
  assert.equal(tr.requests.length, 3, '20 + 40 + 80 ms attempts');
  const slow = new UdpTrackerClient({ timeoutMs: 10_000 });
  await assert.rejects(slow.announce(tr.url, params(), { timeoutMs: 100 }), /timed out after 100 ms/);
  const p = slow.announce(tr.url, params());
  await once(tr.socket, 'message');
  slow.close();
  await assert.rejects(p, /closed/);
  client.close();
});

test('udp: concurrent requests multiplex on one socket and share one connect', async (t) => {
  const tr = await fakeUdpTracker((r) => (r.action === 1 ? udpAnnounceReply(r.tid, r.body.readUInt16BE(80), 0, 0, Buffer.alloc(0)) : 'default'));
  t.after(() => tr.close());
  const client = new UdpTrackerClient({ timeoutMs: 500 });
  t.after(() => client.close());
  const res = await Promise.all([1, 2, 3, 4, 5].map((port) => client.announce(tr.url, params({ port }))));
  assert.deepEqual(res.map((r) => r.interval), [1, 2, 3, 4, 5]);
  assert.equal(tr.requests.filter((r) => r.action === 0).length, 1);
  assert.equal(new Set(tr.requests.map((r) => r.from.port)).size, 1, 'one local socket');
});

test('udp: connection id expires after 60 s (injected clock)', async (t) => {
  const tr = await fakeUdpTracker((r) => (r.action === 1 ? udpAnnounceReply(r.tid, 60, 0, 0, Buffer.alloc(0)) : 'default'));
  t.after(() => tr.close());
  const clock = new VirtualClock();
  const client = new UdpTrackerClient({ clock });
  t.after(() => client.close());
  const connects = () => tr.requests.filter((r) => r.action === 0).length;
  await client.announce(tr.url, params());
  clock.advance(59_999);
  await client.announce(tr.url, params());
  assert.equal(connects(), 1);
  clock.advance(1);
  await client.announce(tr.url, params());
  assert.equal(connects(), 2);
});

test('udp: scrape', async (t) => {
  const tr = await fakeUdpTracker((r) => {
    if (r.action !== 2) return 'default';
    const n = r.body.length / 20;
    const b = Buffer.alloc(8 + 12 * n);
    b.writeUInt32BE(2, 0);
    b.writeUInt32BE(r.tid, 4);
    for (let i = 0; i < n; i++) {
      b.writeUInt32BE(10 + i, 8 + 12 * i);
      b.writeUInt32BE(20 + i, 12 + 12 * i);
      b.writeUInt32BE(30 + i, 16 + 12 * i);
    }
    return b;
  });
  t.after(() => tr.close());
  const client = new UdpTrackerClient({ timeoutMs: 500 });
  t.after(() => client.close());
  const h2 = Buffer.alloc(20, 2);
  assert.deepEqual(await client.scrape(tr.url, [infoHash, h2]), [
    { infoHash, complete: 10, downloaded: 20, incomplete: 30 },
    { infoHash: h2, complete: 11, downloaded: 21, incomplete: 31 },
  ]);
});

// ------------------------------------------------------------------------------------------ Announcer

/** Like events.once but without treating 'error' events (per-tracker reports) as a rejection. */
function nextEvent<T extends unknown[]>(em: Announcer, name: string): Promise<T> {
  return new Promise((resolve) => em.once(name, (...args: unknown[]) => resolve(args as T)));
}

test('announcer: started → re-announce at interval → completed once → stopped; tier failover and promotion', async (t) => {
  const events: string[] = [];
  const good = await fakeHttpTracker((_req, q) => {
    events.push(`good:${q.get('event')?.[0].toString() ?? 'none'}:left=${q.get('left')![0]}`);
    return { interval: 120, 'min interval': 60, peers: encodeCompactPeers([{ host: '10.0.0.9', port: 9999 }]) };
  });
  t.after(() => good.close());
  const bad = await fakeHttpTracker(() => ({ 'failure reason': 'go away' }));
  t.after(() => bad.close());
  const clock = new VirtualClock(1_000_000);
  let left = 1000;
  const a = new Announcer({
    infoHash, peerId, port: 7000, clock, rng: () => 0,
    tiers: [[bad.url, 'udp://127.0.0.1:1/announce', 'wss://nope/announce'], [good.url]],
    getStats: () => ({ uploaded: 0, downloaded: 1000 - left, left }),
    udp: new UdpTrackerClient({ timeoutMs: 20, maxRetries: 0 }),
  });
  const errors: string[] = [];
  a.on('error', (e: TrackerError) => errors.push(e.message));
  const peers = nextEvent<[unknown[]]>(a, 'peers');
  a.start();
  assert.deepEqual((await peers)[0], [{ host: '10.0.0.9', port: 9999 }]);
  assert.equal(errors.length, 3, errors.join('; '));
  assert.ok(errors.some((e) => e.includes(bad.url) && e.includes('go away')));
  assert.ok(errors.some((e) => /unsupported tracker protocol/.test(e)));
  assert.deepEqual(events, ['good:started:left=1000']);
  assert.equal(a.nextAnnounceAt, 1_000_000 + 120_000);

  // Regular re-announce after the interval: first tier is tried again first (BEP 12), then the good one.
  const second = nextEvent(a, 'announce');
  clock.advance(120_000);
  await second;
  assert.deepEqual(events, ['good:started:left=1000', 'good:none:left=1000']);

  left = 0;
  const third = nextEvent(a, 'announce');
  a.complete();
  a.complete();
  await third;
  assert.deepEqual(events.slice(2), ['good:completed:left=0']);
  const fourth = nextEvent(a, 'announce');
  clock.advance(120_000);
  await fourth;
  assert.deepEqual(events.slice(3), ['good:none:left=0'], 'completed sent once');

  await a.stop();
  assert.deepEqual(events.slice(4), ['good:stopped:left=0']);
  assert.equal(a.nextAnnounceAt, undefined);
  clock.advance(10_000_000);
  assert.equal(events.length, 5, 'no announces after stop');
});

test('announcer: a working tracker moves to the front of its tier; backoff when all fail; no listener → no throw', async (t) => {
  let okCount = 0;
  const ok = await fakeHttpTracker(() => {
    okCount++;
    return { interval: 1800, peers: Buffer.alloc(0) };
  });
  t.after(() => ok.close());
  let failing = true;
  const flaky = await fakeHttpTracker(() => (failing ? { 'failure reason': 'down' } : { interval: 1800, peers: Buffer.alloc(0) }));
  t.after(() => flaky.close());
  const clock = new VirtualClock();
  const a = new Announcer({
    infoHash, peerId, port: 1, clock, rng: () => 0, tiers: [[flaky.url, ok.url]],
    getStats: () => ({ uploaded: 0, downloaded: 0, left: 1 }), retryBaseMs: 1000,
  });
  // rng () => 0 swaps in Fisher-Yates: check the shuffled order, then see promotion.
  const order = a.tierList[0];
  const first = nextEvent<[string]>(a, 'announce');
  a.start();
  const [url] = await first;
  assert.equal(url, ok.url);
  assert.deepEqual(a.tierList, [[ok.url, flaky.url]], `promoted (initial order ${order})`);
  await a.stop();

  // All trackers failing: exponential backoff 1 s, 2 s, 4 s (no 'error' listener: nothing thrown).
  const dead = new Announcer({
    infoHash, peerId, port: 1, clock, tiers: [[flaky.url]], getStats: () => ({ uploaded: 0, downloaded: 0, left: 1 }), retryBaseMs: 1000,
  });
  const delays: number[] = [];
  for (let i = 0; i < 3; i++) {
    const retry = nextEvent<[number, number]>(dead, 'retry');
    if (i === 0) dead.start();
    else clock.advance(delays[i - 1]);
    const [delay, failures] = await retry;
    assert.equal(failures, i + 1);
    assert.equal(dead.nextAnnounceAt! - clock.now(), delay);
    delays.push(delay);
  }
  assert.deepEqual(delays, [1000, 2000, 4000]);
  failing = false;
  const recovered = nextEvent(dead, 'announce');
  clock.advance(4000);
  await recovered;
  assert.equal(dead.nextAnnounceAt! - clock.now(), 1_800_000);
  await dead.stop();
});

test('announcer: hostile intervals are floored and capped; announceNow honours min interval; scrape', async (t) => {
  let hostileInterval = 0;
  const tr = await fakeHttpTracker((req) => {
    if (req.url!.startsWith('/scrape')) return { files: new Map([[infoHash, { complete: 1, incomplete: 2, downloaded: 3 }]]) };
    return { interval: hostileInterval, 'min interval': 45, peers: Buffer.alloc(0) };
  });
  t.after(() => tr.close());
  const clock = new VirtualClock();
  const a = new Announcer({ infoHash, peerId, port: 1, clock, tiers: [[tr.url]], getStats: () => ({ uploaded: 0, downloaded: 0, left: 1 }) });
  const first = nextEvent<[string, AnnounceResponse]>(a, 'announce');
  a.start();
  await first;
  assert.equal(a.nextAnnounceAt, 45_000, 'max(min interval 45 s, floor 30 s, interval 0)');
  clock.advance(10_000);
  a.announceNow();
  assert.equal(a.nextAnnounceAt, 45_000, 'manual announce waits for min interval');
  assert.deepEqual(await a.scrape(), { infoHash, complete: 1, incomplete: 2, downloaded: 3 });
  hostileInterval = 0xffffffff;
  const second = nextEvent(a, 'announce');
  clock.advance(35_000);
  await second;
  assert.equal(a.nextAnnounceAt! - clock.now(), 24 * 3600 * 1000, 'capped at one day');
  await a.stop();
});
