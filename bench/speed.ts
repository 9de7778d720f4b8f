/**
 * BitTorrent Speed benchmark: `npm run bench -- speed [--quick] [--size MiB] [--max-unpaid K] [--swarm-size MiB]`
 *
 * (a) Overhead: one seeder session → one leecher session over loopback, in this process, the same torrent
 *     (1 GiB; 128 MiB with --quick; 256 KiB pieces, --piece-kib) with Speed OFF (plain sessions) and Speed ON (per-torrent
 *     SpeedAgent on both sides: auction, channel on an embedded SQLite ledger, one signed payment per ⌊K/2⌋ verified pieces,
 *     provider exposure K unpaid pieces, --max-unpaid, default the library's: the pieces in 16 MiB). After --warmup N (default 1) uncounted plain
 *     transfers, --rounds N (default 10: one pair's overhead varies by ±0.1 on this 2-core machine) interleaved off/on pairs
 *     (ABBA order, against drift on a shared machine); overhead = 1 − median(on)/median(off), and overhead_pairs_median,
 *     the median of each round's own 1 − on/off, with its quartiles (overhead_pairs_q1/q3). The two-process rounds download into one file rewritten in place (see
 *     partAProcs), so no round pays for page-cache memory the VM's host has taken back. With --timeline, also prints a timeline
 *     summary of Speed ON: gate stalls (how long requests were held), and per piece the time from its last block
 *     sent to the requester's payment and from the payment to the next block served. --cpu-prof DIR: V8 CPU profiles of
 *     the two CLI processes (procs mode), one folder per run.
 * (b) Auction: `bitorrent demo` engine — a seeder limited to a fixed upload rate, 4 bidding and 4 non-bidding
 *     (Speed on, no bids) leechers, each leecher uploading at a much lower rate (the seeder is the scarce
 *     resource). Median completion per group; speedup = non-bidders / bidders; tokens_conserved = every wallet
 *     moved by exactly its accepted earnings − payments and the supply is unchanged.
 * Last line: one JSON object.
 */
import { parseArgs } from 'node:util';
import { mkdtempSync, mkdirSync, rmSync, openSync, writeSync, closeSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Session, createTorrent, parseTorrent, ResumeStore, makeResumeData, BitField, type Torrent } from '@bitorrent/core';
import { Ledger, keyPairFromSeed, BTT, createLedgerServer, encryptKeystore, writeKeystore } from '@bitorrent/ledger';
import { startBitorrent } from '@bitorrent/testbed';
import { procCpuSeconds, mainThreadSplit } from './transfer/procstat.js';
import { spawnSync } from 'node:child_process';
import { SpeedAgent, defaultMaxUnpaid } from '@bitorrent/speed';
import { runDemoCli } from '@bitorrent/speed/demo';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    "piece-kib": { type: "string" },
    size: { type: 'string' },
    'max-unpaid': { type: 'string' },
    'swarm-size': { type: 'string' },
    'seed-rate': { type: 'string' },
    'leecher-rate': { type: 'string' },
    'skip-a': { type: 'boolean' },
    'no-gate': { type: 'boolean' },
    timeline: { type: 'boolean' },
    only: { type: 'string' },
    'skip-b': { type: 'boolean' },
    rounds: { type: 'string' },
    warmup: { type: 'string' },
    /** (a) procs: the real CLI in two processes; inproc: both sessions in this process; both (default). */
    mode: { type: 'string' },
    /** (a, procs) write V8 CPU profiles of the seeder and leecher processes under this folder (<mode>-<round>-seed|leech). */
    'cpu-prof': { type: 'string' },
    /** (a, procs) extra V8/Node flags for both processes, space-separated (e.g. "--trace-deopt"); diagnostics only. */
    'node-args': { type: 'string' },
  },
});
const MiB = 1024 * 1024;
const size = (args.size ? Number(args.size) : args.quick ? 128 : 1024) * MiB;
// Default: the library's (defaultMaxUnpaid: the pieces in 16 MiB).
const maxUnpaid = args['max-unpaid'] === undefined ? undefined : Number(args['max-unpaid']);
const rounds = Math.max(1, Number(args.rounds ?? 10));
/**
 * Plain transfers run before the measured rounds and not counted (--warmup N, default 1). The first transfer of a
 * run pays for page-cache memory the machine has not touched yet: a system-wide perf profile put 2–2.5× more kernel
 * time in copying file writes into the page cache in whichever mode ran first, Speed ON or OFF.
 */
const warmups = Math.max(0, Number(args.warmup ?? 1));
const PIECE = Number(args["piece-kib"] ?? 256) * 1024;
const mode = args.mode ?? 'both';
if (!['procs', 'inproc', 'both'].includes(mode)) throw new Error(`--mode must be procs, inproc or both, got '${mode}'`);
const log = (s: string): void => console.log(`[speed] ${s}`);

async function transfer(dir: string, torrent: Buffer, seedDir: string, speed: { ledger: Ledger } | undefined): Promise<{ seconds: number; paid: bigint; earned: bigint }> {
  const seedSession = new Session({ port: 0, host: '127.0.0.1' });
  const leechSession = new Session({ port: 0, host: '127.0.0.1' });
  let timer: NodeJS.Timeout | undefined;
  try {
    await seedSession.listen();
    await leechSession.listen();
    let seeder: SpeedAgent | undefined, leech: SpeedAgent | undefined;
    if (speed) {
      const { ledger } = speed;
      const ledgerId = ledger.ledgerIdBuf;
      seeder = new SpeedAgent({ ledger, ledgerId, keys: keyPairFromSeed(Buffer.alloc(32, 0x52)), now: Date.now, pieceLength: PIECE, bidding: { enabled: false }, reservePrice: 1n, provider: { maxUnpaid } });
      leech = new SpeedAgent({ ledger, ledgerId, keys: keyPairFromSeed(Buffer.alloc(32, 0x53)), now: Date.now, pieceLength: PIECE, depositPieces: 4096 });
      for (const a of [seeder, leech]) a.on('warning', (m: string) => log(`warning: ${m}`));
      await leech.refreshBalance();
    }
    const sopts = seeder?.torrentOptions();
    let held = 0;
    // Timeline (Speed on): gate stalls, and per piece last block sent → payment sent → next block served.
    let stallStart: number | undefined, stalls = 0, stallMs = 0;
    const sentBytes = new Map<number, number>(), lastBlockAt = new Map<number, number>();
    const toPay: number[] = [], payToNext: number[] = [];
    let pendingPay: number | undefined;
    if (sopts && args['no-gate']) delete sopts.uploadGate; // diagnostics: everything but the gate
    else if (sopts && args.timeline) {
      // Diagnostics only (--timeline): this wrapper costs time per block, charged to Speed ON.
      const g = sopts.uploadGate!;
      sopts.uploadGate = {
        mayUpload: (k, p) => {
          if (g.mayUpload(k, p)) {
            if (stallStart !== undefined) {
              stalls++;
              stallMs += performance.now() - stallStart;
              stallStart = undefined;
            }
            return true;
          }
          held++;
          stallStart ??= performance.now();
          return false;
        },
        onBlockUploaded: (k, p, n) => {
          g.onBlockUploaded?.(k, p, n);
          if (pendingPay !== undefined) {
            payToNext.push(performance.now() - pendingPay);
            pendingPay = undefined;
          }
          const b = (sentBytes.get(p) ?? 0) + n;
          sentBytes.set(p, b);
          if (b >= PIECE || p === Math.ceil(size / PIECE) - 1) lastBlockAt.set(p, performance.now());
        },
      };
      leech!.on('paid', (_id: string, piece: number) => {
        const t = lastBlockAt.get(piece);
        if (t !== undefined) toPay.push(performance.now() - t);
        lastBlockAt.delete(piece);
        sentBytes.delete(piece);
        pendingPay = performance.now();
      });
    }
    const st = await seedSession.add({ ...sopts, torrent, path: seedDir, skipHashCheck: true });
    seeder?.attach(st);
    const start = performance.now();
    const lt: Torrent = await leechSession.add({ ...leech?.torrentOptions(), torrent, path: join(dir, `leech-${speed ? 'on' : 'off'}`), peers: [{ host: '127.0.0.1', port: seedSession.port }] });
    leech?.attach(lt);
    if (seeder && leech) {
      await leech.tick(); // first bid right away
      timer = setInterval(() => {
        void seeder!.tick();
        void leech!.tick();
      }, 250);
    }
    const prog = setInterval(() => log(`  ${(lt.stats().progress * 100).toFixed(0)}% peers ${lt.peerList().length} ${lt.state}`), 2000);
    try {
      await lt.done;
    } finally {
      clearInterval(prog);
    }
    const seconds = (performance.now() - start) / 1000;
    if (speed && args.timeline) {
      const med = (a: number[]) => (a.length ? [...a].sort((x, y) => x - y)[a.length >> 1] : NaN);
      log(`  gate: held a request ${held} times, ${stalls} stalls totalling ${stallMs.toFixed(0)} ms (${((stallMs / 1000 / ((performance.now() - start) / 1000)) * 100).toFixed(1)}% of the transfer)`);
      log(`  per piece (median): last block sent → payment sent ${med(toPay).toFixed(2)} ms; payment sent → next block served ${med(payToNext).toFixed(2)} ms (n=${toPay.length})`);
    }
    if (timer) clearInterval(timer);
    let paid = 0n, earned = 0n;
    if (seeder && leech) {
      const until = Date.now() + 5000;
      while (seeder.provider.totalEarned() !== leech.totalPaid() && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      paid = leech.totalPaid();
      earned = seeder.provider.totalEarned();
      await seeder.shutdown();
    }
    return { seconds, paid, earned };
  } finally {
    if (timer) clearInterval(timer);
    await Promise.all([seedSession.close(), leechSession.close()]);
  }
}

/**
 * (a) as users run it: the real CLI, `bitorrent seed` and `bitorrent download` in two processes (each with its own
 * event loop, as two machines would have), with `--speed` (wallets, an HTTP ledger server in this process, durable
 * provider state, the CLI's 1 s tick) or without. Seconds are the leecher's own (torrent added → done). After each
 * Speed run the seeder is stopped (SIGTERM: it closes its channels) and the books are checked on the ledger.
 */
async function partAProcs(dir: string, torrentPath: string, seedDir: string): Promise<PartA> {
  const seederKeys = keyPairFromSeed(Buffer.alloc(32, 0x62));
  const leechKeys = keyPairFromSeed(Buffer.alloc(32, 0x63));
  const FUND = 1_000_000n * BTT;
  const ledger = await Ledger.open({
    db: join(dir, 'ledger-procs.db'),
    ledgerKeys: keyPairFromSeed(Buffer.alloc(32, 0x61)),
    genesis: { allocations: [{ account: leechKeys.publicKey, amount: FUND }], faucetAmount: 0n },
    verifyThreads: 0,
  });
  const srv = createLedgerServer({ ledger, port: 0 });
  const url = await srv.listen();
  try {
    const supply = (await ledger.ledgerInfo()).supply;
    const seedWallet = join(dir, 'seeder-wallet.json'), leechWallet = join(dir, 'leecher-wallet.json');
    writeKeystore(seedWallet, encryptKeystore(seederKeys, 'pw', 1 << 10));
    writeKeystore(leechWallet, encryptKeystore(leechKeys, 'pw', 1 << 10));
    const env = { BITORRENT_PASSPHRASE: 'pw' };
    const common = ['--peer-port', '0', '--host', '127.0.0.1', '--no-dht', '--no-pex', '--json'];
    const cpuOn: number[] = [], cpuOff: number[] = [];
    const winOn: number[] = [], winOff: number[] = [];
    const splitOn: number[][] = [], splitOff: number[][] = [];
    // Times the seeder's UploadGate held the leecher (Speed: at its unpaid limit), from the seeder's last status line.
    const holdsOn: number[] = [];
    let paidOk = true;
    let earnedTotal = 0n;
    log(`(a, separate processes) ${size / MiB} MiB, ${PIECE / 1024} KiB pieces, K=${maxUnpaid ?? defaultMaxUnpaid(PIECE)}${maxUnpaid === undefined ? ' (CLI default)' : ' (--unpaid-limit)'}, ledger ${url}, ${rounds} rounds (ABBA)`);
    /*
     * Every round downloads into the same file, zeroed in place beforehand, with fast-resume data saying no piece is
     * there (so no hash check runs inside the timed window). A new file per round allocates 1 GiB of page cache, and
     * deleting it gives that memory back to this VM's host (virtio-balloon free page reporting): each round's writes then
     * landed on memory the host had to fault in again, or had not yet taken back, at random — 2–2.5× the kernel's copy
     * time in perf (copy_folio_from_iter_atomic), and runs at 250–470 MB/s in either mode. Overwriting cached pages
     * takes that out of both modes alike.
     */
    const dl = join(dir, 'procs-dl');
    mkdirSync(dl);
    // MB/s by round (an adjacent OFF/ON pair in ABBA order): also gives each pair's 1 − on/off, whose median resists drift.
    const pairOn = new Map<number, number>(), pairOff = new Map<number, number>();
    const zeros = Buffer.alloc(4 * MiB);
    const meta = parseTorrent(readFileSync(torrentPath));
    const prepareDownload = async (stateDir: string): Promise<void> => {
      const file = join(dl, meta.files[0].path.join('/'));
      const fd = openSync(file, existsSync(file) ? 'r+' : 'w');
      try {
        for (let off = 0; off < size; off += zeros.length) writeSync(fd, zeros, 0, Math.min(zeros.length, size - off), off);
      } finally {
        closeSync(fd);
      }
      await new ResumeStore(stateDir).save(meta.infoHash, await makeResumeData(meta, dl, new BitField(meta.pieceCount)));
    };
    const runOne = async (mode: 'on' | 'off', r: number, counted = true) => {
      if (counted && args.only && args.only !== mode) return;
      const tag = `${mode}-${r}`;
      const leechState = join(dir, `st-l-${tag}`);
      await prepareDownload(leechState);
      spawnSync('sync');
      const speed = (wallet: string, provider: boolean) => (mode === 'on' ? ['--speed', '--wallet', wallet, '--ledger', url, ...(provider ? ['--spending-rate', '0', '--reserve-price', '1', ...(maxUnpaid !== undefined ? ['--unpaid-limit', String(maxUnpaid * PIECE)] : [])] : [])] : []);
      const prof = (who: string) => [...(args['cpu-prof'] ? ['--cpu-prof', '--cpu-prof-dir', join(args['cpu-prof'], `${tag}-${who}`)] : []), ...(args['node-args']?.split(' ').filter(Boolean) ?? [])];
      const seeder = startBitorrent(['seed', torrentPath, '--data', seedDir, '--no-resume', '--state-dir', join(dir, `st-s-${tag}`), ...common, ...speed(seedWallet, true)], { env, nodeArgs: prof('seed') });
      let leecher: ReturnType<typeof startBitorrent> | undefined;
      try {
        const ready = await seeder.waitLine((l) => l.event === 'seeding', 600_000, 'the seeder to be ready');
        const seedCpuAtStart = procCpuSeconds(seeder.process.pid) ?? NaN;
        const seedSplitAtStart = mainThreadSplit(seeder.process.pid);
        leecher = startBitorrent(['download', torrentPath, '-o', dl, '--state-dir', leechState, '--peer', `127.0.0.1:${ready.port}`, ...common, ...speed(leechWallet, false)], { env, nodeArgs: prof('leech') });
        const done = await leecher.waitLine((l) => l.event === 'done', 1_800_000, 'the download to finish');
        const seconds = Number(done.seconds);
        if (counted) (mode === 'on' ? pairOn : pairOff).set(r, size / 1e6 / seconds);
        // CPU of both processes (user + system, start-up included, the same in both modes): on a busy 2-core machine
        // a steadier view of Speed's cost than the wall clock.
        const cpuSeed = procCpuSeconds(seeder.process.pid) ?? NaN, cpuLeech = procCpuSeconds(leecher.process.pid) ?? NaN;
        // Main thread against the rest (compiler, GC helpers, libuv pool, hash workers), during the transfer: the seeder's
        // from the leecher's start, the leecher's as it reports it (mainCpuSeconds, Linux).
        const seedSplit = mainThreadSplit(seeder.process.pid);
        const leechMain = done.mainCpuSeconds === undefined ? NaN : Number(done.mainCpuSeconds);
        const split = [seedSplit && seedSplitAtStart ? seedSplit.main - seedSplitAtStart.main : NaN, seedSplit && seedSplitAtStart ? seedSplit.other - seedSplitAtStart.other : NaN, leechMain, Number(done.cpuSeconds) - leechMain];
        if (counted) (mode === 'on' ? splitOn : splitOff).push(split);
        const cpu = cpuSeed + cpuLeech;
        if (counted) (mode === 'on' ? cpuOn : cpuOff).push(cpu);
        // The same, during the transfer only (the leecher reports its own; the seeder's from the leecher's start).
        const winSeed = cpuSeed - seedCpuAtStart, winLeech = Number(done.cpuSeconds);
        if (counted) (mode === 'on' ? winOn : winOff).push(winSeed + winLeech);
        await leecher.stop();
        await seeder.stop(); // SIGTERM: the provider closes its channels on the ledger
        const holds = Number(seeder.last()?.uploadHolds ?? NaN);
        if (counted && mode === 'on') holdsOn.push(holds);
        let books = '';
        if (mode === 'on') {
          const earned = (await ledger.account(seederKeys.publicKey)).balance - earnedTotal;
          earnedTotal += earned;
          const left = (await ledger.account(leechKeys.publicKey)).balance;
          // Price 1 base unit per byte; the first blocks (before the bid is answered) are free.
          const ok = left + earnedTotal === FUND && earned <= BigInt(size) && earned >= BigInt(size) - 64n * BigInt(PIECE) && (await ledger.ledgerInfo()).supply === supply;
          paidOk &&= ok;
          books = `; provider earned ${earned} of ${size} bytes at 1/byte, requester left ${left}, books ${ok ? 'exact' : 'WRONG'}`;
        }
        log(`(a, processes) ${counted ? `round ${r}` : 'warm-up (not counted)'} ${mode}: ${seconds.toFixed(2)} s = ${(size / 1e6 / seconds).toFixed(1)} MB/s, CPU ${cpu.toFixed(2)} s (seeder ${cpuSeed.toFixed(2)}, leecher ${cpuLeech.toFixed(2)}; during the transfer ${winSeed.toFixed(2)} + ${winLeech.toFixed(2)}); uploads held ${holds}×; threads main/other seeder ${split[0].toFixed(2)}/${split[1].toFixed(2)}, leecher ${split[2].toFixed(2)}/${split[3].toFixed(2)}${books}`);
      } finally {
        await leecher?.stop();
        await seeder.stop();
        // Start every round with no dirty pages left over from the last one (their writeback would otherwise land
        // in the middle of the next round, in either mode).
        spawnSync('sync');
      }
    };
    try {
      for (let w = 0; w < warmups; w++) await runOne('off', -1 - w, false);
      for (let r = 0; r < rounds; r++) {
        const order: ('on' | 'off')[] = r % 2 === 0 ? ['off', 'on'] : ['on', 'off'];
        for (const m of order) await runOne(m, r);
      }
    } finally {
      rmSync(dl, { recursive: true, force: true });
    }
    const median = (a: number[]) => (a.length ? [...a].sort((x, y) => x - y)[a.length >> 1] : NaN);
    const quartile = (a: number[], q: 1 | 3) => (a.length ? [...a].sort((x, y) => x - y)[Math.round(((a.length - 1) * q) / 4)] : NaN);
    const ons = [...pairOn.values()], offs = [...pairOff.values()];
    const pairs = [...pairOn].filter(([r]) => pairOff.has(r)).map(([r, on]) => 1 - on / pairOff.get(r)!);
    log(`(a, processes) per-round overheads ${pairs.map((x) => x.toFixed(3)).join(', ')}; median ${median(pairs).toFixed(3)} (quartiles ${quartile(pairs, 1).toFixed(3)}, ${quartile(pairs, 3).toFixed(3)})`);
    log(`(a, processes) median off ${median(offs).toFixed(1)} MB/s, on ${median(ons).toFixed(1)} MB/s, overhead ${(1 - median(ons) / median(offs)).toFixed(3)}; CPU (both processes) off ${median(cpuOff).toFixed(2)} s, on ${median(cpuOn).toFixed(2)} s; during the transfer off ${median(winOff).toFixed(2)} s, on ${median(winOn).toFixed(2)} s`);
    const splits = (a: number[][]) => [0, 1, 2, 3].map((i) => median(a.map((x) => x[i])).toFixed(2));
    const [so, sn] = [splits(splitOff), splits(splitOn)];
    log(`(a, processes) median thread CPU during the transfer, main/other: seeder off ${so[0]}/${so[1]} s, on ${sn[0]}/${sn[1]} s; leecher off ${so[2]}/${so[3]} s, on ${sn[2]}/${sn[3]} s`);
    return { on: median(ons), off: median(offs), pairsMedian: median(pairs), pairsQ1: quartile(pairs, 1), pairsQ3: quartile(pairs, 3), paidOk, cpuOn: median(cpuOn), cpuOff: median(cpuOff), cpuTransferOn: median(winOn), cpuTransferOff: median(winOff), holdsOn: median(holdsOn) };
  } finally {
    await srv.close();
    await ledger.close();
  }
}

interface PartA { on: number; off: number; pairsMedian?: number; pairsQ1?: number; pairsQ3?: number; paidOk: boolean; cpuOn?: number; cpuOff?: number; cpuTransferOn?: number; cpuTransferOff?: number; holdsOn?: number }

async function partA(): Promise<{ procs?: PartA; inproc?: PartA }> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-speed-'));
  try {
    const seedDir = join(dir, 'seed');
    mkdirSync(seedDir);
    const file = join(seedDir, 'payload.bin');
    const fd = openSync(file, 'w');
    const chunk = randomBytes(4 * MiB);
    for (let off = 0; off < size; off += chunk.length) writeSync(fd, chunk, 0, Math.min(chunk.length, size - off));
    closeSync(fd);
    const { torrent } = await createTorrent({ path: file, pieceLength: PIECE });
    const torrentPath = join(dir, 'payload.torrent');
    writeFileSync(torrentPath, torrent);
    const procs = mode === 'inproc' ? undefined : await partAProcs(dir, torrentPath, seedDir);
    const inproc = mode === 'procs' ? undefined : await partAInProcess(dir, torrent, seedDir);
    return { procs, inproc };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** (a) with both sessions in this process (one event loop carries both peers' work: Speed's cost counts twice). */
async function partAInProcess(dir: string, torrent: Buffer, seedDir: string): Promise<PartA> {
  {
    const ledger = await Ledger.open({
      db: join(dir, 'ledger.db'),
      ledgerKeys: keyPairFromSeed(Buffer.alloc(32, 0x51)),
      genesis: { allocations: [{ account: keyPairFromSeed(Buffer.alloc(32, 0x53)).publicKey, amount: 1_000_000n * BTT }], faucetAmount: 0n },
      verifyThreads: 0,
    });
    try {
      const supply = (await ledger.ledgerInfo()).supply;
      log(`(a) ${size / MiB} MiB, ${PIECE / 1024} KiB pieces, K=${maxUnpaid ?? defaultMaxUnpaid(PIECE)}, ${rounds} rounds of Speed off/on (ABBA)`);
      const offs: number[] = [], ons: number[] = [];
      let paidOk = true, paidRuns = 0;
      for (let w = 0; w < warmups; w++) {
        const warm = await transfer(dir, torrent, seedDir, undefined);
        rmSync(join(dir, 'leech-off'), { recursive: true, force: true });
        log(`(a) warm-up (not counted) off: ${warm.seconds.toFixed(2)} s = ${(size / 1e6 / warm.seconds).toFixed(1)} MB/s`);
      }
      const runOne = async (mode: 'on' | 'off', r: number) => {
        if (args.only && args.only !== mode) return;
        if (mode === 'off') {
          const off = await transfer(dir, torrent, seedDir, undefined);
          rmSync(join(dir, 'leech-off'), { recursive: true, force: true });
          offs.push(size / 1e6 / off.seconds);
          log(`(a) round ${r} off: ${off.seconds.toFixed(2)} s = ${(size / 1e6 / off.seconds).toFixed(1)} MB/s`);
        } else {
          const on = await transfer(dir, torrent, seedDir, { ledger });
          rmSync(join(dir, 'leech-on'), { recursive: true, force: true });
          ons.push(size / 1e6 / on.seconds);
          paidRuns++;
          paidOk &&= on.paid === BigInt(size) && on.earned === BigInt(size); // reserve price 1 base unit per byte, sole bidder
          log(`(a) round ${r} on: ${on.seconds.toFixed(2)} s = ${(size / 1e6 / on.seconds).toFixed(1)} MB/s; paid ${on.paid}, earned ${on.earned}`);
        }
      };
      for (let r = 0; r < rounds; r++) {
        const order: ('on' | 'off')[] = r % 2 === 0 ? ['off', 'on'] : ['on', 'off'];
        for (const m of order) await runOne(m, r);
      }
      const expected = BigInt(size) * BigInt(paidRuns);
      const sellerBal = (await ledger.account(keyPairFromSeed(Buffer.alloc(32, 0x52)).publicKey)).balance;
      paidOk &&= sellerBal === expected && (await ledger.ledgerInfo()).supply === supply;
      const median = (a: number[]) => (a.length ? [...a].sort((x, y) => x - y)[a.length >> 1] : NaN);
      const on = { seconds: size / 1e6 / median(ons) }, off = { seconds: size / 1e6 / median(offs) };
      log(`(a) median off ${median(offs).toFixed(1)} MB/s, on ${median(ons).toFixed(1)} MB/s; seller balance ${sellerBal} (expected ${expected}), supply unchanged: ${paidOk}`);
      return { on: size / 1e6 / on.seconds, off: size / 1e6 / off.seconds, paidOk };
    } finally {
      await ledger.close();
    }
  }
}

async function partB(): Promise<{ bidders: number; others: number; allCompleted: boolean; ok: boolean }> {
  const swarmMiB = args['swarm-size'] ?? (args.quick ? '8' : '16');
  const seedRate = args['seed-rate'] ?? '1024';
  const leechRate = args['leecher-rate'] ?? '32';
  const argv = ['--bidders', '4', '--free', '4', '--legacy', '0', '--size', swarmMiB, '--rate', seedRate, '--leecher-rate', leechRate, '--slots', '4', ...(maxUnpaid === undefined ? [] : ['--max-unpaid', String(maxUnpaid)]), '--timeout', '600', '--json'];
  log(`(b) demo ${argv.join(' ')}`);
  const out: string[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => void out.push(a.map(String).join(' '));
  try {
    await runDemoCli(argv);
  } finally {
    console.log = orig;
  }
  const r = JSON.parse(out[out.length - 1]) as { ok: boolean; rows: { peer: string; kind: string; seconds: number | null; paid: string; earned: string; fromSeeder: number }[]; medianBidderS: number; medianOthersS: number };
  for (const row of r.rows) log(`(b) ${row.peer.padEnd(8)} ${row.kind.padEnd(7)} ${row.seconds === null ? '-' : `${row.seconds.toFixed(1)} s`} from seeder ${(row.fromSeeder / MiB).toFixed(1)} MiB, paid ${row.paid} earned ${row.earned}`);
  const share = (k: string) => r.rows.filter((x) => x.kind === k).reduce((s, x) => s + x.fromSeeder, 0) / MiB;
  log(`(b) seeder upload: ${share('bidder').toFixed(1)} MiB to bidders, ${share('free').toFixed(1)} MiB to non-bidders`);
  const allCompleted = r.rows.every((x) => x.kind === 'seeder' || x.seconds !== null);
  return { bidders: r.medianBidderS, others: r.medianOthersS, allCompleted, ok: r.ok };
}

const a = args['skip-a'] ? {} : await partA();
const b = args['skip-b'] ? { bidders: NaN, others: NaN, allCompleted: true, ok: true } : await partB();
const r3 = (x: number) => Math.round(x * 1000) / 1000;
const procs = a.procs ?? { on: NaN, off: NaN, paidOk: true };
const inproc = a.inproc ?? { on: NaN, off: NaN, paidOk: true };
console.log(
  JSON.stringify({
    bench: 'speed',
    bytes: size,
    max_unpaid: maxUnpaid ?? defaultMaxUnpaid(PIECE),
    // overhead: the real CLI in two processes (as users run it); overhead_one_process: both peers in this process.
    on_MBps: r3(procs.on),
    off_MBps: r3(procs.off),
    overhead: r3(1 - procs.on / procs.off),
    // The median of the per-round (adjacent OFF/ON pair) overheads: less sensitive to the machine's drift.
    overhead_pairs_median: r3(procs.pairsMedian ?? NaN),
    overhead_pairs_q1: r3(procs.pairsQ1 ?? NaN),
    overhead_pairs_q3: r3(procs.pairsQ3 ?? NaN),
    cpu_off_s: r3(procs.cpuOff ?? NaN),
    cpu_on_s: r3(procs.cpuOn ?? NaN),
    cpu_transfer_off_s: r3(procs.cpuTransferOff ?? NaN),
    cpu_transfer_on_s: r3(procs.cpuTransferOn ?? NaN),
    // Median times per Speed ON transfer that the provider held the requester at its unpaid limit (two processes).
    provider_holds_on: procs.holdsOn ?? null,
    one_process_on_MBps: r3(inproc.on),
    one_process_off_MBps: r3(inproc.off),
    overhead_one_process: r3(1 - inproc.on / inproc.off),
    bidders_median_s: r3(b.bidders),
    nonbidders_median_s: r3(b.others),
    speedup: r3(b.others / b.bidders),
    all_completed: b.allCompleted,
    tokens_conserved: procs.paidOk && inproc.paidOk && b.ok,
  }),
);
process.exit(0);
