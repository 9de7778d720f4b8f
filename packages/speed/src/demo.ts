/**
 * `bitorrent demo`: BitTorrent Speed end to end on loopback. An embedded ledger (SQLite in a temp dir) funds
 * wallets through its faucet; one seeder with a limited upload rate runs the auction; some leechers bid
 * (auto-bidder), some run Speed without bidding, some are plain legacy peers. Live progress, then a table of bytes,
 * times and tokens per peer, and a check that ledger balances moved by exactly the payments made.
 */
import { parseArgs } from 'node:util';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Session, createTorrent, type Torrent, type UploadGate } from '@bitorrent/core';
import { Ledger, generateKeyPair, formatBtt, BTT, type KeyPair } from '@bitorrent/ledger';
import { SpeedAgent } from './agent.js';

const HELP = `usage: bitorrent demo [options]

Runs a small BitTorrent Speed swarm on 127.0.0.1 with an embedded ledger in a temp dir.
Nothing leaves this machine and no real tokens are involved: wallets are funded by the demo ledger's faucet.

options:
  --bidders N      leechers that bid with BTT (default 3)
  --free N         leechers with Speed on but no bidding (default 2)
  --legacy N       plain legacy leechers, no Speed at all (default 1)
  --size MIB       payload size (default 8)
  --rate KIB       seeder upload limit, KiB/s (default 1024)
  --leecher-rate KIB  each leecher's upload limit, KiB/s (default 64; 0 = unlimited)
  --slots N        seeder regular unchoke slots (default 2)
  --max-unpaid K   provider exposure: unpaid pieces per requester (default: the pieces in 16 MiB, 2..64)
  --timeout S      give up after S seconds (default 300)
  --json           print the final report as JSON
  -h, --help       this help
`;

interface DemoPeer {
  name: string;
  kind: 'bidder' | 'free' | 'legacy';
  keys: KeyPair;
  session: Session;
  agent?: SpeedAgent;
  torrent?: Torrent;
  startBalance: bigint;
  doneAt?: number;
  dir: string;
  /** Lets the agent read the torrent's progress once the torrent exists. */
  holder: { t?: Torrent };
}

function fmtBytes(n: number): string {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${(n / 1024).toFixed(0)} KiB`;
}

export async function runDemoCli(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      bidders: { type: 'string', default: '3' },
      free: { type: 'string', default: '2' },
      legacy: { type: 'string', default: '1' },
      size: { type: 'string', default: '8' },
      rate: { type: 'string', default: '1024' },
      'leecher-rate': { type: 'string', default: '64' },
      slots: { type: 'string', default: '2' },
      'max-unpaid': { type: 'string' },
      timeout: { type: 'string', default: '300' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const num = (s: string, what: string, min: number, max: number): number => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < min || n > max) throw new Error(`--${what} must be an integer ${min}…${max}`);
    return n;
  };
  const nB = num(values.bidders!, 'bidders', 0, 20);
  const nF = num(values.free!, 'free', 0, 20);
  const nL = num(values.legacy!, 'legacy', 0, 20);
  const sizeMiB = num(values.size!, 'size', 1, 1024);
  const rateKiB = num(values.rate!, 'rate', 16, 1 << 20);
  const leechRateKiB = num(values['leecher-rate']!, 'leecher-rate', 0, 1 << 20);
  const slots = num(values.slots!, 'slots', 1, 16);
  const maxUnpaid = values['max-unpaid'] === undefined ? undefined : num(values['max-unpaid'], 'max-unpaid', 1, 64);
  const timeoutS = num(values.timeout!, 'timeout', 5, 86_400);
  const log = (s: string) => {
    if (!values.json) console.log(s);
  };

  const dir = mkdtempSync(join(tmpdir(), 'bitorrent-demo-'));
  const sessions: Session[] = [];
  let ledger: Ledger | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    log(`BitTorrent Speed demo — temp dir ${dir}`);
    log('Disclosure: bidders will spend demo BTT from faucet-funded wallets on a private demo ledger; nothing real is spent.');
    ledger = await Ledger.open({
      db: join(dir, 'ledger.db'),
      ledgerKeys: generateKeyPair(),
      genesis: { faucetAmount: 100n * BTT, faucetDifficulty: 8 },
      verifyThreads: 0,
    });
    const ledgerId = ledger.ledgerIdBuf;
    const supply = (await ledger.ledgerInfo()).supply;

    // Payload and torrent.
    const dataDir = join(dir, 'seed');
    mkdirSync(dataDir);
    const file = join(dataDir, 'payload.bin');
    writeFileSync(file, randomBytes(sizeMiB << 20));
    const pieceLength = 64 * 1024;
    const { torrent } = await createTorrent({ path: file, pieceLength });

    // Wallets (faucet) and peers.
    const peers: DemoPeer[] = [];
    const mk = async (name: string, kind: DemoPeer['kind'] | 'seeder'): Promise<DemoPeer> => {
      const keys = generateKeyPair();
      if (kind === 'bidder' || kind === 'seeder') await ledger!.faucet({ keys });
      const startBalance = (await ledger!.account(keys.publicKey)).balance;
      const pdir = kind === 'seeder' ? dataDir : join(dir, name);
      mkdirSync(pdir, { recursive: true });
      let agent: SpeedAgent | undefined;
      const holder: { t?: Torrent } = {};
      if (kind !== 'legacy') {
        agent = new SpeedAgent({
          ledger: ledger!,
          ledgerId,
          keys,
          now: Date.now,
          pieceLength,
          remainingBytes: () => (holder.t ? Math.max(0, holder.t.stats().wantedBytes - holder.t.stats().verifiedBytes) : kind === 'seeder' ? 0 : sizeMiB << 20),
          bidding: { enabled: kind === 'bidder' },
          reservePrice: kind === 'seeder' ? 1000n : 0n,
          provider: { maxUnpaid },
        });
        agent.on('warning', (m: string) => log(`  [${name}] ${m}`));
      }
      const session = new Session({
        port: 0,
        host: '127.0.0.1',
        uploadRateLimit: kind === 'seeder' ? rateKiB * 1024 : leechRateKiB * 1024,
        hasherWorkers: 0,
      });
      sessions.push(session);
      await session.listen();
      return { name, kind: kind === 'seeder' ? 'free' : kind, keys, session, agent, startBalance, dir: pdir, holder };
    };
    const seeder = await mk('seeder', 'seeder');
    // Where the seeder's scarce upload goes: bytes sent per remote peer id (hex), for the report.
    const fromSeeder = new Map<string, number>();
    const idOfKey = new Map<string, string>();
    const seedOpts = seeder.agent!.torrentOptions();
    const gate = seedOpts.uploadGate!;
    // The agent's gate is a class instance (its methods are on the prototype, not own properties): inherit from it
    // and override one method, rather than spreading it.
    const counting = Object.create(gate) as UploadGate;
    counting.onBlockUploaded = (k, piece, n) => {
      gate.onBlockUploaded?.(k, piece, n);
      let id = idOfKey.get(k);
      if (id === undefined) {
        id = seeder.torrent?.peerList().find((x) => x.key === k)?.wire.remotePeerId?.toString('hex');
        if (id === undefined) return;
        idOfKey.set(k, id);
      }
      fromSeeder.set(id, (fromSeeder.get(id) ?? 0) + n);
    };
    seedOpts.uploadGate = counting;
    seeder.torrent = await seeder.session.add({ ...seedOpts, torrent, path: dataDir, skipHashCheck: true, uploadSlots: slots });
    seeder.agent!.attach(seeder.torrent);
    for (let i = 0; i < nB; i++) peers.push(await mk(`bidder${i + 1}`, 'bidder'));
    for (let i = 0; i < nF; i++) peers.push(await mk(`free${i + 1}`, 'free'));
    for (let i = 0; i < nL; i++) peers.push(await mk(`legacy${i + 1}`, 'legacy'));
    await Promise.all([seeder.agent!.refreshBalance(), ...peers.map((p) => p.agent?.refreshBalance())]);

    const started = Date.now();
    const addrs = [{ host: '127.0.0.1', port: seeder.session.port }];
    for (const p of peers) {
      p.torrent = await p.session.add({ ...p.agent?.torrentOptions(), torrent, path: p.dir, peers: [...addrs] });
      p.holder.t = p.torrent;
      p.agent?.attach(p.torrent);
      addrs.push({ host: '127.0.0.1', port: p.session.port });
      const t = p.torrent;
      t.on('done', () => (p.doneAt ??= Date.now()));
    }
    log(`seeder: ${fmtBytes(sizeMiB << 20)} at ${rateKiB} KiB/s (leechers ${leechRateKiB || '∞'} KiB/s), ${slots} auctioned slots + 1 optimistic; ${nB} bidders, ${nF} Speed non-bidders, ${nL} legacy leechers`);

    // Live loop.
    let lastPrint = 0;
    await new Promise<void>((resolve) => {
      timer = setInterval(() => {
        void (async () => {
          for (const a of [seeder.agent, ...peers.map((p) => p.agent)]) await a?.tick();
          const now = Date.now();
          if (now - lastPrint >= 2000) {
            lastPrint = now;
            const line = peers
              .map((p) => {
                const s = p.torrent!.stats();
                const bid = p.agent && p.agent.bidder.bid > 0n ? ` bid ${p.agent.bidder.bid}/B` : '';
                return `${p.name} ${(s.progress * 100).toFixed(0)}%${bid}`;
              })
              .join(' | ');
            log(`[${((now - started) / 1000).toFixed(0).padStart(3)}s] ${line}`);
          }
          if (peers.every((p) => p.doneAt !== undefined) || now - started > timeoutS * 1000) resolve();
        })();
      }, 500);
    });
    clearInterval(timer);
    timer = undefined;

    // Let in-flight payments and channel opens land (bounded), then every provider (the seeder, and leechers that
    // sold slots to bidders too) closes every channel it holds a payment on, with the last state.
    const all = [seeder, ...peers];
    const agents = all.map((p) => p.agent).filter((a): a is SpeedAgent => !!a);
    const signedAll = () => agents.reduce((s, a) => s + a.totalPaid(), 0n);
    const earnedAll = () => agents.reduce((s, a) => s + a.provider.totalEarned(), 0n);
    for (let i = 0; i < 200 && (signedAll() !== earnedAll() || agents.some((a) => a.busy())); i++) await new Promise((r) => setTimeout(r, 25));
    await Promise.all(agents.map((a) => a.shutdown()));
    const rows = [];
    let unusedEscrow = 0n;
    let netSum = 0n;
    let consistent = true;
    for (const p of all) {
      const bal = (await ledger.account(p.keys.publicKey)).balance;
      // Channels opened but never paid on stay open until they expire, then return to the requester in full.
      const escrow = (await ledger.channels(p.keys.publicKey)).filter((c) => c.status === 'open' && c.requester.equals(p.keys.publicKey)).reduce((s, c) => s + c.deposit, 0n);
      unusedEscrow += escrow;
      const net = bal + escrow - p.startBalance;
      netSum += net;
      // What providers accepted from this peer, and what this peer accepted as a provider.
      const key = p.keys.publicKey.toString('hex');
      const paid = agents.reduce((s, a) => s + (a.provider.account(key)?.earned ?? 0n), 0n);
      const earned = p.agent?.provider.totalEarned() ?? 0n;
      if (net !== earned - paid) consistent = false;
      const s = p.torrent!.stats();
      const fromSeed = p === seeder ? 0 : (fromSeeder.get(p.session.peerId.toString('hex')) ?? 0);
      rows.push({ peer: p.name, kind: p === seeder ? 'seeder' : p.kind, downloaded: s.downloaded, uploaded: s.uploaded, fromSeeder: fromSeed, seconds: p === seeder ? null : p.doneAt ? (p.doneAt - started) / 1000 : null, paid, earned });
    }
    const info = await ledger.ledgerInfo();
    const leechers = rows.filter((r) => r.kind !== 'seeder');
    // Every wallet moved by exactly (accepted earnings − accepted payments), nothing was created or lost.
    // (A payment signed but still in a socket buffer when a peer quits is never received, so signed ≥ accepted.)
    const ok = consistent && netSum === 0n && info.supply === supply && signedAll() >= earnedAll() && peers.every((p) => p.doneAt !== undefined);
    const median = (xs: number[]) => {
      const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
      return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
    };
    const mb = median(leechers.filter((r) => r.kind === 'bidder').map((r) => r.seconds ?? Infinity));
    const mf = median(leechers.filter((r) => r.kind !== 'bidder').map((r) => r.seconds ?? Infinity));
    if (values.json) {
      console.log(JSON.stringify({ ok, rows: rows.map((r) => ({ ...r, paid: r.paid.toString(), earned: r.earned.toString() })), medianBidderS: mb, medianOthersS: mf }));
    } else {
      log('');
      log(`${'peer'.padEnd(10)} ${'kind'.padEnd(7)} ${'down'.padStart(9)} ${'up'.padStart(9)} ${'from seed'.padStart(9)} ${'time'.padStart(7)} ${'paid (BTT)'.padStart(24)} ${'earned (BTT)'.padStart(24)}`);
      for (const r of rows) {
        log(`${r.peer.padEnd(10)} ${r.kind.padEnd(7)} ${fmtBytes(r.downloaded).padStart(9)} ${fmtBytes(r.uploaded).padStart(9)} ${fmtBytes(r.fromSeeder).padStart(9)} ${(r.seconds === null ? '' : `${r.seconds.toFixed(1)}s`).padStart(7)} ${formatBtt(r.paid).padStart(24)} ${formatBtt(r.earned).padStart(24)}`);
      }
      log('');
      log(`median completion: bidders ${mb.toFixed(1)}s, others ${mf.toFixed(1)}s`);
      log(`ledger check: every wallet moved by exactly its accepted earnings − payments (${formatBtt(earnedAll())} BTT paid in total); supply ${info.supply === supply ? 'unchanged' : 'CHANGED'} → ${ok ? 'OK' : 'MISMATCH'}`);
      if (info.openChannels > 0) log(`${info.openChannels} channel(s) opened but never paid on stay open until expiry; their ${formatBtt(unusedEscrow)} BTT then return to the requesters.`);
    }
    return ok ? 0 : 1;
  } finally {
    if (timer) clearInterval(timer);
    await Promise.all(sessions.map((s) => s.close().catch(() => {})));
    await ledger?.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }
}
