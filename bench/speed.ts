/**
 * BitTorrent Speed benchmark: `npm run bench -- speed [--quick] [--size MiB] [--max-unpaid K] [--swarm-size MiB]`
 *
 * (a) Overhead: one seeder session → one leecher session over loopback, in this process, the same torrent
 *     (1 GiB; 128 MiB with --quick; 256 KiB pieces, --piece-kib) with Speed OFF (plain sessions) and Speed ON (per-torrent
 *     SpeedAgent on both sides: auction, channel on an embedded SQLite ledger, one signed payment per piece,
 *     provider exposure K unpaid pieces, --max-unpaid, default 1 as the library's). --rounds N (default 3) interleaved off/on pairs
 *     (ABBA order, against drift on a shared machine); overhead = 1 − median(on)/median(off). Also prints a timeline
 *     summary of Speed ON: gate stalls (how long requests were held), and per piece the time from its last block
 *     sent to the requester's payment and from the payment to the next block served.
 * (b) Auction: `bitorrent demo` engine — a seeder limited to a fixed upload rate, 4 bidding and 4 non-bidding
 *     (Speed on, no bids) leechers, each leecher uploading at a much lower rate (the seeder is the scarce
 *     resource). Median completion per group; speedup = non-bidders / bidders; tokens_conserved = every wallet
 *     moved by exactly its accepted earnings − payments and the supply is unchanged.
 * Last line: one JSON object.
 */
import { parseArgs } from 'node:util';
import { mkdtempSync, mkdirSync, rmSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Session, createTorrent, type Torrent } from '@bitorrent/core';
import { Ledger, keyPairFromSeed, BTT } from '@bitorrent/ledger';
import { SpeedAgent } from '@bitorrent/speed';
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
    only: { type: 'string' },
    'skip-b': { type: 'boolean' },
    rounds: { type: 'string' },
  },
});
const MiB = 1024 * 1024;
const size = (args.size ? Number(args.size) : args.quick ? 128 : 1024) * MiB;
const maxUnpaid = Number(args['max-unpaid'] ?? 1);
const rounds = Math.max(1, Number(args.rounds ?? 3));
const PIECE = Number(args["piece-kib"] ?? 256) * 1024;
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
    else if (sopts) {
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
    if (speed) {
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

async function partA(): Promise<{ on: number; off: number; paidOk: boolean }> {
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
    const ledger = await Ledger.open({
      db: join(dir, 'ledger.db'),
      ledgerKeys: keyPairFromSeed(Buffer.alloc(32, 0x51)),
      genesis: { allocations: [{ account: keyPairFromSeed(Buffer.alloc(32, 0x53)).publicKey, amount: 1_000_000n * BTT }], faucetAmount: 0n },
      verifyThreads: 0,
    });
    try {
      const supply = (await ledger.ledgerInfo()).supply;
      log(`(a) ${size / MiB} MiB, ${PIECE / 1024} KiB pieces, K=${maxUnpaid}, ${rounds} rounds of Speed off/on (ABBA)`);
      const offs: number[] = [], ons: number[] = [];
      let paidOk = true, paidRuns = 0;
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
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function partB(): Promise<{ bidders: number; others: number; allCompleted: boolean; ok: boolean }> {
  const swarmMiB = args['swarm-size'] ?? (args.quick ? '8' : '16');
  const seedRate = args['seed-rate'] ?? '1024';
  const leechRate = args['leecher-rate'] ?? '32';
  const argv = ['--bidders', '4', '--free', '4', '--legacy', '0', '--size', swarmMiB, '--rate', seedRate, '--leecher-rate', leechRate, '--slots', '4', '--max-unpaid', String(maxUnpaid), '--timeout', '600', '--json'];
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

const a = args['skip-a'] ? { on: NaN, off: NaN, paidOk: true } : await partA();
const b = args['skip-b'] ? { bidders: NaN, others: NaN, allCompleted: true, ok: true } : await partB();
const r3 = (x: number) => Math.round(x * 1000) / 1000;
console.log(
  JSON.stringify({
    bench: 'speed',
    bytes: size,
    max_unpaid: maxUnpaid,
    on_MBps: r3(a.on),
    off_MBps: r3(a.off),
    overhead: r3(1 - a.on / a.off),
    bidders_median_s: r3(b.bidders),
    nonbidders_median_s: r3(b.others),
    speedup: r3(b.others / b.bidders),
    all_completed: b.allCompleted,
    tokens_conserved: a.paidOk && b.ok,
  }),
);
process.exit(0);
