/**
 * The engine against real clients, both directions, checked byte for byte:
 * qBittorrent, Transmission, aria2 and libtorrent each download a multi-file torrent seeded by
 * bitorrent, and bitorrent downloads it from each of them. Peers meet directly (libtorrent,
 * qBittorrent) or through opentracker over HTTP and UDP (Transmission and aria2 cannot be told
 * about a peer any other way).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { Session, type Torrent, type SessionOptions } from '@bitorrent/core';
import {
  requireTool, requireLibtorrent, tempDir, makeRandomFiles, multiFileSpec, compareTrees, waitFor, cleanupAfter, registerCleanup,
  mktorrent, startOpentracker, startLibtorrent, startQbittorrent, startTransmission, runAria2, aria2Done, freePort,
  type TorrentFile, type Opentracker,
} from '../src/index.js';

interface Fixture {
  dir: string;
  /** Folder holding `payload/` (the torrent's root folder). */
  seedDir: string;
  payload: string;
  dl: string;
  tor: TorrentFile;
  tracker?: Opentracker;
}

async function fixture(name: string, announce?: 'http' | 'udp'): Promise<Fixture> {
  const d = await tempDir(`eng-${name}`);
  const seedDir = join(d.path, 'seed');
  const payload = join(seedDir, 'payload');
  await makeRandomFiles(payload, multiFileSpec(), name);
  let tracker: Opentracker | undefined;
  if (announce) tracker = await startOpentracker();
  const url = tracker ? (announce === 'udp' ? tracker.udpAnnounce : tracker.httpAnnounce) : undefined;
  const tor = await mktorrent(payload, join(d.path, 'p.torrent'), { announce: url ? [url] : [] });
  if (tracker) await tracker.allow([tor.infoHash]);
  const dl = join(d.path, 'dl');
  await mkdir(dl);
  return { dir: d.path, seedDir, payload, dl, tor, tracker };
}

async function session(opts: Partial<SessionOptions> = {}): Promise<Session> {
  const s = new Session({ port: 0, host: '127.0.0.1', dht: undefined, ...opts });
  await s.listen();
  registerCleanup(() => s.close());
  return s;
}

async function bitorrentSeed(f: Fixture, opts: Partial<SessionOptions> = {}): Promise<{ s: Session; t: Torrent }> {
  const s = await session(opts);
  const t = await s.add({ torrent: f.tor.bytes, path: f.seedDir, seed: true });
  await withTimeout(t.done, 30_000, 'bitorrent seeder to verify its data');
  assert.equal(t.stats().state, 'seeding');
  return { s, t };
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<T>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

async function bitorrentDownload(f: Fixture, peers: { host: string; port: number }[] = [], opts: Partial<SessionOptions> = {}): Promise<Torrent> {
  const s = await session(opts);
  const t = await s.add({ torrent: f.tor.bytes, path: f.dl, seed: false, peers });
  await withTimeout(t.done, 60_000, `bitorrent download (${JSON.stringify(t.stats())})`);
  return t;
}

async function assertSame(f: Fixture): Promise<void> {
  const cmp = await compareTrees(f.payload, join(f.dl, 'payload'));
  assert.deepEqual(cmp.differences, [], 'downloaded tree differs from the original');
}

function need(t: TestContext, ...tools: string[]): boolean {
  for (const tool of tools) {
    const ok = tool === 'python3-libtorrent' ? requireLibtorrent() : requireTool(tool);
    if (!ok) {
      t.skip(`${tool} not installed`);
      return false;
    }
  }
  return true;
}

// ------------------------------------------------------------------ libtorrent

test('libtorrent downloads from bitorrent (direct peer)', async (t) => {
  cleanupAfter(t);
  if (!need(t, 'python3-libtorrent', 'mktorrent')) return;
  const f = await fixture('lt-from-bt');
  const { s, t: seed } = await bitorrentSeed(f);
  const lt = await startLibtorrent({ mode: 'download', torrent: f.tor.path, savePath: f.dl, peers: [{ host: '127.0.0.1', port: s.port }] });
  await lt.waitSeeding(60_000);
  await assertSame(f);
  assert.ok(seed.stats().uploaded >= f.tor.totalLength, 'bitorrent uploaded the whole payload');
});

test('bitorrent downloads from libtorrent (direct peer)', async (t) => {
  cleanupAfter(t);
  if (!need(t, 'python3-libtorrent', 'mktorrent')) return;
  const f = await fixture('bt-from-lt');
  const lt = await startLibtorrent({ mode: 'seed', torrent: f.tor.path, savePath: f.seedDir });
  await lt.waitSeeding();
  const tt = await bitorrentDownload(f, [{ host: '127.0.0.1', port: lt.port }]);
  assert.equal(tt.stats().progress, 1);
  await assertSame(f);
});

// ------------------------------------------------------------------ qBittorrent

test('qBittorrent downloads from bitorrent (peer added via Web API)', async (t) => {
  cleanupAfter(t);
  if (!need(t, 'qbittorrent-nox', 'mktorrent')) return;
  const f = await fixture('qbt-from-bt');
  const [{ s }, qb] = await Promise.all([bitorrentSeed(f), startQbittorrent()]);
  await qb.addTorrent(f.tor.bytes, f.dl);
  await waitFor(async () => !(await qb.info(f.tor.infoHash))?.state.startsWith('checking'), { timeoutMs: 10_000, what: 'qBittorrent check' });
  await qb.addPeers(f.tor.infoHash, [{ host: '127.0.0.1', port: s.port }]);
  await qb.waitComplete(f.tor.infoHash, 60_000);
  await assertSame(f);
});

test('bitorrent downloads from qBittorrent (direct peer)', async (t) => {
  cleanupAfter(t);
  if (!need(t, 'qbittorrent-nox', 'mktorrent')) return;
  const f = await fixture('bt-from-qbt');
  const qb = await startQbittorrent();
  await qb.addTorrent(f.tor.bytes, f.seedDir);
  await qb.waitSeeding(f.tor.infoHash, 30_000);
  await bitorrentDownload(f, [{ host: '127.0.0.1', port: qb.peerPort }]);
  await assertSame(f);
});

// ------------------------------------------------------------------ Transmission (tracker only)

test('Transmission downloads from bitorrent (opentracker, UDP announce)', async (t) => {
  cleanupAfter(t);
  if (!need(t, 'transmission-daemon', 'opentracker', 'mktorrent')) return;
  // Transmission 3.00 never dials 127.0.0.0/8 peers (it treats them as martian addresses), so
  // the leecher registers first and bitorrent, announcing later, connects out to it.
  const f = await fixture('tr-from-bt', 'udp');
  const tr = await startTransmission();
  await tr.addTorrent(f.tor.bytes, f.dl);
  await waitFor(async () => (await f.tracker!.scrape(f.tor.infoHash)).incomplete >= 1, { timeoutMs: 15_000, what: 'Transmission announce' });
  await bitorrentSeed(f);
  await tr.waitComplete(f.tor.infoHash, 60_000);
  await assertSame(f);
});

test('bitorrent downloads from Transmission (opentracker, UDP announce)', async (t) => {
  cleanupAfter(t);
  if (!need(t, 'transmission-daemon', 'opentracker', 'mktorrent')) return;
  const f = await fixture('bt-from-tr', 'udp');
  const tr = await startTransmission();
  await tr.addTorrent(f.tor.bytes, f.seedDir);
  await tr.waitComplete(f.tor.infoHash, 30_000);
  await waitFor(async () => (await f.tracker!.scrape(f.tor.infoHash)).complete >= 1, { timeoutMs: 20_000, what: 'Transmission announce' });
  await bitorrentDownload(f);
  await assertSame(f);
});

// ------------------------------------------------------------------ aria2 (tracker only)

test('aria2 downloads from bitorrent (opentracker, HTTP announce)', async (t) => {
  cleanupAfter(t);
  if (!need(t, 'aria2c', 'opentracker', 'mktorrent')) return;
  // aria2 speaks UDP trackers only through its DHT socket, so it gets HTTP here.
  const f = await fixture('aria2-from-bt', 'http');
  await bitorrentSeed(f);
  await waitFor(async () => (await f.tracker!.scrape(f.tor.infoHash)).complete >= 1, { timeoutMs: 15_000, what: 'bitorrent HTTP announce' });
  const a = runAria2({ mode: 'download', torrent: f.tor.path, dir: f.dl, listenPort: await freePort() });
  // aria2 sends a second bitfield mid-connection; treating it as a protocol violation had made it
  // reconnect every few seconds (~100 KiB/s). Accepted as a replacement, this takes a few seconds.
  await aria2Done(a, 30_000);
  await assertSame(f);
});

test('bitorrent downloads from aria2 (opentracker, HTTP announce)', async (t) => {
  cleanupAfter(t);
  if (!need(t, 'aria2c', 'opentracker', 'mktorrent')) return;
  const f = await fixture('bt-from-aria2', 'http');
  runAria2({ mode: 'seed', torrent: f.tor.path, dir: f.seedDir, listenPort: await freePort() });
  await waitFor(async () => (await f.tracker!.scrape(f.tor.infoHash)).complete >= 1, { timeoutMs: 20_000, what: 'aria2 announce' });
  await bitorrentDownload(f);
  await assertSame(f);
});

// ------------------------------------------------------------------ protocol encryption (MSE/PE)
// Peers that refuse plaintext: bitorrent answers their encrypted handshakes, and when it dials them its
// plaintext handshake is dropped and it retries encrypted (default policy 'enabled').

test('MSE: qBittorrent requiring encryption downloads from bitorrent', async (t) => {
  cleanupAfter(t);
  if (!need(t, 'qbittorrent-nox', 'mktorrent')) return;
  const f = await fixture('mse-qbt-from-bt');
  const [{ s }, qb] = await Promise.all([bitorrentSeed(f), startQbittorrent({ encryption: 'required' })]);
  await qb.addTorrent(f.tor.bytes, f.dl);
  await waitFor(async () => !(await qb.info(f.tor.infoHash))?.state.startsWith('checking'), { timeoutMs: 10_000, what: 'qBittorrent check' });
  await qb.addPeers(f.tor.infoHash, [{ host: '127.0.0.1', port: s.port }]);
  await qb.waitComplete(f.tor.infoHash, 60_000);
  await assertSame(f);
});

test('MSE: bitorrent downloads from qBittorrent requiring encryption (plaintext refused, encrypted retry)', async (t) => {
  cleanupAfter(t);
  if (!need(t, 'qbittorrent-nox', 'mktorrent')) return;
  const f = await fixture('mse-bt-from-qbt');
  const qb = await startQbittorrent({ encryption: 'required' });
  await qb.addTorrent(f.tor.bytes, f.seedDir);
  await qb.waitSeeding(f.tor.infoHash, 30_000);
  await bitorrentDownload(f, [{ host: '127.0.0.1', port: qb.peerPort }]);
  await assertSame(f);
});

test('MSE: aria2 requiring RC4 downloads from bitorrent (opentracker)', async (t) => {
  cleanupAfter(t);
  if (!need(t, 'aria2c', 'opentracker', 'mktorrent')) return;
  const f = await fixture('mse-aria2-from-bt', 'http');
  await bitorrentSeed(f);
  await waitFor(async () => (await f.tracker!.scrape(f.tor.infoHash)).complete >= 1, { timeoutMs: 15_000, what: 'bitorrent HTTP announce' });
  const a = runAria2({ mode: 'download', torrent: f.tor.path, dir: f.dl, listenPort: await freePort(), extraArgs: ['--bt-require-crypto=true', '--bt-min-crypto-level=arc4'] });
  await aria2Done(a, 30_000);
  await assertSame(f);
});

test('MSE: bitorrent (encryption required) downloads from aria2 requiring RC4 (opentracker)', async (t) => {
  cleanupAfter(t);
  if (!need(t, 'aria2c', 'opentracker', 'mktorrent')) return;
  const f = await fixture('mse-bt-from-aria2', 'http');
  runAria2({ mode: 'seed', torrent: f.tor.path, dir: f.seedDir, listenPort: await freePort(), extraArgs: ['--bt-require-crypto=true', '--bt-min-crypto-level=arc4'] });
  await waitFor(async () => (await f.tracker!.scrape(f.tor.infoHash)).complete >= 1, { timeoutMs: 20_000, what: 'aria2 announce' });
  await bitorrentDownload(f, [], { encryption: 'required' });
  await assertSame(f);
});
