/**
 * The DHT between real clients (issue 3): a magnet with only `xt` downloads from a libtorrent seeder that
 * bitorrent found only through the DHT, and libtorrent finds a bitorrent seeder only through the DHT.
 * Each client runs its own DHT node on its own loopback address; a standalone bitorrent DHT node is the
 * bootstrap. No tracker, no peer given by hand.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdir, readFile } from 'node:fs/promises';
import { Session } from '@bitorrent/core';
import { createDht, type Dht } from '@bitorrent/dht';
import { requireLibtorrent, tempDir, startLibtorrent, mktorrent, makeRandomFiles, compareTrees, registerCleanup, cleanupAfter, waitFor } from '@bitorrent/testbed';

async function bootNode(): Promise<Dht> {
  const boot = await createDht({ host: '127.0.0.1', port: 0 });
  registerCleanup(() => boot.close());
  return boot;
}

test('bitorrent downloads a trackerless magnet from a libtorrent seeder found only through the DHT', async (t) => {
  if (!requireLibtorrent()) return t.skip('python3-libtorrent not installed');
  cleanupAfter(t);
  const d = await tempDir('dht-lt-a');
  t.after(() => d.cleanup());
  const seedDir = join(d.path, 'seed');
  await makeRandomFiles(join(seedDir, 'payload'), [{ path: 'a.bin', size: 600_000 }, { path: 'b/c.bin', size: 90_000 }], 'dht-a');
  const tor = await mktorrent(join(seedDir, 'payload'), join(d.path, 'p.torrent'), { pieceLengthLog2: 15 });
  const boot = await bootNode();
  const seen = new Promise<void>((resolve) => boot.on('peer', (ih: Buffer) => ih.toString('hex') === tor.infoHash && resolve()));
  const lt = await startLibtorrent({ mode: 'seed', torrent: tor.path, savePath: seedDir, host: '127.0.0.2', dht: true, dhtNodes: [{ host: '127.0.0.1', port: boot.port }] });
  t.after(() => lt.stop());
  await lt.waitSeeding(30_000);
  await seen; // libtorrent announced itself to the DHT

  const dht = await createDht({ host: '127.0.0.3', port: 0, bootstrap: [{ host: '127.0.0.1', port: boot.port }], waitForBootstrap: true });
  const session = new Session({ host: '127.0.0.3', port: 0, dht, hasherWorkers: 1 });
  t.after(async () => { await session.close(); await dht.close(); });
  await session.listen();
  const started = Date.now();
  const torrent = await session.add({ torrent: `magnet:?xt=urn:btih:${tor.infoHash}`, path: join(d.path, 'dl') });
  await torrent.done;
  const elapsed = Date.now() - started;
  const cmp = await compareTrees(join(seedDir, 'payload'), join(d.path, 'dl', 'payload'));
  assert.ok(cmp.equal, JSON.stringify(cmp));
  assert.ok(elapsed < 10_000, `started and finished within 10 s (took ${elapsed} ms)`);
});

test('libtorrent downloads a trackerless magnet from a bitorrent seeder found only through the DHT', async (t) => {
  if (!requireLibtorrent()) return t.skip('python3-libtorrent not installed');
  cleanupAfter(t);
  const d = await tempDir('dht-lt-b');
  t.after(() => d.cleanup());
  const seedDir = join(d.path, 'seed');
  await makeRandomFiles(join(seedDir, 'payload'), [{ path: 'x.bin', size: 500_000 }], 'dht-b');
  const tor = await mktorrent(join(seedDir, 'payload'), join(d.path, 'p.torrent'), { pieceLengthLog2: 15 });
  const boot = await bootNode();
  const dht = await createDht({ host: '127.0.0.4', port: 0, bootstrap: [{ host: '127.0.0.1', port: boot.port }], waitForBootstrap: true });
  const session = new Session({ host: '127.0.0.4', port: 0, dht, hasherWorkers: 1 });
  t.after(async () => { await session.close(); await dht.close(); });
  await session.listen();
  const seeding = await session.add({ torrent: await readFile(tor.path), path: seedDir });
  await seeding.done;
  // Our announce reached the bootstrap node before libtorrent asks.
  await waitFor(async () => (await dht.announceCount(Buffer.from(tor.infoHash, 'hex'), session.port)) > 0, { timeoutMs: 10_000 });

  await mkdir(join(d.path, 'dl'));
  const lt = await startLibtorrent({ mode: 'download', magnet: `magnet:?xt=urn:btih:${tor.infoHash}`, savePath: join(d.path, 'dl'), host: '127.0.0.5', dht: true, dhtNodes: [{ host: '127.0.0.1', port: boot.port }] });
  t.after(() => lt.stop());
  await lt.waitSeeding(60_000);
  const cmp = await compareTrees(join(seedDir, 'payload'), join(d.path, 'dl', 'payload'));
  assert.ok(cmp.equal, JSON.stringify(cmp));
  assert.ok(seeding.stats().uploaded >= 500_000, 'the bytes came from bitorrent');
});
