import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MagnetError, formatMagnet, parseMagnet, parseTorrentId } from '../src/magnet.js';

const HEX = 'c12fe1c06bba254a9dc9f519b335aa7c1367a88a';
// RFC 4648 base32 of the same 20 bytes
const B32 = Buffer.from(HEX, 'hex');
function base32(b: Buffer): string {
  const A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0, acc = 0, out = '';
  for (const x of b) {
    acc = (acc << 8) | x;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += A[(acc >>> bits) & 31];
    }
  }
  return out;
}

test('hex and base32 btih, dn, tr, ws, x.pe, so', () => {
  const m = parseMagnet(
    `magnet:?xt=urn:btih:${HEX.toUpperCase()}&dn=My+Files%20x&tr=udp%3A%2F%2Ft%3A1%2Fa%2Bb&tr.1=http://t2/ann&ws=http%3A%2F%2Fws%2Ff&x.pe=127.0.0.1:6881&x.pe=[::1]:51413&so=0,2,4-6&foo=bar`,
  );
  assert.equal(m.infoHashHex, HEX);
  assert.equal(m.name, 'My Files x');
  assert.deepEqual(m.trackers, ['udp://t:1/a+b', 'http://t2/ann']);
  assert.deepEqual(m.webSeeds, ['http://ws/f']);
  assert.deepEqual(m.peers, [{ host: '127.0.0.1', port: 6881 }, { host: '::1', port: 51413 }]);
  assert.deepEqual(m.selectOnly, [0, 2, 4, 5, 6]);
  const b = parseMagnet(`magnet:?xt=urn:btih:${base32(B32)}`);
  assert.equal(b.infoHashHex, HEX);
  assert.equal(parseMagnet(`magnet:?xt=urn:btih:${base32(B32).toLowerCase()}`).infoHashHex, HEX);
});

test('hybrid magnet (btih + btmh) uses btih; btmh alone is a clear unsupported error', () => {
  const btmh = 'urn:btmh:1220' + 'ab'.repeat(32);
  assert.equal(parseMagnet(`magnet:?xt=${btmh}&xt=urn:btih:${HEX}`).infoHashHex, HEX);
  assert.throws(() => parseMagnet(`magnet:?xt=${btmh}`), /v2-only magnet links \(btmh, BEP 52\) are not supported yet/);
});

test('malformed magnets name the problem', () => {
  const cases: [string, RegExp][] = [
    ['http://x', /must start with 'magnet:\?'/],
    ['magnet:?dn=x', /missing 'xt=urn:btih:<info-hash>'/],
    ['magnet:?xt=urn:btih:abc', /invalid info-hash 'abc'/],
    [`magnet:?xt=urn:btih:${'g'.repeat(40)}`, /invalid info-hash/],
    [`magnet:?xt=urn:btih:${HEX}&xt=urn:btih:${'0'.repeat(40)}`, /several different btih/],
    [`magnet:?xt=urn:btih:${HEX}&dn=%E0%A4%A`, /parameter 'dn' has invalid percent-encoding/],
    [`magnet:?xt=urn:btih:${HEX}&x.pe=nonsense`, /x\.pe: invalid peer address/],
    [`magnet:?xt=urn:btih:${HEX}&so=5-2`, /so: range '5-2' is reversed/],
    [`magnet:?xt=urn:btih:${HEX}&so=a`, /so: invalid item 'a'/],
    [`magnet:?xt=urn:btih:${HEX}&so=0-999999999`, /so: selects too many files/],
  ];
  for (const [uri, re] of cases) assert.throws(() => parseMagnet(uri), (e: Error) => e instanceof MagnetError && re.test(e.message), uri);
});

test('parseTorrentId: magnet, bare hex, bare base32; rejects others', () => {
  assert.equal(parseTorrentId(HEX).infoHashHex, HEX);
  assert.equal(parseTorrentId(` ${HEX.toUpperCase()} `).infoHashHex, HEX);
  assert.equal(parseTorrentId(base32(B32)).infoHashHex, HEX);
  assert.equal(parseTorrentId(`magnet:?xt=urn:btih:${HEX}&dn=a`).name, 'a');
  assert.throws(() => parseTorrentId('file.torrent'), /not a magnet link or info-hash/);
});

test('property: formatMagnet → parseMagnet round trip', () => {
  const peer = fc.oneof(
    fc.record({ host: fc.ipV4(), port: fc.integer({ min: 1, max: 65535 }) }),
    fc.record({ host: fc.constantFrom('::1', '2001:db8::7'), port: fc.integer({ min: 1, max: 65535 }) }),
  );
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 20, maxLength: 20 }),
      fc.option(fc.string({ minLength: 1, maxLength: 30 }), { nil: undefined }),
      fc.uniqueArray(fc.webUrl(), { maxLength: 4 }),
      fc.uniqueArray(fc.webUrl(), { maxLength: 3 }),
      fc.array(peer, { maxLength: 3 }),
      fc.option(fc.uniqueArray(fc.nat(300), { minLength: 1, maxLength: 20 }), { nil: undefined }),
      (hash, name, trackers, webSeeds, peers, so) => {
        const infoHash = Buffer.from(hash);
        const uri = formatMagnet({ infoHash, name, trackers, webSeeds, peers, selectOnly: so });
        const m = parseMagnet(uri);
        assert.deepEqual(m.infoHash, infoHash);
        assert.equal(m.name, name);
        assert.deepEqual(m.trackers, trackers);
        assert.deepEqual(m.webSeeds, webSeeds);
        assert.deepEqual(m.peers, peers.map((p) => ({ host: p.host, port: p.port })));
        assert.deepEqual(m.selectOnly, so ? [...so].sort((a, b) => a - b) : undefined);
      },
    ),
    { numRuns: 300 },
  );
});
