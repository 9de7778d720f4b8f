/**
 * In-process ledger: a single-writer state machine over a durable journal with group commit.
 *
 * submit(op) → parse, retry-window and idempotency checks → signature check on the verifier worker threads, started at
 * once (so signatures of later ops are checked while earlier batches are applied and fsynced) → a reorder buffer that
 * admits verified ops to the commit queue in ARRIVAL order (forged/refused ops leave it immediately, blocking nothing)
 * → `admit` hook (e.g. the server's per-key rate limit, charged only for verified ops) → queued.
 * The commit loop takes everything queued, applies due expiries then the ops in memory (single-threaded, deterministic),
 * appends the new journal rows with a signed checkpoint on the last one in ONE storage transaction (one fsync), and
 * only then answers every op of the batch (acks and rejections alike). While a batch is being written the next one
 * accumulates: group commit. Optionally adaptive: if the writer is free but ops that arrived earlier are still being
 * verified, the commit waits for them up to `gatherMs` (default 0: off) so they share the fsync.
 * A storage failure poisons the ledger (state in memory is ahead of disk); restart it to recover from the journal.
 */
import { sha256, BTT, tag } from './codec.js';
import { sign, verify, type KeyPair } from './keys.js';
import { parseSignedOp, opIdTime, type SignedOp, MAX_OP_BYTES } from './ops.js';
import { type ChannelInfo } from './payment.js';
import { LedgerState, LedgerError, decodeEntry, ledgerIdOf, DEFAULT_SUPPLY, type Genesis, type JournalRow, type ApplyResult } from './state.js';
import { openStorage, type LedgerStorage } from './storage.js';
import { Verifier, type VerifyItem } from './verifier.js';
import { encodePaymentState } from './payment.js';
import { LedgerApiBase, type AccountInfo, type HistoryEntry, type LedgerInfo, type OpResult } from './api.js';

export interface GenesisParams {
  /** Initial balances; whatever the supply leaves over goes to the ledger key's account (the faucet). */
  allocations?: { account: Buffer; amount: bigint }[];
  supply?: bigint;
  /** Faucet payout per new key (default 100 BTT); 0 disables the faucet. */
  faucetAmount?: bigint;
  /** Proof-of-work difficulty in leading zero bits (default 16). */
  faucetDifficulty?: number;
  /** Longest channel lifetime (default 30 days). */
  maxChannelMs?: number;
  /** Retry window for op ids in ms (see Genesis.opIdWindowMs; default 0 = op ids remembered forever). */
  opIdWindowMs?: number;
  createdAt?: number;
}

export interface LedgerOptions {
  /** SQLite file path or postgres:// URL (ignored when `storage` is given). */
  db?: string;
  storage?: LedgerStorage;
  /** The ledger's signing key (checkpoints). Must match the genesis of an existing journal. */
  ledgerKeys: KeyPair;
  /** Used only when the journal is empty. */
  genesis?: GenesisParams;
  /** Ledger clock in ms (default Date.now). */
  clock?: () => number;
  /** Worker threads verifying signatures (default: one per core, at most 4; 0 = inline). */
  verifyThreads?: number;
  /** Extra wait before committing a batch, to gather more ops (default 0: batches form while the previous one syncs). */
  commitWindowMs?: number;
  /**
   * Adaptive group commit: when the writer is free but ops that arrived earlier are still being verified, wait for
   * them up to this long so they join the same fsync (default 0 = commit whatever is verified at once: with many
   * clients answered together, waiting re-synchronised them into waves and left the writer and the verifiers idle in
   * turn; 0 measured 20-30% more ops/s at 64 clients).
   */
  gatherMs?: number;
  maxBatch?: number;
  /** Period of the automatic expiry sweep (default 1000 ms; 0 disables the timer — call tick()). */
  expiryIntervalMs?: number;
  /**
   * State snapshots: one is saved after a commit once this many journal entries were added since the last one, and
   * on close(); start-up loads it and replays only the journal tail (default 100,000; 0 = no snapshots, start-up
   * replays the whole journal). Needs a storage with snapshot support (SQLite file, PostgreSQL).
   */
  snapshotEvery?: number;
  /** Diagnostics for start-up (e.g. why a snapshot was rejected). */
  log?: (msg: string) => void;
}

/** How open() rebuilt the state. */
export interface StartupInfo {
  /** Journal seq of the snapshot the state was loaded from (absent: full replay from genesis). */
  snapshotSeq?: number;
  /** Journal entries replayed at start-up. */
  replayed: number;
  /** Why a saved snapshot was not used (it was ignored and the whole journal replayed). */
  snapshotRejected?: string;
  ms: number;
}

export const SNAPSHOT_SIG_TAG = tag('bitorrent/ledger-snapshot-sig/v1');

/** Snapshot file contents: state bytes (LedgerState.toSnapshot) ‖ the ledger key's signature over tag ‖ SHA-256(state). */
export function sealSnapshot(state: Buffer, secretKey: Buffer): Buffer {
  return Buffer.concat([state, sign(Buffer.concat([SNAPSHOT_SIG_TAG, sha256(state)]), secretKey)]);
}

/** The state bytes of a sealed snapshot, or an Error saying why it is not acceptable. */
export function unsealSnapshot(sealed: Buffer, ledgerPublicKey: Buffer): Buffer | Error {
  if (sealed.length < 64) return new Error('snapshot too short');
  const state = sealed.subarray(0, sealed.length - 64);
  if (!verify(Buffer.concat([SNAPSHOT_SIG_TAG, sha256(state)]), sealed.subarray(sealed.length - 64), ledgerPublicKey)) return new Error('bad snapshot signature');
  return state;
}

class SnapshotMismatch extends Error {}

/**
 * Load a snapshot and replay the journal after it. The snapshot must be signed by the ledger key, and the journal
 * must hold, at the snapshot's seq, an entry with the same hash whose signed checkpoint carries the same state digest
 * as the loaded state; otherwise (tampered, truncated or foreign journal/snapshot) the snapshot is refused.
 */
async function resumeFromSnapshot(storage: LedgerStorage, sealed: Buffer, ledgerPublicKey: Buffer): Promise<{ state: LedgerState; at: number; replayed: number } | Error> {
  const bytes = unsealSnapshot(sealed, ledgerPublicKey);
  if (bytes instanceof Error) return bytes;
  let st: LedgerState;
  try {
    st = LedgerState.fromSnapshot(bytes);
  } catch (e) {
    return new Error(`malformed snapshot: ${(e as Error).message}`);
  }
  if (!st.genesis.ledgerPublicKey.equals(ledgerPublicKey)) return new Error('snapshot of another ledger');
  const at = st.height;
  let anchored = false;
  let replayed = 0;
  try {
    await storage.scan((row) => {
      if (!anchored) {
        if (row.seq !== at) throw new SnapshotMismatch(`journal has no entry at the snapshot's seq ${at}`);
        if (!row.hash.equals(st.lastHash)) throw new SnapshotMismatch(`journal hash at seq ${at} differs from the snapshot's`);
        if (!row.checkpoint || !row.checkpoint.digest.equals(st.digest)) throw new SnapshotMismatch(`snapshot state does not match the journal checkpoint at seq ${at}`);
        if (Number(row.entry.readBigUInt64BE(8)) !== st.lastTime) throw new SnapshotMismatch(`snapshot time differs from the journal at seq ${at}`);
        anchored = true;
        return;
      }
      st.replay(row, false);
      replayed++;
    }, at);
  } catch (e) {
    return e instanceof SnapshotMismatch ? e : new Error(`journal tail after the snapshot does not replay: ${(e as Error).message}`);
  }
  if (!anchored) return new Error(`journal ends before the snapshot's seq ${at} (truncated journal?)`);
  return { state: st, at, replayed };
}

export function makeGenesis(ledgerPublicKey: Buffer, p: GenesisParams = {}, now = Date.now()): Genesis {
  const supply = p.supply ?? DEFAULT_SUPPLY;
  const allocations = (p.allocations ?? []).map((a) => ({ account: a.account, amount: a.amount }));
  const given = allocations.reduce((s, a) => s + a.amount, 0n);
  if (given > supply) throw new RangeError('allocations exceed the supply');
  const rest = supply - given;
  const mine = allocations.find((a) => a.account.equals(ledgerPublicKey));
  if (mine) mine.amount += rest;
  else if (rest > 0n) allocations.push({ account: ledgerPublicKey, amount: rest });
  return {
    ledgerPublicKey,
    createdAt: p.createdAt ?? now,
    supply,
    allocations,
    faucet: { account: ledgerPublicKey, amount: p.faucetAmount ?? 100n * BTT, difficulty: p.faucetDifficulty ?? 16 },
    maxChannelMs: p.maxChannelMs ?? 30 * 24 * 3600 * 1000,
    ...(p.opIdWindowMs ? { opIdWindowMs: p.opIdWindowMs } : {}),
  };
}

export interface SubmitOptions {
  /** Called after the signature verified; return a LedgerError to refuse the op (nothing is charged or applied). */
  admit?: (signer: Buffer) => LedgerError | undefined;
}

interface Ticket {
  q: Queued;
  state: 0 | 1 | 2;
}

interface Queued {
  s: SignedOp;
  paymentSigOk?: boolean;
  resolve: (r: OpResult) => void;
  reject: (e: Error) => void;
}

export function historyEntryOf(row: JournalRow, faucetAmount?: bigint): HistoryEntry {
  const e = decodeEntry(row.entry);
  if (e.type === 'genesis') return { seq: e.seq, time: e.time, kind: 'genesis' };
  if (e.type === 'expire') return { seq: e.seq, time: e.time, kind: 'expire', channelId: e.channelId };
  const { op } = e.signed;
  const h: HistoryEntry = { seq: e.seq, time: e.time, kind: op.body.kind, signer: op.signer, opId: op.opId };
  const b = op.body;
  if (b.kind === 'transfer') Object.assign(h, { to: b.to, amount: b.amount });
  else if (b.kind === 'open') Object.assign(h, { provider: b.provider, amount: b.deposit, expiresAt: b.expiresAt });
  else if (b.kind === 'topup') Object.assign(h, { channelId: b.channelId, amount: b.amount, expiresAt: b.expiresAt });
  else if (b.kind === 'close') Object.assign(h, { channelId: b.channelId, sequence: b.sequence, cumulative: b.cumulative });
  else if (b.kind === 'faucet' && faucetAmount !== undefined) h.amount = faucetAmount;
  return h;
}

export class Ledger extends LedgerApiBase {
  readonly state: LedgerState;
  readonly storage: LedgerStorage;
  private readonly keys: KeyPair;
  private readonly clock: () => number;
  private readonly verifier: Verifier;
  private readonly commitWindowMs: number;
  private readonly gatherMs: number;
  private readonly maxBatch: number;
  private queue: Queued[] = [];
  private writing = false;
  private failed: Error | null = null;
  private closed = false;
  private durableHeight: number;
  private durableWaiters: { seq: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  private timer: NodeJS.Timeout | null = null;
  private idle: (() => void)[] = [];
  /** Counters for monitoring/benchmarks. */
  readonly stats = { batches: 0, ops: 0, rejected: 0, expired: 0, snapshots: 0 };
  /** How open() rebuilt the state. */
  startup: StartupInfo = { replayed: 0, ms: 0 };
  private readonly snapshotEvery: number;
  private snapshotHeight: number;
  private snapshotWrite: Promise<void> | null = null;
  private readonly log: (msg: string) => void;

  private constructor(state: LedgerState, storage: LedgerStorage, opts: LedgerOptions) {
    super();
    this.state = state;
    this.storage = storage;
    this.keys = opts.ledgerKeys;
    this.clock = opts.clock ?? Date.now;
    const threads = opts.verifyThreads ?? Math.min(navigatorCores(), 4);
    this.verifier = new Verifier(threads);
    this.commitWindowMs = opts.commitWindowMs ?? 0;
    this.gatherMs = opts.gatherMs ?? 0;
    this.maxBatch = opts.maxBatch ?? 8192;
    this.durableHeight = state.height;
    this.snapshotEvery = opts.snapshotEvery ?? 100_000;
    this.snapshotHeight = state.height;
    this.log = opts.log ?? (() => {});
    const every = opts.expiryIntervalMs ?? 1000;
    if (every > 0) {
      this.timer = setInterval(() => void this.tick().catch(() => {}), every);
      this.timer.unref();
    }
  }

  /** Open (or create, from `opts.genesis`) a ledger; replays the journal and applies overdue expiries. */
  static async open(opts: LedgerOptions): Promise<Ledger> {
    const storage = opts.storage ?? (await openStorage(opts.db ?? 'ledger.db'));
    try {
      const t0 = performance.now();
      await storage.init();
      const startup: StartupInfo = { replayed: 0, ms: 0 };
      const holder: { state: LedgerState | null } = { state: null };
      const useSnapshots = (opts.snapshotEvery ?? 100_000) > 0 && !!storage.loadSnapshot;
      const sealed = useSnapshots ? await storage.loadSnapshot!() : null;
      if (sealed) {
        const r = await resumeFromSnapshot(storage, sealed, opts.ledgerKeys.publicKey);
        if (r instanceof Error) {
          startup.snapshotRejected = r.message;
          opts.log?.(`ledger: snapshot not used (${r.message}); replaying the whole journal`);
        } else {
          holder.state = r.state;
          startup.snapshotSeq = r.at;
          startup.replayed = r.replayed;
        }
      }
      if (!holder.state)
        await storage.scan((row) => {
        if (!holder.state) {
          const e = decodeEntry(row.entry);
          if (e.type !== 'genesis') throw new Error('journal does not start with a genesis entry');
          holder.state = new LedgerState(e.genesis);
        }
          holder.state.replay(row, false);
          startup.replayed++;
        });
      let state = holder.state;
      if (!state) {
        const clock = opts.clock ?? Date.now;
        const g = makeGenesis(opts.ledgerKeys.publicKey, opts.genesis, clock());
        const st = new LedgerState(g);
        const row = st.applyGenesis();
        row.checkpoint = st.checkpoint(opts.ledgerKeys.secretKey);
        await storage.append([row]);
        state = st;
      }
      const st: LedgerState = state;
      if (!st.genesis.ledgerPublicKey.equals(opts.ledgerKeys.publicKey)) throw new Error('ledger key does not match the journal genesis');
      const ledger = new Ledger(st, storage, opts);
      // Height of the saved snapshot (−1: none usable): the next periodic one is due snapshotEvery entries after it,
      // and close() saves one unless it is current.
      ledger.snapshotHeight = startup.snapshotSeq ?? -1;
      startup.ms = Math.round(performance.now() - t0);
      ledger.startup = startup;
      await ledger.tick();
      return ledger;
    } catch (e) {
      await storage.close().catch(() => {});
      throw e;
    }
  }

  get ledgerIdBuf(): Buffer {
    return this.state.ledgerId;
  }

  now(): number {
    return this.clock();
  }

  /**
   * Reads are snapshots of the state at call time, returned once that state is durable: a client never sees an effect
   * (a balance, an open channel) that a crash could still undo.
   */
  private async durable<T>(snapshot: T): Promise<T> {
    await this.waitDurable(this.state.height);
    return snapshot;
  }

  async ledgerInfo(): Promise<LedgerInfo> {
    const s = this.state;
    return this.durable({
      ledgerId: s.ledgerId,
      ledgerPublicKey: s.genesis.ledgerPublicKey,
      supply: s.genesis.supply,
      escrow: s.escrow,
      openChannels: s.openChannels,
      height: s.height,
      time: this.clock(),
      faucet: { ...s.genesis.faucet },
      maxChannelMs: s.genesis.maxChannelMs,
    });
  }

  async account(publicKey: Buffer): Promise<AccountInfo> {
    const a = this.state.account(publicKey);
    return this.durable({ publicKey, balance: a?.balance ?? 0n, faucetClaimed: a?.faucetClaimed ?? false });
  }

  async channel(id: Buffer): Promise<ChannelInfo | undefined> {
    return this.durable(this.state.channelInfo(id));
  }

  async channels(publicKey: Buffer): Promise<ChannelInfo[]> {
    const ids = this.state.channelsByAccount.get(publicKey.toString('latin1')) ?? [];
    return this.durable(ids.map((id) => this.state.channelInfo(id)!));
  }

  async history(publicKey: Buffer, opts: { limit?: number; beforeSeq?: number } = {}): Promise<HistoryEntry[]> {
    const limit = Math.max(1, Math.min(opts.limit ?? 100, 1000));
    const rows = await this.storage.history(publicKey, limit, opts.beforeSeq);
    return rows.map((r) => historyEntryOf(r, this.state.genesis.faucet.amount));
  }

  /** The journal seq of an applied (signer, opId), if any (durable ops only). */
  opStatus(signer: Buffer, opId: Buffer): { seq: number; channelId?: Buffer } | undefined {
    const r = this.state.ops.get(signer.toString('latin1') + opId.toString('latin1'));
    if (!r || r.seq > this.durableHeight) return undefined;
    return { seq: r.seq, channelId: r.channelId };
  }

  private waitDurable(seq: number): Promise<void> {
    if (seq <= this.durableHeight) return Promise.resolve();
    if (this.failed) return Promise.reject(this.unavailable());
    return new Promise((resolve, reject) => this.durableWaiters.push({ seq, resolve, reject }));
  }

  private unavailable(): LedgerError {
    return new LedgerError('unavailable', `ledger unavailable: ${this.failed?.message ?? 'closed'}`, 503);
  }

  /**
   * Submit a signed operation; resolves with its journal position once durable.
   * `opts.admit`, if given, is called with the signer only after the signature has verified (e.g. a per-key rate
   * limit, so forged ops cannot spend another key's allowance); returning an error rejects the op with it.
   */
  async submit(wire: Buffer, opts?: SubmitOptions): Promise<OpResult> {
    if (this.failed || this.closed) throw this.unavailable();
    let s: SignedOp;
    try {
      if (wire.length > MAX_OP_BYTES) throw new RangeError('operation too large');
      s = parseSignedOp(Buffer.from(wire));
    } catch (e) {
      throw new LedgerError('malformed_op', `malformed operation: ${(e as Error).message}`, 400);
    }
    const { op } = s;
    if (!op.ledgerId.equals(this.state.ledgerId)) throw new LedgerError('wrong_ledger', 'operation is for another ledger');
    const win = this.state.genesis.opIdWindowMs;
    if (win) {
      const t = opIdTime(op.opId);
      const now = Math.max(this.clock(), this.state.lastTime);
      if (t < now - win || t > now + win) throw new LedgerError('op_id_expired', `op id time is outside the ledger's ${win} ms retry window; if this is a retry, look the op up in the history`);
    }
    const prev = this.state.ops.get(op.signer.toString('latin1') + op.opId.toString('latin1'));
    if (prev) {
      if (!prev.msgHash.equals(sha256(s.msg))) throw new LedgerError('duplicate_op_id', 'this op id was already used for a different operation', 409);
      await this.waitDurable(prev.seq);
      return { seq: prev.seq, opId: op.opId, channelId: prev.channelId, duplicate: true };
    }
    const items: VerifyItem[] = [{ msg: s.msg, sig: s.sig, pub: op.signer }];
    const b = op.body;
    if (b.kind === 'close') {
      const c = this.state.channels.get(b.channelId.toString('latin1'));
      if (c) {
        const st = { ledgerId: this.state.ledgerId, channelId: b.channelId, sequence: b.sequence, cumulative: b.cumulative };
        items.push({ msg: encodePaymentState(st), sig: b.requesterSig, pub: c.requester });
      }
    }
    // Verification runs on the worker threads as soon as the op arrives, while earlier batches are applied and
    // fsynced. Ops are admitted to the commit queue in ARRIVAL order (a reorder buffer), whatever order their
    // verifications finish in; an op that fails verification (or admission) leaves the buffer at once and blocks
    // nothing behind it.
    return new Promise<OpResult>((resolve, reject) => {
      const t: Ticket = { q: { s, resolve, reject }, state: 0 };
      this.arrivals.push(t);
      this.arrived++;
      this.verifier.verify(items).then((ok) => {
        if (!ok[0]) {
          t.state = 2;
          reject(new LedgerError('bad_signature', 'operation signature does not verify', 401));
        } else if (this.failed || this.closed) {
          t.state = 2;
          reject(this.unavailable());
        } else {
          const why = opts?.admit?.(op.signer);
          if (why) {
            t.state = 2;
            reject(why);
          } else {
            t.q.paymentSigOk = ok[1];
            t.state = 1;
          }
        }
        this.drainArrivals();
      });
    });
  }

  /** Tickets in arrival order: 0 = verifying, 1 = verified (admit), 2 = dropped (already answered). */
  private arrivals: Ticket[] = [];
  private arrivalHead = 0;
  /** Ops ever submitted past parsing, and how many of those (a prefix, in arrival order) are verified or dropped. */
  private arrived = 0;
  private settled = 0;

  private drainArrivals(): void {
    const a = this.arrivals;
    const head = this.arrivalHead;
    let i = head;
    let moved = false;
    while (i < a.length && a[i]!.state !== 0) {
      const t = a[i++]!;
      if (t.state === 1) {
        this.queue.push(t.q);
        moved = true;
      }
    }
    this.settled += i - head;
    if (i === a.length) {
      this.arrivals = [];
      this.arrivalHead = 0;
    } else if (i > 1024 && i * 2 > a.length) {
      this.arrivals = a.slice(i);
      this.arrivalHead = 0;
    } else this.arrivalHead = i;
    if (this.gatherBarrier >= 0 && this.settled >= this.gatherBarrier) this.endGather();
    else if (moved) this.kick();
    else this.maybeIdle();
  }

  /** Refund channels whose expiry has passed (also runs before every batch). Resolves when durable. */
  async tick(): Promise<number> {
    if (this.failed || this.closed) return 0;
    return new Promise<number>((resolve, reject) => {
      const before = this.stats.expired;
      this.forceCommit = true;
      this.kick();
      this.onIdle(() => (this.failed ? reject(this.unavailable()) : resolve(this.stats.expired - before)));
    });
  }

  private forceCommit = false;

  private onIdle(f: () => void): void {
    if (this.isIdle()) f();
    else this.idle.push(f);
  }

  private isIdle(): boolean {
    return !this.writing && this.queue.length === 0 && !this.forceCommit && this.arrivalHead === this.arrivals.length;
  }

  private maybeIdle(): void {
    if (this.idle.length > 0 && this.isIdle()) for (const f of this.idle.splice(0)) f();
  }

  private kick(): void {
    if (this.writing || this.failed) return;
    if (this.queue.length === 0 && !this.forceCommit) return;
    this.writing = true;
    const go = () => void this.commit();
    if (this.commitWindowMs > 0) setTimeout(go, this.commitWindowMs);
    else if (this.gatherMs > 0 && !this.forceCommit && this.settled < this.arrived) {
      // Adaptive group commit: the writer is free but ops that arrived before now are still being verified (e.g. the
      // other worker's chunk). Wait for them — at most gatherMs — so they share this fsync instead of paying another.
      this.gatherBarrier = this.arrived;
      this.gatherTimer = setTimeout(() => this.endGather(), this.gatherMs);
    } else queueMicrotask(go);
  }

  private gatherBarrier = -1;
  private gatherTimer: NodeJS.Timeout | null = null;

  private endGather(): void {
    if (this.gatherBarrier < 0) return;
    this.gatherBarrier = -1;
    if (this.gatherTimer) clearTimeout(this.gatherTimer);
    this.gatherTimer = null;
    void this.commit();
  }

  private async commit(): Promise<void> {
    this.forceCommit = false;
    const batch = this.queue.splice(0, this.maxBatch);
    const st = this.state;
    const time = Math.max(this.clock(), st.lastTime);
    const rows: JournalRow[] = [];
    const results: (ApplyResult | null)[] = [];
    try {
      for (const id of st.dueExpiries(time)) {
        const r = st.applyExpire(id, time);
        if (r.ok && r.row) {
          rows.push(r.row);
          this.stats.expired++;
        }
      }
      for (const q of batch) {
        const r = st.applyOp(q.s, time, q.paymentSigOk);
        results.push(r);
        if (r.ok && r.row) rows.push(r.row);
      }
      if (rows.length > 0) {
        rows[rows.length - 1]!.checkpoint = st.checkpoint(this.keys.secretKey);
        await this.storage.append(rows);
        this.durableHeight = st.height;
        // The state now equals the durable journal up to a checkpoint: a consistent point for a snapshot.
        if (this.snapshotEvery > 0 && this.storage.saveSnapshot && st.height - this.snapshotHeight >= this.snapshotEvery && !this.snapshotWrite) {
          this.saveSnapshot().catch(() => {}); // logged by saveSnapshot; only costs a longer replay at start-up
        }
      }
    } catch (e) {
      this.failed = e instanceof Error ? e : new Error(String(e));
      for (const q of batch) q.reject(this.unavailable());
      for (const q of this.queue.splice(0)) q.reject(this.unavailable());
      for (const w of this.durableWaiters.splice(0)) w.reject(this.unavailable());
      this.writing = false;
      for (const f of this.idle.splice(0)) f();
      return;
    }
    this.stats.batches++;
    batch.forEach((q, i) => {
      const r = results[i]!;
      if (r.ok) {
        this.stats.ops++;
        if (r.duplicate && r.seq > this.durableHeight) {
          this.waitDurable(r.seq).then(() => q.resolve({ seq: r.seq, opId: q.s.op.opId, channelId: r.channelId, duplicate: true }), q.reject);
        } else q.resolve({ seq: r.seq, opId: q.s.op.opId, channelId: r.channelId, ...(r.duplicate ? { duplicate: true } : {}) });
      } else {
        this.stats.rejected++;
        q.reject(r.error);
      }
    });
    if (this.durableWaiters.length) {
      const keep = [];
      for (const w of this.durableWaiters) if (w.seq <= this.durableHeight) w.resolve();
      else keep.push(w);
      this.durableWaiters = keep;
    }
    this.writing = false;
    if (this.queue.length > 0 || this.forceCommit) this.kick();
    else this.maybeIdle();
  }

  /**
   * Serialize the state (synchronously, so it is exactly the durable state at a checkpoint: call only while no commit
   * is in progress) and write it in the background; resolves when written, rejects if the write failed.
   */
  private saveSnapshot(): Promise<void> {
    const height = this.state.height;
    const sealed = sealSnapshot(this.state.toSnapshot(), this.keys.secretKey);
    this.snapshotHeight = height;
    const w = this.storage.saveSnapshot!(sealed).then(() => void this.stats.snapshots++);
    const mine: Promise<void> = w.then(
      () => {
        if (this.snapshotWrite === mine) this.snapshotWrite = null;
      },
      (e: unknown) => {
        if (this.snapshotWrite === mine) this.snapshotWrite = null;
        if (this.snapshotHeight === height) this.snapshotHeight = -1;
        this.log(`ledger: snapshot at seq ${height} not saved: ${(e as Error).message}`);
      },
    );
    this.snapshotWrite = mine;
    return w;
  }

  /**
   * Save a snapshot of the durable state now (after any commit in progress); resolves with its journal seq.
   * Periodic snapshots (snapshotEvery) and the one at close() need no call; this is for operators and tests.
   */
  async snapshot(): Promise<number> {
    if (!this.storage.saveSnapshot) throw new Error('this storage keeps no snapshots');
    for (;;) {
      if (this.failed || this.closed) throw this.unavailable();
      if (this.snapshotWrite) await this.snapshotWrite;
      else if (this.writing) await new Promise<void>((r) => this.onIdle(r));
      else break;
    }
    const height = this.state.height;
    await this.saveSnapshot();
    return height;
  }

  /** Wait for queued work, stop timers and workers, save a snapshot (if enabled and the state moved), close storage. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.timer) clearInterval(this.timer);
    await new Promise<void>((r) => this.onIdle(r));
    this.closed = true;
    await this.verifier.close();
    if (this.snapshotWrite) await this.snapshotWrite;
    if (this.snapshotEvery > 0 && this.storage.saveSnapshot && !this.failed && this.state.height !== this.snapshotHeight) {
      await this.saveSnapshot().catch(() => {});
    }
    await this.storage.close();
  }
}

function navigatorCores(): number {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? 1;
  } catch {
    return 1;
  }
}

export { ledgerIdOf };
