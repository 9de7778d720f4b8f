/**
 * A real legacy client in a Speed swarm: Debian's python3-libtorrent (no bt_speed) downloads from an auction
 * seeder (reserve price > 0) alongside two bidding Speed leechers. It must get every byte, be served like any
 * legacy peer (free, never gated, never asked to pay), while the bidders pay and the ledger balances move by exactly
 * the payments accepted.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BTT } from '@bitorrent/ledger';
import { requireLibtorrent, startLibtorrent, cleanupAfter } from '@bitorrent/testbed';
import type { SpeedAgent } from '../src/agent.js';
import { tempDir, wallet, openLedger, makePayload, startPeer, ticker, withTimeout, until, type SpeedPeer } from './speed-swarm.js';

const PIECE = 32 * 1024;
const SIZE = 10 * PIECE - 1234; // short last piece
const RESERVE = 1000n;
const START = 1000n * BTT;

test('python3-libtorrent in a Speed swarm downloads the whole torrent byte for byte and is never asked to pay', async (t) => {
  cleanupAfter(t); // stops every process the testbed started, each by its PID
  if (!requireLibtorrent()) return t.skip('python3-libtorrent not installed for /usr/bin/python3');
  const dir = tempDir(t, 'speed-lt-');
  const seederKeys = wallet(0x41);
  const bidderKeys = [wallet(0x42), wallet(0x43)];
  const ledger = await openLedger(t, dir, bidderKeys.map((k) => k.publicKey), START);
  const ledgerId = ledger.ledgerIdBuf;
  const supply = (await ledger.ledgerInfo()).supply;
  const { seedDir, data, torrent, torrentPath } = await makePayload(dir, SIZE, PIECE);

  // Seeder: auction choker with a reserve price; record what its upload gate was asked and what it served to whom.
  const served = new Map<string, number>();
  const gated = new Map<string, number>();
  const seeder = await startPeer(t, {
    torrent,
    path: seedDir,
    seed: true,
    agent: { ledger, ledgerId, keys: seederKeys, now: Date.now, pieceLength: PIECE, bidding: { enabled: false }, reservePrice: RESERVE, provider: { maxUnpaid: 1 } },
    gate: (g) => ({
      mayUpload: (k, p) => {
        const ok = g.mayUpload(k, p);
        if (!ok) gated.set(k, (gated.get(k) ?? 0) + 1);
        return ok;
      },
      onBlockUploaded: (k, p, n) => {
        served.set(k, (served.get(k) ?? 0) + n);
        g.onBlockUploaded?.(k, p, n);
      },
    }),
  });
  const sAgent = seeder.agent!;
  const legacyAtSeeder: { id: string; reason: string }[] = [];
  sAgent.on('legacy', (id: string, reason: string) => legacyAtSeeder.push({ id, reason }));
  const warnings: string[] = [];
  sAgent.on('warning', (m: string) => warnings.push(`seeder: ${m}`));
  const seederAddr = { host: '127.0.0.1', port: seeder.session.port };

  const bidders: SpeedPeer[] = [];
  for (const [i, keys] of bidderKeys.entries()) {
    const p = await startPeer(t, { torrent, path: join(dir, `bidder${i}`), peers: [seederAddr], agent: { ledger, ledgerId, keys, now: Date.now, pieceLength: PIECE } });
    p.agent!.on('warning', (m: string) => warnings.push(`bidder${i}: ${m}`));
    await p.agent!.refreshBalance();
    bidders.push(p);
  }
  const agents: SpeedAgent[] = [sAgent, ...bidders.map((b) => b.agent!)];
  const tick = ticker(t, () => agents);

  const ltDir = join(dir, 'lt');
  const lt = await startLibtorrent({ mode: 'download', torrent: torrentPath, savePath: ltDir, peers: [seederAddr] });

  const state = () => `lt ${JSON.stringify(lt.status())}; bidders ${bidders.map((b) => b.torrent.stats().progress.toFixed(2)).join(',')}; served ${JSON.stringify([...served])}; gated ${JSON.stringify([...gated])}; warnings ${JSON.stringify(warnings)}`;
  await withTimeout(Promise.all([lt.waitSeeding(25_000), ...bidders.map((b) => b.torrent.done)]), 25_000, state);

  // Byte for byte, for the legacy client and for the bidders.
  assert.ok(readFileSync(join(ltDir, 'payload.bin')).equals(data), 'libtorrent copy differs');
  for (const [i, b] of bidders.entries()) assert.ok(readFileSync(join(dir, `bidder${i}`, 'payload.bin')).equals(data), `bidder${i} copy differs`);
  assert.deepEqual(lt.events.filter((e) => e.event === 'hash_failed' || e.event === 'peer_banned' || e.event === 'error'), []);

  // The seeder saw libtorrent as a legacy peer (no bt_speed in its handshake) and served it for free.
  const speedIds = new Set(sAgent.peerIds());
  const legacyServed = [...served].filter(([k]) => !speedIds.has(k) && legacyAtSeeder.some((l) => l.id === k));
  assert.ok(legacyAtSeeder.length >= 1, 'seeder never classified libtorrent as legacy');
  assert.ok(legacyServed.length >= 1 && legacyServed.every(([, n]) => n > 0), `seeder served nothing to the legacy peer: ${state()}`);
  for (const [k] of legacyServed) assert.equal(gated.get(k), undefined, `the upload gate held blocks for legacy peer ${k}`);
  // Only the two bidders ever had a payment account at the seeder.
  const bidderAccounts = bidderKeys.map((k) => sAgent.provider.account(sAgent.provider.keyOf(k.publicKey)));
  assert.ok(bidderAccounts.every((a) => a !== undefined));

  // Every payment signed was accepted; then every provider closes its channels with the last state.
  const signed = () => agents.reduce((s, a) => s + a.totalPaid(), 0n);
  const accepted = () => agents.reduce((s, a) => s + a.provider.totalEarned(), 0n);
  await until(() => signed() === accepted() && !agents.some((a) => a.busy()), () => `signed ${signed()} accepted ${accepted()}`, 10_000, agents, ['earned', 'paid']);
  tick.stop();
  const earnedBySeeder = sAgent.provider.totalEarned();
  assert.ok(earnedBySeeder > 0n, 'nobody paid the seeder');
  t.diagnostic(`seeder earned ${earnedBySeeder}; served per peer ${JSON.stringify([...served])}; legacy ${JSON.stringify(legacyAtSeeder)}`);
  await Promise.all(agents.map((a) => a.shutdown()));

  // Ledger: the seeder holds exactly what it accepted; each bidder moved by exactly (earned − paid), counting
  // deposits still escrowed in channels nobody was paid on.
  assert.equal((await ledger.account(seederKeys.publicKey)).balance, earnedBySeeder);
  for (const [i, keys] of bidderKeys.entries()) {
    const key = sAgent.provider.keyOf(keys.publicKey);
    const paid = agents.reduce((s, a) => s + (a.provider.account(key)?.earned ?? 0n), 0n);
    assert.equal(bidders[i].agent!.totalPaid(), paid, `bidder${i} signed ≠ accepted`);
    const earned = bidders[i].agent!.provider.totalEarned();
    const escrow = (await ledger.channels(keys.publicKey)).filter((c) => c.status === 'open' && c.requester.equals(keys.publicKey)).reduce((s, c) => s + c.deposit, 0n);
    assert.equal((await ledger.account(keys.publicKey)).balance + escrow, START - paid + earned, `bidder${i} ledger balance`);
  }
  assert.equal((await ledger.ledgerInfo()).supply, supply);
  assert.deepEqual(warnings, []);
});
