/**
 * Tracker benchmark: bitorrent's tracker beside opentracker (Debian package), same machine, same run.
 *
 *   npm run bench -- tracker [--quick] [--seconds N] [--rounds N] [--http-conc N] [--udp-conc N] [--workers N] [--http-close]
 *                            [--udp-send-thread on|off]
 *
 * HTTP: wrk (1 thread, keep-alive, Lua script varying info_hash / peer_id / port over 1000 whitelisted hashes).
 * UDP: bench/tracker/udpgen.c compiled with gcc into the temp dir (closed loop, fixed concurrency, BEP 15 connect +
 * announce); bench/tracker/udpgen.mjs (Node) when gcc is missing — it is slower and can bottleneck.
 * bitorrent runs one event loop by default (--workers 1): on this 2-core box the load generator needs the other
 * core, and --workers 2 measured lower (2 replicas + generator oversubscribe the CPUs). Try --workers 2 on bigger boxes.
 * Rounds are paired: each round measures both servers back to back (alternating who goes first).
 * ratio_http / ratio_udp = median over rounds of that round's bitorrent / opentracker; *_rps fields and
 * ratio_*_best are the best round of each server (the pre-2026-11 definition of the ratio).
 * Memory: bytes per stored peer = (heapUsed + arrayBuffers) delta / peers, in this process, with gc.
 * Last line: one JSON object.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { SwarmStore } from '../packages/tracker/src/swarm.js';
import { children, killChildren, run } from './tracker/procs.js';
import { startOpentracker, type Opentracker } from '@bitorrent/testbed';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const { values } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    seconds: { type: 'string' },
    rounds: { type: 'string' },
    'http-conc': { type: 'string' },
    'udp-conc': { type: 'string' },
    workers: { type: 'string' },
    'http-close': { type: 'boolean' },
    'udp-send-thread': { type: 'string' },
  },
});
const quick = values.quick === true;
const seconds = Number(values.seconds ?? (quick ? 3 : 8));
const rounds = Number(values.rounds ?? (quick ? 1 : 3));
const httpConc = Number(values['http-conc'] ?? 64);
const udpConc = Number(values['udp-conc'] ?? 64);
const workers = Number(values.workers ?? 1);
const udpSendThread = values['udp-send-thread'] ?? 'off';
if (udpSendThread !== 'on' && udpSendThread !== 'off') throw new Error(`--udp-send-thread must be on or off`);
let udpGen: string | null = null;

process.on('SIGINT', () => { killChildren(); process.exit(130); });




function lastJson(out: string): Record<string, number> {
  const lines = out.trim().split('\n').filter((l) => l.startsWith('{'));
  return JSON.parse(lines[lines.length - 1]);
}

interface Result { rps: number; p99_ms: number; p50_ms: number; errors: number }

async function httpLoad(port: number, hashFile: string, close = false): Promise<Result> {
  const out = await run('wrk', ['-t1', `-c${httpConc}`, `-d${seconds}s`, '--latency', ...(close ? ['-H', 'Connection: close'] : []), '-s', join(here, 'tracker', 'announce.lua'), `http://127.0.0.1:${port}`], {
    ...process.env,
    HASHFILE: hashFile,
  });
  const j = lastJson(out);
  return {
    rps: Math.round(j.requests / (j.duration_us / 1e6)),
    p50_ms: j.p50_us / 1000,
    p99_ms: j.p99_us / 1000,
    errors: j.errors_connect + j.errors_read + j.errors_status + j.errors_timeout,
  };
}

async function udpLoad(port: number, hashFile: string): Promise<Result> {
  const args = ['127.0.0.1', String(port), String(seconds), String(udpConc), '8', hashFile, '1'];
  const out = udpGen !== null ? await run(udpGen, args) : await run(process.execPath, [join(here, 'tracker', 'udpgen.mjs'), ...args]);
  const j = lastJson(out);
  return { rps: j.rps, p50_ms: j.p50_ms, p99_ms: j.p99_ms, errors: j.errors + j.timeouts };
}

function bytesPerPeer(swarms: number, peersPer: number): number {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) return NaN;
  const store = new SwarmStore({ maxSwarms: swarms + 1, maxPeersPerSwarm: peersPer + 1, maxPeers: swarms * peersPer + 1 });
  const mem = (): number => { gc(); gc(); const m = process.memoryUsage(); return m.heapUsed + m.arrayBuffers; };
  const ih = Buffer.alloc(20);
  const addr = Buffer.alloc(6);
  const hashes: string[] = [];
  for (let s = 0; s < swarms; s++) { ih.writeUInt32BE(s, 0); ih.writeUInt32BE((0x9e3779b9 ^ s) >>> 0, 4); hashes.push(ih.toString('latin1')); }
  const before = mem();
  let n = 0;
  for (let s = 0; s < swarms; s++) {
    for (let p = 0; p < peersPer; p++) {
      addr.writeUInt32BE((0x0a000000 + p * 7919 + s) >>> 0, 0);
      addr.writeUInt16BE(1024 + (p % 60000), 4);
      store.announce(hashes[s], false, addr, 0, 2, p % 4 === 0, 0);
      n++;
    }
  }
  const after = mem();
  if (store.totalPeers !== n) throw new Error(`stored ${store.totalPeers} of ${n}`);
  return Math.round(((after - before) / n) * 10) / 10;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'bt-trkbench-'));
  chmodSync(dir, 0o755);
  const hashFile = join(dir, 'whitelist.txt');
  const hashes = Array.from({ length: 1000 }, () => randomBytes(20).toString('hex'));
  writeFileSync(hashFile, hashes.join('\n') + '\n');
  chmodSync(hashFile, 0o644);
  let ot: Opentracker | undefined;
  try {
    try {
      await run('gcc', ['-O2', '-o', join(dir, 'udpgen'), join(here, 'tracker', 'udpgen.c')]);
      udpGen = join(dir, 'udpgen');
    } catch (e) {
      console.error(`# gcc unavailable (${(e as Error).message.slice(0, 80)}): using the Node UDP generator, which may bottleneck`);
    }
    // opentracker (whitelist build), ready once its whitelist is loaded (it accepts TCP before that).
    ot = await startOpentracker({ infoHashes: hashes });
    const otPort = ot.port;
    // bitorrent tracker, its own process, same whitelist.
    const bt = spawn(process.execPath, [join(root, 'packages/cli/bin/bitorrent.js'), 'tracker', 'serve', '--host', '127.0.0.1', '--http-port', '0', '--udp-port', '0', '--allow', hashFile, '--workers', String(workers), '--rate-limit', '0', '--udp-send-thread', udpSendThread], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(bt);
    const listening = await new Promise<{ http_port: number; udp_port: number }>((resolve, reject) => {
      let buf = '';
      bt.stdout!.on('data', (d) => {
        buf += d;
        const line = buf.split('\n').find((l) => l.includes('"listening"'));
        if (line) resolve(JSON.parse(line));
      });
      bt.on('exit', (c) => reject(new Error(`bitorrent tracker exited ${c}`)));
    });
    console.error(`# opentracker on ${otPort}, bitorrent (${workers} workers, udp send thread ${udpSendThread}) on http ${listening.http_port} / udp ${listening.udp_port}; ${seconds}s × ${rounds} rounds, HTTP conc ${httpConc}, UDP conc ${udpConc}, UDP generator ${udpGen ? 'C' : 'node'}`);
    const best = (a: Result | null, b: Result): Result => (a === null || b.rps > a.rps ? b : a);
    let btH: Result | null = null, otH: Result | null = null, btU: Result | null = null, otU: Result | null = null;
    // Paired rounds: in each round both servers run back to back (who goes first alternates), so each round's
    // ratio compares the two under nearly the same background load; the machine is shared and its load drifts.
    const pairsH: number[] = [], pairsU: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const btFirst = r % 2 === 0;
      const pair = async (proto: 'http' | 'udp'): Promise<[Result, Result]> => {
        const load = (port: number): Promise<Result> => (proto === 'http' ? httpLoad(port, hashFile) : udpLoad(port, hashFile));
        const btPort = proto === 'http' ? listening.http_port : listening.udp_port;
        let a: Result, b: Result;
        if (btFirst) { a = await load(btPort); b = await load(otPort); } else { b = await load(otPort); a = await load(btPort); }
        console.error(`# round ${r + 1} ${proto.padEnd(4)} bitorrent   ${JSON.stringify(a)}`);
        console.error(`# round ${r + 1} ${proto.padEnd(4)} opentracker ${JSON.stringify(b)}  ratio ${(a.rps / b.rps).toFixed(3)}`);
        return [a, b];
      };
      const [a, b] = await pair('http'); btH = best(btH, a); otH = best(otH, b); pairsH.push(a.rps / b.rps);
      const [c, d] = await pair('udp'); btU = best(btU, c); otU = best(otU, d); pairsU.push(c.rps / d.rps);
    }
    const median = (xs: number[]): number => { const v = [...xs].sort((x, y) => x - y); const m = v.length >> 1; return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2; };
    // Without keep-alive (opentracker closes every connection anyway): one TCP connection per announce for both.
    // Optional (--http-close): it piles up tens of thousands of TIME_WAIT sockets on loopback, which skews later runs.
    let btC: Result | null = null, otC: Result | null = null;
    if (values['http-close']) {
      btC = await httpLoad(listening.http_port, hashFile, true); console.error(`# http (Connection: close) bitorrent   ${JSON.stringify(btC)}`);
      otC = await httpLoad(otPort, hashFile, true); console.error(`# http (Connection: close) opentracker ${JSON.stringify(otC)}`);
    }
    const statsRes = await fetch(`http://127.0.0.1:${listening.http_port}/stats?format=json`).then((r) => r.json() as Promise<Record<string, number>>);
    console.error(`# bitorrent tracker after load: ${statsRes.torrents} swarms, ${statsRes.peers} peers, rss ${(statsRes.rss_bytes / 1e6).toFixed(0)} MB`);
    const bpp = bytesPerPeer(quick ? 200 : 1000, 1000);
    const bppSmall = bytesPerPeer(quick ? 20_000 : 100_000, 5);
    console.error(`# bytes per peer: ${bpp} (swarms of 1000 peers), ${bppSmall} (swarms of 5 peers)`);
    const r2 = (x: number): number => Math.round(x * 1000) / 1000;
    console.log(JSON.stringify({
      bench: 'tracker',
      seconds,
      rounds,
      workers,
      udp_send_thread: udpSendThread,
      udp_generator: udpGen ? 'c' : 'node',
      http_concurrency: httpConc,
      udp_concurrency: udpConc,
      bitorrent_http_rps: btH!.rps,
      opentracker_http_rps: otH!.rps,
      ratio_http: r2(median(pairsH)),
      ratio_http_best: r2(btH!.rps / otH!.rps),
      ratio_http_rounds: pairsH.map(r2),
      ...(btC && otC ? { bitorrent_http_close_rps: btC.rps, opentracker_http_close_rps: otC.rps, ratio_http_close: r2(btC.rps / otC.rps) } : {}),
      bitorrent_udp_rps: btU!.rps,
      opentracker_udp_rps: otU!.rps,
      ratio_udp: r2(median(pairsU)),
      ratio_udp_best: r2(btU!.rps / otU!.rps),
      ratio_udp_rounds: pairsU.map(r2),
      p99_ms_http_bitorrent: btH!.p99_ms,
      p99_ms_http_opentracker: otH!.p99_ms,
      p99_ms_udp_bitorrent: btU!.p99_ms,
      p99_ms_udp_opentracker: otU!.p99_ms,
      errors_http_bitorrent: btH!.errors,
      errors_http_opentracker: otH!.errors,
      errors_udp_bitorrent: btU!.errors,
      errors_udp_opentracker: otU!.errors,
      bytes_per_peer: bpp,
      bytes_per_peer_small_swarms: bppSmall,
    }));
  } finally {
    killChildren();
    await ot?.process.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(() => process.exit(0), (e) => { console.error(e); killChildren(); process.exit(1); });
