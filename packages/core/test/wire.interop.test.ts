/**
 * PeerWire against a real libtorrent 2.0 (python3-libtorrent) over loopback:
 * BitTorrent + BEP 10 handshakes, BEP 6 have-all, ut_metadata fetch of a 2-piece info dict,
 * interested/unchoke and a request/piece round trip checked against the file bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { readFileSync } from 'node:fs';
import { asDict, asInt, decode, encode } from '../src/bencode.js';
import { PeerWire } from '../src/wire/peer-wire.js';
import { utMetadata } from '../src/wire/ut-metadata.js';

const PY = '/usr/bin/python3';

function haveLibtorrent(): boolean {
  const r = spawnSync(PY, ['-c', 'import libtorrent'], { stdio: 'ignore' });
  return r.status === 0;
}

const SEEDER = String.raw`
import libtorrent as lt, sys, os, json, time
d = sys.argv[1]
ses = lt.session({
  'listen_interfaces': '127.0.0.1:0', 'outgoing_interfaces': '127.0.0.1',
  'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
  'enable_outgoing_utp': False, 'enable_incoming_utp': False,
  'allow_multiple_connections_per_ip': True,
  'out_enc_policy': lt.enc_policy.disabled, 'in_enc_policy': lt.enc_policy.disabled,
  'peer_fingerprint': '-LT2080-', 'alert_mask': 0,
})
port = 0
for _ in range(200):
  port = ses.listen_port()
  if port: break
  time.sleep(0.05)
fs = lt.file_storage()
lt.add_files(fs, os.path.join(d, 'data.bin'))
ct = lt.create_torrent(fs, 16384)
lt.set_piece_hashes(ct, d)
tpath = os.path.join(d, 'data.torrent')
with open(tpath, 'wb') as f: f.write(lt.bencode(ct.generate()))
ti = lt.torrent_info(tpath)
p = lt.add_torrent_params()
p.ti = ti
p.save_path = d
p.flags = (p.flags | lt.torrent_flags.seed_mode) & ~lt.torrent_flags.paused & ~lt.torrent_flags.auto_managed
h = ses.add_torrent(p)
for _ in range(400):
  if h.status().state == lt.torrent_status.seeding: break
  time.sleep(0.05)
print(json.dumps({'port': port, 'info_hash': str(ti.info_hashes().v1), 'state': str(h.status().state)}), flush=True)
sys.stdin.read()
`;

test('PeerWire ↔ libtorrent: handshakes, ut_metadata, have-all, request/piece', { timeout: 60_000 }, async (t) => {
  if (!haveLibtorrent()) {
    if (process.env.CI === 'true') assert.fail('python3-libtorrent is required in CI');
    t.skip('python3-libtorrent not installed (/usr/bin/python3 -c "import libtorrent" failed)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'wire-lt-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const data = randomBytes(16 * 1024 * 1024); // 1024 pieces of 16 KiB → a 20+ KiB info dict (2 metadata pieces)
  writeFileSync(join(dir, 'data.bin'), data);

  const py = spawn(PY, ['-c', SEEDER, dir], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => {
    if (py.exitCode === null) py.kill('SIGKILL');
  });
  const lines = createInterface({ input: py.stdout! });
  const [line] = (await once(lines, 'line')) as [string];
  const info = JSON.parse(line) as { port: number; info_hash: string };
  assert.ok(info.port > 0, line);
  const infoHash = Buffer.from(info.info_hash, 'hex');

  const sock = net.connect(info.port, '127.0.0.1');
  await once(sock, 'connect');
  sock.setNoDelay(true);
  const wire = new PeerWire(sock, { peerId: Buffer.from('-BI0001-interoptest1'), listenPort: 6881 });
  t.after(() => wire.destroy());
  const errors: Error[] = [];
  wire.on('error', (e: Error) => errors.push(e));
  const md = wire.use(utMetadata({ infoHash, getMetadata: () => undefined }));
  const haveAll = new Promise<void>((resolve) => {
    wire.on('have-all', () => resolve());
    wire.on('bitfield', () => resolve());
  });
  const hs = once(wire, 'handshake');
  const ehs = once(wire, 'extended-handshake');
  wire.sendHandshake(infoHash);
  const [ih, , caps] = (await hs) as [Buffer, Buffer, { extended: boolean; fast: boolean }];
  assert.ok(ih.equals(infoHash));
  assert.equal(caps.extended, true);
  assert.equal(caps.fast, true);
  await ehs;
  assert.ok(wire.extensionSupported('ut_metadata'));
  assert.ok(wire.extensionSupported('ut_pex'));
  const metadata = await md.fetchAsync();
  const infoDict = asDict(decode(metadata), 'info');
  assert.equal(asInt(infoDict['piece length'], 'piece length'), 16384);
  assert.equal(asInt(infoDict.length, 'length'), data.length);
  assert.ok(metadata.length > 16384, 'metadata spans more than one ut_metadata piece');

  await haveAll;
  const unchoked = once(wire, 'unchoke');
  wire.interested();
  await unchoked;
  const got = new Map<string, Buffer>();
  const all = new Promise<void>((resolve) =>
    wire.on('piece', (index: number, begin: number, block: Buffer) => {
      got.set(`${index}:${begin}`, Buffer.from(block));
      if (got.size === 3) resolve();
    }),
  );
  wire.request(0, 0, 16384);
  wire.request(517, 0, 16384);
  wire.request(1023, 8192, 8192);
  await all;
  assert.ok(got.get('0:0')!.equals(data.subarray(0, 16384)));
  assert.ok(got.get('517:0')!.equals(data.subarray(517 * 16384, 518 * 16384)));
  assert.ok(got.get('1023:8192')!.equals(data.subarray(1023 * 16384 + 8192, 1024 * 16384)));
  assert.equal(wire.downloadedBytes, 16384 * 2 + 8192);
  assert.deepEqual(errors, []);
  assert.equal(wire.destroyed, false);
  py.stdin!.end();
});

const DOWNLOADER = String.raw`
import libtorrent as lt, sys, os, json, time
d, ih, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ses = lt.session({
  'listen_interfaces': '127.0.0.1:0', 'outgoing_interfaces': '127.0.0.1',
  'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
  'enable_outgoing_utp': False, 'enable_incoming_utp': False,
  'allow_multiple_connections_per_ip': True,
  'out_enc_policy': lt.enc_policy.disabled, 'in_enc_policy': lt.enc_policy.disabled,
  'peer_fingerprint': '-LT2080-', 'alert_mask': 0,
})
p = lt.parse_magnet_uri('magnet:?xt=urn:btih:' + ih)
p.save_path = d
p.flags = p.flags & ~lt.torrent_flags.paused & ~lt.torrent_flags.auto_managed
h = ses.add_torrent(p)
deadline = time.time() + 40
last = 0
while time.time() < deadline:
  st = h.status()
  if st.is_seeding: break
  if time.time() - last > 2 and st.num_peers == 0:
    h.connect_peer(('127.0.0.1', port))
    last = time.time()
  time.sleep(0.05)
st = h.status()
print(json.dumps({'seeding': st.is_seeding, 'has_metadata': st.has_metadata, 'name': h.torrent_file().name() if st.has_metadata else None}), flush=True)
`;

test('libtorrent downloads a magnet from PeerWire: we serve ut_metadata, have-all and pieces', { timeout: 60_000 }, async (t) => {
  if (!haveLibtorrent()) {
    if (process.env.CI === 'true') assert.fail('python3-libtorrent is required in CI');
    t.skip('python3-libtorrent not installed');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'wire-lt-dl-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const PL = 16384;
  const data = randomBytes(PL * 300 + 1234);
  const nPieces = Math.ceil(data.length / PL);
  const hashes = Buffer.concat(Array.from({ length: nPieces }, (_, i) => createHash('sha1').update(data.subarray(i * PL, (i + 1) * PL)).digest()));
  const info = encode({ length: data.length, name: 'served.bin', 'piece length': PL, pieces: hashes });
  const infoHash = createHash('sha1').update(info).digest();

  const wires: PeerWire[] = [];
  const errors: Error[] = [];
  const server = net.createServer((sock) => {
    sock.setNoDelay(true);
    const w = new PeerWire(sock, { peerId: Buffer.from('-BI0001-interopseed1') });
    wires.push(w);
    w.on('error', (e: Error) => errors.push(e));
    w.once('handshake', (ih: Buffer) => {
      if (!ih.equals(infoHash)) return w.destroy();
      w.use(utMetadata({ infoHash, getMetadata: () => info }));
      w.sendHandshake(ih);
      if (w.supportsFast) w.haveAll();
      else {
        const bf = Buffer.alloc(Math.ceil(nPieces / 8));
        for (let i = 0; i < nPieces; i++) bf[i >> 3] |= 0x80 >> (i & 7);
        w.bitfield(bf);
      }
    });
    w.on('interested', () => w.unchoke());
    w.on('request', (index: number, begin: number, length: number) => {
      if (w.amChoking || index >= nPieces || length > PL || begin + length > Math.min(PL, data.length - index * PL)) {
        w.rejectRequest(index, begin, length);
        return;
      }
      const off = index * PL + begin;
      w.piece(index, begin, data.subarray(off, off + length));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const w of wires) w.destroy();
    server.close();
  });
  const port = (server.address() as net.AddressInfo).port;
  const py = spawn(PY, ['-c', DOWNLOADER, dir, infoHash.toString('hex'), String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => {
    if (py.exitCode === null) py.kill('SIGKILL');
  });
  const lines = createInterface({ input: py.stdout! });
  const [line] = (await once(lines, 'line')) as [string];
  const res = JSON.parse(line) as { seeding: boolean; has_metadata: boolean; name: string };
  assert.equal(res.has_metadata, true, line);
  assert.equal(res.seeding, true, line);
  assert.equal(res.name, 'served.bin');
  assert.ok(readFileSync(join(dir, 'served.bin')).equals(data));
  assert.ok(wires.some((w) => w.uploadedBytes >= data.length));
  assert.deepEqual(errors, []);
});
