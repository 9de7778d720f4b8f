/**
 * A provider that crashes before closing its channel. The seeder runs in its own process (provider-child.ts) and
 * persists every accepted payment state to a file before acknowledging it; the test kills it with SIGKILL
 * mid-transfer and starts it again on the same port and state file.
 *  - requester gone for good: the restarted provider closes the channel from the persisted state alone, before
 *    expiry, and the ledger pays it exactly that state;
 *  - requester still there: it reconnects, the transfer finishes, and the ledger moves by exactly what was accepted.
 * Also (in-process): a provider that closed on the ledger but crashed before persisting that fact re-closes from a
 * stale state: the ledger refuses (channel already closed); the provider must settle it, not retry forever.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LedgerClient, BTT } from '@bitorrent/ledger';
import { startProcess, cleanupAfter, freePort, type ManagedProcess } from '@bitorrent/testbed';
import { SpeedAgent } from '../src/agent.js';
import type { PersistedChannel } from '../src/payments.js';
import { decodePersisted } from './persist-codec.js';
import { tempDir, wallet, makePayload, startPeer, ticker, withTimeout, until, ledgerService, openLedger, type After } from './speed-swarm.js';

const PIECE = 16 * 1024;
const PIECES = 12;
const RESERVE = 1000n;
const START = 1000n * BTT;
const CHILD = fileURLToPath(new URL('./provider-child.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

interface ChildEvent {
  event: string;
  [k: string]: unknown;
}

/** Starts provider-child.ts; events() lists its JSON lines; next() waits for one matching. */
function startProvider(cfg: Record<string, unknown>) {
  const events: ChildEvent[] = [];
  const waiters = new Set<() => void>();
  const proc: ManagedProcess = startProcess(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(cfg)], {
    name: 'speed-provider',
    cwd: ROOT,
    env: { ...process.env, NODE_OPTIONS: '' },
    stdin: true,
    graceMs: 2_000,
    onLine(line) {
      if (!line.startsWith('{')) return;
      try {
        events.push(JSON.parse(line) as ChildEvent);
      } catch {
        return;
      }
      for (const w of waiters) w();
    },
  });
  const next = (event: string, pred: (e: ChildEvent) => boolean = () => true, ms = 20_000): Promise<ChildEvent> => {
    const find = () => events.find((e) => e.event === event && pred(e));
    const seen = find();
    if (seen) return Promise.resolve(seen);
    let w: () => void = () => {};
    return withTimeout(
      new Promise<ChildEvent>((resolve, reject) => {
        w = () => {
          const e = find();
          if (e) resolve(e);
        };
        waiters.add(w);
        void proc.exited.then(() => (find() ? undefined : reject(new Error(`provider exited before '${event}': ${proc.output().slice(-3000)}`))));
      }),
      ms,
      () => `provider event '${event}'; output: ${proc.output().slice(-3000)}`,
    ).finally(() => waiters.delete(w));
  };
  return { proc, events, next };
}

async function restartSwarm(t: After, seed: number) {
  const dir = tempDir(t, 'speed-restart-');
  const seederKeys = wallet(seed);
  const bidderKeys = wallet(seed + 1);
  const svc = await ledgerService(t, join(dir, 'ledger.db'), [bidderKeys.publicKey], START);
  const ledgerId = (await svc.ledger.ledgerInfo()).ledgerId;
  const { seedDir, data, torrent, torrentPath } = await makePayload(dir, PIECES * PIECE, PIECE);
  const port = await freePort();
  const stateFile = join(dir, 'provider-state.json');
  const cfg = { ledgerUrl: svc.url, torrentPath, seedDir, stateFile, walletSeed: seed, port, pieceLength: PIECE, reservePrice: RESERVE.toString(), idleCloseMs: 300, uploadRateLimit: 96 * 1024 };
  // The provider first, so that the bidder's first connection attempt finds it.
  const p1 = startProvider(cfg);
  await p1.next('ready');
  const client = new LedgerClient(svc.url, { timeoutMs: 2_000 });
  t.after(() => client.close());
  const bidder = await startPeer(t, { torrent, path: join(dir, 'bidder'), peers: [{ host: '127.0.0.1', port }], agent: { ledger: client, ledgerId, keys: bidderKeys, now: Date.now, pieceLength: PIECE } });
  const bAgent = bidder.agent!;
  const warnings: string[] = [];
  bAgent.on('warning', (m: string) => warnings.push(m));
  await bAgent.refreshBalance();
  return { dir, svc, seederKeys, bidderKeys, data, stateFile, cfg, p1, bidder, bAgent, warnings };
}

const sum = (list: PersistedChannel[]) => list.reduce((s, c) => s + c.cumulative, 0n);

test('provider SIGKILLed mid-transfer, requester gone: the restarted provider closes from its persisted state, paid exactly that', async (t) => {
  cleanupAfter(t);
  const s = await restartSwarm(t, 0x81);
  const p1 = s.p1;
  const t0 = Date.now();
  const tick = ticker(t, () => [s.bAgent]);
  // Two pieces' worth accepted and written to disk (then acked): crash now.
  await p1.next('persisted', (e) => BigInt(String(e.total)) >= 2n * RESERVE * BigInt(PIECE));
  process.kill(p1.proc.pid, 'SIGKILL');
  assert.equal(await p1.proc.exited, -1);
  // The requester goes away too: nobody will resync the provider.
  tick.stop();
  await s.bidder.session.close();

  const printed = p1.events.filter((e) => e.event === 'persisted').map((e) => BigInt(String(e.total)));
  const onDisk = decodePersisted(readFileSync(s.stateFile, 'utf8'));
  assert.equal(onDisk.length, 1);
  const expected = sum(onDisk);
  // Every state reported durable is on disk; nothing on disk was not signed by the requester.
  assert.ok(expected >= printed[printed.length - 1] && expected <= s.bAgent.totalPaid(), `disk ${expected}, printed ${printed}, signed ${s.bAgent.totalPaid()}`);
  assert.ok(expected < RESERVE * BigInt(PIECES * PIECE), 'the crash was not mid-transfer');
  assert.equal(expected % (RESERVE * BigInt(PIECE)), 0n, 'paid per whole piece');
  const chId = onDisk[0].info.id;
  assert.equal((await s.svc.ledger.channel(chId))?.status, 'open');
  assert.equal((await s.svc.ledger.account(s.seederKeys.publicKey)).balance, 0n);

  t.diagnostic(`killed after ${Date.now() - t0} ms with ${expected} persisted`);
  const p2 = startProvider(s.cfg);
  const restored = await p2.next('restored');
  assert.equal(BigInt(String(restored.total)), expected);
  const closed = await p2.next('channel-closed');
  assert.equal(closed.id, chId.toString('hex'));
  assert.equal(BigInt(String(closed.amount)), expected);
  const ch = (await s.svc.ledger.channel(chId))!;
  assert.equal(ch.status, 'closed');
  assert.equal(ch.settled, expected);
  assert.ok(Date.now() < ch.expiresAt, 'closed before expiry');
  assert.equal((await s.svc.ledger.account(s.seederKeys.publicKey)).balance, expected);
  assert.equal((await s.svc.ledger.account(s.bidderKeys.publicKey)).balance, START - expected);
  assert.equal((await s.svc.ledger.ledgerInfo()).openChannels, 0);
  assert.deepEqual(p2.events.filter((e) => e.event === 'warning' || e.event === 'error'), []);
  t.diagnostic(`restarted and closed after ${Date.now() - t0} ms`);
  await p2.proc.stop();
});

test('provider SIGKILLed mid-transfer, requester still there: it reconnects to the restarted provider, finishes, ledger exact', async (t) => {
  cleanupAfter(t);
  const s = await restartSwarm(t, 0x91);
  ticker(t, () => [s.bAgent]);
  await s.p1.next('persisted', (e) => BigInt(String(e.total)) >= 2n * RESERVE * BigInt(PIECE));
  process.kill(s.p1.proc.pid, 'SIGKILL');
  await s.p1.proc.exited;
  const before = sum(decodePersisted(readFileSync(s.stateFile, 'utf8')));
  const p2 = startProvider(s.cfg);
  await p2.next('restored');
  await withTimeout(s.bidder.torrent.done, 25_000, () => `bidder done: ${JSON.stringify(s.bidder.torrent.stats())}; provider: ${p2.proc.output().slice(-2000)}`);
  assert.ok(readFileSync(join(s.dir, 'bidder', 'payload.bin')).equals(s.data));
  // Everything the restarted provider accepted, plus what was on disk from before the crash, and nothing else.
  const earnedAfter = () => {
    const e = p2.events.filter((x) => x.event === 'earned');
    return e.length ? BigInt(String(e[e.length - 1].total)) : 0n;
  };
  // The requester left once complete: the provider closes its channel (idle) with everything it accepted.
  const settled = () => {
    const lastEarned = p2.events.map((e) => e.event).lastIndexOf('earned');
    const lastEmpty = p2.events.map((e) => (e.event === 'persisted' && e.channels === 0 ? 'empty' : '')).lastIndexOf('empty');
    return lastEarned >= 0 && lastEmpty > lastEarned;
  };
  await until(settled, () => `provider closes after the transfer: ${p2.proc.output().slice(-2000)}`);
  p2.proc.send('{"cmd":"shutdown"}');
  assert.equal(await p2.proc.exited, 0);
  const expected = before + earnedAfter();
  // At most the one payment signed just before the crash (K = 1 piece) never reached the provider.
  const lost = s.bAgent.totalPaid() - expected;
  assert.ok(lost >= 0n && lost <= RESERVE * BigInt(PIECE), `signed ${s.bAgent.totalPaid()}, accepted ${expected}`);
  assert.equal((await s.svc.ledger.account(s.seederKeys.publicKey)).balance, expected);
  const escrow = (await s.svc.ledger.channels(s.bidderKeys.publicKey)).filter((c) => c.status === 'open').reduce((a, c) => a + c.deposit, 0n);
  assert.equal((await s.svc.ledger.account(s.bidderKeys.publicKey)).balance + escrow, START - expected);
  const closes = p2.events.filter((e) => e.event === 'channel-closed').map((e) => BigInt(String(e.amount)));
  assert.equal(closes.reduce((a, b) => a + b, 0n), expected, 'closes carry every accepted payment');
  t.diagnostic(`before crash ${before}, after restart ${earnedAfter()}, signed ${s.bAgent.totalPaid()}, closes ${closes}; bidder warnings ${JSON.stringify(s.warnings)}`);
});

test('provider closed on the ledger but crashed before recording it: the restarted provider settles from the ledger, no retry loop', async (t) => {
  const dir = tempDir(t, 'speed-reclose-');
  let clock = Date.now();
  const now = () => clock;
  const seederKeys = wallet(0xa1);
  const bidderKeys = wallet(0xa2);
  const ledger = await openLedger(t, dir, [bidderKeys.publicKey], START, now);
  const ledgerId = ledger.ledgerIdBuf;
  const { seedDir, torrent } = await makePayload(dir, 4 * PIECE, PIECE);
  const snapshots: PersistedChannel[][] = [];
  const seeder = await startPeer(t, {
    torrent,
    path: seedDir,
    seed: true,
    agent: { ledger, ledgerId, keys: seederKeys, now, pieceLength: PIECE, bidding: { enabled: false }, reservePrice: RESERVE, provider: { maxUnpaid: 1 }, persist: (l) => snapshots.push(l) },
  });
  const bidder = await startPeer(t, { torrent, path: join(dir, 'bidder'), peers: [{ host: '127.0.0.1', port: seeder.session.port }], agent: { ledger, ledgerId, keys: bidderKeys, now, pieceLength: PIECE } });
  await bidder.agent!.refreshBalance();
  const tick = ticker(t, () => [seeder.agent!, bidder.agent!]);
  await withTimeout(bidder.torrent.done, 20_000, () => JSON.stringify(bidder.torrent.stats()));
  const expected = RESERVE * BigInt(4 * PIECE);
  await until(() => seeder.agent!.provider.totalEarned() === expected, () => `earned ${seeder.agent!.provider.totalEarned()}`);
  tick.stop();
  // The state file as it was just before the close (the close lands on the ledger, then the process dies).
  const stale = snapshots[snapshots.length - 1];
  assert.equal(sum(stale), expected);
  await seeder.agent!.shutdown();
  assert.equal((await ledger.account(seederKeys.publicKey)).balance, expected);

  const restarted = new SpeedAgent({ ledger, ledgerId, keys: seederKeys, now, pieceLength: PIECE, bidding: { enabled: false }, reservePrice: RESERVE, provider: { idleCloseMs: 1_000 }, persist: (l) => snapshots.push(l) });
  const warnings: string[] = [];
  const closed: bigint[] = [];
  restarted.on('warning', (m: string) => warnings.push(m));
  restarted.on('channel-closed', (_id: Buffer, amount: bigint) => closed.push(amount));
  restarted.provider.importChannels(stale, clock);
  clock += 1_000; // the requester stays away: idle close
  await restarted.tick();
  // The ledger already holds the close with this very state: settled, recorded, forgotten.
  assert.deepEqual(restarted.provider.exportChannels(), [], `still held after the ledger refused the re-close; warnings: ${JSON.stringify(warnings)}`);
  assert.deepEqual(snapshots[snapshots.length - 1], []);
  assert.deepEqual(closed, [expected]);
  clock += 60_000;
  await restarted.tick();
  assert.deepEqual(warnings, []);
  assert.equal((await ledger.account(seederKeys.publicKey)).balance, expected);
  assert.equal((await ledger.account(bidderKeys.publicKey)).balance, START - expected);
});
