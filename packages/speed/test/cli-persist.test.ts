/**
 * setupSpeed's provider state file (virtual time, in-process ledger):
 *  - states left by a process that is gone are restored, the dead file adopted, a running process's file left alone;
 *  - close() while the ledger is down leaves every state on disk (exact bytes of the states);
 *  - the next start restores them and its tick closes them before expiry: the ledger pays exactly those states;
 *  - the balance fetch that failed at start is retried until bidding can start.
 * Also the codec and durable store on their own (hostile file contents give clear errors, never a crash).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { BTT, signPaymentState, encryptKeystore, writeKeystore, type KeyPair, type Ledger } from '@bitorrent/ledger';
import { setupSpeed } from '../src/cli-options.js';
import type { PersistedChannel } from '../src/payments.js';
import { ChannelStateStore, decodePersisted, encodePersisted, mergePersisted, speedStateDir } from '../src/persist.js';
import { tempDir, wallet, openLedger, makePayload } from './speed-swarm.js';
import { Session } from '@bitorrent/core';

const START = 100n * BTT;
const HOUR = 3_600_000;

/** The in-process ledger behind a switch: while `down`, every call fails as an unreachable server would. */
function switchable(ledger: Ledger) {
  const w = {
    down: false,
    calls: 0,
    failed: 0,
    /** Resolves once `n` calls have failed in total. */
    failures(n: number): Promise<void> {
      return new Promise((resolve) => {
        const check = () => (w.failed >= n ? resolve() : w.waiters.push(check));
        check();
      });
    },
    waiters: [] as (() => void)[],
    guard() {
      w.calls++;
      if (w.down) w.failed++;
      for (const f of w.waiters.splice(0)) queueMicrotask(f);
      if (w.down) throw new Error('connect ECONNREFUSED 127.0.0.1:1 (simulated outage)');
    },
    ledgerInfo: async () => (w.guard(), ledger.ledgerInfo()),
    account: async (pk: Buffer) => (w.guard(), ledger.account(pk)),
    channel: async (id: Buffer) => (w.guard(), ledger.channel(id)),
    openChannel: async (a: Parameters<Ledger['openChannel']>[0]) => (w.guard(), ledger.openChannel(a)),
    closeChannel: async (a: Parameters<Ledger['closeChannel']>[0]) => (w.guard(), ledger.closeChannel(a)),
  };
  return w;
}

/** A pid that belonged to a process which has exited (a child we ran to completion). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', ''], { stdio: 'ignore' });
  assert.equal(r.status, 0);
  return r.pid!;
}

async function channelWithState(ledger: Ledger, requester: KeyPair, provider: KeyPair, deposit: bigint, seq: bigint, cumulative: bigint, expiresAt: number): Promise<PersistedChannel> {
  const { channelId } = await ledger.openChannel({ requesterKeys: requester, provider: provider.publicKey, deposit, expiresAt });
  const info = (await ledger.channel(channelId))!;
  const sig = signPaymentState({ ledgerId: ledger.ledgerIdBuf, channelId, sequence: seq, cumulative }, requester.secretKey);
  return { requester: requester.publicKey.toString('hex'), info, sequence: seq, cumulative, sig };
}

test('setupSpeed: states of a dead process restored; close() with the ledger down keeps them on disk; next start closes them, exact', async (t) => {
  const dir = tempDir(t, 'speed-cli-persist-');
  let clock = 1_800_000_000_000;
  const now = () => clock;
  const prov = wallet(0x31);
  const reqA = wallet(0x32);
  const reqB = wallet(0x33);
  const ledger = await openLedger(t, dir, [reqA.publicKey, reqB.publicKey], START, now);
  const ledgerId = ledger.ledgerIdBuf;
  const expiresAt = clock + 2 * HOUR;
  const chA = await channelWithState(ledger, reqA, prov, 10n * BTT, 7n, 1_234_567_890_123n, expiresAt);
  const chA0 = { ...chA, sequence: 3n, cumulative: 1_000n, sig: signPaymentState({ ledgerId, channelId: chA.info.id, sequence: 3n, cumulative: 1_000n }, reqA.secretKey) };
  const chB = await channelWithState(ledger, reqB, prov, 5n * BTT, 2n, 4n * BTT + 17n, expiresAt);
  const chLive = await channelWithState(ledger, reqB, prov, 1n * BTT, 1n, 99n, expiresAt);

  const stateDir = join(dir, 'state');
  const sdir = speedStateDir(stateDir, ledgerId, prov.publicKey);
  // Two crashed runs (one with an older state of channel A) and one run that is still going (our parent process).
  const dead1 = deadPid();
  const dead2 = deadPid();
  new ChannelStateStore(sdir, { pid: dead1 }).save([chA0, chB]);
  new ChannelStateStore(sdir, { pid: dead2 }).save([chA]);
  const liveFile = new ChannelStateStore(sdir, { pid: process.ppid }).file;
  new ChannelStateStore(sdir, { pid: process.ppid }).save([chLive]);
  const liveBytes = readFileSync(liveFile);

  const walletPath = join(dir, 'wallet.json');
  writeKeystore(walletPath, encryptKeystore(prov, 'pw', 1 << 10));
  const l = switchable(ledger);
  const logs: string[] = [];
  const ctx = { stdout: () => {}, log: (s: string) => void logs.push(s), env: { BITORRENT_PASSPHRASE: 'pw' }, ledger: l, now, tickMs: 24 * HOUR, stateDir, provider: { idleCloseMs: 60_000 } };
  const flags = { speed: true, wallet: walletPath, 'spending-rate': '0', 'reserve-price': '10' };

  const s1 = (await setupSpeed(flags, ctx))!;
  assert.ok(s1);
  t.after(() => s1.close());
  const key = (c: PersistedChannel) => `${c.info.id.toString('hex')}:${c.sequence}:${c.cumulative}`;
  assert.deepEqual(s1.restored.map(key).sort(), [chA, chB].map(key).sort(), 'newest state per channel, the live run left alone');
  assert.deepEqual(readdirSync(sdir).sort(), [`channels-${process.pid}.json`, `channels-${process.ppid}.json`].sort());
  assert.ok(readFileSync(liveFile).equals(liveBytes));
  assert.deepEqual(decodePersisted(readFileSync(s1.stateFile, 'utf8')).map(key).sort(), [chA, chB].map(key).sort());
  assert.match(logs.join('\n'), /2 unclosed channel\(s\) from an earlier run restored \(4\.00000123456789014 BTT owed to us\)/);

  s1.perTorrentOptions(Buffer.alloc(20, 1), () => 0);
  const a1 = s1.agents[0];
  assert.equal(a1.provider.heldState(chA.info.id)?.cumulative, chA.cumulative);
  // Shutting down while the ledger is unreachable: both closes fail, both states stay on disk, exactly.
  l.down = true;
  await s1.close();
  const kept = decodePersisted(readFileSync(s1.stateFile, 'utf8'));
  assert.deepEqual(kept.map(key).sort(), [chA, chB].map(key).sort());
  assert.ok(kept.every((c) => c.sig.equals(c.info.id.equals(chA.info.id) ? chA.sig : chB.sig)));
  assert.match(logs.join('\n'), /2 channel\(s\) could not be closed now; kept in/);
  assert.equal((await ledger.account(prov.publicKey)).balance, 0n);

  // Next start (same pid: the file named after us is a dead run's), the ledger still down: Speed starts with the
  // ledger id recorded by the last run, restores the states, and keeps trying to close them.
  logs.length = 0;
  const s2 = (await setupSpeed(flags, ctx))!;
  assert.ok(s2, logs.join('\n'));
  t.after(() => s2.close());
  assert.match(logs.join('\n'), /unreachable .*using its id from an earlier run/);
  assert.match(s2.disclosure, /balance unknown \(ledger unreachable\)/);
  assert.equal(s2.restored.length, 2);
  s2.perTorrentOptions(Buffer.alloc(20, 1), () => 0);
  const a2 = s2.agents[0];
  const closed: bigint[] = [];
  a2.on('channel-closed', (_id: Buffer, amount: bigint) => closed.push(amount));
  await a2.tick(); // requesters not back yet, not idle long enough
  clock += 60_000; // nobody reconnected within idleCloseMs: close with the last states — the ledger is down
  await a2.tick();
  assert.deepEqual(closed, []);
  assert.deepEqual(decodePersisted(readFileSync(s2.stateFile, 'utf8')).map(key).sort(), [chA, chB].map(key).sort());
  l.down = false;
  clock += 1_000;
  await a2.tick(); // retried
  assert.deepEqual(closed.sort(), [chA.cumulative, chB.cumulative].sort());
  for (const c of [chA, chB]) {
    const info = (await ledger.channel(c.info.id))!;
    assert.equal(info.status, 'closed');
    assert.equal(info.settled, c.cumulative);
    assert.ok(clock < info.expiresAt);
  }
  assert.equal((await ledger.account(prov.publicKey)).balance, chA.cumulative + chB.cumulative);
  assert.equal((await ledger.account(reqA.publicKey)).balance, START - chA.cumulative);
  assert.equal((await ledger.account(reqB.publicKey)).balance, START - chB.cumulative - 1n * BTT); // chLive still in escrow
  assert.equal(existsSync(s2.stateFile), false, 'nothing left to close: file removed');
  await s2.close();
  assert.deepEqual(readdirSync(sdir), [`channels-${process.ppid}.json`]);
});

test('setupSpeed: a balance fetch that fails at start is retried on the tick until the ledger answers', async (t) => {
  const dir = tempDir(t, 'speed-cli-balance-');
  let clock = 1_800_000_000_000;
  const now = () => clock;
  const keys = wallet(0x41);
  const ledger = await openLedger(t, dir, [keys.publicKey], START, now);
  const walletPath = join(dir, 'wallet.json');
  writeKeystore(walletPath, encryptKeystore(keys, 'pw', 1 << 10));
  const l = switchable(ledger);
  // Up for ledgerInfo + the disclosure's balance, then down when the agent asks.
  const logs: string[] = [];
  const s = (await setupSpeed({ speed: true, wallet: walletPath }, { stdout: () => {}, log: (m: string) => void logs.push(m), env: { BITORRENT_PASSPHRASE: 'pw' }, ledger: l, now, tickMs: 5, stateDir: join(dir, 'st'), balanceRetryMs: 1_000 }))!;
  t.after(() => s.close());
  // setupSpeed's tick timer is unref'd (the CLI's session keeps the process alive): stand in for the session.
  const alive = setInterval(() => {}, 1_000);
  t.after(() => clearInterval(alive));
  l.down = true;
  s.perTorrentOptions(Buffer.alloc(20, 2), () => 1 << 20);
  const agent = s.agents[0];
  const bids: bigint[] = [];
  agent.on('bid', (p: bigint) => bids.push(p));
  await l.failures(1);
  await new Promise<void>((r) => setImmediate(r));
  assert.match(logs.join('\n'), /balance unavailable .* bidding waits for the ledger \(retrying\)/);
  assert.deepEqual(bids, []);
  clock += 1_000; // the tick (every 5 ms) retries once the virtual retry time has come: still down
  await l.failures(2);
  await new Promise<void>((r) => setImmediate(r)); // the failure is handled (next retry scheduled) before time moves
  assert.deepEqual(bids, []);
  l.down = false;
  clock += 1_000;
  await new Promise<void>((resolve) => agent.once('bid', () => resolve()));
  assert.ok(bids.length > 0 && bids[0] > 0n, `bidding started: ${bids}`);
});

test('persist codec and store: round trip, merge, hostile files give clear errors', (t) => {
  const dir = tempDir(t, 'speed-persist-');
  const ch = (id: number, seq: bigint, cum: bigint): PersistedChannel => ({
    requester: 'ab'.repeat(32),
    info: { id: Buffer.alloc(32, id), ledgerId: Buffer.alloc(32, 9), requester: Buffer.alloc(32, 0xab), provider: Buffer.alloc(32, 1), deposit: 10n ** 30n, expiresAt: 1_900_000_000_000, status: 'open', settled: 0n, openedAt: 1, } as unknown as PersistedChannel['info'],
    sequence: seq,
    cumulative: cum,
    sig: Buffer.alloc(64, id),
  });
  const list = [ch(1, 5n, 2n ** 100n), ch(2, 1n, 1n)];
  const back = decodePersisted(encodePersisted(list));
  assert.deepEqual(back, list);
  assert.deepEqual(mergePersisted([ch(1, 5n, 50n)], [ch(1, 6n, 60n), ch(2, 1n, 1n)], [ch(1, 4n, 40n)]).map((c) => c.cumulative), [60n, 1n]);
  for (const [text, msg] of [
    ['', /not JSON/],
    ['{"v":1,"channels":[{"requester":"x"}]}', /malformed channel entry/],
    ['{"v":2,"channels":[]}', /unknown format/],
    ['null', /unknown format/],
    ['{"v":1,"channels":[null]}', /malformed channel entry/],
    [encodePersisted(list).slice(0, 100), /not JSON/],
  ] as const) assert.throws(() => decodePersisted(text), msg);
  // A corrupt file of a dead run is reported and left in place; the rest is recovered.
  const sdir = join(dir, 's');
  mkdirSync(sdir);
  const pid = deadPid();
  writeFileSync(join(sdir, `channels-${pid}.json`), '{"v":1,"chan');
  writeFileSync(join(sdir, `channels-${pid + 1}.json.${pid + 1}.tmp`), '{"v":1,"channels":[{"requ'); // killed mid-write
  new ChannelStateStore(sdir, { pid: pid + 1, isAlive: () => false }).save([ch(3, 1n, 7n)]);
  const store = new ChannelStateStore(sdir, { pid: 424242, isAlive: () => false });
  const rec = store.recover();
  assert.deepEqual(rec.channels.map((c) => c.cumulative), [7n]);
  assert.equal(rec.errors.length, 1);
  assert.match(rec.errors[0], /not JSON/);
  store.save(rec.channels);
  store.adopt(rec.files);
  assert.deepEqual(readdirSync(sdir).sort(), [`channels-${pid}.json`, 'channels-424242.json'].sort());
});

test('store group commit: concurrent saveLatest calls share writes, each resolves after a write holding its state, the file ends with the newest', async (t) => {
  const dir = tempDir(t, 'speed-group-');
  const store = new ChannelStateStore(join(dir, 's'), { pid: 777, isAlive: () => false });
  const ch = (cum: bigint): PersistedChannel => ({
    requester: 'cd'.repeat(32),
    info: { id: Buffer.alloc(32, 4), ledgerId: Buffer.alloc(32, 9), requester: Buffer.alloc(32, 0xcd), provider: Buffer.alloc(32, 1), deposit: 10n ** 30n, expiresAt: 1_900_000_000_000, status: 'open', settled: 0n, openedAt: 1 } as unknown as PersistedChannel['info'],
    sequence: cum,
    cumulative: cum,
    sig: Buffer.alloc(64, 4),
  });
  let current = 0n;
  let reads = 0;
  const get = () => {
    reads++;
    return [ch(current)];
  };
  const done: Promise<void>[] = [];
  const onDisk: bigint[] = [];
  for (let i = 1n; i <= 50n; i++) {
    current = i;
    const mine = i;
    // When a caller's promise resolves, the file holds its state or a newer one.
    done.push(store.saveLatest(get).then(() => {
      const c = decodePersisted(readFileSync(store.file, 'utf8'))[0].cumulative;
      assert.ok(c >= mine, `save ${mine} resolved with ${c} on disk`);
      onDisk.push(c);
    }));
    if (i % 10n === 0n) await new Promise<void>((r) => setImmediate(r));
  }
  await Promise.all(done);
  assert.ok(reads < 50 && reads >= 2, `${reads} writes for 50 saves`);
  assert.equal(decodePersisted(readFileSync(store.file, 'utf8'))[0].cumulative, 50n);
  // A failing write rejects exactly the callers it covered; the next one succeeds again.
  current = 0n;
  await store.saveLatest(() => []);
  assert.equal(existsSync(store.file), false, 'empty list removes the file');
  await assert.rejects(store.saveLatest(() => { throw new Error('disk full'); }), /disk full/);
  await store.saveLatest(() => [ch(60n)]);
  assert.equal(decodePersisted(readFileSync(store.file, 'utf8'))[0].cumulative, 60n);
});

test('setupSpeed: a torrent given as .torrent file bytes (as the CLI reads it) gets its agent attached; a magnet too', async (t) => {
  const dir = tempDir(t, 'speed-cli-attach-');
  const keys = wallet(0x45);
  const ledger = await openLedger(t, dir, [keys.publicKey], START);
  const walletPath = join(dir, 'wallet.json');
  writeKeystore(walletPath, encryptKeystore(keys, 'pw', 1 << 10));
  const logs: string[] = [];
  const s = (await setupSpeed({ speed: true, wallet: walletPath }, { stdout: () => {}, log: (m: string) => void logs.push(m), env: { BITORRENT_PASSPHRASE: 'pw' }, ledger, stateDir: join(dir, 'st') }))!;
  t.after(() => s.close());
  const { seedDir, torrent } = await makePayload(dir, 4 * 16384, 16384);
  const session = new Session({ port: 0, host: '127.0.0.1', hasherWorkers: 0 });
  t.after(() => session.close());
  const opts = s.perTorrentOptions(torrent, () => 0);
  const tor = await session.add({ ...opts, torrent, path: seedDir, seed: true, skipHashCheck: true });
  s.attach(tor);
  const magnet = `magnet:?xt=urn:btih:${'ab'.repeat(20)}`;
  const tor2 = await session.add({ ...s.perTorrentOptions(magnet, () => 0), torrent: magnet, path: join(dir, 'm') });
  s.attach(tor2);
  assert.equal(s.agents.length, 2);
  // Attached: the agent listens for verified pieces (payments) on each torrent.
  assert.equal(tor.listenerCount('verified'), 1);
  assert.equal(tor2.listenerCount('verified'), 1);
  assert.deepEqual(logs.filter((l) => /no agent for torrent/.test(l)), [], logs.join('\n'));
});
