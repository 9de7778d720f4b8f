/**
 * No-network micro-bench of the tracker's UDP handler: pre-built BEP 15 announce packets (the distribution of
 * bench/tracker's UDP generator: 1000 allow-listed info-hashes, 1 in 4 seeders, numwant 50, ports 1024..2023 from
 * 127.0.0.1) fed straight into `Tracker.udp`, the function the server calls per datagram. Reports CPU ns per announce.
 *
 *   flock /tmp/bitorrent-bench.lock node --import tsx bench/tracker/handler-micro.ts [--peers N] [--announces N] [--rounds N]
 *
 * --peers: stored peers before timing (default 1,000,000 = every hash × every port; the store is prefilled with
 * direct announces). Not a `npm run bench` target; last line is one JSON object.
 */
import { parseArgs } from 'node:util';
import { Tracker } from '../../packages/tracker/src/tracker.js';

const { values } = parseArgs({ options: { peers: { type: 'string' }, announces: { type: 'string' }, rounds: { type: 'string' } } });
const peers = Number(values.peers ?? 1_000_000);
const announces = Number(values.announces ?? 2_000_000);
const rounds = Number(values.rounds ?? 5);

let seed = 12345;
const rnd = (n: number): number => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return (seed >>> 8) % n;
};

const hashes: Buffer[] = [];
for (let i = 0; i < 1000; i++) {
  const h = Buffer.alloc(20);
  for (let k = 0; k < 20; k++) h[k] = rnd(256);
  hashes.push(h);
}
let clock = 1_700_000_000_000;
const t = new Tracker({ allow: new Set(hashes.map((h) => h.toString('latin1'))), now: () => clock, randomBytes: (n) => Buffer.alloc(n, 7) });
const ADDR = '127.0.0.1';

// Connection id for 127.0.0.1.
const conn = Buffer.alloc(16);
conn.writeUInt32BE(0x417, 0);
conn.writeUInt32BE(0x27101980, 4);
conn.writeUInt32BE(0, 8);
conn.writeUInt32BE(1, 12);
const cr = t.udp(conn, ADDR, 5000);
if (cr === null || cr.length !== 16) throw new Error('connect failed');
const cid = Buffer.from(cr.subarray(8, 16));

function packet(hash: Buffer, port: number, seeder: boolean, tx: number): Buffer {
  const b = Buffer.alloc(98);
  cid.copy(b, 0);
  b.writeUInt32BE(1, 8);
  b.writeUInt32BE(tx, 12);
  hash.copy(b, 16);
  b.write('-BT0001-', 36, 'latin1');
  b.writeUInt32BE(rnd(1000), 44);
  b.writeUInt32BE(seeder ? 0 : 1000, 68);
  b.writeInt32BE(50, 92);
  b.writeUInt16BE(port, 96);
  return b;
}

// Prefill: hash-major so every swarm gets its share of ports.
const ports = 1000;
let stored = 0;
outer: for (let p = 0; p < ports; p++) {
  for (let h = 0; h < hashes.length; h++) {
    if (stored >= peers) break outer;
    const r = t.udp(packet(hashes[h], 1024 + p, rnd(4) === 0, 0), ADDR, 40000);
    if (r === null || r.readUInt32BE(0) !== 1) throw new Error('prefill announce failed');
    stored++;
  }
}
if (t.store.totalPeers !== stored) throw new Error(`stored ${t.store.totalPeers} of ${stored}`);

// Timed packets: a pool of distinct Buffers (each datagram arrives in its own Buffer in Node).
const POOL = 1 << 16;
const pool: Buffer[] = [];
for (let i = 0; i < POOL; i++) pool.push(packet(hashes[rnd(hashes.length)], 1024 + rnd(ports), rnd(4) === 0, i));

const results: number[] = [];
let bytes = 0;
for (let r = 0; r < rounds; r++) {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < announces; i++) {
    const out = t.udp(pool[i & (POOL - 1)], ADDR, 40000);
    if (out === null) throw new Error('no reply');
    bytes += out.length;
    if ((i & 4095) === 0) clock += 1; // a coarse clock moves now and then
  }
  const wall = Number(process.hrtime.bigint() - t0) / announces;
  const c = process.cpuUsage(c0);
  // CPU time (user + system) rather than wall time: this machine is shared, and time spent descheduled is not ours.
  const ns = ((c.user + c.system) * 1000) / announces;
  results.push(ns);
  console.error(`# round ${r + 1}: ${ns.toFixed(0)} ns CPU/announce, ${wall.toFixed(0)} ns wall (${t.store.totalPeers} peers stored)`);
}
const sorted = [...results].sort((a, b) => a - b);
console.log(
  JSON.stringify({
    bench: 'tracker-handler-micro',
    peers_stored: t.store.totalPeers,
    announces_per_round: announces,
    ns_per_announce_median: Math.round(sorted[sorted.length >> 1]),
    ns_per_announce_best: Math.round(sorted[0]),
    ns_per_announce_rounds: results.map((x) => Math.round(x)),
    avg_reply_bytes: Math.round(bytes / (announces * rounds)),
  }),
);
