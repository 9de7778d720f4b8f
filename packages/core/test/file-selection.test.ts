/**
 * File selection with real sessions: a skipped file is never created, yet the pieces it shares with wanted files
 * are complete (their skipped part is kept in a part file, `.<infohash>.parts`), can be served, and survive a later
 * change of mind — a file enabled mid-download ends up byte-exact, and the part file goes once nothing is skipped.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile, readFile, rm, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Session, createTorrent, parseTorrent } from '../src/index.js';
import { bytes } from './fixtures.js';

const exists = (p: string): Promise<boolean> => access(p).then(() => true, () => false);

/**
 * A temp dir with `files` under seed/p, a torrent of that folder, and `count` listening sessions (closed, and the dir
 * removed, after the test); the first seeds. `log` goes to the second session (the leecher).
 */
async function swarm(t: TestContext, files: Map<string, Buffer>, pieceLength: number, count: number, log?: (m: string) => void) {
  const dir = await mkdtemp(join(tmpdir(), 'bt-select-'));
  const sessions = Array.from({ length: count }, (_, i) => new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 1, ...(i === 1 && log ? { log } : {}) }));
  t.after(async () => {
    for (const s of [...sessions].reverse()) await s.close();
    await rm(dir, { recursive: true, force: true });
  });
  await mkdir(join(dir, 'seed', 'p'), { recursive: true });
  for (const [name, data] of files) await writeFile(join(dir, 'seed', 'p', name), data);
  const { torrent } = await createTorrent({ path: join(dir, 'seed', 'p'), pieceLength });
  for (const s of sessions) await s.listen();
  await sessions[0].add({ torrent, path: join(dir, 'seed') });
  return { dir, torrent, meta: parseTorrent(torrent), sessions };
}

test('a skipped middle file: not created, boundary pieces kept in the part file; enabled later, it completes byte-exact', async (t) => {
  const pieceLength = 32768;
  // Sizes chosen so that every file boundary falls inside a piece.
  const files = new Map<string, Buffer>([
    ['a.bin', bytes(100_000, 1)],
    ['b.bin', bytes(90_001, 2)],
    ['c.bin', bytes(70_003, 3)],
  ]);
  const { dir, torrent, meta, sessions: [seeder, leecher, third] } = await swarm(t, files, pieceLength, 3);
  assert.deepEqual(meta.files.map((f) => f.path.at(-1)), ['a.bin', 'b.bin', 'c.bin']);
  const lt = await leecher.add({ torrent, path: join(dir, 'dl'), filePriorities: [1, 0, 1], peers: [{ host: '127.0.0.1', port: seeder.port }] });
  await lt.done;
  const partFile = join(dir, 'dl', `.${meta.infoHash.toString('hex')}.parts`);
  assert.equal(await exists(join(dir, 'dl', 'p', 'b.bin')), false, 'the skipped file is not created');
  assert.ok(await exists(partFile), 'the boundary pieces keep their b.bin bytes in the part file');
  assert.ok((await readFile(join(dir, 'dl', 'p', 'a.bin'))).equals(files.get('a.bin')!));
  assert.ok((await readFile(join(dir, 'dl', 'p', 'c.bin'))).equals(files.get('c.bin')!));
  // The boundary pieces are complete: the leecher can serve a.bin and c.bin whole to a third peer.
  const tt = await third.add({ torrent, path: join(dir, 'third'), filePriorities: [1, 0, 1], peers: [{ host: '127.0.0.1', port: leecher.port }] });
  await tt.done;
  assert.equal(tt.stats().hashFailures, 0);
  assert.ok((await readFile(join(dir, 'third', 'p', 'c.bin'))).equals(files.get('c.bin')!));
  // Change of mind: b.bin is wanted after all.
  const more = new Promise<void>((r) => lt.once('done', () => r()));
  lt.setFilePriorities([1, 1, 1]);
  await more;
  for (const [name, data] of files) assert.ok((await readFile(join(dir, 'dl', 'p', name))).equals(data), `${name} byte-exact`);
  assert.equal(lt.stats().hashFailures, 0);
  assert.equal(await exists(partFile), false, 'nothing is skipped any more: the part file is gone');
});

test('the part file lost while a file was skipped: enabling the file re-checks the shared pieces and downloads them again', async (t) => {
  const pieceLength = 16384;
  const files = new Map<string, Buffer>([
    ['a.bin', bytes(40_000, 4)],
    ['b.bin', bytes(30_001, 5)],
  ]);
  const logs: string[] = [];
  const { dir, torrent, meta, sessions: [seeder, leecher] } = await swarm(t, files, pieceLength, 2, (m) => logs.push(m));
  const lt = await leecher.add({ torrent, path: join(dir, 'dl'), filePriorities: [1, 0], peers: [{ host: '127.0.0.1', port: seeder.port }] });
  await lt.done;
  const partFile = join(dir, 'dl', `.${meta.infoHash.toString('hex')}.parts`);
  await rm(partFile); // e.g. a user cleaning hidden files
  const more = new Promise<void>((r) => lt.once('done', () => r()));
  lt.setFilePriorities([1, 1]);
  await more;
  for (const [name, data] of files) assert.ok((await readFile(join(dir, 'dl', 'p', name))).equals(data), `${name} byte-exact`);
  assert.ok(logs.some((l) => /1 piece\(s\) shared with newly selected files failed a re-check/.test(l)), logs.join('\n'));
});
