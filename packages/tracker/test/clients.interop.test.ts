/**
 * Real clients find each other through our tracker, over HTTP and UDP, and move a file:
 * python3-libtorrent ↔ python3-libtorrent, and python3-libtorrent (seeder) → aria2c (downloader).
 * Discovery is tracker-only: DHT, LSD, PEX, UPnP are off in every client.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:net';
import { startTracker, type TrackerServer } from '../src/server.js';

const PY = '/usr/bin/python3';
const script = fileURLToPath(new URL('./fixtures/lt_swarm.py', import.meta.url));
const CI = process.env.CI === 'true';

function have(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.status === 0;
}
const hasLt = existsSync(PY) && have(PY, ['-c', 'import libtorrent']);
const hasAria = have('aria2c', ['--version']);

function need(t: TestContext, ok: boolean, what: string): boolean {
  if (ok) return true;
  if (CI) assert.fail(`${what} is required in CI (CI=true) but missing`);
  t.skip(`${what} not installed`);
  return false;
}

function track(t: TestContext, c: ChildProcess): ChildProcess {
  t.after(() => {
    if (c.exitCode === null && c.signalCode === null && c.pid) process.kill(c.pid, 'SIGKILL');
  });
  return c;
}

async function tracker(t: TestContext): Promise<TrackerServer> {
  const srv = await startTracker({ host: '127.0.0.1', httpPort: 0, udpPort: 0, interval: 5 });
  t.after(() => srv.close());
  return srv;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

function output(c: ChildProcess): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    let out = '', err = '';
    c.stdout?.on('data', (d) => (out += d));
    c.stderr?.on('data', (d) => (err += d));
    c.on('close', (code) => resolve({ code, out, err }));
  });
}

for (const proto of ['http', 'udp'] as const) {
  test(`libtorrent ↔ libtorrent find each other via our ${proto} tracker and transfer a file`, { timeout: 120_000 }, async (t) => {
    if (!need(t, hasLt, 'python3-libtorrent')) return;
    const srv = await tracker(t);
    const dir = mkdtempSync(join(tmpdir(), `bt-trk-lt-${proto}-`));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const url = proto === 'http' ? `http://127.0.0.1:${srv.httpPort}/announce` : `udp://127.0.0.1:${srv.udpPort}/announce`;
    const c = track(t, spawn(PY, [script, 'pair', url, dir], { stdio: ['ignore', 'pipe', 'pipe'] }));
    const { code, out, err } = await output(c);
    assert.equal(code, 0, err);
    const r = JSON.parse(out.trim().split('\n').pop()!);
    assert.equal(r.ok, true, JSON.stringify(r));
    const st = srv.tracker.stats;
    assert.ok(proto === 'http' ? st.httpAnnounces >= 2 : st.udpAnnounces >= 2, 'both sessions announced to us');
  });

  test(`aria2c downloads from a libtorrent seeder found via our ${proto} tracker`, { timeout: 120_000 }, async (t) => {
    if (!need(t, hasLt, 'python3-libtorrent') || !need(t, hasAria, 'aria2c')) return;
    const srv = await tracker(t);
    const dir = mkdtempSync(join(tmpdir(), `bt-trk-aria-${proto}-`));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const url = proto === 'http' ? `http://127.0.0.1:${srv.httpPort}/announce` : `udp://127.0.0.1:${srv.udpPort}/announce`;
    // aria2 1.36 does not read hybrid v1+v2 torrents: make a v1 torrent.
    const seeder = track(t, spawn(PY, [script, 'seed', url, dir], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LT_V1_ONLY: '1' } }));
    const ready = await new Promise<{ ready: boolean; torrent: string; data: string }>((resolve, reject) => {
      let buf = '';
      seeder.stdout!.on('data', (d) => {
        buf += d;
        const line = buf.split('\n').find((l) => l.startsWith('{'));
        if (line) resolve(JSON.parse(line));
      });
      seeder.on('close', (code) => reject(new Error(`seeder exited ${code}`)));
    });
    assert.equal(ready.ready, true);
    const out = join(dir, 'aria');
    const aria = track(
      t,
      spawn(
        'aria2c',
        [
          `--dir=${out}`,
          // aria2 speaks UDP tracker only through its DHT socket; the seeder has no DHT, so discovery stays tracker-only.
          `--enable-dht=${proto === 'udp'}`,
          `--dht-listen-port=${await freePort()}`,
          `--dht-file-path=${join(dir, 'dht.dat')}`,
          '--enable-dht6=false',
          '--bt-enable-lpd=false',
          '--enable-peer-exchange=false',
          '--seed-time=0',
          `--listen-port=${await freePort()}`,
          '--console-log-level=warn',
          '--summary-interval=0',
          '--bt-stop-timeout=60',
          ready.torrent,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      ),
    );
    const r = await output(aria);
    seeder.stdin!.end();
    assert.equal(r.code, 0, r.out + r.err);
    assert.deepEqual(readFileSync(join(out, 'data.bin')), readFileSync(ready.data));
    const st = srv.tracker.stats;
    assert.ok(proto === 'http' ? st.httpAnnounces >= 2 : st.udpAnnounces >= 2);
  });
}
