/**
 * Validates the test bed itself: real clients exchange a multi-file payload with each other
 * through opentracker (HTTP and UDP announces), checked byte for byte.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import {
  requireTool, requireLibtorrent, tempDir, makeRandomFiles, multiFileSpec, compareTrees, waitFor, cleanupAfter,
  mktorrent, startOpentracker, startLibtorrent, startQbittorrent, startTransmission, runAria2, aria2Done, freePort,
  sha1File, deterministicBytes, startProcess, runningProcesses,
} from '../src/index.js';

test('harness: deterministic payloads, compareTrees, waitFor', async (t) => {
  cleanupAfter(t);
  const d = await tempDir('tb-self');
  await makeRandomFiles(join(d.path, 'x'), multiFileSpec(0.1), 'seed-1');
  await makeRandomFiles(join(d.path, 'y'), multiFileSpec(0.1), 'seed-1');
  await makeRandomFiles(join(d.path, 'z'), multiFileSpec(0.1), 'seed-2');
  assert.deepEqual(await compareTrees(join(d.path, 'x'), join(d.path, 'y')), { equal: true, differences: [] });
  const diff = await compareTrees(join(d.path, 'x'), join(d.path, 'z'));
  assert.equal(diff.equal, false);
  assert.equal(diff.differences.length, 4); // every file differs, the 7-byte one too
  assert.equal(await sha1File(join(d.path, 'x', 'a.bin')), await sha1File(join(d.path, 'y', 'a.bin')));
  // seekable: bytes at an offset equal the slice of a longer stream
  assert.deepEqual(deterministicBytes('s', 37, 100), deterministicBytes('s', 0, 200).subarray(37, 137));
  await assert.rejects(waitFor(() => false, { timeoutMs: 100, intervalMs: 10, what: 'never' }), /timed out.*never/);
});

test('harness: stop() kills a process by PID, SIGKILL after grace', async (t) => {
  cleanupAfter(t);
  const p = startProcess('/bin/sh', ['-c', 'trap "" TERM; echo ready; while :; do sleep 0.05; done'], { graceMs: 300 });
  await waitFor(() => p.output().includes('ready'), { timeoutMs: 5000, intervalMs: 10 });
  const t0 = Date.now();
  await p.stop();
  assert.ok(p.hasExited());
  assert.ok(Date.now() - t0 >= 250, 'TERM was ignored, so KILL came after the grace period');
  assert.ok(!runningProcesses().includes(p));
});

test('libtorrent seeds → aria2 downloads (opentracker, HTTP announce)', async (t) => {
  cleanupAfter(t);
  if (!requireLibtorrent() || !requireTool('aria2c') || !requireTool('opentracker') || !requireTool('mktorrent')) {
    t.skip('python3-libtorrent, aria2c, opentracker or mktorrent not installed');
    return;
  }
  const d = await tempDir('tb-lt-aria2');
  const seedDir = join(d.path, 'seed');
  await makeRandomFiles(join(seedDir, 'payload'), multiFileSpec(), 'lt-aria2');
  const tracker = await startOpentracker();
  const tor = await mktorrent(join(seedDir, 'payload'), join(d.path, 'p.torrent'), { announce: [tracker.httpAnnounce] });
  await tracker.allow([tor.infoHash]);
  const seeder = await startLibtorrent({ mode: 'seed', torrent: tor.path, savePath: seedDir });
  await seeder.waitSeeding();
  await waitFor(async () => (await tracker.scrape(tor.infoHash)).complete >= 1, { timeoutMs: 15_000, what: 'seeder announce' });
  const dl = join(d.path, 'dl');
  await mkdir(dl);
  const aria = runAria2({ mode: 'download', torrent: tor.path, dir: dl, listenPort: await freePort() });
  await aria2Done(aria, 60_000);
  const cmp = await compareTrees(join(seedDir, 'payload'), join(dl, 'payload'));
  assert.deepEqual(cmp.differences, []);
});

test('transmission seeds → qBittorrent downloads (opentracker, UDP announce)', async (t) => {
  cleanupAfter(t);
  if (!requireTool('transmission-daemon') || !requireTool('qbittorrent-nox') || !requireTool('opentracker') || !requireTool('mktorrent')) {
    t.skip('transmission-daemon, qbittorrent-nox, opentracker or mktorrent not installed');
    return;
  }
  const d = await tempDir('tb-tr-qbt');
  const seedDir = join(d.path, 'seed');
  await makeRandomFiles(join(seedDir, 'payload'), multiFileSpec(), 'tr-qbt');
  const tracker = await startOpentracker();
  const tor = await mktorrent(join(seedDir, 'payload'), join(d.path, 'p.torrent'), { announce: [tracker.udpAnnounce] });
  await tracker.allow([tor.infoHash]);
  const [tr, qb] = await Promise.all([startTransmission(), startQbittorrent()]);
  await tr.addTorrent(tor.bytes, seedDir);
  await tr.waitComplete(tor.infoHash, 30_000);
  await waitFor(async () => (await tracker.scrape(tor.infoHash)).complete >= 1, { timeoutMs: 20_000, what: 'transmission announce' });
  const dl = join(d.path, 'dl');
  await mkdir(dl);
  await qb.addTorrent(tor.bytes, dl);
  await qb.waitComplete(tor.infoHash, 60_000);
  const cmp = await compareTrees(join(seedDir, 'payload'), join(dl, 'payload'));
  assert.deepEqual(cmp.differences, []);
});
