/**
 * The `bitorrent` CLI as a user runs it (issue 2, section CLI): seed a folder, download it by magnet (x.pe) and
 * by .torrent, the four output modes (plain, --json, --quiet, live TTY line), --seed/--seed-ratio/--no-seed,
 * rate limits with units and IPv6 peers. Every process is a real `node bin/bitorrent.js`, on loopback only.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, runCliToEnd, makeTree, startSeeder, SAFE, BIN } from './helpers/cli-proc.js';

async function tmp(t: import('node:test').TestContext, tag: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), `bt-cli-${tag}-`));
  t.after(() => rm(d, { recursive: true, force: true }));
  return d;
}

async function assertSameTree(files: Map<string, Buffer>, root: string): Promise<void> {
  for (const [rel, want] of files) {
    const got = await readFile(join(root, rel));
    assert.ok(got.equals(want), `${rel}: ${got.length} bytes differ from the ${want.length} seeded`);
  }
}

const PROGRESS_FIELDS = ['infoHash', 'state', 'progress', 'verifiedBytes', 'totalBytes', 'downloadRate', 'uploadRate', 'peers', 'eta'];

test('seed <folder> prints info-hash + magnet; download by magnet (x.pe) and by .torrent give identical trees; --json and --quiet', async (t) => {
  const dir = await tmp(t, 'xfer');
  const files = await makeTree(join(dir, 'data'), { 'a.bin': 700_000, 'sub/b.bin': 300_001, 'sub/deeper/c.txt': 1_234 });
  const torrentFile = join(dir, 'data.torrent');

  // Plain mode seeder: the user reads the info-hash and magnet off the screen.
  const seeder = runCli(t, ['seed', join(dir, 'data'), ...SAFE, '--no-resume', '--piece-length', '32K', '--save-torrent', torrentFile]);
  const portLine = await seeder.waitLine((l) => /peer port \d+/.test(l), 60_000);
  const port = Number(portLine.match(/peer port (\d+)/)![1]);
  const out = seeder.stdout();
  const hash = out.match(/info-hash ([0-9a-f]{40})/)?.[1];
  assert.ok(hash, `seed prints the info-hash:\n${out}`);
  const magnet = out.split('\n').find((l) => l.startsWith('magnet:?'));
  assert.ok(magnet, `seed prints a magnet link:\n${out}`);
  assert.match(magnet, new RegExp(`xt=urn:btih:${hash}`, 'i'));

  // 1. magnet + x.pe, --json: every line is one JSON object, progress fields, a final {"event":"done"}.
  const m1 = await runCliToEnd(t, ['download', `${magnet}&x.pe=127.0.0.1:${port}`, '-o', join(dir, 'out1'), ...SAFE, '--no-resume', '--json']);
  assert.equal(m1.code, 0, m1.stderr);
  await assertSameTree(new Map([...files].map(([k, v]) => [join('data', k), v])), join(dir, 'out1'));
  const lines = m1.stdout.trim().split('\n');
  const objs = lines.map((l) => {
    try {
      return JSON.parse(l) as Record<string, unknown>;
    } catch {
      throw new Error(`--json printed a line that is not JSON: ${JSON.stringify(l)}`);
    }
  });
  const last = objs[objs.length - 1];
  assert.equal(last.event, 'done', `last line is the done event: ${lines[lines.length - 1]}`);
  assert.equal(last.infoHash, hash);
  assert.equal(last.bytes, 1_001_235);
  const stats = objs.filter((o) => o.event === undefined);
  assert.ok(stats.length >= 1, 'at least one progress object');
  for (const s of stats) for (const k of PROGRESS_FIELDS) assert.ok(k in s, `progress object has '${k}': ${JSON.stringify(s)}`);
  assert.equal(stats[stats.length - 1].progress, 1);

  // 2. file.torrent + --peer, --quiet: only the final result.
  const m2 = await runCliToEnd(t, ['download', torrentFile, '--peer', `127.0.0.1:${port}`, '-o', join(dir, 'out2'), ...SAFE, '--no-resume', '--quiet']);
  assert.equal(m2.code, 0, m2.stderr);
  await assertSameTree(new Map([...files].map(([k, v]) => [join('data', k), v])), join(dir, 'out2'));
  const qlines = m2.stdout.trim().split('\n').filter(Boolean);
  assert.equal(qlines.length, 1, `--quiet prints one final line, got:\n${m2.stdout}`);
  assert.match(qlines[0], /^done: data \(/);
  assert.equal(m2.stderr, '');

  // 3. a bare info-hash + --peer: the metadata comes from the peer (BEP 9), then the data.
  const m3 = await runCliToEnd(t, ['download', hash, '--peer', `127.0.0.1:${port}`, '-o', join(dir, 'out3'), ...SAFE, '--no-resume', '--quiet']);
  assert.equal(m3.code, 0, m3.stderr);
  await assertSameTree(new Map([...files].map(([k, v]) => [join('data', k), v])), join(dir, 'out3'));
});

test('plain (non-TTY) mode prints periodic status lines; --max-up 256K on the seeder bounds a 2 MiB transfer', async (t) => {
  const dir = await tmp(t, 'rate');
  const files = await makeTree(join(dir, 'src'), { 'big.bin': 2 * 1024 * 1024 });
  const torrentFile = join(dir, 'big.torrent');
  const seeder = await startSeeder(t, [join(dir, 'src', 'big.bin'), ...SAFE, '--no-resume', '--max-up', '256K', '--piece-length', '64K', '--save-torrent', torrentFile]);

  const leech = runCli(t, ['download', torrentFile, '--peer', `127.0.0.1:${seeder.port}`, '-o', join(dir, 'out'), ...SAFE, '--no-resume']);
  await leech.waitLine((l) => l.includes(seeder.infoHash), 60_000); // header: the download has started
  const started = Date.now();
  const { code } = await leech.exited;
  const secs = (Date.now() - started) / 1000;
  assert.equal(code, 0, leech.stderr());
  await assertSameTree(new Map([['big.bin', files.get('big.bin')!]]), join(dir, 'out'));
  const expected = (2 * 1024 * 1024) / (256 * 1024); // 8 s
  assert.ok(secs >= expected * 0.8, `limited to 256 KiB/s: 2 MiB took ${secs.toFixed(2)} s, expected ≥ ${(expected * 0.8).toFixed(1)} s`);
  assert.ok(secs <= expected * 2.5, `not absurdly slower than the limit: ${secs.toFixed(2)} s`);

  // Plain mode: several status lines (one every 5 s + the final one), each a readable status, no control characters.
  const status = leech.lines().filter((l) => /^\S.*%\s/.test(l) && l.includes('↓'));
  assert.ok(status.length >= 2, `periodic plain lines, got:\n${leech.stdout()}`);
  assert.ok(!/[\r\x1b]/.test(leech.stdout()), 'no terminal control characters when stdout is not a TTY');
  assert.match(leech.lines().at(-1)!, /^done: big\.bin \(2\.00 MiB in /);
});

test('on a terminal: a live progress line with percent, ↓/↑ rates, peers and ETA', async (t) => {
  const hasScript = await new Promise<boolean>((res) => spawn('script', ['--version'], { stdio: 'ignore' }).on('error', () => res(false)).on('exit', (c) => res(c === 0)));
  if (!hasScript) return t.skip('script(1) from util-linux is not installed');
  const dir = await tmp(t, 'tty');
  await makeTree(join(dir, 'src'), { 'f.bin': 1024 * 1024 });
  const torrentFile = join(dir, 'f.torrent');
  const seeder = await startSeeder(t, [join(dir, 'src', 'f.bin'), ...SAFE, '--no-resume', '--piece-length', '32K', '--save-torrent', torrentFile]);
  const cmd = [process.execPath, BIN, 'download', torrentFile, '--peer', `127.0.0.1:${seeder.port}`, '-o', join(dir, 'out'), ...SAFE, '--no-resume', '--max-down', '256K']
    .map((a) => `'${a.replace(/'/g, `'\\''`)}'`)
    .join(' ');
  // script(1) gives the CLI a pseudo-terminal; its output is what the user's terminal would receive.
  const child = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, COLUMNS: '160', TERM: 'xterm' } });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let raw = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (raw += d));
  const code = await new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
  assert.equal(code, 0, raw);
  // Live updates redraw one line in place: carriage return + erase-line, no newline between updates.
  const frames = raw.split('\r').map((f) => f.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').trim()).filter((f) => f.includes('%'));
  const live = frames.filter((f) => f.startsWith('downloading'));
  assert.ok(live.length >= 2, `several live redraws while downloading, got:\n${JSON.stringify(raw)}`);
  const line = live[Math.floor(live.length / 2)];
  assert.match(line, /\d+\.\d%/, `percent in '${line}'`);
  assert.match(line, /↓ [\d.]+ (B|KiB|MiB)\/s/, `download rate in '${line}'`);
  assert.match(line, /↑ [\d.]+ (B|KiB|MiB)\/s/, `upload rate in '${line}'`);
  assert.match(line, /peers 1\b/, `peer count in '${line}'`);
  assert.match(line, /ETA \S+/, `ETA in '${line}'`);
  assert.ok(raw.includes('\x1b[2K'), 'the line is erased and redrawn in place');
  assert.match(raw, /done: f\.bin/);
});

test('--seed --seed-ratio 1 keeps seeding after completion and exits once a second leecher pulled the whole size; --no-seed exits at completion', async (t) => {
  const dir = await tmp(t, 'ratio');
  const files = await makeTree(join(dir, 'src'), { 'r.bin': 600_000 });
  const torrentFile = join(dir, 'r.torrent');
  const seeder = await startSeeder(t, [join(dir, 'src', 'r.bin'), ...SAFE, '--no-resume', '--piece-length', '32K', '--save-torrent', torrentFile]);

  // --no-seed: exits by itself at completion.
  const ns = await runCliToEnd(t, ['download', torrentFile, '--peer', `127.0.0.1:${seeder.port}`, '-o', join(dir, 'ns'), ...SAFE, '--no-resume', '--no-seed', '--quiet'], 30_000);
  assert.equal(ns.code, 0, ns.stderr);
  await assertSameTree(files, join(dir, 'ns'));

  // Leecher 1 with --seed --seed-ratio 1.
  const l1 = runCli(t, ['download', torrentFile, '--peer', `127.0.0.1:${seeder.port}`, '-o', join(dir, 'l1'), ...SAFE, '--no-resume', '--seed', '--seed-ratio', '1']);
  const header = await l1.waitLine((l) => /peer port \d+/.test(l));
  const l1port = Number(header.match(/peer port (\d+)/)![1]);
  await l1.waitLine((l) => l.startsWith('done: '));
  await assertSameTree(files, join(dir, 'l1'));
  // Still running (seeding) a while after completion: wait for its next status line rather than a sleep.
  await l1.waitLine((l) => l.startsWith('seeding'), 15_000);
  assert.equal(l1.child.exitCode, null, 'keeps seeding after completion');
  assert.equal(l1.child.signalCode, null);

  // Leecher 2 pulls from leecher 1 only (no PEX: it must not find the original seeder).
  seeder.proc.kill('SIGTERM');
  await seeder.proc.exited;
  const l2 = await runCliToEnd(t, ['download', torrentFile, '--peer', `127.0.0.1:${l1port}`, '-o', join(dir, 'l2'), ...SAFE, '--no-resume', '--no-pex', '--quiet'], 30_000);
  assert.equal(l2.code, 0, l2.stderr);
  await assertSameTree(files, join(dir, 'l2'));
  const ex = await Promise.race([l1.exited, new Promise<null>((r) => setTimeout(() => r(null), 15_000).unref())]);
  assert.ok(ex, `leecher 1 exits once its ratio reached 1:\n${l1.stdout()}`);
  assert.equal(ex.code, 0, l1.stderr());
});

async function hasIpv6Loopback(): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => res(false));
    s.listen(0, '::1', () => s.close(() => res(true)));
  });
}

test('IPv6: seeder on ::1, leecher given --peer [::1]:PORT', async (t) => {
  if (!(await hasIpv6Loopback())) return t.skip('this host has no ::1');
  const dir = await tmp(t, 'v6');
  const files = await makeTree(join(dir, 'src'), { 'six.bin': 400_000 });
  const torrentFile = join(dir, 'six.torrent');
  const seeder = await startSeeder(t, [join(dir, 'src', 'six.bin'), '--host', '::1', '--peer-port', '0', '--no-dht', '--no-resume', '--save-torrent', torrentFile]);
  const r = await runCliToEnd(t, ['download', torrentFile, '--peer', `[::1]:${seeder.port}`, '-o', join(dir, 'out'), '--host', '::1', '--peer-port', '0', '--no-dht', '--no-resume', '--json'], 30_000);
  assert.equal(r.code, 0, r.stderr);
  await assertSameTree(files, join(dir, 'out'));
  assert.match(r.stdout, /"event":"done"/);
});
