/**
 * A peer that sends corrupt pieces: each bad piece fails its hash check and is fetched again
 * from an honest peer, the sender is banned after repeated failures, and nothing corrupt is
 * left on disk. Malformed or oversize wire messages end the connection, not the process.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { Session } from '@bitorrent/core';
import {
  requireTool, requireLibtorrent, tempDir, makeRandomFiles, compareTrees, waitFor, cleanupAfter, registerCleanup,
  mktorrent, startLibtorrent, startHostileSeeder,
} from '../src/index.js';

test('corrupt pieces from a hostile peer: re-fetched elsewhere, sender banned, disk clean', async (t) => {
  cleanupAfter(t);
  if (!requireLibtorrent() || !requireTool('mktorrent')) return t.skip('python3-libtorrent or mktorrent not installed');
  const d = await tempDir('eng-hostile');
  const seedDir = join(d.path, 'seed');
  const [file] = await makeRandomFiles(seedDir, [{ path: 'data.bin', size: 3 * 1024 * 1024 }], 'hostile');
  const tor = await mktorrent(file, join(d.path, 'p.torrent'), { pieceLengthLog2: 16 });
  // The hostile peer (127.0.0.5) serves every piece corrupted, as fast as it can; the honest
  // libtorrent seeder (127.0.0.1) is throttled so the hostile one gets to deliver several pieces.
  const hostile = await startHostileSeeder({
    host: '127.0.0.5', infoHash: tor.infoHash, file, pieceLength: tor.pieceLength, pieceCount: tor.pieceCount, totalLength: tor.totalLength,
  });
  const honest = await startLibtorrent({ mode: 'seed', torrent: tor.path, savePath: seedDir, uploadRateLimit: 1_500_000 });
  await honest.waitSeeding();

  const s = new Session({ port: 0, host: '127.0.0.1' });
  await s.listen();
  registerCleanup(() => s.close());
  const dl = join(d.path, 'dl');
  await mkdir(dl);
  const tt = await s.add({ torrent: tor.bytes, path: dl, seed: false, peers: [{ host: '127.0.0.5', port: hostile.port }] });
  const failures: { index: number; who: string[] }[] = [];
  const bans: { key: string; at: number }[] = [];
  tt.on('hash-failure', (index: number, who: string[]) => failures.push({ index, who }));
  tt.on('peer-banned', (key: string) => bans.push({ key, at: Date.now() }));
  await waitFor(() => hostile.corruptBlocksServed > 0, { timeoutMs: 10_000, what: 'the hostile peer to serve a corrupt block' });
  tt.addPeer({ host: '127.0.0.1', port: honest.port });

  await waitFor(() => bans.some((b) => b.key.startsWith('127.0.0.5:')), { timeoutMs: 20_000, what: `a ban of the hostile peer (failures: ${failures.length})` });
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([tt.done, new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`download did not finish: ${JSON.stringify(tt.stats())}`)), 30_000)))]);
  clearTimeout(timer);

  assert.ok(failures.length >= 2, `at least two hash failures before the ban (saw ${failures.length})`);
  assert.ok(failures.every((f) => f.who.some((k) => k.startsWith('127.0.0.5:'))), 'every failed piece involved the hostile peer');
  assert.ok(!bans.some((b) => b.key.startsWith('127.0.0.1:')), 'the honest peer was not banned');
  const stats = tt.stats();
  assert.equal(stats.hashFailures, failures.length);
  assert.ok(stats.wastedBytes >= failures.length * 1, 'wasted bytes are accounted');
  // Banned means banned: no reconnection to the hostile address after the ban.
  const banAt = bans.find((b) => b.key.startsWith('127.0.0.5:'))!.at;
  assert.equal(hostile.connections.filter((c) => c.at > banAt + 50).length, 0, 'no connection to the banned peer after the ban');
  assert.equal(tt.isBanned('127.0.0.5'), true);
  // Nothing corrupt on disk: the file is byte-identical to the original.
  assert.deepEqual((await compareTrees(file, join(dl, 'data.bin'))).differences, []);
});

/** Connects to host:port, sends `chunks` in order, resolves with how the connection ended. */
function rawExchange(host: string, port: number, chunks: Buffer[], timeoutMs = 5000): Promise<{ closed: boolean; received: Buffer }> {
  return new Promise((resolve) => {
    const sock = connect(port, host);
    let received = Buffer.alloc(0);
    const finish = (closed: boolean): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ closed, received });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on('connect', () => {
      for (const c of chunks) sock.write(c);
    });
    sock.on('data', (d: Buffer) => (received = Buffer.concat([received, d])));
    sock.on('error', () => undefined);
    sock.on('close', () => finish(true));
  });
}

function handshake(infoHash: string): Buffer {
  return Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol', 'latin1'), Buffer.alloc(8), Buffer.from(infoHash, 'hex'), Buffer.from('-XX0001-malformed!!!', 'latin1')]);
}

function message(id: number, payload: Buffer = Buffer.alloc(0), lengthOverride?: number): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt32BE(lengthOverride ?? payload.length + 1, 0);
  h[4] = id;
  return Buffer.concat([h, payload]);
}

test('malformed and oversize wire messages: the connection is dropped, the seeder keeps serving', async (t) => {
  cleanupAfter(t);
  if (!requireTool('mktorrent')) return t.skip('mktorrent not installed');
  const d = await tempDir('eng-malformed');
  const seedDir = join(d.path, 'seed');
  const [file] = await makeRandomFiles(seedDir, [{ path: 'data.bin', size: 1024 * 1024 }], 'malformed');
  const tor = await mktorrent(file, join(d.path, 'p.torrent'), { pieceLengthLog2: 16 });
  const s = new Session({ port: 0, host: '127.0.0.1' });
  await s.listen();
  registerCleanup(() => s.close());
  const seed = await s.add({ torrent: tor.bytes, path: seedDir, seed: true });
  await seed.done;
  const hs = handshake(tor.infoHash);
  const cases: [string, Buffer[]][] = [
    // Not a plaintext handshake, so possibly an MSE key exchange (96 bytes + up to 512 of padding): junk
    // is dropped once the padding window passes without the MSE synchronisation marker.
    ['not a BitTorrent handshake', [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'.padEnd(700, ' '))]],
    ['unknown info-hash', [handshake('00'.repeat(20))]],
    ['message length 2 GiB', [hs, Buffer.from([0x7f, 0xff, 0xff, 0xff, 7])]],
    ['bitfield of the wrong size', [hs, message(5, Buffer.alloc(100, 0xff))]],
    ['have index out of range', [hs, message(4, Buffer.from([0, 0, 0x10, 0]))]],
    ['request message of the wrong size', [hs, message(2), message(6, Buffer.alloc(4))]],
  ];
  for (const [name, chunks] of cases) {
    const r = await rawExchange('127.0.0.1', s.port, chunks);
    assert.equal(r.closed, true, `${name}: the engine closed the connection`);
  }
  // Still healthy: a well-behaved peer gets the whole file.
  const dl = join(d.path, 'dl');
  await mkdir(dl);
  const s2 = new Session({ port: 0, host: '127.0.0.1' });
  await s2.listen();
  registerCleanup(() => s2.close());
  const leech = await s2.add({ torrent: tor.bytes, path: dl, seed: false, peers: [{ host: '127.0.0.1', port: s.port }] });
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([leech.done, new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`download did not finish: ${JSON.stringify(leech.stats())}`)), 20_000)))]);
  clearTimeout(timer);
  assert.deepEqual((await compareTrees(file, join(dl, 'data.bin'))).differences, []);
});
