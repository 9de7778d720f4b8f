import { Session } from '@bitorrent/core';
import { startTransmission, startOpentracker, stopAll, tempDir, makeRandomFiles, mktorrent, multiFileSpec, waitFor } from '../src/index.ts';
const d = await tempDir('x');
await makeRandomFiles(d.path + '/seed/p', multiFileSpec());
const tracker = await startOpentracker();
const tor = await mktorrent(d.path + '/seed/p', d.path + '/p.torrent', { announce: [process.argv[2] === 'udp' ? tracker.udpAnnounce : tracker.httpAnnounce] });
await tracker.allow([tor.infoHash]);
const s = new Session({ port: 0, host: '127.0.0.1', log: (m) => console.log('LOG', m) });
await s.listen();
const t = await s.add({ torrent: tor.bytes, path: d.path + '/seed', seed: true });
t.on('peer-closed', (k) => console.log('peer-closed', k));
await t.done;
console.log('seeding on', s.port);
const tr = await startTransmission();
await tr.addTorrent(tor.bytes, d.path + '/dl');
for (let i = 0; i < 12; i++) {
  await new Promise((r) => setTimeout(r, 1000));
  const x = await tr.rpc<any>('torrent-get', { ids: [tor.infoHash], fields: ['percentDone', 'peersConnected', 'trackerStats', 'peers', 'error', 'errorString', 'status'] });
  const tt = x.torrents[0];
  console.log(tt.percentDone, tt.status, tt.peersConnected, tt.trackerStats.map((s: any) => [s.lastAnnounceResult, s.lastAnnouncePeerCount, s.announceState]), tt.peers.length, t.stats().peers, await tracker.scrape(tor.infoHash));
}
console.log(tr.process.output().slice(-3000));
await s.close();
await stopAll();
