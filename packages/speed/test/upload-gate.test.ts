/**
 * Core's UploadGate as Speed uses it, on real loopback Sessions: a request for a held piece at the head of a peer's
 * upload queue must not hold the requests behind it that the gate allows (head-of-line blocking); the held piece is
 * served once the gate opens and resumeUploads() is called.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Session, createTorrent } from '@bitorrent/core';

const PIECE = 16 * 1024; // one block per piece: one request per piece
const PIECES = 8;

/** A seeding and a leeching Session on loopback, closed after the test. */
async function twoSessions(t: TestContext): Promise<[Session, Session]> {
  const a = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 0 });
  const b = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 0 });
  t.after(() => Promise.all([a.close(), b.close()]));
  await a.listen();
  await b.listen();
  return [a, b];
}

test('upload gate: requests for allowed pieces behind a held one are served; the held one after resumeUploads()', { timeout: 30_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'speed-gate-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const seedDir = join(dir, 'seed');
  mkdirSync(seedDir);
  writeFileSync(join(seedDir, 'a.bin'), randomBytes(PIECE * PIECES));
  const { torrent } = await createTorrent({ path: join(seedDir, 'a.bin'), pieceLength: PIECE });

  let open = false;
  const asked = new Set<number>();
  const sent: number[] = [];
  const [seedSession, leechSession] = await twoSessions(t);
  const seeder = await seedSession.add({
    torrent,
    path: seedDir,
    skipHashCheck: true,
    uploadGate: {
      mayUpload: (_peer, piece) => {
        asked.add(piece);
        return open || piece !== 0;
      },
      onBlockUploaded: (_peer, piece) => void sent.push(piece),
    },
  });
  // Sequential: the leecher asks for piece 0 first, so its request heads the seeder's upload queue.
  const leech = await leechSession.add({ torrent, path: join(dir, 'leech'), sequential: true, peers: [{ host: '127.0.0.1', port: seedSession.port }] });
  const verified = new Set<number>();
  const allButFirst = new Promise<void>((resolve) => {
    leech.on('verified', (i: number) => {
      verified.add(i);
      if (verified.size === PIECES - 1 && !verified.has(0)) resolve();
    });
  });
  await allButFirst;
  assert.equal(open, false);
  assert.ok(asked.has(0), 'the gate was asked about the held piece');
  assert.ok(!sent.includes(0), 'the held piece was not sent');
  assert.deepEqual([...verified].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7]);
  open = true;
  seeder.resumeUploads();
  await leech.done;
  assert.equal(leech.stats().progress, 1);
  assert.equal(sent.filter((i) => i === 0).length, 1);
});

test('upload gate: while the queue is held, requests that arrive cost no gate call; the queue is retried on resumeUploads()', { timeout: 30_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'speed-gate-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const seedDir = join(dir, 'seed');
  mkdirSync(seedDir);
  const N = 24; // within the leecher's first pipeline (32 requests): all asked at once
  writeFileSync(join(seedDir, 'a.bin'), randomBytes(PIECE * N));
  const { torrent } = await createTorrent({ path: join(seedDir, 'a.bin'), pieceLength: PIECE });
  let open = false;
  let callsWhileHeld = 0;
  const [seedSession, leechSession] = await twoSessions(t);
  const seeder = await seedSession.add({
    torrent,
    path: seedDir,
    skipHashCheck: true,
    uploadGate: {
      mayUpload: () => {
        if (!open) callsWhileHeld++;
        return open;
      },
    },
  });
  let allRequested!: () => void;
  const requested = new Promise<void>((resolve) => (allRequested = resolve));
  let requests = 0;
  let callsAtLastRequest = -1;
  seeder.on('peer', (peer: { wire: { on(e: 'request', f: () => void): void } }) =>
    // Registered after the torrent's own listener: runs once core has queued the request.
    peer.wire.on('request', () => {
      if (++requests === N) {
        callsAtLastRequest = callsWhileHeld;
        allRequested();
      }
    }),
  );
  const leech = await leechSession.add({ torrent, path: join(dir, 'leech'), peers: [{ host: '127.0.0.1', port: seedSession.port }] });
  await requested; // the leecher's pipeline asked for every piece
  // The first request found the gate shut; the others joined the held queue without asking: 1 call (asking per
  // arriving request made it N, ~12,000 refused calls per GiB of a paid transfer). The requests arrive within a
  // millisecond; only a tick() rescan (once a second) landing in between could add more.
  assert.ok(callsAtLastRequest >= 1 && callsAtLastRequest < N / 2, `${callsAtLastRequest} gate calls for ${N} held requests`);
  // The tick's watchdog asks again while the queue is held: still the same hold.
  const callsBeforeTick = callsWhileHeld;
  await new Promise((resolve) => seeder.once('tick', resolve));
  assert.ok(callsWhileHeld > callsBeforeTick, 'the tick asked the gate again');
  assert.equal(seeder.stats().uploadHolds, 1);
  open = true;
  seeder.resumeUploads();
  await leech.done;
  assert.equal(leech.stats().progress, 1);
  // One hold: from the first request until resumeUploads() (the tick's rescans meanwhile are not new holds).
  assert.equal(seeder.stats().uploadHolds, 1);
  assert.equal(leech.stats().uploadHolds, 0);
});

test('upload gate: asked once per piece and told once per run of blocks, not per block; every byte sent is reported', { timeout: 30_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'speed-gate-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const seedDir = join(dir, 'seed');
  mkdirSync(seedDir);
  const pieceLength = 256 * 1024; // 16 blocks per piece
  const pieces = 24;
  writeFileSync(join(seedDir, 'a.bin'), randomBytes(pieceLength * pieces));
  const { torrent } = await createTorrent({ path: join(seedDir, 'a.bin'), pieceLength });
  let asks = 0, reports = 0, priorities = 0;
  const reported = new Map<number, number>();
  const [seedSession, leechSession] = await twoSessions(t);
  const seeder = await seedSession.add({
    torrent,
    path: seedDir,
    skipHashCheck: true,
    uploadGate: {
      mayUpload: () => {
        asks++;
        return true;
      },
      onBlockUploaded: (_peer, piece, bytes) => {
        reports++;
        reported.set(piece, (reported.get(piece) ?? 0) + bytes);
      },
      uploadPriority: () => {
        priorities++;
        return 0;
      },
    },
  });
  const leech = await leechSession.add({ torrent, path: join(dir, 'leech'), peers: [{ host: '127.0.0.1', port: seedSession.port }] });
  await leech.done;
  const blocks = (pieceLength / 16384) * pieces;
  for (let i = 0; i < pieces; i++) assert.equal(reported.get(i), pieceLength, `bytes reported for piece ${i}`);
  // Per block these would each be ≥ 384 (more with end-game duplicates). A piece costs a gate call when a run of sends
  // reaches it and again after each wait (its disk read, a full socket); the bound leaves room for those.
  assert.ok(asks <= blocks / 4, `${asks} gate calls for ${blocks} blocks`);
  assert.ok(reports <= blocks / 4, `${reports} reports for ${blocks} blocks`);
  assert.ok(priorities <= blocks / 4, `${priorities} priority calls for ${blocks} blocks`);
  assert.equal(seeder.stats().uploadHolds, 0, 'a gate that always allows never holds');
});
