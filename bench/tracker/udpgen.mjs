// UDP tracker load generator (BEP 15), run as a child process by bench/tracker.ts.
// usage: node udpgen.mjs HOST PORT SECONDS CONCURRENCY SOCKETS HASHFILE WARMUP_SECONDS
// Each socket connects once, then keeps CONCURRENCY/SOCKETS announces in flight (closed loop).
// Prints one JSON line: {"requests":..,"rps":..,"p50_ms":..,"p99_ms":..,"timeouts":..,"errors":..}
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';

const [host, portS, secS, concS, sockS, hashFile, warmS] = process.argv.slice(2);
const port = Number(portS), seconds = Number(secS), conc = Number(concS), nsock = Number(sockS), warm = Number(warmS ?? 1);
const hashes = readFileSync(hashFile, 'utf8').split('\n').filter(Boolean).map((h) => Buffer.from(h, 'hex'));
const TIMEOUT_MS = 1000;
const lat = new Float64Array(1 << 22);
let nlat = 0, done = 0, timeouts = 0, errors = 0, measuring = false;
let tStart = 0, tEnd = 0;
let seed = 12345;
const rnd = (n) => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return (seed >>> 8) % n; };

function client(idx) {
  const sock = dgram.createSocket({ type: 'udp4', recvBufferSize: 1 << 20, sendBufferSize: 1 << 20 });
  const per = Math.max(1, Math.round(conc / nsock));
  const slots = new Array(per).fill(null).map(() => ({ tx: 0, t: 0, timer: null }));
  let connId = null;
  let txSeq = (idx + 1) << 20;
  const pkt = Buffer.alloc(98);
  const sendAnnounce = (slot, i) => {
    const tx = ++txSeq >>> 0;
    slot.tx = tx;
    slot.t = performance.now();
    const b = Buffer.allocUnsafe(98);
    connId.copy(b, 0);
    b.writeUInt32BE(1, 8);
    b.writeUInt32BE(tx, 12);
    hashes[rnd(hashes.length)].copy(b, 16);
    pkt.copy(b, 36, 36, 98);
    b.writeUInt32BE(rnd(1000), 40); // vary peer_id a little
    b.writeUInt32BE(rnd(4) === 0 ? 0 : 1000, 68); // left: 1 in 4 is a seeder
    b.writeInt32BE(50, 92);
    b.writeUInt16BE(1024 + rnd(1000), 96);
    sock.send(b, port, host);
  };
  const byTx = new Map();
  sock.on('message', (m) => {
    if (m.length < 8) return;
    const action = m.readUInt32BE(0), tx = m.readUInt32BE(4);
    if (action === 0 && connId === null) {
      connId = Buffer.from(m.subarray(8, 16));
      slots.forEach((s, i) => { sendAnnounce(s, i); byTx.set(s.tx, s); });
      return;
    }
    const slot = byTx.get(tx);
    if (!slot) return;
    byTx.delete(tx);
    if (action !== 1) errors++;
    if (measuring) {
      done++;
      if (nlat < lat.length) lat[nlat++] = performance.now() - slot.t;
    }
    sendAnnounce(slot); byTx.set(slot.tx, slot);
  });
  // Refill slots whose reply was lost so concurrency stays fixed.
  setInterval(() => {
    const now = performance.now();
    for (const s of slots) if (connId && now - s.t > TIMEOUT_MS) { byTx.delete(s.tx); if (measuring) timeouts++; sendAnnounce(s); byTx.set(s.tx, s); }
  }, 200).unref();
  const c = Buffer.alloc(16);
  c.writeUInt32BE(0x417, 0); c.writeUInt32BE(0x27101980, 4); c.writeUInt32BE(0, 8); c.writeUInt32BE(idx, 12);
  const tryConnect = () => { if (connId === null) { sock.send(c, port, host); setTimeout(tryConnect, 300); } };
  sock.bind(0, '127.0.0.1', tryConnect);
  return sock;
}
const socks = [];
for (let i = 0; i < nsock; i++) socks.push(client(i));
setTimeout(() => { measuring = true; tStart = performance.now(); }, warm * 1000);
setTimeout(() => {
  measuring = false; tEnd = performance.now();
  const l = lat.subarray(0, nlat).sort();
  const q = (p) => (nlat ? l[Math.min(nlat - 1, Math.floor(p * nlat))] : 0);
  process.stdout.write(JSON.stringify({ requests: done, rps: Math.round(done / ((tEnd - tStart) / 1000)), p50_ms: +q(0.5).toFixed(3), p99_ms: +q(0.99).toFixed(3), timeouts, errors }) + '\n');
  process.exit(0);
}, (warm + seconds) * 1000);
