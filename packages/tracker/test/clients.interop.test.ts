/**
 * Real clients find each other through our tracker, over HTTP and UDP, and move a file:
 * python3-libtorrent ↔ python3-libtorrent, python3-libtorrent (seeder) → aria2c (downloader), and
 * python3-libtorrent (seeder) → transmission-cli (HTTP: full download; UDP: our reply to transmission's announce
 * carries the seeder's address — transmission 3.00 is slow to dial on loopback, so the UDP case stops there),
 * python3-libtorrent (seeder) → qbittorrent-nox (driven through its Web API), and IPv6 libtorrent pairs.
 * Discovery is tracker-only: DHT, LSD, PEX, UPnP are off in every client.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, existsSync, writeFileSync, mkdirSync, chmodSync } from 'node:fs';
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
const hasTransmission = have('transmission-cli', ['--version']);
const hasQbt = have('qbittorrent-nox', ['--version']);

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

async function ltSeeder(t: TestContext, url: string, dir: string): Promise<{ torrent: string; data: string; port: number; proc: ChildProcess }> {
  const seeder = track(t, spawn(PY, [script, 'seed', url, dir], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LT_V1_ONLY: '1' } }));
  const ready = await new Promise<{ ready: boolean; torrent: string; data: string; port: number }>((resolve, reject) => {
    let buf = '';
    seeder.stdout!.on('data', (d) => {
      buf += d;
      const line = buf.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve(JSON.parse(line));
    });
    seeder.on('close', (code) => reject(new Error(`seeder exited ${code}`)));
  });
  assert.equal(ready.ready, true);
  return { ...ready, proc: seeder };
}

function transmission(t: TestContext, dir: string, torrent: string, port: number): ChildProcess {
  const cfg = join(dir, 'tr-config');
  const dl = join(dir, 'tr-download');
  mkdirSync(cfg, { recursive: true });
  mkdirSync(dl, { recursive: true });
  writeFileSync(
    join(cfg, 'settings.json'),
    JSON.stringify({ 'dht-enabled': false, 'lpd-enabled': false, 'pex-enabled': false, 'port-forwarding-enabled': false, 'utp-enabled': false }),
  );
  // On completion transmission-cli runs this script, which stops that transmission-cli (its parent).
  const done = join(dir, 'tr-done.sh');
  writeFileSync(done, '#!/bin/sh\nkill -TERM $PPID\n');
  chmodSync(done, 0o755);
  return track(t, spawn('transmission-cli', ['-g', cfg, '-w', dl, '-p', String(port), '-f', done, torrent], { stdio: ['ignore', 'ignore', 'ignore'] }));
}

test('transmission-cli downloads from a libtorrent seeder found via our http tracker', { timeout: 150_000 }, async (t) => {
  if (!need(t, hasLt, 'python3-libtorrent') || !need(t, hasTransmission, 'transmission-cli')) return;
  const srv = await tracker(t);
  const dir = mkdtempSync(join(tmpdir(), 'bt-trk-tr-http-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const seed = await ltSeeder(t, `http://127.0.0.1:${srv.httpPort}/announce`, dir);
  const tr = transmission(t, dir, seed.torrent, await freePort());
  const [code, signal] = (await new Promise((r) => tr.on('exit', (c, s) => r([c, s])))) as [number | null, string | null];
  seed.proc.stdin!.end();
  assert.ok(code === 0 || signal === 'SIGTERM' || code === 143, `transmission exited ${code} ${signal}`);
  assert.deepEqual(readFileSync(join(dir, 'tr-download', 'data.bin')), readFileSync(seed.data));
});

test('transmission-cli announces over UDP to our tracker and is handed the libtorrent seeder', { timeout: 120_000 }, async (t) => {
  if (!need(t, hasLt, 'python3-libtorrent') || !need(t, hasTransmission, 'transmission-cli')) return;
  const srv = await tracker(t);
  const dir = mkdtempSync(join(tmpdir(), 'bt-trk-tr-udp-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const seed = await ltSeeder(t, `udp://127.0.0.1:${srv.udpPort}/announce`, dir);
  const trPort = await freePort();
  const want = Buffer.from([127, 0, 0, 1, seed.port >> 8, seed.port & 0xff]);
  // Watch our own UDP replies: the announce from transmission (its peer port in the packet) must list the seeder.
  const handed = new Promise<void>((resolve) => {
    const orig = srv.tracker.udp.bind(srv.tracker);
    srv.tracker.udp = (msg, address, port) => {
      const r = orig(msg, address, port);
      if (r && msg.length >= 98 && msg.readUInt32BE(8) === 1 && msg.readUInt16BE(96) === trPort && r.readUInt32BE(0) === 1) {
        for (let o = 20; o + 6 <= r.length; o += 6) if (r.subarray(o, o + 6).equals(want)) resolve();
      }
      return r;
    };
  });
  const tr = transmission(t, dir, seed.torrent, trPort);
  await handed;
  if (tr.pid) process.kill(tr.pid, 'SIGTERM');
  seed.proc.stdin!.end();
});

for (const proto of ['http', 'udp'] as const) {
  test(`libtorrent ↔ libtorrent over IPv6 (::1) via our dual-stack ${proto} tracker (BEP 7 peers6 / BEP 15 v6)`, { timeout: 120_000 }, async (t) => {
    if (!need(t, hasLt, 'python3-libtorrent')) return;
    let v6 = 0;
    const srv = await startTracker({ host: '::', httpPort: 0, udpPort: 0, interval: 5, onAnnounce: (_ih, isV6) => void (isV6 && v6++) });
    t.after(() => srv.close());
    const dir = mkdtempSync(join(tmpdir(), `bt-trk-lt6-${proto}-`));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const url = proto === 'http' ? `http://[::1]:${srv.httpPort}/announce` : `udp://[::1]:${srv.udpPort}/announce`;
    const c = track(t, spawn(PY, [script, 'pair', url, dir], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LT_LISTEN: '[::1]' } }));
    const { code, out, err } = await output(c);
    assert.equal(code, 0, err);
    const r = JSON.parse(out.trim().split('\n').pop()!);
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.ok(v6 >= 2, `announces from IPv6 addresses: ${v6}`);
  });
}

/** Poll `fn` (a Web API read: no event to wait on) until it returns a value, or fail after `ms`. */
async function until<T>(what: string, ms: number, fn: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch {
      /* not up yet */
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

for (const proto of ['http', 'udp'] as const) {
  test(`qbittorrent-nox downloads from a libtorrent seeder found via our ${proto} tracker`, { timeout: 150_000 }, async (t) => {
    if (!need(t, hasLt, 'python3-libtorrent') || !need(t, hasQbt, 'qbittorrent-nox')) return;
    const srv = await tracker(t);
    const dir = mkdtempSync(join(tmpdir(), `bt-trk-qbt-${proto}-`));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const url = proto === 'http' ? `http://127.0.0.1:${srv.httpPort}/announce` : `udp://127.0.0.1:${srv.udpPort}/announce`;
    const seed = await ltSeeder(t, url, dir);
    const webPort = await freePort();
    const peerPort = await freePort();
    const dl = join(dir, 'qbt-download');
    mkdirSync(join(dir, 'qbt', 'qBittorrent', 'config'), { recursive: true });
    mkdirSync(dl);
    writeFileSync(
      join(dir, 'qbt', 'qBittorrent', 'config', 'qBittorrent.conf'),
      [
        '[LegalNotice]', 'Accepted=true', '',
        '[BitTorrent]', 'Session\\DHTEnabled=false', 'Session\\LSDEnabled=false', 'Session\\PeXEnabled=false',
        `Session\\Port=${peerPort}`, `Session\\DefaultSavePath=${dl}`, '',
        '[Preferences]', `WebUI\\Port=${webPort}`, 'WebUI\\LocalHostAuth=false', `Connection\\PortRangeMin=${peerPort}`,
        'Bittorrent\\DHT=false', 'Bittorrent\\LSD=false', 'Bittorrent\\PeX=false', `Downloads\\SavePath=${dl}`, '',
      ].join('\n'),
    );
    track(t, spawn('qbittorrent-nox', [`--profile=${join(dir, 'qbt')}`], { stdio: 'ignore' }));
    const api = `http://127.0.0.1:${webPort}/api/v2`;
    await until('qBittorrent Web API', 30_000, async () => ((await fetch(`${api}/app/version`)).ok ? true : undefined));
    const form = new FormData();
    form.append('torrents', new Blob([readFileSync(seed.torrent)]), 't.torrent');
    form.append('savepath', dl);
    const add = await fetch(`${api}/torrents/add`, { method: 'POST', body: form });
    assert.equal(await add.text(), 'Ok.');
    await until('qBittorrent to finish the download', 90_000, async () => {
      const list = (await (await fetch(`${api}/torrents/info`)).json()) as { progress: number }[];
      return list.length === 1 && list[0].progress === 1 ? true : undefined;
    });
    seed.proc.stdin!.end();
    assert.deepEqual(readFileSync(join(dl, 'data.bin')), readFileSync(seed.data));
    const st = srv.tracker.stats;
    assert.ok(proto === 'http' ? st.httpAnnounces >= 2 : st.udpAnnounces >= 2);
  });
}
