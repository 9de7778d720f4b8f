/**
 * The ledger goes away mid-transfer and comes back (same port, same journal). Speed peers talk to it over HTTP
 * (`bitorrent ledger serve` + LedgerClient), as the CLI does. Checks: the client says clearly that the ledger is
 * unreachable, the transfer finishes (paid once the ledger is back), no accepted payment is lost — the provider
 * closes every channel with its last state — and ledger balances equal exactly what was paid.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LedgerClient, BTT } from '@bitorrent/ledger';
import { tempDir, wallet, makePayload, startPeer, ticker, withTimeout, until, ledgerService, type After } from './speed-swarm.js';

const PIECE = 16 * 1024;
const PIECES = 9;
const RESERVE = 1000n;
const START = 1000n * BTT;

/** A seeder (auction, reserve price) and one bidder whose channels each cover 3 pieces, on an HTTP ledger. */
async function outageSwarm(t: After, seed: number) {
  const dir = tempDir(t, 'speed-outage-');
  let skew = 0;
  const now = () => Date.now() + skew;
  const seederKeys = wallet(seed);
  const bidderKeys = wallet(seed + 1);
  const svc = await ledgerService(t, join(dir, 'ledger.db'), [bidderKeys.publicKey], START, now);
  const info = await svc.ledger.ledgerInfo();
  const client = () => {
    const c = new LedgerClient(svc.url, { timeoutMs: 2_000 });
    t.after(() => c.close());
    return c;
  };
  const { seedDir, data, torrent } = await makePayload(dir, PIECES * PIECE, PIECE);
  const seeder = await startPeer(t, {
    torrent,
    path: seedDir,
    seed: true,
    agent: { ledger: client(), ledgerId: info.ledgerId, keys: seederKeys, now, pieceLength: PIECE, bidding: { enabled: false }, reservePrice: RESERVE, provider: { maxUnpaid: 1 } },
  });
  const bidder = await startPeer(t, {
    torrent,
    path: join(dir, 'bidder'),
    peers: [{ host: '127.0.0.1', port: seeder.session.port }],
    agent: { ledger: client(), ledgerId: info.ledgerId, keys: bidderKeys, now, pieceLength: PIECE, depositPieces: 3 },
  });
  const sAgent = seeder.agent!;
  const bAgent = bidder.agent!;
  const log: string[] = [];
  for (const [name, a] of [['seeder', sAgent], ['bidder', bAgent]] as const) {
    for (const ev of ['warning', 'legacy', 'channel-opened', 'channel-closed', 'choke-peer', 'ban-peer']) {
      a.on(ev, (...args: unknown[]) => log.push(`${name} ${ev}: ${args.map((x) => (Buffer.isBuffer(x) ? x.toString('hex').slice(0, 8) : String(x))).join(' ')}`));
    }
  }
  const tick = ticker(t, () => [sAgent, bAgent]);
  const state = () => `ledger ${svc.up ? 'up' : 'down'}; progress ${bidder.torrent.stats().progress.toFixed(2)}; paid ${bAgent.totalPaid()} earned ${sAgent.provider.totalEarned()}; log:\n  ${log.join('\n  ')}`;
  const warned = (who: string, re: RegExp, what: string) => until(() => log.some((l) => l.startsWith(`${who} warning: `) && re.test(l)), () => `${who} warning ${what}: ${state()}`, 15_000);
  return { dir, svc, seeder, bidder, sAgent, bAgent, seederKeys, bidderKeys, supply: info.supply, data, log, tick, state, warned, advance: (ms: number) => (skew += ms) };
}

type Swarm = Awaited<ReturnType<typeof outageSwarm>>;

/** The transfer completed: same bytes, every signed payment accepted, exactly the reserve price for every byte. */
async function checkTransfer(s: Swarm): Promise<bigint> {
  await withTimeout(s.bidder.torrent.done, 20_000, s.state);
  assert.ok(readFileSync(join(s.dir, 'bidder', 'payload.bin')).equals(s.data), 'bidder copy differs');
  const expected = RESERVE * BigInt(PIECES * PIECE);
  const key = s.sAgent.provider.keyOf(s.bidderKeys.publicKey);
  await until(() => s.sAgent.provider.account(key)?.earned === expected, () => `earned ${expected}: ${s.state()}`, 10_000);
  assert.equal(s.bAgent.totalPaid(), expected);
  return expected;
}

/** checkTransfer, then wait until the seeder has closed the superseded channels, and stop ticking. */
async function completeTransfer(s: Swarm): Promise<bigint> {
  const expected = await checkTransfer(s);
  await until(() => s.sAgent.provider.exportChannels().length <= 1, () => `superseded channels closed: ${s.state()}`, 10_000);
  s.tick.stop();
  return expected;
}

/** Ledger balances: the seeder holds exactly what it earned, the bidder lost exactly that, nothing created. */
async function checkLedger(s: Swarm, expected: bigint): Promise<void> {
  const l = s.svc.ledger;
  assert.equal((await l.account(s.seederKeys.publicKey)).balance, expected);
  assert.equal((await l.account(s.bidderKeys.publicKey)).balance, START - expected);
  const info = await l.ledgerInfo();
  assert.equal(info.openChannels, 0);
  assert.equal(info.supply, s.supply);
}

test('ledger down while the requester needs a new channel: it says so, retries, the transfer completes, balances exact', async (t) => {
  const s = await outageSwarm(t, 0x51);
  await s.bAgent.refreshBalance();
  // Down once the seeder has accepted the first payment (so it checked channel 1): channel 1 still covers 2 pieces,
  // then the bidder needs channel 2. (The bidder's first payment can go out before the seeder's check: the seeder
  // serves a funded requester its first piece while that channel opens.)
  s.sAgent.once('earned', () => void s.svc.stop());
  await s.warned('bidder', /opening a channel to .* failed \(will retry\): /, 'about the unreachable ledger');
  const stalledAt = s.bAgent.totalPaid();
  assert.ok(stalledAt > 0n && stalledAt <= RESERVE * BigInt(3 * PIECE), `paid ${stalledAt} while the ledger was down`);
  await s.svc.start();
  // Superseded channels are closed as the transfer goes; then the last one with its last state.
  const expected = await completeTransfer(s);
  await s.sAgent.shutdown();
  await checkLedger(s, expected);
  assert.ok(s.log.some((l) => /bidder channel-opened/.test(l)));
});

test('ledger down when the requester wins its first auction: it retries opening the channel, the transfer completes, balances exact', async (t) => {
  const s = await outageSwarm(t, 0x59);
  await s.bAgent.refreshBalance();
  // Balance known (it can bid), then the ledger goes: the bid wins, but no channel can be opened yet.
  void s.svc.stop();
  await s.warned('bidder', /opening a channel to .* failed \(will retry\): /, 'about the unreachable ledger');
  assert.equal(s.bAgent.totalPaid(), 0n);
  assert.equal(s.bidder.torrent.stats().verifiedBytes, 0, 'paid data served without a channel');
  await s.svc.start();
  const expected = await completeTransfer(s);
  await s.sAgent.shutdown();
  await checkLedger(s, expected);
});

test('ledger down when the provider must check a new channel: both sides say so, the channel is re-announced, nothing lost', async (t) => {
  const s = await outageSwarm(t, 0x61);
  await s.bAgent.refreshBalance();
  // Down the moment the first channel is opened, before the seeder can look it up.
  s.bAgent.once('channel-opened', () => void s.svc.stop());
  await s.warned('seeder', /ledger unreachable while checking a channel/, 'about the channel check');
  await s.warned('bidder', /says: ledger unreachable/, 'relaying the seeder\'s error');
  assert.equal(s.sAgent.provider.totalEarned(), 0n, 'nothing can be accepted on an unchecked channel');
  await s.svc.start();
  const expected = await completeTransfer(s);
  await s.sAgent.shutdown();
  await checkLedger(s, expected);
});

test('ledger down when the provider closes: the close fails loudly, the last state is kept, and it closes before expiry', async (t) => {
  const s = await outageSwarm(t, 0x71);
  await s.bAgent.refreshBalance();
  const expected = await completeTransfer(s);
  const held = s.sAgent.provider.exportChannels();
  assert.equal(held.length, 1);
  const last = held[0];
  await s.svc.stop();
  await s.sAgent.shutdown();
  assert.ok(s.log.some((l) => /seeder warning: closing channel .* failed \(retry in 1 s\)/.test(l)), s.state());
  // Not forgotten: the last state is still held (and would be persisted).
  assert.deepEqual(s.sAgent.provider.heldState(last.info.id), { sequence: last.sequence, cumulative: last.cumulative });
  await s.svc.start();
  // Later (the clock reaches the close margin before expiry) the next tick closes it with that state.
  s.advance(last.info.expiresAt - Date.now() - 600_000);
  const closed = once(s.sAgent, 'channel-closed');
  await s.sAgent.tick();
  const [id, amount] = (await closed) as [Buffer, bigint];
  assert.ok(id.equals(last.info.id));
  assert.equal(amount, last.cumulative);
  await checkLedger(s, expected);
});
