/**
 * Experiment (not the tracker's serving path): the ceiling of "two threads receive on one UDP fd" for the
 * tracker. Main thread + one worker both receive on the same socket (worker adopts the fd with bind({ fd })),
 * each answering with its OWN Tracker (stores NOT shared: this is an upper bound for a shared-store design).
 *   node --import tsx bench/tracker-dualrecv.ts ALLOWFILE [threads=2]
 * Prints {"udp_port":N} then serves until killed.
 */
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { Worker, isMainThread, workerData } from 'node:worker_threads';
import { Tracker } from '../packages/tracker/src/tracker.js';

const secret = isMainThread ? Buffer.alloc(32, 7) : Buffer.from(workerData.secret);
const file = isMainThread ? process.argv[2] : workerData.file;
const allow = new Set(readFileSync(file, 'utf8').trim().split('\n').map((h) => Buffer.from(h, 'hex').toString('latin1')));
const t = new Tracker({ allow, connIdSecret: secret });
const sock = createSocket({ type: 'udp4', lookup: (a, _o, cb) => cb(null, a, 4) });
sock.on('message', (msg, r) => { const reply = t.udp(msg, r.address, r.port); if (reply) sock.send(reply, r.port, r.address); });
if (isMainThread) {
  sock.bind(0, '127.0.0.1', () => {
    const state = Object.getOwnPropertySymbols(sock).find((s) => s.description === 'state symbol')!;
    const fd = (sock as unknown as Record<symbol, { handle: { fd: number } }>)[state].handle.fd;
    const n = Number(process.argv[3] ?? 2);
    for (let i = 1; i < n; i++) new Worker(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(import.meta.url)}); })`, { eval: true, workerData: { fd, secret, file } });
    console.log(JSON.stringify({ udp_port: sock.address().port, fd }));
  });
} else {
  sock.bind({ fd: workerData.fd });
}
// Per-thread share of the work (stderr, once a second while busy), to check that both threads really receive.
let last = 0;
setInterval(() => {
  const n = t.stats.udpAnnounces + t.stats.udpConnects;
  if (n !== last) console.error(`${isMainThread ? 'main' : 'worker'} ${n - last}`);
  last = n;
}, 1000).unref();
