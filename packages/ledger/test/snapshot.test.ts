import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { join } from 'node:path';
import { copyFileSync, readFileSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import Database from 'better-sqlite3';
import { makeLedger, seededKeys, tempDir, VirtualClock } from './helpers.js';
import { Ledger, sealSnapshot } from '../src/ledger.js';
import { LedgerError, type LedgerState } from '../src/state.js';
import { signPaymentState } from '../src/payment.js';
import { signOp, newOpId } from '../src/ops.js';
import type { KeyPair } from '../src/keys.js';

/** Everything observable in a state, as plain comparable data (including what start-up derives). */
function view(s: LedgerState): unknown {
  const hex = (b: Buffer) => b.toString('hex');
  return {
    height: s.height,
    lastHash: hex(s.lastHash),
    lastTime: s.lastTime,
    digest: hex(s.digest),
    escrow: s.escrow,
    openChannels: s.openChannels,
    accounts: [...s.accounts].map(([k, a]) => [hex(Buffer.from(k, 'latin1')), a.balance, a.faucetClaimed]).sort(),
    channels: [...s.channels.values()].map((c) => ({ ...c, id: hex(c.id), requester: hex(c.requester), provider: hex(c.provider) })),
    ops: [...s.ops].map(([k, r]) => [hex(Buffer.from(k, 'latin1')), r.seq, hex(r.msgHash), r.channelId ? hex(r.channelId) : null]).sort(),
    byAccount: [...s.channelsByAccount].map(([k, l]) => [hex(Buffer.from(k, 'latin1')), l.map(hex)]).sort(),
  };
}

async function openAt(db: string, clock: VirtualClock, extra: { snapshotEvery?: number } = {}): Promise<Ledger> {
  return Ledger.open({ db, ledgerKeys: seededKeys('ledger'), clock: clock.now, expiryIntervalMs: 0, verifyThreads: 0, ...extra });
}

/** A mixed workload: transfers, channels opened/topped up/closed/expired, faucet claims, retries (op ids from the virtual clock). */
async function workload(l: Ledger, clock: VirtualClock, keys: KeyPair[], rnd: () => number, n: number): Promise<number> {
  const h0 = l.state.height;
  const lid = l.state.ledgerId;
  const channels: { id: Buffer; req: KeyPair; prov: KeyPair }[] = [];
  const sent: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const x = rnd();
    const a = keys[Math.floor(rnd() * keys.length)]!;
    const b = keys[Math.floor(rnd() * keys.length)]!;
    try {
      if (x < 0.35) {
        const op = signOp(lid, a, { kind: 'transfer', to: b.publicKey, amount: BigInt(1 + Math.floor(rnd() * 50)) }, newOpId(clock.t));
        await l.submit(op.wire);
        sent.push(op.wire);
      } else if (x < 0.55) {
        const r = await l.openChannel({ requesterKeys: a, provider: b.publicKey, deposit: BigInt(1 + Math.floor(rnd() * 100)), expiresAt: clock.t + 500 + Math.floor(rnd() * 3000), opId: newOpId(clock.t) });
        channels.push({ id: r.channelId, req: a, prov: b });
      } else if (x < 0.65 && channels.length) {
        const c = channels[Math.floor(rnd() * channels.length)]!;
        const info = await l.channel(c.id);
        await l.topUp({ requesterKeys: c.req, channelId: c.id, amount: 5n, expiresAt: (info?.expiresAt ?? clock.t) + 100, opId: newOpId(clock.t) });
      } else if (x < 0.8 && channels.length) {
        const c = channels.splice(Math.floor(rnd() * channels.length), 1)[0]!;
        const info = await l.channel(c.id);
        const state = { ledgerId: lid, channelId: c.id, sequence: 3n, cumulative: (info?.deposit ?? 0n) / 2n };
        await l.closeChannel({ providerKeys: c.prov, state, signature: signPaymentState(state, c.req.secretKey), opId: newOpId(clock.t) });
      } else if (x < 0.9) {
        clock.advance(Math.floor(rnd() * 1500));
        await l.tick();
      } else if (x < 0.95) {
        await l.faucet({ keys: a, opId: newOpId(clock.t) });
      } else if (sent.length) {
        assert.equal((await l.submit(sent[Math.floor(rnd() * sent.length)]!)).duplicate, true);
      }
    } catch (e) {
      if (!(e instanceof LedgerError)) throw e;
    }
  }
  return l.state.height - h0;
}

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const genesisFor = (keys: KeyPair[], clock: VirtualClock) => ({
  allocations: keys.slice(0, 4).map((k) => ({ account: k.publicKey, amount: 1000n })),
  faucetAmount: 20n,
  faucetDifficulty: 2,
  maxChannelMs: 10_000,
  opIdWindowMs: 60_000,
  createdAt: clock.t,
});

test('snapshot + tail replay gives the same state as a full replay (random workloads, random snapshot points)', async (t) => {
  const dir = tempDir(t);
  let run = 0;
  let applied = 0;
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 30 }), fc.integer(), async (before, after, seed) => {
      const db = join(dir, `s${run++}.db`);
      const keys = Array.from({ length: 6 }, (_, i) => seededKeys('snap' + i));
      const holder: (() => void | Promise<void>)[] = [];
      const f = await makeLedger({ after: (fn) => holder.push(fn) }, { db, genesis: genesisFor(keys, new VirtualClock()), snapshotEvery: 1_000_000 });
      try {
        const rnd = prng(seed);
        applied += await workload(f.ledger, f.clock, keys, rnd, before);
        const at = await f.ledger.snapshot();
        copyFileSync(`${db}-snapshot`, `${db}-mid`);
        applied += await workload(f.ledger, f.clock, keys, rnd, after);
        const live = view(f.ledger.state);
        await f.ledger.close();
        // Start-up from the mid-run snapshot: replays only the entries after it.
        copyFileSync(`${db}-mid`, `${db}-snapshot`);
        const fromSnap = await openAt(db, f.clock);
        assert.equal(fromSnap.startup.snapshotSeq, at);
        assert.equal(fromSnap.startup.snapshotRejected, undefined);
        assert.equal(fromSnap.startup.replayed, fromSnap.state.height - at);
        const snapView = view(fromSnap.state);
        await fromSnap.close();
        const full = await openAt(db, f.clock, { snapshotEvery: 0 });
        assert.equal(full.startup.snapshotSeq, undefined);
        const fullView = view(full.state);
        await full.close();
        assert.deepEqual(snapView, fullView);
        assert.deepEqual(snapView, live);
      } finally {
        for (const fn of holder) await fn();
      }
    }),
    { numRuns: 8, seed: 4711 },
  );
  assert.ok(applied > 50, `workloads applied ${applied} entries`);
});

test('snapshot: periodic and at close; the ledger keeps working after a start from a snapshot', async (t) => {
  const keys = Array.from({ length: 6 }, (_, i) => seededKeys('snap' + i));
  const clock = new VirtualClock();
  const f = await makeLedger(t, { genesis: genesisFor(keys, clock), snapshotEvery: 10 });
  assert.ok((await workload(f.ledger, f.clock, keys, prng(7), 60)) >= 20);
  const live = view(f.ledger.state);
  const l1 = f.ledger;
  const l2 = await f.reopen();
  assert.ok(l1.stats.snapshots >= 3, `periodic snapshots and one at close: ${l1.stats.snapshots}`);
  assert.equal(l2.startup.snapshotSeq, l2.state.height, 'close() saved a snapshot at the head');
  assert.equal(l2.startup.replayed, 0);
  assert.deepEqual(view(l2.state), live);
  // Ops keep applying (and retries are still recognised) after a start from a snapshot.
  await workload(l2, f.clock, keys, prng(8), 30);
  await l2.openChannel({ requesterKeys: keys[0]!, provider: keys[1]!.publicKey, deposit: 7n, expiresAt: f.clock.t + 5000, opId: newOpId(f.clock.t) });
  const again = view(l2.state);
  const l3 = await f.reopen();
  assert.deepEqual(view(l3.state), again);
  // The expiry schedule is rebuilt from the snapshot: every open channel is refunded once its time has come.
  assert.ok(l3.state.openChannels > 0);
  f.clock.advance(1_000_000);
  await l3.tick();
  assert.equal(l3.state.openChannels, 0);
  assert.equal(l3.state.escrow, 0n);
  const fin = view(l3.state);
  await l3.close();
  const full = await openAt(f.db, f.clock, { snapshotEvery: 0 });
  assert.deepEqual(view(full.state), fin);
  await full.close();
});

test('snapshot that does not match the journal is rejected and the whole journal replayed', async (t) => {
  const keys = Array.from({ length: 6 }, (_, i) => seededKeys('snap' + i));
  const f = await makeLedger(t, { genesis: genesisFor(keys, new VirtualClock()) });
  assert.ok((await workload(f.ledger, f.clock, keys, prng(3), 40)) >= 8);
  const at = await f.ledger.snapshot();
  assert.ok((await workload(f.ledger, f.clock, keys, prng(4), 20)) >= 5);
  const truth = view(f.ledger.state);
  await f.ledger.close();
  const snap = `${f.db}-snapshot`;
  const good = readFileSync(snap);
  const expectRejected = async (why: RegExp, expected = truth) => {
    const l = await openAt(f.db, f.clock);
    try {
      assert.equal(l.startup.snapshotSeq, undefined);
      assert.match(l.startup.snapshotRejected ?? '', why);
      assert.equal(l.startup.replayed, l.state.height + 1, 'full replay from genesis');
      assert.deepEqual(view(l.state), expected);
    } finally {
      // Keep the file under test (close() would replace it with a fresh snapshot).
      await l.close();
      writeFileSync(snap, good);
    }
  };
  // 1. Tampered snapshot bytes (a balance), however small the change: the ledger key's signature no longer matches.
  const tampered = Buffer.from(good);
  tampered[tampered.length - 200] ^= 1;
  writeFileSync(snap, tampered);
  await expectRejected(/signature/);
  // 2. Validly signed but the state differs from the journal's signed checkpoint (e.g. a bug or a forged op record
  //    set by someone holding the key): the digest check refuses it.
  const l = await openAt(f.db, f.clock, { snapshotEvery: 0 });
  const st = l.state;
  const [a1, a2] = [...st.accounts.values()].filter((a) => a.balance > 0n);
  a1!.balance -= 1n;
  a2!.balance += 1n; // supply still conserved: only the checkpoint digest can tell
  const forged = sealSnapshot(st.toSnapshot(), f.ledgerKeys.secretKey);
  a1!.balance += 1n;
  a2!.balance -= 1n;
  await l.close();
  writeFileSync(snap, forged);
  await expectRejected(/does not match the journal checkpoint/);
  // A snapshot whose own invariants are broken is refused before the journal is even read.
  const l1 = await openAt(f.db, f.clock, { snapshotEvery: 0 });
  const first = [...l1.state.accounts.values()].find((a) => a.balance > 0n)!;
  first.balance += 1n;
  const broken = sealSnapshot(l1.state.toSnapshot(), f.ledgerKeys.secretKey);
  first.balance -= 1n;
  await l1.close();
  writeFileSync(snap, broken);
  await expectRejected(/supply not conserved/);
  // 3. Truncated journal: the snapshot's entry is gone. Start-up replays what is left.
  assert.ok(existsSync(snap));
  const db = new Database(f.db);
  db.prepare('DELETE FROM journal WHERE seq >= ?').run(at);
  db.close();
  const short = await openAt(f.db, f.clock, { snapshotEvery: 0 });
  const shortView = view(short.state);
  await short.close();
  writeFileSync(snap, good);
  await expectRejected(/no entry at the snapshot's seq|ends before/, shortView);
  // 4. A snapshot of another journal with the same key: the hash at its seq differs.
  const other = await makeLedger(t, { genesis: genesisFor(keys, new VirtualClock()), db: join(tempDir(t), 'other.db') });
  await workload(other.ledger, other.clock, keys, prng(99), 60);
  await other.ledger.close();
  writeFileSync(snap, readFileSync(`${other.db}-snapshot`));
  await expectRejected(/differs|no entry|ends before|does not match/, shortView);
  rmSync(`${other.db}-snapshot`);
});
