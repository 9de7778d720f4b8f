/**
 * Kill the bitorrent process mid-download (SIGKILL: no chance to save anything) and restart:
 * it resumes from its fast-resume data without re-downloading the pieces it had recorded as
 * verified and without re-hashing the data on disk.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { mkdir, stat } from 'node:fs/promises';
import { Session, ResumeStore } from '@bitorrent/core';
import {
  requireTool, requireLibtorrent, tempDir, makeRandomFiles, multiFileSpec, compareTrees, waitFor, cleanupAfter, registerCleanup,
  mktorrent, startLibtorrent, startBitorrent,
} from '../src/index.js';

test('SIGKILL mid-download, restart: resumes from fast-resume, no re-download, recorded pieces not re-hashed', async (t) => {
  cleanupAfter(t);
  if (!requireLibtorrent() || !requireTool('mktorrent')) return t.skip('python3-libtorrent or mktorrent not installed');
  const d = await tempDir('eng-resume');
  const payload = join(d.path, 'seed', 'payload');
  await makeRandomFiles(payload, multiFileSpec(4), 'resume'); // ~17 MB
  const tor = await mktorrent(payload, join(d.path, 'p.torrent'), { pieceLengthLog2: 16 });
  const slow = await startLibtorrent({ mode: 'seed', torrent: tor.path, savePath: join(d.path, 'seed'), uploadRateLimit: 1_000_000 });
  await slow.waitSeeding();
  const dl = join(d.path, 'dl');
  const state = join(d.path, 'state');
  await mkdir(dl);
  const resumeFile = join(state, `${tor.infoHash}.resume`);

  // Run 1: the CLI, killed without warning once it has saved resume data mid-download.
  const started = Date.now();
  const run1 = startBitorrent([
    'download', tor.path, '-o', dl, '--peer-port', '0', '--host', '127.0.0.1', '--peer', `127.0.0.1:${slow.port}`,
    '--no-dht', '--no-seed', '--state-dir', state, '--json',
  ]);
  await waitFor(
    async () => {
      if (run1.process.hasExited()) throw new Error(`bitorrent exited early:\n${run1.process.output()}`);
      const st = await stat(resumeFile).catch(() => undefined);
      const progress = Number(run1.last()?.progress ?? 0);
      // A periodic save that happened after some progress (not the one written at start-up).
      return st && st.mtimeMs > started + 3000 && progress > 0.2 && progress < 0.95;
    },
    { timeoutMs: 30_000, intervalMs: 50, what: 'a mid-download fast-resume save' },
  );
  process.kill(run1.process.pid, 'SIGKILL');
  await run1.process.exited;
  const before = Number(run1.last()?.verifiedBytes ?? 0);
  assert.ok(before > 0 && before < tor.totalLength, `killed mid-download (verified ${before} of ${tor.totalLength})`);
  // What the resume file recorded at the kill (the JSON progress line above lags the last save by up to 1 s).
  const saved = await new ResumeStore(state).load(tor.infoHash);
  assert.ok(saved, 'the resume file survived the SIGKILL and parses');
  let recordedAtKill = 0;
  for (const byte of saved.have) for (let b = byte; b; b &= b - 1) recordedAtKill++;

  // Run 2: a fresh session on the same state dir and data, fed by a fast seeder.
  const fast = await startLibtorrent({ mode: 'seed', torrent: tor.path, savePath: join(d.path, 'seed') });
  await fast.waitSeeding();
  const s = new Session({ port: 0, host: '127.0.0.1', stateDir: state });
  await s.listen();
  registerCleanup(() => s.close());
  const tt = await s.add({ torrent: tor.bytes, path: dl, seed: false });
  // A hash check may run only over pieces the resume data did not record (written after its last save,
  // before the SIGKILL); recorded pieces are trusted without reading them.
  let checkedPieces = 0;
  tt.on('checking', (_done: number, total: number) => (checkedPieces = total));
  const haveAtReady = await new Promise<number>((resolve) => {
    if (tt.stats().state !== 'checking' && tt.stats().state !== 'metadata') resolve(tt.stats().pieces.have);
    else tt.once('ready', () => resolve(tt.stats().pieces.have));
  });
  tt.addPeer({ host: '127.0.0.1', port: fast.port });
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([tt.done, new Promise((_, rej) => (timer = setTimeout(() => rej(new Error(`restart did not finish: ${JSON.stringify(tt.stats())}`)), 30_000)))]);
  clearTimeout(timer);

  assert.ok(checkedPieces < tor.pieceCount, `the restart did not re-hash the whole torrent (${checkedPieces} of ${tor.pieceCount} pieces checked)`);
  assert.ok(haveAtReady > 0, 'pieces verified before the kill are known at once after the restart');
  // Pieces known at ready = trusted from the resume data + found by hashing the unrecorded ones: the trusted
  // part is exactly what the file recorded, nothing more (and everything it recorded is kept).
  const trusted = Math.max(0, haveAtReady - checkedPieces);
  assert.ok(trusted <= recordedAtKill, `trusted without hashing only what the resume file recorded (${trusted} vs ${recordedAtKill} pieces)`);
  assert.ok(haveAtReady >= recordedAtKill, `every recorded piece is kept (${haveAtReady} known at ready, ${recordedAtKill} recorded)`);
  const recorded = trusted * tor.pieceLength;
  const downloaded = tt.stats().downloaded;
  assert.ok(
    downloaded <= tor.totalLength - recorded + 4 * tor.pieceLength,
    `restart downloaded ${downloaded} bytes; at most ${tor.totalLength - recorded} (+ a few pieces of end-game slack) were missing`,
  );
  assert.deepEqual((await compareTrees(payload, join(dl, 'payload'))).differences, []);
});
