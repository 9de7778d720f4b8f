/**
 * Download hot path (torrent.ts onBlock/verifyAndStore): pieces are SHA-1'd incrementally as blocks arrive and
 * their buffers are pooled. A scripted seeder answers requests in reverse order (blocks of a piece arrive out of
 * order) and corrupts one piece once: the download must still be byte-exact, with exactly one hash failure.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile, readFile, rm } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Session, createTorrent, parseTorrent } from '../src/index.js';
import { PeerWire } from '../src/wire/peer-wire.js';
import { bytes } from './fixtures.js';

/** A scripted seeder (one PeerWire per connection, set up by `script`) and a leecher Session, both torn down after the test. */
async function scriptedSwarm(t: TestContext, dir: string, script: (wire: PeerWire) => void): Promise<{ port: number; leecher: Session; connections: () => number }> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    const wire = new PeerWire(socket, { peerId: Buffer.alloc(20, 0x42) });
    wire.on('error', () => {});
    script(wire);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const leecher = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 1 });
  t.after(async () => {
    await leecher.close();
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
    await rm(dir, { recursive: true, force: true });
  });
  await leecher.listen();
  let accepted = 0;
  server.on('connection', () => accepted++);
  return { port, leecher, connections: () => accepted };
}

test('out-of-order blocks and a corrupt piece: byte-exact download, one hash failure', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'bt-xfer-'));
  const pieceLength = 65536; // 4 blocks
  const data = bytes(pieceLength * 9 + 20_000, 7); // short last piece with a short last block
  await mkdir(join(dir, 'seed'), { recursive: true });
  await writeFile(join(dir, 'seed', 'f.bin'), data);
  const { torrent } = await createTorrent({ path: join(dir, 'seed', 'f.bin'), pieceLength });
  const meta = parseTorrent(torrent);

  const CORRUPT_PIECE = 2;
  let corrupted = false;
  const { port, leecher } = await scriptedSwarm(t, dir, (wire) => {
    let batch: { index: number; begin: number; length: number }[] = [];
    wire.on('handshake', () => {
      wire.sendHandshake(meta.infoHash);
      wire.haveAll();
      wire.unchoke();
    });
    wire.on('request', (index: number, begin: number, length: number) => {
      if (batch.length === 0) {
        setImmediate(() => {
          // Answer the whole batch newest first: every piece's blocks arrive out of order.
          for (const r of batch.splice(0).reverse()) {
            let block = data.subarray(r.index * pieceLength + r.begin, r.index * pieceLength + r.begin + r.length);
            if (r.index === CORRUPT_PIECE && !corrupted) {
              corrupted = true;
              block = Buffer.from(block);
              block[0] ^= 0xff;
            }
            wire.piece(r.index, r.begin, block);
          }
        });
      }
      batch.push({ index, begin, length });
    });
  });
  // Count full-buffer hashes (white-box): every piece here should be hashed incrementally instead.
  const hasher = (leecher as unknown as { hasher: { sha1: (d: Uint8Array) => Promise<Buffer> } }).hasher;
  let fullHashes = 0;
  const sha1 = hasher.sha1.bind(hasher);
  hasher.sha1 = (d) => {
    fullHashes++;
    return sha1(d);
  };
  const lt = await leecher.add({ torrent, path: join(dir, 'leech'), peers: [{ host: '127.0.0.1', port }] });
  const failed: number[] = [];
  lt.on('hash-failure', (index: number) => failed.push(index));
  await lt.done;
  assert.ok(corrupted, 'the corrupt block was sent');
  assert.deepEqual(failed, [CORRUPT_PIECE]);
  assert.equal(lt.stats().hashFailures, 1);
  assert.equal(fullHashes, 0, 'pieces were hashed as their blocks arrived');
  assert.ok((await readFile(join(dir, 'leech', 'f.bin'))).equals(data), 'downloaded file is byte-identical');
});

test('a peer that replaces its bitfield mid-connection (aria2 does): the new set is used, the connection is kept', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'bt-rebitfield-'));
  const pieceLength = 32768;
  const data = bytes(pieceLength * 6, 11);
  await mkdir(join(dir, 'seed'), { recursive: true });
  await writeFile(join(dir, 'seed', 'f.bin'), data);
  const { torrent } = await createTorrent({ path: join(dir, 'seed', 'f.bin'), pieceLength });
  const meta = parseTorrent(torrent);
  const { port, leecher, connections } = await scriptedSwarm(t, dir, (wire) => {
    let replaced = false;
    wire.on('handshake', () => {
      wire.sendHandshake(meta.infoHash);
      wire.haveNone();
      wire.have(0);
      wire.unchoke();
    });
    wire.on('request', (index: number, begin: number, length: number) => {
      wire.piece(index, begin, data.subarray(index * pieceLength + begin, index * pieceLength + begin + length));
      if (!replaced) {
        // Only piece 0 was announced; the replacing bitfield announces all six.
        replaced = true;
        wire.bitfield(Buffer.from([0xfc]));
      }
    });
  });
  const lt = await leecher.add({ torrent, path: join(dir, 'leech'), peers: [{ host: '127.0.0.1', port }] });
  await lt.done;
  assert.equal(connections(), 1, 'one connection, never dropped');
  assert.ok((await readFile(join(dir, 'leech', 'f.bin'))).equals(data), 'downloaded file is byte-identical');
});
