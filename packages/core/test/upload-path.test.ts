/**
 * Upload hot path (torrent.ts serveQueued/readPieceCached): pieces are read whole into pooled buffers and sent as
 * zero-copy block views. An evicted buffer is reused only once every socket that could still be sending from it
 * has flushed past that point. Here one peer stops reading with ~1 MiB of blocks still queued in the seeder's
 * socket while a second peer pulls the whole torrent through the read cache (forcing evictions and reuse); when the
 * first peer reads again, every block it gets must be the right bytes. (With reuse as soon as a buffer is evicted,
 * this test saw 62 of the 500 queued blocks overwritten.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { Session, createTorrent, parseTorrent } from '../src/index.js';
import { PeerWire } from '../src/wire/peer-wire.js';
import { bytes } from './fixtures.js';

test('blocks queued to a stalled peer stay intact while another peer cycles the read-buffer pool', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'bt-upload-'));
  const pieceLength = 256 * 1024;
  // a.bin (8 MiB) is what the stalled peer asks for; the other peer only wants b.bin (24 MiB, more than the 16 MiB
  // read cache), so every buffer a.bin was read into is evicted and offered for reuse while blocks still point at it.
  const a = bytes(32 * pieceLength, 11), b = bytes(96 * pieceLength, 12);
  await mkdir(join(dir, 'seed', 'payload'), { recursive: true });
  await writeFile(join(dir, 'seed', 'payload', 'a.bin'), a);
  await writeFile(join(dir, 'seed', 'payload', 'b.bin'), b);
  const { torrent, metainfo } = await createTorrent({ path: join(dir, 'seed', 'payload'), pieceLength });
  const meta = parseTorrent(torrent);
  assert.equal(metainfo.files[0].length, a.length, 'a.bin comes first in the torrent');
  const data = a;

  const seeder = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 1 });
  const leecher = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 1 });
  let stalled: PeerWire | undefined;
  t.after(async () => {
    stalled?.destroy();
    await leecher.close();
    await seeder.close();
    await rm(dir, { recursive: true, force: true });
  });
  await seeder.listen();
  await leecher.listen();
  const seedTorrent = await seeder.add({ torrent, path: join(dir, 'seed') });
  await seedTorrent.done; // data checked: requests before that would be refused

  // The stalled peer: asks for 500 blocks (8 MiB, more than loopback's kernel buffers hold), then stops reading.
  const sock = connect(seeder.port, '127.0.0.1');
  await once(sock, 'connect');
  stalled = new PeerWire(sock, { peerId: Buffer.alloc(20, 0x53), keepAliveMs: 0, idleTimeoutMs: 0 });
  stalled.on('error', () => {});
  const BLOCK = 16384;
  const wanted: { index: number; begin: number }[] = [];
  for (let i = 0; i < 500; i++) wanted.push({ index: Math.floor((i * BLOCK) / pieceLength), begin: (i * BLOCK) % pieceLength });
  const received = new Map<string, Buffer>();
  stalled.on('piece', (index: number, begin: number, block: Buffer) => received.set(`${index}:${begin}`, Buffer.from(block)));
  const unchoked = once(stalled, 'unchoke');
  stalled.sendHandshake(meta.infoHash);
  stalled.interested();
  await unchoked;
  for (const w of wanted) stalled.request(w.index, w.begin, BLOCK);
  stalled.pauseReading();

  // Wait until the seeder has filled the kernel buffers and holds blocks in its own socket queue.
  const seederWire = (): PeerWire | undefined => seedTorrent.peerList().find((p) => p.address.port === sock.localPort)?.wire;
  for (let i = 0; i < 500 && !((seederWire()?.writableLength ?? 0) > 0 && seederWire()!.needsDrain); i++) await new Promise((r) => setTimeout(r, 10));
  const queuedBefore = seederWire()?.writableLength ?? 0;
  assert.ok(queuedBefore >= 512 * 1024, `the seeder should hold blocks for the stalled peer in user space (has ${queuedBefore} bytes)`);

  // Another peer downloads b.bin meanwhile: the read cache evicts a.bin's buffers, retires them and reuses some.
  const lt = await leecher.add({ torrent, path: join(dir, 'leech'), filePriorities: [0, 1], peers: [{ host: '127.0.0.1', port: seeder.port }] });
  await lt.done;
  assert.equal(lt.stats().hashFailures, 0);
  assert.ok((seederWire()?.writableLength ?? 0) > 0, 'the stalled peer still has blocks queued after the other download');

  // The stalled peer reads again: every block must be the file's bytes.
  const all = new Promise<void>((resolve) => {
    const check = (): void => {
      if (received.size === wanted.length) {
        stalled!.off('piece', check);
        resolve();
      }
    };
    stalled!.on('piece', check);
  });
  stalled.resumeReading();
  await all;
  let wrong = 0;
  for (const w of wanted) {
    const at = w.index * pieceLength + w.begin;
    if (!received.get(`${w.index}:${w.begin}`)!.equals(data.subarray(at, at + BLOCK))) wrong++;
  }
  assert.equal(wrong, 0, `${wrong} of ${wanted.length} blocks sent to the stalled peer were corrupted`);
});
