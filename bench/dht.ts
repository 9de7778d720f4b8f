/**
 * DHT benchmark. Part 1: a simulated network (virtual time, in-process UDP with 10-60 ms one-way
 * latency) of 1,000 nodes with 10% unresponsive: announce from a random node, get_peers lookup from
 * another; success rate, lookup time (virtual ms), round trips, bytes sent per lookup, memory per node.
 * Part 2 (anchor, real sockets on loopback): python3-libtorrent sessions on 127.0.0.x; time for a
 * libtorrent session and for our node to find a peer a libtorrent session announced.
 *   npm run bench -- dht [--quick] [--nodes N] [--lookups N] [--no-libtorrent]
 */
import { parseArgs } from 'node:util';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSimSwarm, seededRng, randInt, createDht, type LookupResult, type LookupStats } from '@bitorrent/dht';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    nodes: { type: 'string' },
    lookups: { type: 'string' },
    seed: { type: 'string' },
    'no-libtorrent': { type: 'boolean' },
  },
});
const quick = !!values.quick;
const N = Number(values.nodes ?? (quick ? 300 : 1000));
const LOOKUPS = Number(values.lookups ?? (quick ? 50 : 200));
const SEED = Number(values.seed ?? 1);
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
}

// ---------------- Part 1: simulation ----------------
gc();
const heap0 = process.memoryUsage().heapUsed;
const t0 = Date.now();
const rng = seededRng(SEED);
const sw = buildSimSwarm({ nodes: N, rng, deadFraction: 0.1, settleMs: 16 * 60_000 });
const buildMs = Date.now() - t0;
gc();
const memPerNode = (process.memoryUsage().heapUsed - heap0) / N;
const avgTable = sw.nodes.reduce((a, n) => a + n.nodeCount(), 0) / N;
console.error(`dht bench: ${N} nodes built in ${buildMs} ms (avg routing table ${avgTable.toFixed(1)} nodes, ${(memPerNode / 1024).toFixed(1)} KiB/node)`);

function runSim<T>(start: (done: (v: T) => void) => void): T {
  let out: { v: T } | undefined;
  start((v) => (out = { v }));
  sw.clock.runUntil(() => out !== undefined, 10 * 60_000);
  if (!out) throw new Error('operation did not finish in virtual time');
  return out.v;
}

const stats: LookupStats[] = [];
let found = 0;
const t1 = Date.now();
for (let j = 0; j < LOOKUPS; j++) {
  const ih = rng(20);
  const a = sw.live[randInt(rng, sw.live.length)];
  let b = sw.live[randInt(rng, sw.live.length)];
  while (b === a) b = sw.live[randInt(rng, sw.live.length)];
  runSim<number>((done) => sw.nodes[a].announce(ih, 10000 + j, (n) => done(n)));
  const r = runSim<LookupResult>((done) => sw.nodes[b].getPeers(ih, undefined, done));
  if (r.peers.some((p) => p.host === sw.addrs[a].host && p.port === 10000 + j)) found++;
  stats.push(r.stats);
}
const simWallMs = Date.now() - t1;
const ok = stats.filter((s) => s.firstValueMs !== undefined);
const sim = {
  nodes: N,
  unresponsive: sw.dead.size,
  lookups: LOOKUPS,
  successRate: found / LOOKUPS,
  medianLookupMs: pct(stats.map((s) => s.durationMs), 50),
  p95LookupMs: pct(stats.map((s) => s.durationMs), 95),
  medianFirstPeerMs: pct(ok.map((s) => s.firstValueMs!), 50),
  p95FirstPeerMs: pct(ok.map((s) => s.firstValueMs!), 95),
  medianRoundTrips: pct(stats.map((s) => s.roundTrips), 50),
  p95RoundTrips: pct(stats.map((s) => s.roundTrips), 95),
  medianFirstPeerRoundTrips: pct(ok.map((s) => s.firstValueRoundTrips!), 50),
  medianQueriesPerLookup: pct(stats.map((s) => s.queries), 50),
  meanBytesSentPerLookup: Math.round(stats.reduce((a, s) => a + s.bytesSent, 0) / stats.length),
  avgRoutingTable: Number(avgTable.toFixed(1)),
  memoryPerNodeBytes: Math.round(memPerNode),
  buildWallMs: buildMs,
  lookupWallMs: simWallMs,
};
console.error(`dht bench sim: ${JSON.stringify(sim)}`);

// ---------------- Part 2: libtorrent anchor on loopback ----------------
interface LtEvent { ready?: boolean; port?: number; peers?: [string, number][]; ih?: string }
async function anchor(): Promise<Record<string, unknown>> {
  if (values['no-libtorrent']) return { skipped: 'disabled' };
  if (spawnSync('/usr/bin/python3', ['-c', 'import libtorrent'], { stdio: 'ignore' }).status !== 0) return { skipped: 'python3-libtorrent not installed' };
  const script = fileURLToPath(new URL('../packages/dht/test/lt_dht.py', import.meta.url));
  const M = quick ? 6 : 10;
  const procs: ChildProcess[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'dht-bench-'));
  const dht = await createDht({ host: '127.0.0.1', port: 0, queryTimeoutMs: 2000 });
  try {
    const lts = await Promise.all(
      Array.from({ length: M }, (_, i) => new Promise<{ host: string; port: number; send: (c: object) => void; events: ((e: LtEvent) => void)[] }>((resolve) => {
        const host = `127.0.0.${i + 2}`;
        const p = spawn('/usr/bin/python3', [script, host], { stdio: ['pipe', 'pipe', 'ignore'] });
        procs.push(p);
        const o = { host, port: 0, send: (c: object) => p.stdin!.write(JSON.stringify(c) + '\n'), events: [] as ((e: LtEvent) => void)[] };
        createInterface({ input: p.stdout! }).on('line', (l) => {
          const e = JSON.parse(l) as LtEvent;
          if (e.ready) {
            o.port = e.port!;
            resolve(o);
          }
          for (const f of [...o.events]) f(e);
        });
      })),
    );
    for (const l of lts) {
      l.send({ cmd: 'add_node', host: '127.0.0.1', port: dht.port });
      for (const o of lts) if (o !== l) l.send({ cmd: 'add_node', host: o.host, port: o.port });
    }
    await dht.bootstrap(lts.map((l) => ({ host: l.host, port: l.port })));
    await new Promise((r) => setTimeout(r, 2000)); // let libtorrent's own bootstrap lookups settle
    const ltTimes: number[] = [];
    const ourTimes: number[] = [];
    const rounds = quick ? 3 : 6;
    for (let k = 0; k < rounds; k++) {
      const ih = seededRng(1000 + k)(20);
      const hex = ih.toString('hex');
      const announcer = lts[k % M];
      const searcher = lts[(k + M / 2) % M];
      announcer.send({ cmd: 'announce', ih: hex, dir });
      await new Promise((r) => setTimeout(r, 1500)); // libtorrent announces asynchronously; give it time to store
      const s0 = performance.now();
      const ltMs = await new Promise<number>((resolve) => {
        const timer = setTimeout(() => resolve(NaN), 10_000);
        const f = (e: LtEvent) => {
          if (e.ih === hex && e.peers?.some(([h]) => h === announcer.host)) {
            clearTimeout(timer);
            searcher.events.splice(searcher.events.indexOf(f), 1);
            resolve(performance.now() - s0);
          }
        };
        searcher.events.push(f);
        searcher.send({ cmd: 'get_peers', ih: hex });
      });
      ltTimes.push(ltMs);
      const o0 = performance.now();
      let first = NaN;
      // The lookup alone (our node's own peer store, which libtorrent also announced to, is not consulted).
      await new Promise<void>((resolve) =>
        dht.node.getPeers(ih, (ps) => { if (Number.isNaN(first) && ps.some((p) => p.host === announcer.host)) first = performance.now() - o0; }, () => resolve()),
      );
      ourTimes.push(first);
    }
    return {
      libtorrentSessions: M,
      rounds,
      libtorrentMedianFirstPeerMs: Number(pct(ltTimes, 50).toFixed(1)),
      bitorrentMedianFirstPeerMs: Number(pct(ourTimes, 50).toFixed(1)),
      libtorrentFound: ltTimes.filter((x) => !Number.isNaN(x)).length,
      bitorrentFound: ourTimes.filter((x) => !Number.isNaN(x)).length,
    };
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
    await dht.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const lt = await anchor();
console.error(`dht bench libtorrent anchor (loopback): ${JSON.stringify(lt)}`);
console.log(JSON.stringify({ bench: 'dht', quick, sim, goals: { successRate: 1, medianRoundTrips: 4 }, met: sim.successRate === 1 && sim.medianRoundTrips <= 4, libtorrentLoopback: lt }));
