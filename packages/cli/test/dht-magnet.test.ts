/** A magnet link with only `xt` downloads with no tracker at all: peers come from the DHT (issue 3). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Session, createTorrent } from '@bitorrent/core';
import { createDht } from '@bitorrent/dht';

test('trackerless magnet (xt only): the leecher finds the seeder through the DHT and downloads', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'bt-dht-'));
  const payload = randomBytes(300_000);
  await mkdir(join(dir, 'seed'), { recursive: true });
  await writeFile(join(dir, 'seed', 'file.bin'), payload);
  const { metainfo, torrent } = await createTorrent({ path: join(dir, 'seed', 'file.bin'), pieceLength: 16384 });

  // A standalone bootstrap node, then one DHT node per client, all on loopback.
  const boot = await createDht({ host: '127.0.0.1', port: 0 });
  const bootAddr = { host: '127.0.0.1', port: boot.port };
  const seedDht = await createDht({ host: '127.0.0.1', port: 0, bootstrap: [bootAddr], waitForBootstrap: true });
  const leechDht = await createDht({ host: '127.0.0.1', port: 0, bootstrap: [bootAddr], waitForBootstrap: true });
  const seeder = new Session({ port: 0, host: '127.0.0.1', dht: seedDht, hasherWorkers: 1 });
  const leecher = new Session({ port: 0, host: '127.0.0.1', dht: leechDht, hasherWorkers: 1 });
  t.after(async () => {
    await seeder.close();
    await leecher.close();
    await Promise.all([seedDht.close(), leechDht.close(), boot.close()]);
    await rm(dir, { recursive: true, force: true });
  });
  await seeder.listen();
  await leecher.listen();
  const st = await seeder.add({ torrent, path: join(dir, 'seed') });
  await new Promise<void>((r) => (st.state === 'seeding' ? r() : st.once('ready', () => r())));
  // The seeder's announce must have reached a node before the leecher looks.
  assert.ok((await seedDht.announceCount(metainfo.infoHash, seeder.port)) > 0, 'announce stored by at least one node');

  const started = Date.now();
  const lt = await leecher.add({ torrent: `magnet:?xt=urn:btih:${metainfo.infoHashHex}`, path: join(dir, 'leech') });
  await lt.done;
  const elapsed = Date.now() - started;
  assert.ok((await readFile(join(dir, 'leech', 'file.bin'))).equals(payload));
  assert.ok(elapsed < 10_000, `downloaded within 10 s of start (took ${elapsed} ms)`);
});
