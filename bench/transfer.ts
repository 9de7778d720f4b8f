/**
 * Transfer benchmark: `npm run bench -- transfer [--quick] [--runs N] [--size MiB] [--only bitorrent|libtorrent] [--rc4]`
 *
 * 1 GiB (256 MiB with --quick) single-file torrent over loopback TCP, one seeder process → one
 * leecher process: bitorrent → bitorrent (the CLI) and libtorrent → libtorrent (python3-libtorrent),
 * in the same run. Between runs the page cache is dropped if permitted, otherwise the source is
 * pre-read so both seeders start from a warm cache. Throughput is measured inside the leecher from
 * the moment the torrent is added to completion (process start-up and the seeder's initial hash
 * check excluded). Peak RSS is each process's VmHWM. The downloaded file is SHA-1 checked.
 * Last line: one JSON object. MB/s = 10^6 bytes/s; *_rss_mb = peak VmHWM in MiB (counts mapped file
 * pages: libtorrent's mmap disk I/O shows up there); *_anon_mb = sampled peak RssAnon in MiB.
 */
import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import { mkdir, rm, open } from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import {
  tempDir, makeRandomFiles, sha1File, mktorrent, startLibtorrent, startBitorrent, stopAll, requireLibtorrent, requireTool, runningProcesses, waitFor,
} from '@bitorrent/testbed';
import { RssSampler } from './transfer/procstat.js';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    size: { type: 'string' },
    only: { type: 'string' },
    'piece-log2': { type: 'string' },
    runs: { type: 'string' },
    /** Both clients use MSE with RC4 only (libtorrent pe_forced + rc4, bitorrent --encryption required). */
    rc4: { type: 'boolean' },
  },
});
const MiB = 1024 * 1024;
const size = (args.size ? Number(args.size) : args.quick ? 256 : 1024) * MiB;
const pieceLog2 = args['piece-log2'] ? Number(args['piece-log2']) : 20;
const runs = Math.max(1, Number(args.runs ?? 1) | 0);
const STALL_MS = 30_000;
const log = (s: string): void => console.log(`[transfer] ${s}`);

interface RunResult {
  MBps: number;
  seconds: number;
  seederRssMiB: number;
  leecherRssMiB: number;
  seederAnonMiB: number;
  leecherAnonMiB: number;
}

function result(seconds: number, seed: RssSampler, leech: RssSampler): RunResult {
  const seederRssMiB = seed.stop() / MiB;
  const leecherRssMiB = leech.stop() / MiB;
  return { MBps: size / 1e6 / seconds, seconds, seederRssMiB, leecherRssMiB, seederAnonMiB: seed.anonMax / MiB, leecherAnonMiB: leech.anonMax / MiB };
}

function dropCaches(): 'dropped' | 'not permitted' {
  try {
    execFileSync('sync');
    writeFileSync('/proc/sys/vm/drop_caches', '3\n');
    return 'dropped';
  } catch {
    return 'not permitted';
  }
}

async function preRead(path: string): Promise<void> {
  const fh = await open(path, 'r');
  const buf = Buffer.allocUnsafe(4 * MiB);
  try {
    for (let pos = 0; ; pos += buf.length) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
    }
  } finally {
    await fh.close();
  }
}

async function equaliseCache(source: string): Promise<string> {
  const r = dropCaches();
  if (r === 'dropped') return 'dropped';
  await preRead(source);
  return 'pre-read (drop_caches not permitted)';
}

async function runLibtorrent(torrent: string, seedDir: string, dlDir: string): Promise<RunResult> {
  const encryption = args.rc4 ? ('forced' as const) : false;
  const seeder = await startLibtorrent({ mode: 'seed', torrent, savePath: seedDir, host: '127.0.0.1', statusIntervalMs: 1000, encryption });
  await seeder.waitSeeding(600_000);
  const seedRss = new RssSampler(seeder.process.pid);
  const leecher = await startLibtorrent({
    mode: 'download', torrent, savePath: dlDir, host: '127.0.0.1', statusIntervalMs: 1000, encryption,
    peers: [{ host: '127.0.0.1', port: seeder.port }],
  });
  const leechRss = new RssSampler(leecher.process.pid);
  const fin = await leecher.once('finished', 600_000);
  const seconds = Number(fin.elapsed);
  const r = result(seconds, seedRss, leechRss);
  await Promise.all([leecher.stop(), seeder.stop()]);
  return r;
}

async function runBitorrent(torrent: string, seedDir: string, dlDir: string, stateDir: string): Promise<RunResult> {
  const common = ['--peer-port', '0', '--host', '127.0.0.1', '--no-dht', '--no-pex', '--json', ...(args.rc4 ? ['--encryption', 'required'] : [])];
  const seeder = startBitorrent(['seed', torrent, '--data', seedDir, '--no-resume', ...common]);
  const ready = await seeder.waitLine((l) => l.event === 'seeding', 600_000, 'the bitorrent seeder to be ready');
  const seedRss = new RssSampler(seeder.process.pid);
  const leecher = startBitorrent(['download', torrent, '-o', dlDir, '--seed', '--no-resume', '--state-dir', stateDir, '--peer', `127.0.0.1:${ready.port}`, ...common]);
  const leechRss = new RssSampler(leecher.process.pid);
  // Wait for the 'done' line, but give up early if the download stops making progress.
  let lastBytes = -1;
  let lastChange = Date.now();
  const done = await waitFor(
    () => {
      const d = leecher.lines.find((l) => l.event === 'done');
      if (d) return d;
      if (leecher.process.hasExited()) throw new Error(`bitorrent leecher exited with ${leecher.process.exitCode()}`);
      const v = Number(leecher.last()?.verifiedBytes ?? 0);
      if (v !== lastBytes) {
        lastBytes = v;
        lastChange = Date.now();
      } else if (Date.now() - lastChange > STALL_MS) {
        throw new Error(`bitorrent download stalled: no progress for ${STALL_MS / 1000} s at ${v} of ${size} bytes; last status ${JSON.stringify(leecher.last())}`);
      }
      return undefined;
    },
    { timeoutMs: 1_800_000, intervalMs: 100, what: 'the bitorrent download to finish' },
  );
  const seconds = Number(done.seconds);
  const r = result(seconds, seedRss, leechRss);
  await Promise.all([leecher.stop(), seeder.stop()]);
  return r;
}

async function main(): Promise<void> {
  if (!requireLibtorrent() || !requireTool('mktorrent')) throw new Error('python3-libtorrent and mktorrent are required (scripts/setup-system.sh)');
  const work = await tempDir('bench-transfer');
  const seedDir = join(work.path, 'seed');
  log(`payload: ${size / MiB} MiB, piece length ${2 ** pieceLog2 / 1024} KiB, in ${work.path}`);
  const [source] = await makeRandomFiles(seedDir, [{ path: 'payload.bin', size }], 'bench-transfer');
  const tor = await mktorrent(source, join(work.path, 'payload.torrent'), { pieceLengthLog2: pieceLog2 });
  const expected = await sha1File(source);
  log(`torrent ${tor.infoHash}, ${tor.pieceCount} pieces; source sha1 ${expected}`);

  const results: Record<string, RunResult | { error: string }> = {};
  let cacheMode = '';
  const which = args.only ? [args.only] : ['libtorrent', 'bitorrent'];
  const all: Record<string, RunResult[]> = {};
  // Alternate the implementations run by run, so drifting machine load hits both alike.
  for (let run = 1; run <= runs; run++) {
    for (const impl of which) {
      const dlDir = join(work.path, `dl-${impl}`);
      await rm(dlDir, { recursive: true, force: true });
      await mkdir(dlDir, { recursive: true });
      cacheMode = await equaliseCache(source);
      log(`${impl} run ${run}/${runs}: page cache ${cacheMode}`);
      try {
        const r = impl === 'libtorrent' ? await runLibtorrent(tor.path, seedDir, dlDir) : await runBitorrent(tor.path, seedDir, dlDir, join(work.path, 'state'));
        const got = await sha1File(join(dlDir, 'payload.bin'));
        if (got !== expected) throw new Error(`downloaded file hash ${got} != ${expected}`);
        (all[impl] ??= []).push(r);
        log(`${impl} → ${impl}: ${r.MBps.toFixed(1)} MB/s (${r.seconds.toFixed(2)} s), peak RSS seeder ${r.seederRssMiB.toFixed(0)} MiB (anon ${r.seederAnonMiB.toFixed(0)}), leecher ${r.leecherRssMiB.toFixed(0)} MiB (anon ${r.leecherAnonMiB.toFixed(0)}); sha1 ok`);
      } catch (err) {
        results[impl] = { error: (err as Error).message.split('\n')[0] };
        log(`${impl}: FAILED: ${(err as Error).message.slice(0, 1500)}`);
      } finally {
        // Stop whatever this run left behind (each by its own PID), keep the work dir.
        await Promise.all(runningProcesses().map((p) => p.stop()));
        await rm(dlDir, { recursive: true, force: true });
      }
    }
  }
  // Median run by throughput; RSS is the maximum over runs.
  for (const [impl, rs] of Object.entries(all)) {
    if (results[impl]) continue; // a failed run makes the whole implementation's result an error
    const sorted = [...rs].sort((a, b) => a.MBps - b.MBps);
    const med = sorted[Math.floor((sorted.length - 1) / 2)];
    const max = (f: (r: RunResult) => number): number => Math.max(...rs.map(f));
    results[impl] = { ...med, seederRssMiB: max((r) => r.seederRssMiB), leecherRssMiB: max((r) => r.leecherRssMiB), seederAnonMiB: max((r) => r.seederAnonMiB), leecherAnonMiB: max((r) => r.leecherAnonMiB) };
    if (rs.length > 1) log(`${impl}: runs ${rs.map((r) => r.MBps.toFixed(1)).join(', ')} MB/s → median ${med.MBps.toFixed(1)}`);
  }
  await stopAll();
  await work.cleanup();
  const ok = (k: string): RunResult | undefined => (results[k] && 'MBps' in results[k] ? (results[k] as RunResult) : undefined);
  const bt = ok('bitorrent');
  const lt = ok('libtorrent');
  const round = (n: number | undefined, d = 1): number | null => (n === undefined ? null : Math.round(n * 10 ** d) / 10 ** d);
  const summary: Record<string, unknown> = {
    bench: 'transfer',
    bytes: size,
    encryption: args.rc4 ? 'rc4' : 'none',
    bitorrent_MBps: round(bt?.MBps),
    libtorrent_MBps: round(lt?.MBps),
    ratio: bt && lt ? round(bt.MBps / lt.MBps, 3) : null,
    bitorrent_seeder_rss_mb: round(bt?.seederRssMiB, 0),
    bitorrent_leecher_rss_mb: round(bt?.leecherRssMiB, 0),
    libtorrent_seeder_rss_mb: round(lt?.seederRssMiB, 0),
    libtorrent_leecher_rss_mb: round(lt?.leecherRssMiB, 0),
    bitorrent_seeder_anon_mb: round(bt?.seederAnonMiB, 0),
    bitorrent_leecher_anon_mb: round(bt?.leecherAnonMiB, 0),
    libtorrent_seeder_anon_mb: round(lt?.seederAnonMiB, 0),
    libtorrent_leecher_anon_mb: round(lt?.leecherAnonMiB, 0),
    cache: cacheMode,
    runs,
  };
  for (const [k, v] of Object.entries(results)) if ('error' in v) summary[`${k}_error`] = v.error;
  console.log(JSON.stringify(summary));
  if (which.some((impl) => !ok(impl))) process.exitCode = 1;
}

// Ctrl-C / SIGTERM: stop the peers we started and remove the (GiB-sized) work dir.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    void stopAll().finally(() => process.exit(130));
  });
}

main().catch(async (err) => {
  console.error(err);
  await stopAll().catch(() => undefined);
  console.log(JSON.stringify({ bench: 'transfer', bytes: size, error: (err as Error).message.split('\n')[0] }));
  process.exit(1);
});
