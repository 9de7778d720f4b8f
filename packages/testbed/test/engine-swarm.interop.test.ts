/**
 * Magnet links (metadata fetched over ut_metadata from a libtorrent peer) and PEX (a peer that
 * bitorrent can only learn about from another peer's ut_pex messages).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { Session, type Torrent } from '@bitorrent/core';
import {
  requireTool, requireLibtorrent, tempDir, makeRandomFiles, multiFileSpec, compareTrees, waitFor, cleanupAfter, registerCleanup,
  mktorrent, startLibtorrent, magnetLink,
} from '../src/index.js';

async function withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what()}`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

async function session(): Promise<Session> {
  const s = new Session({ port: 0, host: '127.0.0.1' });
  await s.listen();
  registerCleanup(() => s.close());
  return s;
}

test('magnet link: metadata from a libtorrent peer (ut_metadata), then the data', async (t) => {
  cleanupAfter(t);
  if (!requireLibtorrent() || !requireTool('mktorrent')) return t.skip('python3-libtorrent or mktorrent not installed');
  const d = await tempDir('eng-magnet');
  const payload = join(d.path, 'seed', 'payload');
  await makeRandomFiles(payload, multiFileSpec(), 'magnet');
  const tor = await mktorrent(payload, join(d.path, 'p.torrent'));
  const lt = await startLibtorrent({ mode: 'seed', torrent: tor.path, savePath: join(d.path, 'seed') });
  await lt.waitSeeding();
  const s = await session();
  const dl = join(d.path, 'dl');
  await mkdir(dl);
  // The peer comes from the magnet's x.pe parameter: nothing but the info-hash and an address.
  const link = magnetLink(tor.infoHash, { peers: [`127.0.0.1:${lt.port}`] });
  const tt: Torrent = await s.add({ torrent: link, path: dl, seed: false });
  assert.equal(tt.metainfo, undefined, 'no metadata before asking the peer');
  const gotMetadata = new Promise<void>((resolve) => tt.once('metadata', () => resolve()));
  await withTimeout(gotMetadata, 20_000, () => `metadata (${JSON.stringify(tt.stats())})`);
  const meta = (tt as { metainfo?: { infoHashHex: string; pieceCount: number } }).metainfo;
  assert.equal(meta?.infoHashHex, tor.infoHash, 'metadata matches the info-hash');
  assert.equal(meta?.pieceCount, tor.pieceCount);
  assert.equal(tt.name, 'payload');
  await withTimeout(tt.done, 30_000, () => `download (${JSON.stringify(tt.stats())})`);
  assert.deepEqual((await compareTrees(payload, join(dl, 'payload'))).differences, []);
});

test('PEX: a 3-peer swarm where bitorrent finds the third peer only through ut_pex', async (t) => {
  cleanupAfter(t);
  if (!requireLibtorrent() || !requireTool('mktorrent')) return t.skip('python3-libtorrent or mktorrent not installed');
  const d = await tempDir('eng-pex');
  const payload = join(d.path, 'seed', 'payload');
  await makeRandomFiles(payload, multiFileSpec(), 'pex');
  const tor = await mktorrent(payload, join(d.path, 'p.torrent'));
  // S (127.0.0.2) seeds slowly so the swarm lives a few seconds; L (127.0.0.3) leeches from S.
  const seeder = await startLibtorrent({ mode: 'seed', torrent: tor.path, savePath: join(d.path, 'seed'), host: '127.0.0.2', uploadRateLimit: 1_000_000 });
  await seeder.waitSeeding();
  const lDir = join(d.path, 'l');
  await mkdir(lDir);
  // L is throttled so it is still a leecher (still connected to S, so in S's PEX list) when bitorrent
  // joins, even on a loaded CI machine: libtorrent drops seed-to-seed connections once L completes.
  const leecher = await startLibtorrent({ mode: 'download', torrent: tor.path, savePath: lDir, host: '127.0.0.3', peers: [{ host: '127.0.0.2', port: seeder.port }], downloadRateLimit: 150_000 });
  await waitFor(() => (leecher.status()?.peers ?? 0) >= 1, { timeoutMs: 10_000, what: 'L connected to S' });
  // bitorrent is told only about S: no tracker, no DHT, no LSD.
  const s = await session();
  const dl = join(d.path, 'dl');
  await mkdir(dl);
  const tt = await s.add({ torrent: tor.bytes, path: dl, seed: true, peers: [{ host: '127.0.0.2', port: seeder.port }] });
  await waitFor(() => tt.peerList().some((p) => p.address.host === '127.0.0.3' && p.address.port === leecher.port), {
    timeoutMs: 20_000,
    intervalMs: 50,
    what: `bitorrent to connect to L (127.0.0.3:${leecher.port}) learned via PEX; peers: ${JSON.stringify(tt.peerList().map((p) => p.address))}`,
  });
  await withTimeout(tt.done, 40_000, () => `download (${JSON.stringify(tt.stats())})`);
  assert.deepEqual((await compareTrees(payload, join(dl, 'payload'))).differences, []);
});
