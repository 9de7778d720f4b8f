/**
 * Crash harness: concurrent clients against a real `bitorrent ledger serve` process that is SIGKILLed at random
 * moments and restarted. Checks that every acknowledged operation survives at its acknowledged journal seq, that
 * retries of in-doubt operations apply at most once, that the journal verifies and that the supply is conserved.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ledger } from '../src/ledger.js';
import { LedgerClient } from '../src/client.js';
import { LedgerError, decodeEntry, type JournalRow } from '../src/state.js';
import { signOp, newOpId, parseSignedOp, channelIdFor } from '../src/ops.js';
import { signPaymentState } from '../src/payment.js';
import { openStorage } from '../src/storage.js';
import { verifyJournal } from '../src/verify.js';
import { keyPairFromSeed, type KeyPair } from '../src/keys.js';
import { sha256 } from '../src/codec.js';

const BIN = fileURLToPath(new URL('../../cli/bin/bitorrent.js', import.meta.url));

/** Small deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface CrashOptions {
  db: string;
  keyFile: string;
  kills: number;
  clients: number;
  seed: number;
  /** Register cleanup (kills the server by PID). */
  after: (fn: () => void | Promise<void>) => void;
  log?: (s: string) => void;
  /** Server's --snapshot-every (default 300: snapshots are written, and killed mid-write, during the test). */
  snapshotEvery?: number;
  /** Called when a server start resumed from a snapshot. */
  onSnapshotStart?: () => void;
  /** Milliseconds of load before each kill: [min, max). */
  killAfterMs?: [number, number];
}

export interface CrashReport {
  kills: number;
  /** Restarts that resumed from a snapshot (the rest replayed the whole journal). */
  snapshotStarts: number;
  acked: number;
  retried: number;
  entries: number;
}

function startServer(o: CrashOptions): Promise<{ proc: ChildProcess; url: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [BIN, 'ledger', 'serve', '--db', o.db, '--key', o.keyFile, '--port', '0', '--rate', '100000', '--snapshot-every', String(o.snapshotEvery ?? 300)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    o.after(() => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    });
    let out = '';
    let err = '';
    proc.stdout!.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve({ proc, url: m[1]! });
    });
    proc.stderr!.on('data', (d) => {
      err += d;
      if (/started in \d+ ms \(snapshot at seq/.test(String(d))) o.onSnapshotStart?.();
    });
    proc.on('exit', (code, sig) => reject(new Error(`server exited (${code ?? sig}) before listening: ${err}`)));
  });
}

interface Ack {
  signer: Buffer;
  opId: Buffer;
  wire: Buffer;
  seq: number;
}

export async function runCrashTest(opts: CrashOptions): Promise<CrashReport> {
  let snapshotStarts = 0;
  const o: CrashOptions = { ...opts, onSnapshotStart: () => snapshotStarts++ };
  const rnd = prng(o.seed);
  const log = o.log ?? (() => {});
  const keys: KeyPair[] = Array.from({ length: o.clients }, (_, i) => keyPairFromSeed(sha256(Buffer.from(`crash-client-${i}`))));
  const ledgerKeys = keyPairFromSeed(sha256(Buffer.from('crash-ledger')));
  writeFileSync(o.keyFile, JSON.stringify({ seed: ledgerKeys.secretKey.subarray(0, 32).toString('hex') }));
  // Create the ledger (genesis) in-process, then serve it from a separate process.
  const l0 = await Ledger.open({ db: o.db, ledgerKeys, genesis: { allocations: keys.map((k) => ({ account: k.publicKey, amount: 10n ** 12n })), faucetAmount: 0n }, expiryIntervalMs: 0, verifyThreads: 0 });
  const ledgerId = l0.state.ledgerId;
  await l0.close();

  const acks: Ack[] = [];
  let inDoubt: { signer: Buffer; opId: Buffer; wire: Buffer }[] = [];
  let retried = 0;
  const opened: { id: Buffer; req: KeyPair; prov: KeyPair }[] = [];

  for (let round = 0; round <= o.kills; round++) {
    const { proc, url } = await startServer(o);
    const exited = new Promise<void>((r) => proc.once('exit', () => r()));
    const client = new LedgerClient(url, { maxSockets: o.clients * 2, timeoutMs: 20_000 });
    // After a restart: every ack so far is present at its seq, and in-doubt ops are retried (applied at most once).
    if (round > 0) {
      for (const a of acks.slice(-2000)) {
        const st = await client.opStatus(a.signer, a.opId);
        assert.ok(st, `acknowledged op ${a.opId.toString('hex')} (seq ${a.seq}) lost after kill ${round}`);
        assert.equal(st.seq, a.seq);
      }
      const doubt = inDoubt;
      inDoubt = [];
      for (const d of doubt) {
        try {
          const r = await client.submit(d.wire);
          acks.push({ ...d, seq: r.seq });
          retried++;
        } catch (e) {
          if (!(e instanceof LedgerError) || e.status >= 500) throw e;
        }
      }
    }
    if (round === o.kills) {
      client.close();
      proc.kill('SIGTERM');
      await exited;
      break;
    }
    let alive = true;
    const worker = async (i: number) => {
      const me = keys[i]!;
      const wr = prng(o.seed * 1000 + round * 100 + i);
      while (alive) {
        const x = wr();
        let wire: Buffer;
        let opId = newOpId();
        let openInfo: { id: Buffer; req: KeyPair; prov: KeyPair } | undefined;
        if (x < 0.6 || opened.length === 0) {
          const to = keys[(i + 1 + Math.floor(wr() * (o.clients - 1))) % o.clients]!;
          wire = signOp(ledgerId, me, { kind: 'transfer', to: to.publicKey, amount: BigInt(1 + Math.floor(wr() * 1000)) }, opId).wire;
        } else if (x < 0.8) {
          const prov = keys[(i + 1) % o.clients]!;
          const op = signOp(ledgerId, me, { kind: 'open', provider: prov.publicKey, deposit: 10_000n, expiresAt: Date.now() + 3_600_000 }, opId);
          wire = op.wire;
          openInfo = { id: channelIdFor(ledgerId, me.publicKey, opId), req: me, prov };
        } else {
          const ch = opened.splice(Math.floor(wr() * opened.length), 1)[0]!;
          const st = { ledgerId, channelId: ch.id, sequence: 1n, cumulative: BigInt(Math.floor(wr() * 10_000)) };
          opId = newOpId();
          wire = signOp(ledgerId, ch.prov, { kind: 'close', channelId: ch.id, sequence: 1n, cumulative: st.cumulative, requesterSig: signPaymentState(st, ch.req.secretKey) }, opId).wire;
        }
        const signer = parseSignedOp(wire).op.signer;
        try {
          const r = await client.submit(wire);
          acks.push({ signer: Buffer.from(signer), opId, wire, seq: r.seq });
          if (openInfo) opened.push(openInfo);
        } catch (e) {
          if (e instanceof LedgerError && e.status < 500) continue; // definite rejection
          inDoubt.push({ signer: Buffer.from(signer), opId, wire });
          if (!alive) return;
        }
      }
    };
    const workers = keys.map((_, i) => worker(i));
    const [lo, hi] = o.killAfterMs ?? [100, 600];
    await new Promise((r) => setTimeout(r, lo + rnd() * (hi - lo)));
    proc.kill('SIGKILL');
    await exited;
    alive = false;
    await Promise.all(workers);
    client.close();
    log(`kill ${round + 1}: ${acks.length} acked so far, ${inDoubt.length} in doubt`);
  }

  // Offline: the journal verifies, supply is conserved, every ack is at its seq with the same bytes.
  const storage = await openStorage(o.db);
  await storage.init();
  try {
    const rep = await verifyJournal(storage);
    assert.equal(rep.ok, true, rep.error);
    assert.equal(BigInt(rep.balances!) + BigInt(rep.escrow!), BigInt(rep.supply!));
    const bySeq = new Map<number, JournalRow>();
    await storage.scan((r) => bySeq.set(r.seq, r));
    const seen = new Set<string>();
    for (const a of acks) {
      const row = bySeq.get(a.seq);
      assert.ok(row, `ack at seq ${a.seq} missing`);
      const e = decodeEntry(row.entry);
      assert.equal(e.type, 'op');
      if (e.type === 'op') assert.ok(e.signed.wire.equals(a.wire), `seq ${a.seq} holds another op`);
      seen.add(a.seq + ':' + a.opId.toString('hex'));
    }
    // At most once: no (signer, opId) appears twice in the journal.
    const ids = new Set<string>();
    for (const r of bySeq.values()) {
      const e = decodeEntry(r.entry);
      if (e.type !== 'op') continue;
      const k = e.signed.op.signer.toString('hex') + e.signed.op.opId.toString('hex');
      assert.ok(!ids.has(k), 'an op id was applied twice');
      ids.add(k);
    }
    // Start-up from the snapshot (saved at the final clean shutdown) gives the same state as a full replay.
    const a = await Ledger.open({ db: o.db, ledgerKeys, expiryIntervalMs: 0, verifyThreads: 0, snapshotEvery: 1e9 });
    const b = await Ledger.open({ db: o.db, ledgerKeys, expiryIntervalMs: 0, verifyThreads: 0, snapshotEvery: 0 }).catch(async (e) => {
      await a.close();
      throw e;
    });
    try {
      assert.ok(a.startup.snapshotSeq !== undefined, `final start from a snapshot (${a.startup.snapshotRejected ?? 'none saved'})`);
      assert.equal(b.startup.snapshotSeq, undefined);
      assert.equal(a.state.height, b.state.height);
      assert.ok(a.state.digest.equals(b.state.digest), 'snapshot start and full replay agree');
      assert.ok(a.state.lastHash.equals(b.state.lastHash));
    } finally {
      await b.close();
      await a.close();
    }
    return { kills: o.kills, snapshotStarts, acked: acks.length, retried, entries: rep.entries };
  } finally {
    await storage.close();
  }
}
