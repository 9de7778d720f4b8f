import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { encodeCompactPeers, decodeCompactPeers, encodeCompactPeers6, decodeCompactPeers6, parsePeerAddress, peerKey, CompactError } from '../src/compact.js';

test('IPv4 compact round trip', () => {
  const peers = [{ host: '127.0.0.1', port: 6881 }, { host: '10.1.2.3', port: 1 }];
  const buf = encodeCompactPeers(peers);
  assert.equal(buf.length, 12);
  assert.deepEqual(decodeCompactPeers(buf), peers);
});

test('IPv6 compact round trip, compressed output', () => {
  const peers = [{ host: '::1', port: 51413 }, { host: '2001:db8::ff00:42:8329', port: 80 }, { host: '1:2:3:4:5:6:7:8', port: 9 }];
  assert.deepEqual(decodeCompactPeers6(encodeCompactPeers6(peers)), peers);
  assert.deepEqual(decodeCompactPeers6(encodeCompactPeers6([{ host: '::ffff:1.2.3.4', port: 5 }])), [{ host: '::ffff:102:304', port: 5 }]);
});

test('truncated lists are rejected', () => {
  assert.throws(() => decodeCompactPeers(Buffer.alloc(7)), CompactError);
  assert.throws(() => decodeCompactPeers6(Buffer.alloc(17)), CompactError);
});

test('peer address parsing', () => {
  assert.deepEqual(parsePeerAddress('[::1]:6881'), { host: '::1', port: 6881 });
  assert.equal(peerKey({ host: '::1', port: 1 }), '[::1]:1');
  assert.throws(() => parsePeerAddress('nope'), CompactError);
});

test('property: IPv4 round trip', () => {
  fc.assert(fc.property(fc.array(fc.record({ host: fc.ipV4(), port: fc.integer({ min: 1, max: 65535 }) }), { maxLength: 20 }), (peers) => {
    const norm = peers.map((p) => ({ host: p.host.split('.').map(Number).join('.'), port: p.port }));
    assert.deepEqual(decodeCompactPeers(encodeCompactPeers(norm)), norm);
  }));
});
