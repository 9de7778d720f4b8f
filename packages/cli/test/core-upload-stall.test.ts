/**
 * CORE BUG repro (found through the CLI: a second `bitorrent download` right after another leecher was killed
 * stalls forever after one block). The seeder's upload loop loses its 'drain' wake-up:
 *
 *   Torrent.serveLoop() writes cached blocks synchronously; PeerWire.write() corks the socket until nextTick,
 *   so 1 MiB of writes accumulate, needsDrain turns true and the loop returns. `peer.serving` is only reset
 *   in serveUploads()'s `.finally()` — a promise microtask — but the nextTick uncork flushes the socket and
 *   Node emits 'drain' from the nextTick queue BEFORE that microtask runs: the 'drain' handler calls
 *   serveUploads(), sees serving === true, and returns. Nothing restarts the loop; a peer whose whole request
 *   pipeline is already queued waits forever.
 *
 * A raw BitTorrent client asks for 1.5 MiB of blocks twice: the second time every piece is in the seeder's
 * read cache, so the loop writes without awaiting. All blocks must arrive.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Session, createTorrent } from '@bitorrent/core';

const BLOCK = 16384;

/** A minimal BEP 3 peer: handshake, interested, then counts the piece messages it receives. */
function rawPeer(port: number, infoHash: Buffer): Promise<{ sock: Socket; unchoked: Promise<void>; pieces: () => number; onPiece: (cb: () => void) => void }> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let handshook = false;
    let pieces = 0;
    let unchoke!: () => void;
    const unchoked = new Promise<void>((r) => (unchoke = r));
    const listeners: (() => void)[] = [];
    sock.on('error', reject);
    sock.on('connect', () => {
      const hs = Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol'), Buffer.alloc(8), infoHash, Buffer.from('-XX0001-' + 'a'.repeat(12))]);
      sock.write(hs);
      sock.write(Buffer.from([0, 0, 0, 1, 2])); // interested
      resolve({ sock, unchoked, pieces: () => pieces, onPiece: (cb) => listeners.push(cb) });
    });
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!handshook) {
        if (buf.length < 68) return;
        buf = buf.subarray(68);
        handshook = true;
      }
      while (buf.length >= 4) {
        const len = buf.readUInt32BE(0);
        if (buf.length < 4 + len) break;
        const id = len > 0 ? buf[4] : -1;
        if (id === 1) unchoke();
        if (id === 7) {
          pieces++;
          for (const l of listeners) l();
        }
        buf = buf.subarray(4 + len);
      }
    });
  });
}

function requests(count: number, pieceLength: number): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const m = Buffer.alloc(17);
    m.writeUInt32BE(13, 0);
    m[4] = 6;
    m.writeUInt32BE(Math.floor((i * BLOCK) / pieceLength), 5);
    m.writeUInt32BE((i * BLOCK) % pieceLength, 9);
    m.writeUInt32BE(BLOCK, 13);
    out.push(m);
  }
  return Buffer.concat(out); // one write: the seeder queues them all at once
}

test('core: a seeder serves every queued request when the blocks come from its read cache (no lost drain)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'bt-stall-'));
  const session = new Session({ port: 0, host: '127.0.0.1' });
  const socks: Socket[] = [];
  t.after(async () => {
    for (const s of socks) s.destroy();
    await session.close();
    await rm(dir, { recursive: true, force: true });
  });
  const pieceLength = 64 * 1024;
  await writeFile(join(dir, 'f.bin'), randomBytes(4 * 1024 * 1024));
  const { torrent, metainfo } = await createTorrent({ path: join(dir, 'f.bin'), pieceLength });
  await session.listen();
  const tor = await session.add({ torrent, path: dir, seed: true, skipHashCheck: true });
  await new Promise<void>((r) => (tor.state === 'seeding' ? r() : tor.once('ready', () => r())));

  const count = 96; // 1.5 MiB: more than the 1 MiB write buffer the loop stops at
  const peer = await rawPeer(session.port, Buffer.from(metainfo.infoHash));
  socks.push(peer.sock);
  await peer.unchoked;
  for (let round = 1; round <= 2; round++) {
    const want = round * count;
    const got = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`round ${round}: only ${peer.pieces() - (round - 1) * count} of ${count} requested blocks arrived in 10 s (seeder upload loop stalled)`)), 10_000);
      const check = () => {
        if (peer.pieces() >= want) {
          clearTimeout(timer);
          resolve();
        }
      };
      peer.onPiece(check);
      check();
    });
    peer.sock.write(requests(count, pieceLength));
    await got;
  }
  assert.equal(peer.pieces(), 2 * count);
});
