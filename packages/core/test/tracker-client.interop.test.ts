/**
 * Tracker client against the real opentracker (Debian build: whitelist-only, drops privileges and chroots into
 * its cwd, so the whitelist and its folder are world-readable). HTTP and UDP announces from two peer ids must see
 * each other; scrape counts them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile, chmod, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { httpAnnounce, httpScrape, UdpTrackerClient, Announcer, TrackerError, type AnnounceParams } from '../src/tracker-client/index.js';

const BIN = '/usr/bin/opentracker';

function haveOpentracker(): boolean {
  return spawnSync('sh', ['-c', `command -v ${BIN}`]).status === 0;
}

/** A port free for both TCP and UDP on 127.0.0.1. */
async function freePort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const u = dgram.createSocket('udp4');
    const ok = await new Promise<boolean>((r) => {
      u.once('error', () => r(false));
      u.bind(port, '127.0.0.1', () => r(true));
    });
    await new Promise<void>((r) => {
      try {
        u.close(() => r());
      } catch {
        r();
      }
    });
    if (ok) return port;
  }
  throw new Error('no free port');
}

async function startOpentracker(t: { after(fn: () => unknown): void }, infoHashes: Buffer[]): Promise<{ port: number; http: string; udp: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'bt-tracker-client-'));
  await chmod(dir, 0o755);
  await writeFile(join(dir, 'whitelist'), infoHashes.map((h) => h.toString('hex') + '\n').join(''));
  await chmod(join(dir, 'whitelist'), 0o644);
  const port = await freePort();
  const proc: ChildProcess = spawn(BIN, ['-i', '127.0.0.1', '-p', String(port), '-P', String(port), '-w', 'whitelist', '-d', dir], { cwd: dir, stdio: 'ignore' });
  t.after(async () => {
    if (proc.pid !== undefined && proc.exitCode === null) {
      process.kill(proc.pid, 'SIGTERM');
      await new Promise((r) => proc.once('exit', r));
    }
    await rm(dir, { recursive: true, force: true });
  });
  // Ready when TCP accepts.
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`opentracker exited with ${proc.exitCode}`);
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) break;
    if (Date.now() > deadline) throw new Error('opentracker did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  const http = `http://127.0.0.1:${port}/announce`;
  // opentracker accepts connections before its whitelist is loaded (a separate thread reads it), so an early
  // announce can be refused as "not authorized". Ready means a whitelisted hash is accepted; the probe peer is
  // withdrawn with event=stopped so swarm counts stay as the test expects.
  const probePeer = randomBytes(20);
  for (;;) {
    try {
      await httpAnnounce(http, params(infoHashes[0], probePeer, 1, { numwant: 0 }));
      break;
    } catch (err) {
      if (!(err instanceof TrackerError && err.fromTracker) || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  await httpAnnounce(http, params(infoHashes[0], probePeer, 1, { numwant: 0, event: 'stopped' }));
  return { port, http, udp: `udp://127.0.0.1:${port}/announce` };
}

function skipOrFail(t: { skip(msg: string): void }): boolean {
  if (haveOpentracker()) return false;
  if (process.env.CI === 'true') throw new Error(`${BIN} missing (required when CI=true)`);
  t.skip(`${BIN} not installed`);
  return true;
}

const params = (infoHash: Buffer, peerId: Buffer, port: number, extra: Partial<AnnounceParams> = {}): AnnounceParams => ({
  infoHash, peerId, port, uploaded: 0, downloaded: 0, left: 1000, numwant: 50, ...extra,
});

test('opentracker: HTTP announce — two peer ids see each other; scrape; not-whitelisted → TrackerError', async (t) => {
  if (skipOrFail(t)) return;
  const ih = randomBytes(20);
  const tr = await startOpentracker(t, [ih]);
  const a = randomBytes(20), b = randomBytes(20);
  const ra = await httpAnnounce(tr.http, params(ih, a, 40001, { event: 'started', key: 1 }));
  assert.ok(ra.interval > 0);
  const rb = await httpAnnounce(tr.http, params(ih, b, 40002, { event: 'started', key: 2, left: 0 }));
  assert.ok(rb.peers.some((p) => p.host === '127.0.0.1' && p.port === 40001), JSON.stringify(rb.peers));
  const ra2 = await httpAnnounce(tr.http, params(ih, a, 40001, { key: 1 }));
  assert.ok(ra2.peers.some((p) => p.port === 40002), JSON.stringify(ra2.peers));
  const [s] = await httpScrape(tr.http, [ih]);
  assert.equal(s.complete, 1);
  assert.equal(s.incomplete, 1);
  await assert.rejects(httpAnnounce(tr.http, params(randomBytes(20), a, 40001)), (e: unknown) => e instanceof TrackerError && e.fromTracker);
});

test('opentracker: UDP announce (BEP 15) — two peer ids see each other; scrape', async (t) => {
  if (skipOrFail(t)) return;
  const ih = randomBytes(20);
  const tr = await startOpentracker(t, [ih]);
  const client = new UdpTrackerClient({ timeoutMs: 1000, maxRetries: 2 });
  t.after(() => client.close());
  const a = randomBytes(20), b = randomBytes(20);
  await client.announce(tr.udp, params(ih, a, 41001, { event: 'started', key: 11 }));
  const rb = await client.announce(tr.udp, params(ih, b, 41002, { event: 'started', key: 12 }));
  assert.ok(rb.peers.some((p) => p.host === '127.0.0.1' && p.port === 41001), JSON.stringify(rb.peers));
  assert.equal((rb.complete ?? 0) + (rb.incomplete ?? 0), 2);
  const ra = await client.announce(tr.udp, params(ih, a, 41001, { key: 11 }));
  assert.ok(ra.peers.some((p) => p.port === 41002), JSON.stringify(ra.peers));
  const [s] = await client.scrape(tr.udp, [ih]);
  assert.equal(s.incomplete, 2);
  // After event=stopped the peer disappears.
  await client.announce(tr.udp, params(ih, b, 41002, { event: 'stopped', key: 12 }));
  const [s2] = await client.scrape(tr.udp, [ih]);
  assert.equal(s2.incomplete, 1);
});

test('opentracker: Announcer over a UDP+HTTP tier list finds a peer and sends stopped', async (t) => {
  if (skipOrFail(t)) return;
  const ih = randomBytes(20);
  const tr = await startOpentracker(t, [ih]);
  const udp = new UdpTrackerClient({ timeoutMs: 1000, maxRetries: 1 });
  t.after(() => udp.close());
  const other = randomBytes(20);
  await httpAnnounce(tr.http, params(ih, other, 42001, { event: 'started' }));
  const ann = new Announcer({ infoHash: ih, peerId: randomBytes(20), port: 42002, tiers: [[tr.udp], [tr.http]], udp, getStats: () => ({ uploaded: 0, downloaded: 0, left: 5 }) });
  const peers = await new Promise<{ host: string; port: number }[]>((resolve) => {
    ann.once('peers', resolve);
    ann.start();
  });
  assert.ok(peers.some((p) => p.port === 42001));
  const [before] = await httpScrape(tr.http, [ih]);
  assert.equal(before.incomplete, 2);
  await ann.stop();
  const [after] = await httpScrape(tr.http, [ih]);
  assert.equal(after.incomplete, 1);
});
