/**
 * Resume through the CLI: a download killed with SIGKILL mid-way, then restarted with the same --state-dir and
 * output folder, finishes without downloading again what was verified; Ctrl-C (SIGINT) exits 130 after saving
 * resume data. Real `bitorrent` processes on loopback.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, makeTree, startSeeder, SAFE, type CliProc } from './helpers/cli-proc.js';

const SIZE = 8 * 1024 * 1024;
const PIECE = 64 * 1024;

async function lastStats(p: CliProc): Promise<Record<string, number | string>> {
  const stats = p.json().filter((o) => o.event === undefined);
  return stats.at(-1) as Record<string, number | string>;
}

test('SIGKILL mid-download, restart with the same --state-dir: no verified piece downloaded again; SIGINT exits 130 and saves resume data', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'bt-cli-resume-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const files = await makeTree(join(dir, 'src'), { 'eight.bin': SIZE });
  const want = files.get('eight.bin')!;
  const torrentFile = join(dir, 'eight.torrent');
  const seeder = await startSeeder(t, [join(dir, 'src', 'eight.bin'), ...SAFE, '--no-resume', '--piece-length', '64K', '--save-torrent', torrentFile]);
  const peer = `127.0.0.1:${seeder.port}`;

  // --- SIGKILL, then the same command again.
  const out = join(dir, 'out');
  const state = join(dir, 'state');
  const cmd = ['download', torrentFile, '--peer', peer, '-o', out, '--state-dir', state, ...SAFE, '--json'];
  const first = runCli(t, [...cmd, '--max-down', '512K']);
  const mid = await first.waitJson((o) => typeof o.progress === 'number' && o.progress >= 0.3, 60_000);
  assert.ok(Number(mid.progress) <= 0.7, `killed mid-way (progress ${mid.progress})`);
  first.kill('SIGKILL');
  const k = await first.exited;
  assert.equal(k.signal, 'SIGKILL');
  const verifiedBeforeKill = Number(mid.verifiedBytes);

  // Same command, same --state-dir (without the rate limit, to keep the suite short).
  const second = runCli(t, cmd);
  const done2 = await second.waitJson((o) => o.event === 'done', 60_000);
  const ex2 = await second.exited;
  assert.equal(ex2.code, 0, second.stderr());
  assert.ok((await readFile(join(out, 'eight.bin'))).equals(want), 'byte-identical after resume');
  assert.equal(done2.bytes, SIZE);
  const remaining = SIZE - verifiedBeforeKill;
  const downloaded2 = Number((await lastStats(second)).downloaded);
  // Margin: the pieces that were in flight when the process died (partial pieces are not kept) — 16 pieces.
  assert.ok(downloaded2 <= remaining + 16 * PIECE, `second run downloaded ${downloaded2} bytes; remaining after the kill was ≤ ${remaining}`);
  assert.ok(downloaded2 > 0, 'the second run did download the rest');

  // --- Ctrl-C: graceful exit 130, resume data saved, the next run does not fetch verified pieces again.
  const out3 = join(dir, 'out3');
  const state3 = join(dir, 'state3');
  const cmd3 = ['download', torrentFile, '--peer', peer, '-o', out3, '--state-dir', state3, ...SAFE, '--json'];
  const third = runCli(t, [...cmd3, '--max-down', '512K']);
  await third.waitJson((o) => typeof o.progress === 'number' && o.progress >= 0.3, 60_000);
  third.kill('SIGINT');
  const ex3 = await third.exited;
  assert.equal(ex3.code, 130, `Ctrl-C exits 130 (got code ${ex3.code}, signal ${ex3.signal})\n${third.stderr()}`);
  assert.equal(ex3.signal, null, 'a graceful exit, not death by signal');
  assert.equal(third.stderr(), '', 'stopping is not reported as an error (e.g. "torrent closed before completion")');
  const saved = await readdir(state3, { recursive: true });
  assert.ok(saved.length > 0, 'resume data written to --state-dir');
  // The final status printed on the way out tells how much was verified when it stopped.
  const atStop = Number((await lastStats(third)).verifiedBytes);
  assert.ok(atStop >= 0.3 * SIZE, `verified at stop: ${atStop}`);

  const fourth = runCli(t, cmd3);
  await fourth.waitJson((o) => o.event === 'done', 60_000);
  assert.equal((await fourth.exited).code, 0, fourth.stderr());
  assert.ok((await readFile(join(out3, 'eight.bin'))).equals(want), 'byte-identical after Ctrl-C and resume');
  const downloaded4 = Number((await lastStats(fourth)).downloaded);
  // After a graceful stop every verified piece is in the resume data: only in-flight partial pieces are refetched.
  assert.ok(downloaded4 <= SIZE - atStop + 16 * PIECE, `after Ctrl-C the next run downloaded ${downloaded4} bytes; ${SIZE - atStop} were missing`);
});
