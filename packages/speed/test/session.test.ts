/**
 * SpeedAgent on real core Sessions through the per-torrent hooks (extensions, choker, uploadGate): one seeder
 * session and one leecher session, each holding TWO torrents with their own agent. Both torrents complete, each
 * agent is paid exactly for its own torrent, the provider's exposure never exceeds K = 1 unpaid piece per
 * requester, and the ledger balances move by exactly the payments.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Session, createTorrent, type Torrent } from '@bitorrent/core';
import { Ledger, keyPairFromSeed, BTT } from '@bitorrent/ledger';
import { SpeedAgent } from '../src/agent.js';

const PIECE = 32 * 1024;
const SIZE = 12 * PIECE;
const RESERVE = 1000n;

test('one session, two torrents, each with its own Speed agent: both paid per piece, exposure ≤ 1 piece, ledger matches', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'speed-session-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const seederKeys = [keyPairFromSeed(Buffer.alloc(32, 0x31)), keyPairFromSeed(Buffer.alloc(32, 0x32))];
  const leechKeys = [keyPairFromSeed(Buffer.alloc(32, 0x33)), keyPairFromSeed(Buffer.alloc(32, 0x34))];
  const START = 1000n * BTT;
  const ledger = await Ledger.open({
    db: join(dir, 'ledger.db'),
    ledgerKeys: keyPairFromSeed(Buffer.alloc(32, 0x30)),
    genesis: { allocations: leechKeys.map((k) => ({ account: k.publicKey, amount: START })), faucetAmount: 0n },
    verifyThreads: 0,
  });
  t.after(() => ledger.close());
  const ledgerId = ledger.ledgerIdBuf;
  const supply = (await ledger.ledgerInfo()).supply;

  const seedDir = join(dir, 'seed');
  mkdirSync(seedDir);
  const torrents: Buffer[] = [];
  for (const name of ['a.bin', 'b.bin']) {
    writeFileSync(join(seedDir, name), randomBytes(SIZE));
    torrents.push((await createTorrent({ path: join(seedDir, name), pieceLength: PIECE })).torrent);
  }

  const seeders = seederKeys.map((keys) => new SpeedAgent({ ledger, ledgerId, keys, now: Date.now, pieceLength: PIECE, bidding: { enabled: false }, reservePrice: RESERVE, provider: { maxUnpaid: 1 } }));
  const leeches = leechKeys.map((keys) => new SpeedAgent({ ledger, ledgerId, keys, now: Date.now, pieceLength: PIECE }));
  const warnings: string[] = [];
  for (const a of [...seeders, ...leeches]) a.on('warning', (m: string) => warnings.push(m));

  // Exposure: wrap each seeder's gate and record the unpaid pieces after every block sent.
  let maxUnpaid = 0;
  const seedSession = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 0 });
  const leechSession = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 0 });
  t.after(() => Promise.all([seedSession.close(), leechSession.close()]));
  await seedSession.listen();
  await leechSession.listen();
  const seedTorrents: Torrent[] = [];
  for (let i = 0; i < 2; i++) {
    const a = seeders[i];
    const opts = a.torrentOptions();
    const gate = opts.uploadGate!;
    opts.uploadGate = {
      mayUpload: (k, p) => gate.mayUpload(k, p),
      onBlockUploaded: (k, p, n) => {
        gate.onBlockUploaded!(k, p, n);
        for (const key of [leechKeys[0], leechKeys[1]].map((lk) => a.provider.keyOf(lk.publicKey))) maxUnpaid = Math.max(maxUnpaid, a.provider.account(key)?.unpaidPieces ?? 0);
      },
    };
    const tor = await seedSession.add({ ...opts, torrent: torrents[i], path: seedDir, skipHashCheck: true });
    a.attach(tor);
    seedTorrents.push(tor);
  }
  const leechTorrents: Torrent[] = [];
  for (let i = 0; i < 2; i++) {
    const tor = await leechSession.add({ ...leeches[i].torrentOptions(), torrent: torrents[i], path: join(dir, 'leech'), peers: [{ host: '127.0.0.1', port: seedSession.port }] });
    leeches[i].attach(tor);
    leechTorrents.push(tor);
  }
  await Promise.all(leeches.map((a) => a.refreshBalance()));
  const timer = setInterval(() => {
    for (const a of [...seeders, ...leeches]) void a.tick();
  }, 100);
  t.after(() => clearInterval(timer));
  const deadline = new Promise((_, rej) => setTimeout(() => rej(new Error('transfers did not complete in 30 s')), 30_000).unref());
  await Promise.race([Promise.all(leechTorrents.map((tor) => tor.done)), deadline]);

  // Every piece of each torrent was bought from its own seeder agent at the reserve price (sole bidder).
  const expected = RESERVE * BigInt(SIZE);
  for (let i = 0; i < 2; i++) {
    const key = seeders[i].provider.keyOf(leechKeys[i].publicKey);
    const until = Date.now() + 10_000;
    while (seeders[i].provider.account(key)?.earned !== expected && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    assert.equal(seeders[i].provider.account(key)?.earned, expected, `torrent ${i}: seeder earned`);
    assert.equal(leeches[i].totalPaid(), expected, `torrent ${i}: leecher paid`);
    // On its first bid the seeder read the requester's balance on the ledger (what lets it serve before the channel).
    assert.ok((seeders[i].provider.account(key)?.fundsSeen ?? 0n) > 0n, `torrent ${i}: requester's funds looked up`);
    // The other torrent's agent never saw this requester.
    assert.equal(seeders[1 - i].provider.account(key), undefined, `torrent ${i}: foreign agent involved`);
  }
  assert.ok(maxUnpaid >= 1 && maxUnpaid <= 1, `exposure ${maxUnpaid} pieces`);
  clearInterval(timer);
  await Promise.all(seeders.map((a) => a.shutdown()));
  for (let i = 0; i < 2; i++) {
    assert.equal((await ledger.account(seederKeys[i].publicKey)).balance, expected);
    const open = (await ledger.channels(leechKeys[i].publicKey)).filter((c) => c.status === 'open').reduce((s, c) => s + c.deposit, 0n);
    assert.equal((await ledger.account(leechKeys[i].publicKey)).balance + open, START - expected);
  }
  assert.equal((await ledger.ledgerInfo()).supply, supply);
  assert.deepEqual(warnings, []);
});
