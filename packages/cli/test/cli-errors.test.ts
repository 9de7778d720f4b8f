/**
 * User errors through the real `bitorrent` executable: each ends with a clear one-line message naming the
 * problem, a non-zero exit code and no stack trace; plus --only (one file of a multi-file torrent) and
 * `seed file.torrent --data DIR` with only part of the data.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile, rm, mkdir, copyFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTorrent, encode, decode } from '@bitorrent/core';
import { runCliToEnd, makeTree, startSeeder, hasStackTrace, SAFE } from './helpers/cli-proc.js';

async function tmp(t: import('node:test').TestContext, tag: string): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), `bt-cli-${tag}-`));
  t.after(() => rm(d, { recursive: true, force: true }));
  return d;
}

function assertCleanError(r: { code: number | null; stdout: string; stderr: string }, code: number, pattern: RegExp): void {
  assert.equal(r.code, code, `exit code ${code} expected, got ${r.code}\nstderr: ${r.stderr}`);
  assert.match(r.stderr, pattern);
  assert.ok(!hasStackTrace(r.stderr), `no stack trace:\n${r.stderr}`);
  assert.ok(!hasStackTrace(r.stdout), `no stack trace on stdout:\n${r.stdout}`);
}

test('malformed input and bad flags: exit 1 with a message naming the problem, never a stack trace', async (t) => {
  const dir = await tmp(t, 'err');
  await makeTree(join(dir, 'src'), { 'x.bin': 100_000 });
  const { torrent } = await createTorrent({ path: join(dir, 'src', 'x.bin'), pieceLength: 16384 });
  const good = join(dir, 'good.torrent');
  await writeFile(good, torrent);
  await writeFile(join(dir, 'trunc.torrent'), torrent.subarray(0, Math.floor(torrent.length / 2)));
  await writeFile(join(dir, 'text.torrent'), 'this is not a torrent\n');
  const meta = decode(torrent) as Map<string, unknown> | Record<string, unknown>;
  // pieces: one byte short of a multiple of 20
  const info = (meta instanceof Map ? meta.get('info') : (meta as Record<string, unknown>).info) as Map<string, unknown> | Record<string, unknown>;
  const pieces = (info instanceof Map ? info.get('pieces') : (info as Record<string, unknown>).pieces) as Uint8Array;
  if (info instanceof Map) info.set('pieces', pieces.subarray(1));
  else (info as Record<string, unknown>).pieces = pieces.subarray(1);
  await writeFile(join(dir, 'pieces.torrent'), encode(meta as never));

  const out = ['-o', join(dir, 'out'), ...SAFE, '--no-resume'];
  const cases: [string, string[], RegExp][] = [
    ['truncated .torrent', ['download', join(dir, 'trunc.torrent'), ...out], /not a valid torrent file: .*(end of data|truncated)/i],
    ['not bencode', ['download', join(dir, 'text.torrent'), ...out], /not a valid torrent file/i],
    ['pieces length not a multiple of 20', ['download', join(dir, 'pieces.torrent'), ...out], /pieces.*(multiple of 20|length)/i],
    ['nonexistent path', ['download', join(dir, 'nope.torrent'), ...out], /nope\.torrent.*no such file/i],
    ['invalid magnet info-hash', ['download', 'magnet:?xt=urn:btih:zzz&dn=x', ...out], /invalid info-hash 'zzz'/],
    ['magnet without xt', ['download', 'magnet:?dn=foo', ...out], /magnet: missing 'xt/],
    ['--peer nonsense', ['download', good, '--peer', 'nonsense', ...out], /invalid peer address 'nonsense'/],
    ['--max-down 12Q', ['download', good, '--max-down', '12Q', ...out], /invalid rate '12Q'/],
    ['--max-up 12Q on seed', ['seed', join(dir, 'src'), '--max-up', '12Q', ...SAFE, '--no-resume'], /invalid rate '12Q'/],
    ['seed of a malformed .torrent', ['seed', join(dir, 'pieces.torrent'), '--data', join(dir, 'src'), ...SAFE, '--no-resume'], /pieces.*(multiple of 20|length)/i],
    ['seed of a nonexistent path', ['seed', join(dir, 'missing'), ...SAFE, '--no-resume'], /missing' does not exist/],
    ['--seed-ratio -1', ['download', good, '--seed', '--seed-ratio=-1', ...out], /--seed-ratio: expected a positive number/],
    ['--peer-port 70000', ['download', good, '--peer-port', '70000', '--host', '127.0.0.1', '--no-dht', '--no-resume'], /--peer-port: expected an integer/],
    ['ledger verify of a missing database', ['ledger', 'verify', '--db', join(dir, 'typo.db')], /no ledger database at '.*typo\.db'/],
    ['ledger info of a missing database', ['ledger', 'info', '--db', join(dir, 'typo2.db')], /no ledger database at '.*typo2\.db'/],
  ];
  // Two at a time: each is a separate node process.
  for (let i = 0; i < cases.length; i += 2) {
    const batch = cases.slice(i, i + 2);
    const results = await Promise.all(batch.map(([, args]) => runCliToEnd(t, args, 30_000)));
    batch.forEach(([name, , pattern], j) => {
      const r = results[j];
      assert.equal(r.signal, null, `${name}: the process ended by itself (did not hang)`);
      assertCleanError(r, 1, pattern);
      assert.equal(r.stderr.trim().split('\n').length, 1, `${name}: a one-line message, got:\n${r.stderr}`);
    });
  }
  // Checking a mistyped ledger path does not create an empty database there.
  await assert.rejects(stat(join(dir, 'typo.db')), { code: 'ENOENT' });
  await assert.rejects(stat(join(dir, 'typo2.db')), { code: 'ENOENT' });
  // --max-up 12Q fails before hashing/announcing anything.
  const q = await runCliToEnd(t, ['seed', join(dir, 'src'), '--max-up', '12Q', ...SAFE, '--no-resume'], 30_000);
  assert.equal(q.stdout, '', 'nothing created or printed before the flag error');
});

test('no arguments, or an unknown flag: usage and exit 2', async (t) => {
  const [none, seedNone, unknown] = await Promise.all([
    runCliToEnd(t, ['download'], 30_000),
    runCliToEnd(t, ['seed'], 30_000),
    runCliToEnd(t, ['download', 'x.torrent', '--bogus-flag'], 30_000),
  ]);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /^bitorrent download: expected one \.torrent file, magnet link or info-hash\n/);
  assert.match(none.stderr, /^usage: bitorrent download /m);
  assert.equal(seedNone.code, 2);
  assert.match(seedNone.stderr, /^bitorrent seed: expected one file or folder/);
  assert.match(seedNone.stderr, /^usage: bitorrent seed /m);
  assert.equal(unknown.code, 2, `unknown flag → usage error exit 2, got ${unknown.code}: ${unknown.stderr}`);
  assert.match(unknown.stderr, /--bogus-flag/);
  assert.match(unknown.stderr, /--help/);
  assert.ok(!hasStackTrace(unknown.stderr), unknown.stderr);
});

test('--only 1 downloads one file of a multi-file torrent, complete and verified', async (t) => {
  const dir = await tmp(t, 'only');
  const files = await makeTree(join(dir, 'multi'), { 'a.bin': 150_000, 'b.bin': 170_000, 'c.bin': 130_000 });
  const torrentFile = join(dir, 'multi.torrent');
  const seeder = await startSeeder(t, [join(dir, 'multi'), ...SAFE, '--no-resume', '--piece-length', '16K', '--save-torrent', torrentFile]);
  // The index the user reads from `bitorrent info`.
  const info = await runCliToEnd(t, ['info', torrentFile], 30_000);
  assert.equal(info.code, 0);
  assert.match(info.stdout, /\[1\]\s+\S+ KiB\s+multi\/b\.bin/);

  const r = await runCliToEnd(t, ['download', torrentFile, '--only', '1', '--peer', `127.0.0.1:${seeder.port}`, '-o', join(dir, 'out'), ...SAFE, '--no-resume', '--json'], 30_000);
  assert.equal(r.code, 0, r.stderr);
  const got = await readFile(join(dir, 'out', 'multi', 'b.bin'));
  assert.ok(got.equals(files.get('b.bin')!), 'the selected file is byte-identical');
  const stats = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, number | string>);
  const last = stats.filter((s) => s.event === undefined).at(-1)!;
  // wanted = the pieces covering the selected file (its boundary pieces are shared with a.bin and c.bin)
  assert.ok(Number(last.wantedBytes) >= 170_000 && Number(last.wantedBytes) <= 170_000 + 2 * 16384, `wanted ${last.wantedBytes} ≈ the selected file only`);
  assert.ok(Number(last.wantedBytes) < Number(last.totalBytes));
  assert.equal(last.progress, 1);
  // Out of range: with a magnet the file count is only known once the metadata arrived — still a clear error.
  const bad = await runCliToEnd(t, ['download', `magnet:?xt=urn:btih:${seeder.infoHash}&x.pe=127.0.0.1:${seeder.port}`, '--only', '7', '-o', join(dir, 'bad'), ...SAFE, '--no-resume', '--quiet'], 30_000);
  assert.equal(bad.signal, null, 'ends by itself instead of hanging');
  assertCleanError(bad, 1, /--only: file index 7 out of range \(torrent has 3 files\)/);
  // The other files: at most the pieces shared with b.bin at its boundaries (≤ one piece each), never complete.
  for (const name of ['a.bin', 'c.bin']) {
    const st = await stat(join(dir, 'out', 'multi', name)).catch(() => undefined);
    if (!st) continue;
    const data = await readFile(join(dir, 'out', 'multi', name));
    assert.ok(!data.equals(files.get(name)!), `${name} was not downloaded`);
    let written = 0;
    const want = files.get(name)!;
    for (let i = 0; i < Math.min(data.length, want.length); i++) if (data[i] === want[i] && data[i] !== 0) written++;
    assert.ok(written <= 16384, `${name}: at most one boundary piece written (${written} bytes match)`);
  }
});

test('seed file.torrent --data DIR holding part of the data: a clear "incomplete" error', async (t) => {
  const dir = await tmp(t, 'partial');
  const files = await makeTree(join(dir, 'full', 'pack'), { 'one.bin': 100_000, 'two.bin': 100_000 });
  const torrentFile = join(dir, 'pack.torrent');
  const { torrent } = await createTorrent({ path: join(dir, 'full', 'pack'), pieceLength: 16384 });
  await writeFile(torrentFile, torrent);
  // Only one of the two files, and the second truncated: partial data.
  await mkdir(join(dir, 'part', 'pack'), { recursive: true });
  await copyFile(join(dir, 'full', 'pack', 'one.bin'), join(dir, 'part', 'pack', 'one.bin'));
  await writeFile(join(dir, 'part', 'pack', 'two.bin'), files.get('two.bin')!.subarray(0, 30_000));
  const r = await runCliToEnd(t, ['seed', torrentFile, '--data', join(dir, 'part'), ...SAFE, '--no-resume'], 30_000);
  assert.equal(r.signal, null, 'exits by itself');
  assertCleanError(r, 1, /incomplete \(\d+\.\d% verified\)/);
  const pct = Number(r.stderr.match(/\((\d+\.\d)% verified\)/)![1]);
  assert.ok(pct > 40 && pct < 80, `about 50–65% verified, got ${pct}%`);
  // The partial data is left as it was: seeding must not truncate or extend the user's files.
  assert.equal((await stat(join(dir, 'part', 'pack', 'two.bin'))).size, 30_000);

  // With all of the data, the same command seeds (and a leecher gets it).
  const ok = await startSeeder(t, [torrentFile, '--data', join(dir, 'full'), ...SAFE, '--no-resume']);
  const dl = await runCliToEnd(t, ['download', torrentFile, '--peer', `127.0.0.1:${ok.port}`, '-o', join(dir, 'dl'), ...SAFE, '--no-resume', '--quiet'], 30_000);
  assert.equal(dl.code, 0, dl.stderr);
  for (const [rel, want] of files) assert.ok((await readFile(join(dir, 'dl', 'pack', rel))).equals(want), rel);
  ok.proc.kill('SIGINT');
  assert.equal((await ok.proc.exited).code, 0, 'seed stops cleanly on Ctrl-C');

  // And an empty --data folder.
  await mkdir(join(dir, 'empty'));
  const e = await runCliToEnd(t, ['seed', torrentFile, '--data', join(dir, 'empty'), ...SAFE, '--no-resume'], 30_000);
  assertCleanError(e, 1, /incomplete \(0\.0% verified\)/);
});

test('output closed by the reader (`bitorrent seed … --json | head -1`): no EPIPE crash, the command keeps working', async (t) => {
  const dir = await tmp(t, 'epipe');
  await makeTree(join(dir, 'src'), { 'p.bin': 50_000 });
  const s = await startSeeder(t, [join(dir, 'src', 'p.bin'), ...SAFE, '--no-resume']);
  s.proc.child.stdout!.destroy(); // the reader goes away; the next JSON status line (every 1 s) hits EPIPE
  // Let at least two status intervals pass, then prove the process is alive and still serving.
  await new Promise((r) => setTimeout(r, 2500));
  assert.equal(s.proc.child.exitCode, null, `still running:\n${s.proc.stderr()}`);
  const r = await runCliToEnd(t, ['download', `magnet:?xt=urn:btih:${s.infoHash}&x.pe=127.0.0.1:${s.port}`, '-o', join(dir, 'out'), ...SAFE, '--no-resume', '--quiet'], 30_000);
  assert.equal(r.code, 0, r.stderr);
  s.proc.kill('SIGINT');
  const ex = await s.proc.exited;
  assert.equal(ex.code, 0);
  assert.ok(!/EPIPE/.test(s.proc.stderr()) && !hasStackTrace(s.proc.stderr()), s.proc.stderr());
});
