/**
 * BitTorrent Speed for the `download` / `seed` commands: option spec, wallet + ledger set-up, disclosure line, and a
 * SpeedAgent per torrent. Speed is OFF unless the user passes --speed AND has a wallet ("off until the user has a
 * wallet and turns it on"); --no-speed always wins and makes the client a plain legacy peer.
 *
 *   const speed = await setupSpeed(values, { stdout: (s) => console.log(s), log: (s) => console.error(s) });
 *   if (speed) console.log(speed.disclosure);
 *   const t = await session.add({ ...opts, ...speed?.perTorrentOptions(metainfoOrInfoHash, () => remaining) });
 *   speed?.attach(t);
 *   …
 *   await speed?.close();   // closes every channel we were paid on (before session.close())
 */
import { existsSync } from 'node:fs';
import type { AddTorrentOptions, Metainfo, Torrent } from '@bitorrent/core';
import { LedgerClient, formatBtt, parseBtt, type KeyPair } from '@bitorrent/ledger';
import { defaultKeystorePath, readKeystore, decryptKeystore } from '@bitorrent/ledger';
import { SpeedAgent, type SpeedLedgerApi } from './agent.js';

/** node:util parseArgs option spec; spread into the command's own options. */
export const speedCliOptions = {
  speed: { type: 'boolean' },
  'no-speed': { type: 'boolean' },
  'spending-rate': { type: 'string' },
  'max-spend': { type: 'string' },
  'reserve-price': { type: 'string' },
  ledger: { type: 'string' },
  wallet: { type: 'string' },
} as const;

export const SPEED_HELP = `BitTorrent Speed (off by default):
  --speed              bid BTT for faster downloads / earn BTT by uploading (needs a wallet: 'bitorrent wallet create')
  --no-speed           plain BitTorrent peer, no Speed at all (overrides --speed)
  --spending-rate R    fraction of the balance a torrent's bid may spend, 0..1 (default 1)
  --max-spend BTT      most one torrent may spend (default: no cap beyond the wallet balance)
  --reserve-price P    as a provider, lowest price accepted, base units per byte (default 0)
  --ledger URL         ledger server (default $BITORRENT_LEDGER_URL)
  --wallet FILE        keystore (default $BITORRENT_HOME/wallet.json); passphrase from $BITORRENT_PASSPHRASE`;

export interface SpeedFlags {
  speed?: boolean;
  'no-speed'?: boolean;
  'spending-rate'?: string;
  'max-spend'?: string;
  'reserve-price'?: string;
  ledger?: string;
  wallet?: string;
}

export interface SpeedSetup {
  /** Spread into Session.add() for one torrent: per-torrent bt_speed extension, auction choker, upload gate. */
  perTorrentOptions(torrent: Metainfo | Buffer | string, remainingBytes: () => number): Partial<AddTorrentOptions>;
  /** Call with the Torrent that Session.add() returned (peer keys, payments on verified pieces, prompt resumes). */
  attach(torrent: Torrent): void;
  /** The line the CLI prints before transferring. */
  disclosure: string;
  readonly agents: SpeedAgent[];
  /** Stop ticking and close every channel we were paid on with its last state. */
  close(): Promise<void>;
}

export interface SpeedContext {
  stdout: (s: string) => void;
  log: (s: string) => void;
  env?: NodeJS.ProcessEnv;
  /** Injected ledger (tests); default an HTTP LedgerClient on --ledger. */
  ledger?: SpeedLedgerApi & { ledgerInfo(): Promise<{ ledgerId: Buffer }> };
  now?: () => number;
  tickMs?: number;
}

function parseRate(s: string | undefined): number {
  if (s === undefined) return 1_000_000;
  const n = Number(s);
  if (!/^\d*\.?\d+$/.test(s.trim()) || !(n >= 0 && n <= 1)) throw new Error(`--spending-rate must be a number 0..1, got '${s}'`);
  return Math.round(n * 1_000_000);
}

function parseBase(s: string | undefined, what: string): bigint | undefined {
  if (s === undefined) return undefined;
  if (!/^\d{1,30}$/.test(s.trim())) throw new Error(`--${what} must be a non-negative integer (base units per byte), got '${s}'`);
  return BigInt(s.trim());
}

/**
 * Returns undefined when Speed is off (no --speed, --no-speed, no wallet, or the ledger unreachable — each said on
 * ctx.log). Throws on bad option values or a wrong passphrase.
 */
export async function setupSpeed(flags: SpeedFlags, ctx: SpeedContext): Promise<SpeedSetup | undefined> {
  const env = ctx.env ?? process.env;
  if (flags['no-speed'] || !flags.speed) return undefined;
  const spendingRatePpm = parseRate(flags['spending-rate']);
  let maxSpend: bigint | undefined;
  if (flags['max-spend'] !== undefined) {
    try {
      maxSpend = parseBtt(flags['max-spend']);
    } catch {
      throw new Error(`--max-spend must be a BTT amount such as 12.5, got '${flags['max-spend']}'`);
    }
  }
  const reservePrice = parseBase(flags['reserve-price'], 'reserve-price') ?? 0n;
  const walletPath = flags.wallet ?? defaultKeystorePath(env);
  if (!existsSync(walletPath)) {
    ctx.log(`Speed off: no wallet at ${walletPath} (create one with 'bitorrent wallet create'); running as a plain BitTorrent peer.`);
    return undefined;
  }
  const pass = env.BITORRENT_PASSPHRASE;
  if (pass === undefined) throw new Error(`--speed: set BITORRENT_PASSPHRASE to unlock the wallet ${walletPath}`);
  const keys: KeyPair = decryptKeystore(readKeystore(walletPath), pass);
  let ledger = ctx.ledger;
  let url = 'injected';
  if (!ledger) {
    url = flags.ledger ?? env.BITORRENT_LEDGER_URL ?? '';
    if (!url) throw new Error('--speed needs a ledger: pass --ledger URL or set BITORRENT_LEDGER_URL');
    ledger = new LedgerClient(url, { timeoutMs: 5_000 });
  }
  let ledgerId: Buffer, balance: bigint;
  try {
    ledgerId = (await ledger.ledgerInfo()).ledgerId;
    balance = (await ledger.account(keys.publicKey)).balance;
  } catch (e) {
    ctx.log(`Speed off: ledger ${url} unreachable (${(e as Error).message}); running as a plain BitTorrent peer.`);
    return undefined;
  }
  const now = ctx.now ?? Date.now;
  const rate = spendingRatePpm / 1_000_000;
  const cap = maxSpend !== undefined ? `${formatBtt(maxSpend < balance ? maxSpend : balance)} BTT` : `${formatBtt(balance)} BTT (whole balance; cap with --max-spend)`;
  const disclosure =
    spendingRatePpm === 0
      ? `Speed on (not bidding, spending rate 0): earning as a provider at reserve price ${reservePrice}/byte; balance ${formatBtt(balance)} BTT; wallet ${keys.publicKey.toString('hex').slice(0, 16)}…`
      : `Speed on: spending up to ${cap} on each torrent at rate ${rate}; balance ${formatBtt(balance)} BTT; wallet ${keys.publicKey.toString('hex').slice(0, 16)}…; --no-speed turns it off`;
  const agents = new Map<string, SpeedAgent>();
  const agentList: SpeedAgent[] = [];
  const tick = setInterval(() => {
    for (const a of agentList) void a.tick().catch((e: Error) => ctx.log(`speed: ${e.message}`));
  }, ctx.tickMs ?? 1000);
  tick.unref();
  const l = ledger;
  return {
    disclosure,
    agents: agentList,
    perTorrentOptions(torrent, remainingBytes) {
      const meta = typeof torrent === 'object' && !Buffer.isBuffer(torrent) ? (torrent as Metainfo) : undefined;
      const infoHash = meta ? Buffer.from(meta.infoHash).toString('hex') : Buffer.isBuffer(torrent) ? torrent.toString('hex') : String(torrent).toLowerCase();
      const agent = new SpeedAgent({
        ledger: l,
        ledgerId,
        keys,
        now,
        // Unknown until the metadata arrives (magnet): only sizes channel deposits.
        pieceLength: meta?.pieceLength ?? 256 * 1024,
        remainingBytes,
        bidding: { enabled: spendingRatePpm > 0, spendingRatePpm, maxSpend },
        reservePrice,
      });
      agent.on('warning', (m: string) => ctx.log(`speed: ${m}`));
      agent.on('ban-peer', (id: string, why: string) => ctx.log(`speed: banned ${id}: ${why}`));
      void agent.refreshBalance().catch((e: Error) => ctx.log(`speed: balance unavailable (${e.message}); bidding waits for the ledger`));
      agents.set(infoHash, agent);
      agentList.push(agent);
      return agent.torrentOptions();
    },
    attach(t) {
      agents.get(t.infoHash.toString('hex'))?.attach(t);
    },
    async close() {
      clearInterval(tick);
      await Promise.all(agentList.map((a) => a.shutdown().catch((e: Error) => ctx.log(`speed: closing channels failed: ${e.message}`))));
    },
  };
}
