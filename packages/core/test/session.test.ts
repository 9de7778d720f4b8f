import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { Session, StandardChoker, createTorrent, formatMagnet, type ChokerPolicy, type PeerWire, type Torrent } from '../src/index.js';
import { VirtualClock } from '../src/clock.js';
import { bytes } from './fixtures.js';

async function makePayload(root: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>([
    ['payload/a.bin', bytes(700_000, 1)],
    ['payload/sub/b.bin', bytes(123_457, 2)],
    ['payload/sub/empty.txt', Buffer.alloc(0)],
    ['payload/c.txt', bytes(40_000, 3)],
  ]);
  for (const [p, data] of files) {
    await mkdir(join(root, p, '..'), { recursive: true });
    await writeFile(join(root, p), data);
  }
  return files;
}

async function assertSameFiles(files: Map<string, Buffer>, dir: string, only?: Set<string>): Promise<void> {
  for (const [p, data] of files) {
    if (only && !only.has(p)) continue;
    const got = await readFile(join(dir, p));
    assert.equal(createHash('sha1').update(got).digest('hex'), createHash('sha1').update(data).digest('hex'), p);
  }
}

function session(extra: Partial<ConstructorParameters<typeof Session>[0]> = {}): Session {
  return new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 1, ...extra });
}

/**
 * A temp folder holding one file (`size` bytes of `bytes(size, fill)`, 32 KiB pieces), seeded by `sessions[0]` (which
 * starts listening). After the test every session in `sessions` is closed, in order, and the folder removed.
 */
async function seedOneFile(t: TestContext, prefix: string, size: number, fill: number, sessions: Session[], add: { uploadSlots?: number } = {}) {
  let dir: string | undefined;
  t.after(async () => {
    for (const s of sessions) await s.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  dir = await mkdtemp(join(tmpdir(), prefix));
  const seeder = sessions[0];
  await seeder.listen();
  await writeFile(join(dir, 'f.bin'), bytes(size, fill));
  const { torrent } = await createTorrent({ path: join(dir, 'f.bin'), pieceLength: 32768 });
  const tor = await seeder.add({ torrent, path: dir, seed: true, ...add });
  await tor.done;
  return { dir, torrent, tor };
}

test('two sessions: a multi-file torrent downloads byte for byte', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'bt-sess-'));
  const files = await makePayload(join(dir, 'seed'));
  const { torrent } = await createTorrent({ path: join(dir, 'seed', 'payload'), pieceLength: 32768 });
  const seeder = session();
  const leecher = session();
  t.after(async () => { await seeder.close(); await leecher.close(); await rm(dir, { recursive: true, force: true }); });
  await seeder.listen();
  await leecher.listen();
  await seeder.add({ torrent, path: join(dir, 'seed') });
  const lt = await leecher.add({ torrent, path: join(dir, 'leech'), peers: [{ host: '127.0.0.1', port: seeder.port }] });
  await lt.done;
  await assertSameFiles(files, join(dir, 'leech'));
  const s = lt.stats();
  assert.equal(s.progress, 1);
  assert.equal(s.hashFailures, 0);
  assert.ok(s.downloaded >= s.totalBytes, 'downloaded at least the payload');
});

for (const encryption of ['enabled', 'disabled'] as const) {
  test(`a download that arrives over the leecher's incoming connection (the seeder dials; listener encryption ${encryption}) is byte for byte`, async (t) => {
    // The leecher's side reads into its own buffer once the first bytes show a plaintext handshake (readIntoOwnBuffer):
    // the sniffed bytes, whatever the socket buffered meanwhile, and every later read must reach the wire in order.
    const dir = await mkdtemp(join(tmpdir(), 'bt-sess-in-'));
    const data = bytes(3 * 1024 * 1024 + 12_345, 11);
    await mkdir(join(dir, 'seed'), { recursive: true });
    await writeFile(join(dir, 'seed', 'big.bin'), data);
    const { torrent } = await createTorrent({ path: join(dir, 'seed', 'big.bin'), pieceLength: 65536 });
    const seeder = session();
    const leecher = session({ encryption });
    t.after(async () => { await seeder.close(); await leecher.close(); await rm(dir, { recursive: true, force: true }); });
    await seeder.listen();
    await leecher.listen();
    const lt = await leecher.add({ torrent, path: join(dir, 'leech') });
    // Who the data came from, seen at the first verified piece (two seeds drop their connection at the end).
    let directions: boolean[] | undefined;
    lt.once('piece', () => (directions = lt.peerList().map((p) => p.outgoing)));
    await seeder.add({ torrent, path: join(dir, 'seed'), peers: [{ host: '127.0.0.1', port: leecher.port }] });
    await lt.done;
    const got = await readFile(join(dir, 'leech', 'big.bin'));
    assert.ok(got.equals(data));
    assert.equal(lt.stats().hashFailures, 0);
    // The leecher's only peer connection is the one the seeder opened.
    assert.deepEqual(directions, [false]);
  });
}

/** The socket reads into a buffer of our own (readIntoOwnBuffer / onread), not Node's fresh buffer per read. */
function readsIntoOwnBuffer(wire: PeerWire): boolean {
  const slot = Object.getOwnPropertySymbols(wire.socket).find((s) => s.description === 'kBuffer');
  return slot !== undefined && Buffer.isBuffer((wire.socket as unknown as Record<symbol, unknown>)[slot]);
}

for (const leecherDials of [true, false]) {
  test(`plaintext chosen in an MSE key exchange reads into our own buffer, byte for byte (${leecherDials ? 'outgoing' : 'incoming'} at the leecher)`, async (t) => {
    // The dialling side prefers MSE and offers plaintext too; the listener (encryption 'enabled') picks plaintext, as
    // libtorrent does by default. The socket, with whatever followed the key exchange, then reads as a plaintext one.
    const dir = await mkdtemp(join(tmpdir(), 'bt-sess-mse-plain-'));
    const data = bytes(3 * 1024 * 1024 + 777, 12);
    await mkdir(join(dir, 'seed'), { recursive: true });
    await writeFile(join(dir, 'seed', 'big.bin'), data);
    const { torrent } = await createTorrent({ path: join(dir, 'seed', 'big.bin'), pieceLength: 65536 });
    const seeder = session({ encryption: leecherDials ? 'enabled' : 'prefer' });
    const leecher = session({ encryption: leecherDials ? 'prefer' : 'enabled' });
    t.after(async () => { await seeder.close(); await leecher.close(); await rm(dir, { recursive: true, force: true }); });
    await seeder.listen();
    await leecher.listen();
    const st = await seeder.add({ torrent, path: join(dir, 'seed'), ...(leecherDials ? {} : { peers: [] }) });
    const lt = await leecher.add({ torrent, path: join(dir, 'leech'), ...(leecherDials ? { peers: [{ host: '127.0.0.1', port: seeder.port }] } : {}) });
    // Seen at the first verified piece (two seeds drop their connection at the end).
    let seen: { outgoing: boolean; own: boolean; viaMse: boolean | undefined }[] | undefined;
    lt.once('piece', () => {
      const dialler = leecherDials ? lt : st;
      seen = lt.peerList().map((p) => ({ outgoing: p.outgoing, own: readsIntoOwnBuffer(p.wire), viaMse: (dialler.peerList()[0]?.wire as { viaMse?: boolean } | undefined)?.viaMse }));
    });
    if (!leecherDials) st.addPeer({ host: '127.0.0.1', port: leecher.port });
    await lt.done;
    assert.ok((await readFile(join(dir, 'leech', 'big.bin'))).equals(data));
    assert.equal(lt.stats().hashFailures, 0);
    assert.deepEqual(seen, [{ outgoing: leecherDials, own: true, viaMse: true }]);
  });
}

test('a magnet link (metadata over BEP 9) downloads, and the seeder finds the leecher by incoming connection', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'bt-sess-'));
  const files = await makePayload(join(dir, 'seed'));
  const { torrent, metainfo } = await createTorrent({ path: join(dir, 'seed', 'payload'), pieceLength: 16384 });
  const seeder = session();
  const leecher = session({ stateDir: join(dir, 'state') });
  t.after(async () => { await seeder.close(); await leecher.close(); await rm(dir, { recursive: true, force: true }); });
  await seeder.listen();
  await leecher.listen();
  await seeder.add({ torrent, path: join(dir, 'seed') });
  const magnet = formatMagnet({ infoHash: metainfo.infoHash, name: 'payload', peers: [{ host: '127.0.0.1', port: seeder.port }] });
  const lt = await leecher.add({ torrent: magnet, path: join(dir, 'leech') });
  const gotMetadata = new Promise((r) => lt.once('metadata', r));
  await lt.done;
  await gotMetadata;
  assert.equal(lt.metainfo!.infoHashHex, metainfo.infoHashHex);
  await assertSameFiles(files, join(dir, 'leech'));
  // The fetched metadata is kept so a restart does not need peers for it.
  const cached = await readFile(join(dir, 'state', `${metainfo.infoHashHex}.torrent`));
  assert.ok(cached.includes(metainfo.infoBuffer));
});

test('three peers: C learns about the seeder only through PEX from B', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'bt-sess-'));
  const files = await makePayload(join(dir, 'seed'));
  const { torrent } = await createTorrent({ path: join(dir, 'seed', 'payload'), pieceLength: 16384 });
  const a = session();
  const b = session();
  const c = session();
  t.after(async () => { await a.close(); await b.close(); await c.close(); await rm(dir, { recursive: true, force: true }); });
  await Promise.all([a.listen(), b.listen(), c.listen()]);
  await a.add({ torrent, path: join(dir, 'seed') });
  // B is capped so it is still around (and connected to A) when C arrives.
  const bt = await b.add({ torrent, path: join(dir, 'b'), peers: [{ host: '127.0.0.1', port: a.port }], downloadRateLimit: 200_000 });
  await new Promise<void>((r) => { const check = () => (bt.stats().peers > 0 ? r() : setTimeout(check, 20)); check(); });
  const ct = await c.add({ torrent, path: join(dir, 'c'), peers: [{ host: '127.0.0.1', port: b.port }] });
  const sources = new Set<string>();
  const seederKey = `127.0.0.1:${a.port}`;
  ct.on('peer', (p: { key: string }) => sources.add(p.key));
  await ct.done;
  assert.ok(sources.has(seederKey), `C connected to the seeder it learnt of through PEX (peers: ${[...sources].join(', ')})`);
  await assertSameFiles(files, join(dir, 'c'));
});

test('file selection: only the chosen file is downloaded and verified', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'bt-sess-'));
  const files = await makePayload(join(dir, 'seed'));
  const { torrent, metainfo } = await createTorrent({ path: join(dir, 'seed', 'payload'), pieceLength: 16384 });
  const seeder = session();
  const leecher = session();
  t.after(async () => { await seeder.close(); await leecher.close(); await rm(dir, { recursive: true, force: true }); });
  await seeder.listen();
  await leecher.listen();
  await seeder.add({ torrent, path: join(dir, 'seed') });
  const want = metainfo.files.findIndex((f) => f.name.endsWith('c.txt'));
  const prios = metainfo.files.map((_, i) => (i === want ? 1 : 0));
  const lt = await leecher.add({ torrent, path: join(dir, 'leech'), filePriorities: prios, peers: [{ host: '127.0.0.1', port: seeder.port }] });
  await lt.done;
  await assertSameFiles(files, join(dir, 'leech'), new Set(['payload/c.txt']));
  assert.ok(lt.stats().downloaded < 200_000, `downloaded ${lt.stats().downloaded} bytes for a 40 kB file`);
});

test('our own address (as trackers list it): dialled once, recognised by our peer id, never dialled again', async (t) => {
  const clock = new VirtualClock(1_000_000);
  const s = session({ clock });
  const { tor } = await seedOneFile(t, 'bt-self-', 100_000, 9, [s]);
  const self = { host: '127.0.0.1', port: s.port };
  const closed = new Promise<void>((resolve) => tor.on('peer-closed', (key: string) => key === `127.0.0.1:${s.port}` && resolve()));
  tor.addPeer(self, 'tracker');
  clock.advance(1_000); // the next tick dials it
  await closed;
  const internals = tor as unknown as { candidates: Map<string, unknown>; connecting: Set<string> };
  for (let i = 0; i < 120; i++) {
    tor.addPeer(self, 'tracker'); // the tracker keeps listing us
    clock.advance(1_000);
    assert.equal(internals.connecting.size, 0, `no new dial at +${i + 1} s`);
  }
  assert.equal(internals.candidates.size, 0);
  assert.equal(tor.stats().peers, 0);
});

test('a peer that becomes interested while an upload slot is free is unchoked at once; urgent rechokes run at most every 20 ms', async (t) => {
  const clock = new VirtualClock(1_000_000); // the seeder's: its coalesced (200 ms) and periodic rechokes never fire by themselves
  const calls: number[] = [];
  const standard = new StandardChoker();
  const counting: ChokerPolicy = { rechoke: (input) => (calls.push(input.now), standard.rechoke(input)) };
  const seeder = session({ clock, choker: () => counting });
  const leecher = session();
  const { dir, torrent, tor: st } = await seedOneFile(t, 'bt-admit-', 300_000, 5, [seeder, leecher]);
  const interested = new Promise<PeerWire>((resolve) => st.on('peer', (p: { wire: PeerWire }) => p.wire.once('interested', () => resolve(p.wire))));
  const lt = await leecher.add({ torrent, path: join(dir, 'leech'), peers: [{ host: '127.0.0.1', port: seeder.port }] });
  const wire = await interested;
  assert.equal(wire.amChoking, true);
  clock.advance(0); // no waiting: the rechoke is due now
  assert.equal(wire.amChoking, false, 'unchoked without the 200 ms wait');
  assert.equal(calls.length, 1);
  await lt.done;
  // Urgent requests every millisecond (a plugin's: e.g. a peer spamming Speed bids): the choker runs every 20 ms.
  calls.length = 0;
  for (let ms = 0; ms < 100; ms++) {
    st.requestRechoke(true);
    clock.advance(1);
  }
  assert.ok(calls.length >= 4 && calls.length <= 6, `${calls.length} rechokes in 100 ms`);
  for (let i = 1; i < calls.length; i++) assert.ok(calls[i] - calls[i - 1] >= 20, `rechokes ${calls[i] - calls[i - 1]} ms apart`);
  const got = await readFile(join(dir, 'leech', 'f.bin'));
  assert.ok(got.equals(bytes(300_000, 5)));
});

test('a slot freed by a peer that leaves goes to a peer waiting for one at once, not at the coalesced rechoke', async (t) => {
  const clock = new VirtualClock(2_000_000); // the seeder's: nothing happens on it unless the test advances it
  const seeder = session({ clock });
  const slow = session({ downloadRateLimit: 16 * 1024 }); // stays interested (unchoked) while the other one arrives
  const waiting = session();
  // One slot: no regular slots, the optimistic one only.
  const { dir, torrent, tor: st } = await seedOneFile(t, 'bt-slot-', 300_000, 6, [seeder, slow, waiting], { uploadSlots: 0 });
  const interested: PeerWire[] = [];
  let wake = (): void => {};
  st.on('peer', (p: { wire: PeerWire }) => p.wire.once('interested', () => (interested.push(p.wire), wake())));
  const nthInterested = (n: number) => new Promise<PeerWire>((resolve) => (wake = () => interested.length >= n && resolve(interested[n - 1]))());
  await slow.add({ torrent, path: join(dir, 'slow'), peers: [{ host: '127.0.0.1', port: seeder.port }] });
  const first = await nthInterested(1);
  clock.advance(0);
  assert.equal(first.amChoking, false, 'the first peer took the free slot');
  const lt = await waiting.add({ torrent, path: join(dir, 'waiting'), peers: [{ host: '127.0.0.1', port: seeder.port }] });
  const second = await nthInterested(2);
  clock.advance(20);
  assert.equal(second.amChoking, true, 'no free slot: it waits');
  const closed = new Promise((resolve) => st.once('peer-closed', resolve));
  await slow.close();
  await closed;
  clock.advance(20); // the urgent-rechoke spacing, not the 200 ms coalescing
  assert.equal(second.amChoking, false, 'the freed slot went to the waiting peer');
  await lt.done;
});
