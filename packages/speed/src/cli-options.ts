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
 *
 * Crash safety (provider side): every accepted payment state is written durably (persist.ts: temp + fsync +
 * rename) to <state-dir>/speed/<ledger>-<wallet>/channels-<pid>.json BEFORE its ack goes out. On start, the files of
 * runs that are no longer alive are restored into the first torrent's agent, which closes them on the ledger with
 * their last state (requester idle, or near expiry) unless the requester reconnects and carries on; close() closes
 * what is left, and whatever fails to close (ledger down) stays in the file for the next start.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { parseSize, parseTorrent, parseTorrentId, type AddTorrentOptions, type Metainfo, type Torrent } from '@bitorrent/core';
import { LedgerClient, formatBtt, parseBtt, type KeyPair } from '@bitorrent/ledger';
import { defaultKeystorePath, readKeystore, decryptKeystore } from '@bitorrent/ledger';
import { SpeedAgent, type SpeedLedgerApi } from './agent.js';
import type { PersistedChannel, ProviderPaymentsOptions } from './payments.js';
import { ChannelStateStore, defaultSpeedStateBase, mergePersisted, recallLedgerId, rememberLedgerId, speedStateDir } from './persist.js';

export { speedCliOptions, SPEED_HELP, type SpeedFlags } from './cli-flags.js';
import type { SpeedFlags } from './cli-flags.js';

export interface SpeedSetup {
  /** Spread into Session.add() for one torrent: per-torrent bt_speed extension, auction choker, upload gate. */
  perTorrentOptions(torrent: Metainfo | Buffer | string, remainingBytes: () => number): Partial<AddTorrentOptions>;
  /** Call with the Torrent that Session.add() returned (peer keys, payments on verified pieces, prompt resumes). */
  attach(torrent: Torrent): void;
  /** The line the CLI prints before transferring. */
  disclosure: string;
  readonly agents: SpeedAgent[];
  /** Where provider channel states are saved (before each ack; restored and closed on the next start). */
  readonly stateFile: string;
  /** Channels restored from a previous run that crashed or could not close them. */
  readonly restored: readonly PersistedChannel[];
  /**
   * Stop ticking and close every channel we were paid on with its last state. Channels whose close failed (ledger
   * unreachable) stay in the state file; the next start closes them.
   */
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
  /** State dir (default: flags['state-dir'], else $XDG_STATE_HOME/bitorrent or ~/.local/state/bitorrent). */
  stateDir?: string;
  /** Provider payment settings (tests: short idle close). */
  provider?: Omit<ProviderPaymentsOptions, 'ledgerId' | 'publicKey'>;
  /** Retry interval for a balance fetch that failed (default 10 s). */
  balanceRetryMs?: number;
}

function parseRate(s: string | undefined): number {
  if (s === undefined) return 1_000_000;
  const n = Number(s);
  if (!/^\d*\.?\d+$/.test(s.trim()) || !(n >= 0 && n <= 1)) throw new Error(`--spending-rate must be a number 0..1, got '${s}'`);
  return Math.round(n * 1_000_000);
}

/** The info hash (hex) of a magnet link or a hex/base32 info hash; the text itself if it is neither. */
function infoHashOfId(id: string): string {
  try {
    return parseTorrentId(id).infoHashHex;
  } catch {
    return id.toLowerCase();
  }
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
  let unpaidBytes: number | undefined;
  if (flags['unpaid-limit'] !== undefined) {
    try {
      unpaidBytes = parseSize(flags['unpaid-limit']);
    } catch {
      unpaidBytes = NaN;
    }
    if (!(unpaidBytes > 0)) throw new Error(`--unpaid-limit must be a size such as 512K or 4M, got '${flags['unpaid-limit']}'`);
  }
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
  const stateBase = ctx.stateDir ?? flags['state-dir'] ?? defaultSpeedStateBase(env, env.HOME || homedir());
  // Ledger ids by URL are recorded in the state dir (an injected ledger only with an explicit ctx.stateDir).
  const cacheIds = !ctx.ledger || ctx.stateDir !== undefined;
  let ledgerId: Buffer | undefined, balance: bigint | undefined;
  try {
    ledgerId = (await ledger.ledgerInfo()).ledgerId;
    balance = (await ledger.account(keys.publicKey)).balance;
  } catch (e) {
    // Unreachable now: with the ledger id seen at this URL before, start anyway (handshakes need only the id);
    // the balance fetch is retried on the tick and bidding starts once it answers, restored closes are retried.
    const known = ledgerId ?? (cacheIds ? recallLedgerId(stateBase, url) : undefined);
    if (!known) {
      ctx.log(`Speed off: ledger ${url} unreachable (${(e as Error).message}); running as a plain BitTorrent peer.`);
      return undefined;
    }
    ledgerId = known;
    ctx.log(`speed: ledger ${url} unreachable (${(e as Error).message}); using its id from an earlier run; bidding starts once it answers`);
  }
  try {
    if (cacheIds) rememberLedgerId(stateBase, url, ledgerId);
  } catch (e) {
    ctx.log(`speed: could not record the ledger id in ${stateBase} (${(e as Error).message})`);
  }
  const now = ctx.now ?? Date.now;
  // Provider channel states from earlier runs (crashed, or closes that failed): ours now; closed by the first
  // torrent's agent (idle/expiry on its tick, or at close()) unless the requester comes back and resumes.
  const store = new ChannelStateStore(speedStateDir(stateBase, ledgerId, keys.publicKey));
  let rec: { channels: PersistedChannel[]; files: string[]; errors: string[] } = { channels: [], files: [], errors: [] };
  try {
    rec = store.recover();
  } catch (e) {
    ctx.log(`speed: cannot read channel states in ${store.dir} (${(e as Error).message})`);
  }
  for (const e of rec.errors) ctx.log(`speed: unreadable channel state file left in place: ${e}`);
  let pendingRestore: PersistedChannel[] = rec.channels;
  try {
    store.save(pendingRestore);
    store.adopt(rec.files); // only once their channels are safe in our own file
  } catch (e) {
    ctx.log(`speed: cannot write channel states to ${store.file} (${(e as Error).message}); earlier runs' files left in place`);
  }
  if (pendingRestore.length > 0) {
    const sum = pendingRestore.reduce((s, c) => s + c.cumulative, 0n);
    ctx.log(`speed: ${pendingRestore.length} unclosed channel(s) from an earlier run restored (${formatBtt(sum)} BTT owed to us); closing them on the ledger`);
  }
  const held = new Map<SpeedAgent, PersistedChannel[]>();
  // Group commit off the event loop (one fsync for every state accepted while the previous write ran); every save
  // goes through it, so two writes never race on the temp file.
  const saveAllDurable = (): Promise<void> =>
    store.saveLatest(() => mergePersisted(pendingRestore, ...held.values())).catch((e: Error) => {
      ctx.log(`speed: could not save channel states to ${store.file} (${e.message}): a crash now would lose unclosed earnings`);
      throw e;
    });
  const rate = spendingRatePpm / 1_000_000;
  const bal = balance === undefined ? 'unknown (ledger unreachable)' : `${formatBtt(balance)} BTT`;
  const cap =
    balance === undefined
      ? maxSpend !== undefined ? `${formatBtt(maxSpend)} BTT` : 'the whole balance (cap with --max-spend)'
      : maxSpend !== undefined ? `${formatBtt(maxSpend < balance ? maxSpend : balance)} BTT` : `${formatBtt(balance)} BTT (whole balance; cap with --max-spend)`;
  const disclosure =
    spendingRatePpm === 0
      ? `Speed on (not bidding, spending rate 0): earning as a provider at reserve price ${reservePrice}/byte; balance ${bal}; wallet ${keys.publicKey.toString('hex').slice(0, 16)}…`
      : `Speed on: spending up to ${cap} on each torrent at rate ${rate}; balance ${bal}; wallet ${keys.publicKey.toString('hex').slice(0, 16)}…; --no-speed turns it off`;
  const agents = new Map<string, SpeedAgent>();
  const agentList: SpeedAgent[] = [];
  // Agents whose balance is unknown (ledger unreachable): bidding waits for it, so keep asking.
  const balanceRetry = new Map<SpeedAgent, number>();
  const retryMs = ctx.balanceRetryMs ?? 10_000;
  const refresh = (a: SpeedAgent) =>
    a.refreshBalance().then(
      () => {
        balanceRetry.delete(a);
        // First bid now (with the balance known), not at the next tick: transfers of a few seconds would be over.
        void a.tick().catch((e: Error) => ctx.log(`speed: ${e.message}`));
      },
      (e: Error) => {
        if (!balanceRetry.has(a)) ctx.log(`speed: balance unavailable (${e.message}); bidding waits for the ledger (retrying)`);
        balanceRetry.set(a, now() + retryMs);
      },
    );
  const tick = setInterval(() => {
    const t = now();
    for (const [a, at] of balanceRetry) if (t >= at) {
      balanceRetry.set(a, t + retryMs); // one fetch at a time
      void refresh(a);
    }
    for (const a of agentList) void a.tick().catch((e: Error) => ctx.log(`speed: ${e.message}`));
  }, ctx.tickMs ?? 1000);
  tick.unref();
  const l = ledger;
  return {
    disclosure,
    agents: agentList,
    stateFile: store.file,
    restored: rec.channels,
    perTorrentOptions(torrent, remainingBytes) {
      // A Buffer is a .torrent file's bytes (what the CLI reads), or a raw 20-byte info hash; a string a magnet/hex.
      const meta = Buffer.isBuffer(torrent) ? (torrent.length === 20 ? undefined : parseTorrent(torrent)) : typeof torrent === 'object' ? (torrent as Metainfo) : undefined;
      const infoHash = meta ? meta.infoHashHex : Buffer.isBuffer(torrent) ? torrent.toString('hex') : infoHashOfId(String(torrent));
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
        // K: --unpaid-limit in whole pieces of this torrent (its default: defaultMaxUnpaid, the pieces in 16 MiB).
        provider: unpaidBytes === undefined ? ctx.provider : { ...ctx.provider, maxUnpaid: Math.min(1024, Math.max(1, Math.ceil(unpaidBytes / (meta?.pieceLength ?? 256 * 1024)))) },
        // Written durably before the ack goes out (SpeedAgent calls this first).
        persist: (list) => {
          held.set(agent, list);
          return saveAllDurable();
        },
      });
      agent.on('warning', (m: string) => ctx.log(`speed: ${m}`));
      agent.on('ban-peer', (id: string, why: string) => ctx.log(`speed: banned ${id}: ${why}`));
      agent.on('channel-closed', (id: Buffer, amount: bigint) => ctx.log(`speed: channel ${id.toString('hex').slice(0, 16)}… closed, ${formatBtt(amount)} BTT paid to us`));
      if (pendingRestore.length > 0) {
        agent.provider.importChannels(pendingRestore, now());
        held.set(agent, agent.provider.exportChannels());
        pendingRestore = [];
        saveAllDurable().catch(() => {}); // failure already logged
      }
      void refresh(agent);
      agents.set(infoHash, agent);
      agentList.push(agent);
      return agent.torrentOptions();
    },
    attach(t) {
      const agent = agents.get(t.infoHash.toString('hex'));
      if (agent) agent.attach(t);
      else ctx.log(`speed: no agent for torrent ${t.infoHash.toString('hex')}: Speed is not active on it`);
    },
    async close() {
      clearInterval(tick);
      await Promise.all(agentList.map((a) => a.shutdown().catch((e: Error) => ctx.log(`speed: closing channels failed: ${e.message}`))));
      // What could not be closed stays on disk for the next start (empty: the file is removed).
      for (const a of agentList) held.set(a, a.provider.exportChannels());
      await saveAllDurable().catch(() => {}); // failure already logged
      const left = mergePersisted(pendingRestore, ...held.values());
      if (left.length > 0) ctx.log(`speed: ${left.length} channel(s) could not be closed now; kept in ${store.file}, closed on the next start`);
    },
  };
}
