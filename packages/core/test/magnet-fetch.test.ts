/**
 * Magnet links: the info dictionary is fetched from a few peers at a time, and a peer that advertises metadata but
 * never sends it is given up after a stall (virtual time) so another peer — here the real seeder — is asked.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { mkdtemp, writeFile, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Session, createTorrent, formatMagnet, encode } from '../src/index.js';
import { VirtualClock } from '../src/clock.js';
import { bytes } from './fixtures.js';

/** A peer that completes the handshakes, advertises ut_metadata with a metadata_size, then never answers a request. */
function silentMetadataPeer(infoHash: Buffer, metadataSize: number, n: number): Promise<{ server: Server; port: number; requests: () => number; sockets: Set<Socket> }> {
  let requests = 0;
  const sockets = new Set<Socket>();
  const server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    let handshook = false;
    const reserved = Buffer.alloc(8);
    reserved[5] = 0x10; // BEP 10
    sock.write(Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol'), reserved, infoHash, Buffer.from(`-XX0001-silentpeer${n}0`)]));
    const ext = encode({ m: { ut_metadata: 3 }, metadata_size: metadataSize });
    const head = Buffer.alloc(6);
    head.writeUInt32BE(ext.length + 2, 0);
    head[4] = 20;
    head[5] = 0;
    sock.write(Buffer.concat([head, ext]));
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
        if (len >= 2 && buf[4] === 20 && buf[5] === 3) requests++;
        buf = buf.subarray(4 + len);
      }
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as { port: number }).port, requests: () => requests, sockets })),
  );
}

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(cond(), `timed out waiting for ${what}`);
}

/**
 * A seeder Session with a `size`-byte file, four fake peers advertising `advertised(metadataSize)` bytes of metadata
 * (none answers), and a leecher Session on a virtual clock; everything is stopped after the test.
 */
async function magnetSwarm(t: TestContext, size: number, seed: number, advertised: (metadataSize: number) => number) {
  const dir = await mkdtemp(join(tmpdir(), 'bt-magnet-'));
  const payload = bytes(size, seed);
  await writeFile(join(dir, 'f.bin'), payload);
  const { torrent, metainfo } = await createTorrent({ path: join(dir, 'f.bin'), pieceLength: 16384 });
  const fakes = await Promise.all([0, 1, 2, 3].map((n) => silentMetadataPeer(metainfo.infoHash, advertised(metainfo.infoBuffer.length), n)));
  const seeder = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 0 });
  const clock = new VirtualClock(1_000_000);
  const leecher = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 0, clock });
  t.after(async () => {
    await leecher.close();
    await seeder.close();
    for (const s of fakes) {
      for (const sock of s.sockets) sock.destroy();
      await new Promise((r) => s.server.close(r));
    }
    await rm(dir, { recursive: true, force: true });
  });
  await seeder.listen();
  await leecher.listen();
  await seeder.add({ torrent, path: dir });
  const fakePeers = fakes.map((s) => ({ host: '127.0.0.1', port: s.port }));
  const seederPeer = { host: '127.0.0.1', port: seeder.port };
  const readDownload = () => readFile(join(dir, 'leech', 'f.bin'));
  return { dir, payload, metainfo, fakes, fakePeers, seederPeer, leecher, clock, readDownload };
}

test('magnet: at most 3 peers fetch the metadata at once; silent ones are given up after 20 s and the seeder is asked', async (t) => {
  const { dir, payload, metainfo, fakes: silent, fakePeers, seederPeer, leecher, clock, readDownload } = await magnetSwarm(t, 300_000, 7, (n) => n);
  const tor = await leecher.add({ torrent: formatMagnet({ infoHash: metainfo.infoHash, peers: fakePeers }), path: join(dir, 'leech') });
  clock.advance(1_000); // the tick dials them
  await until(() => tor.peerList().filter((p) => p.wire.extendedHandshake).length === 4, 'the four silent peers to connect');
  await until(() => silent.filter((s) => s.requests() > 0).length === 3, 'three fetches to start');
  assert.equal(tor.peerList().filter((p) => p.metadataSince !== undefined).length, 3, 'three fetches, not four');

  tor.addPeer(seederPeer, 'user');
  clock.advance(1_000); // the tick dials the seeder
  await until(() => tor.peerList().length === 5 && tor.peerList().every((p) => p.wire.extendedHandshake), 'the seeder to connect');
  assert.equal(tor.peerList().filter((p) => p.metadataSince !== undefined).length, 3, 'still three: the seeder waits its turn');
  assert.equal(tor.metainfo, undefined);

  for (let s = 0; s < 21 && !tor.metainfo; s++) clock.advance(1_000); // the three stall: given up, the next two asked
  await until(() => tor.metainfo !== undefined, 'the metadata from the seeder');
  assert.equal(silent.filter((s) => s.requests() > 0).length, 4, 'the fourth silent peer got its turn too');
  const silentPorts = new Set(silent.map((s) => s.port));
  const stillFetching = tor.peerList().filter((p) => silentPorts.has(p.address.port) && p.metadataSince !== undefined);
  assert.equal(stillFetching.length, 0, 'fetches still running when the metadata arrived were stopped');
  await tor.done;
  assert.deepEqual(await readDownload(), payload);
});

test('magnet: peers whose advertised metadata is too large fail at once and the next peer is asked without waiting', async (t) => {
  // 64 MiB advertised: over the 16 MiB limit, refused before anything is allocated or requested.
  const { dir, payload, metainfo, fakes: huge, fakePeers, seederPeer, leecher, clock, readDownload } = await magnetSwarm(t, 100_000, 8, () => 64 << 20);
  const tor = await leecher.add({ torrent: formatMagnet({ infoHash: metainfo.infoHash, peers: [...fakePeers, seederPeer] }), path: join(dir, 'leech') });
  clock.advance(1_000); // the tick dials them; the clock does not move again, so no stall timeout can help
  await until(() => tor.metainfo !== undefined, 'the metadata from the seeder');
  assert.equal(huge.reduce((n, s) => n + s.requests(), 0), 0, 'nothing was requested from the oversized peers');
  await tor.done;
  assert.deepEqual(await readDownload(), payload);
});
