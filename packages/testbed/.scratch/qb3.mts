import { connect } from 'node:net';
import { startQbittorrent, stopAll, tempDir, makeRandomFiles, mktorrent, multiFileSpec } from '../src/index.ts';
const T0 = Date.now(); const lg = (...a: unknown[]) => console.log(((Date.now() - T0) / 1000).toFixed(2), ...a);
const d = await tempDir('x');
await makeRandomFiles(d.path + '/seed/p', multiFileSpec());
const tor = await mktorrent(d.path + '/seed/p', d.path + '/p.torrent');
const qb = await startQbittorrent();
await qb.addTorrent(tor.bytes, d.path + '/seed');
const inf = await qb.waitComplete(tor.infoHash, 30_000);
lg('qb seeding', inf.state);
for (let k = 0; k < 2; k++) {
await new Promise<void>((resolve) => {
  const s = connect(qb.peerPort, '127.0.0.1');
  const reserved = Buffer.alloc(8); reserved[5] = 0x10; reserved[7] = 0x04;
  s.on('connect', () => s.write(Buffer.concat([Buffer.from([19]), Buffer.from('BitTorrent protocol'), reserved, Buffer.from(tor.infoHash, 'hex'), Buffer.from('-bI0100-abcdefghijkl')])));
  let got = 0;
  s.on('data', (b) => { got += b.length; lg('recv', b.length, b.subarray(0, 80).toString('hex')); });
  s.on('close', () => { lg('closed after', got); resolve(); });
  s.on('error', (e) => lg('err', e.message));
  setTimeout(() => { s.write(Buffer.from([0,0,0,1,2])); }, 300);
  setTimeout(() => s.destroy(), 3000);
});
}
await stopAll();
