/**
 * The ledger's deterministic state machine and its hash-chained journal.
 *
 * Journal entry:  seq u64 ‖ time u64 (ms) ‖ type u8 ‖ payload
 *   type 0 genesis: the genesis encoding; type 1 op: `msg ‖ sig` of a signed op; type 2 expire: channelId[32].
 * hash(n) = SHA-256(hash(n-1) ‖ entry(n)), hash(-1) = 32 zero bytes. The last entry of every committed batch carries a
 * checkpoint: the ledger key's signature over "bitorrent/ledger-checkpoint/v1\0" ‖ seq ‖ hash ‖ stateDigest, where
 * stateDigest = Σ SHA-256(record) mod 2^256 over all account and channel records (updated incrementally).
 * Only successfully applied operations are journaled, so replay from genesis must reproduce every step.
 */
import { Writer, Reader, tag, sha256, sha256One, U128_MAX, U64_MAX, BTT } from './codec.js';
import { sign, verify } from './keys.js';
import { type ChannelInfo, verifyPaymentStateSignature } from './payment.js';
import { type SignedOp, parseSignedOp, channelIdFor, powHash, leadingZeroBits, opAccounts, opIdTime } from './ops.js';

export const GENESIS_TAG = tag('bitorrent/ledger-genesis/v1');
export const LEDGER_ID_TAG = tag('bitorrent/ledger-id/v1');
export const CHECKPOINT_TAG = tag('bitorrent/ledger-checkpoint/v1');
export const SNAPSHOT_TAG = tag('bitorrent/ledger-snapshot/v1');
export const DEFAULT_SUPPLY = 990_000_000_000n * BTT;

export class LedgerError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status = 422,
  ) {
    super(message);
    this.name = 'LedgerError';
  }
}

export interface Genesis {
  ledgerPublicKey: Buffer;
  createdAt: number;
  supply: bigint;
  allocations: { account: Buffer; amount: bigint }[];
  faucet: { account: Buffer; amount: bigint; difficulty: number };
  /** Longest allowed channel lifetime from the time of open/top-up (ms). */
  maxChannelMs: number;
  /**
   * Retry window for op ids (ms; absent/0 = every op id is remembered forever, the v1 behaviour). When set, an op id
   * must start with its creation time (48-bit big-endian ms, see newOpId); the ledger refuses op ids more than this
   * far from its clock (`op_id_expired`) and forgets (signer, opId) records once they fall out of the window, so the
   * idempotency memory holds at most ~2 windows of ops. The op id is signed, so an old op cannot be replayed.
   */
  opIdWindowMs?: number;
}

export function encodeGenesis(g: Genesis): Buffer {
  const w = new Writer().bytes(GENESIS_TAG).bytes(g.ledgerPublicKey, 32).u64(g.createdAt).u128(g.supply).u64(g.maxChannelMs);
  w.bytes(g.faucet.account, 32).u128(g.faucet.amount).u8(g.faucet.difficulty);
  w.u64(g.allocations.length);
  for (const a of g.allocations) w.bytes(a.account, 32).u128(a.amount);
  // Optional trailing field: absent when unset, so genesis encodings (and ledger ids) of v1 ledgers are unchanged.
  if (g.opIdWindowMs) w.u64(BigInt(g.opIdWindowMs));
  return w.done();
}

export function decodeGenesis(b: Buffer): Genesis {
  const r = new Reader(b);
  if (!r.bytes(GENESIS_TAG.length).equals(GENESIS_TAG)) throw new RangeError('bad genesis tag');
  const ledgerPublicKey = Buffer.from(r.bytes(32));
  const createdAt = Number(r.u64());
  const supply = r.u128();
  const maxChannelMs = Number(r.u64());
  const faucet = { account: Buffer.from(r.bytes(32)), amount: r.u128(), difficulty: r.u8() };
  const n = Number(r.u64());
  if (n > 100_000) throw new RangeError('too many allocations');
  const allocations = [];
  for (let i = 0; i < n; i++) allocations.push({ account: Buffer.from(r.bytes(32)), amount: r.u128() });
  const g: Genesis = { ledgerPublicKey, createdAt, supply, allocations, faucet, maxChannelMs };
  if (r.pos < r.buf.length) {
    const w = r.u64();
    if (w === 0n || w > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError('bad op id window');
    g.opIdWindowMs = Number(w);
  }
  r.end();
  return g;
}

export function ledgerIdOf(g: Genesis): Buffer {
  return sha256(LEDGER_ID_TAG, encodeGenesis(g));
}

export const EntryType = { genesis: 0, op: 1, expire: 2 } as const;

export interface JournalRow {
  seq: number;
  /** Encoded entry (see top of file). */
  entry: Buffer;
  hash: Buffer;
  /** Accounts the entry touches (for history lookups), at most 2. */
  accounts: Buffer[];
  /** Present on the last entry of each committed batch. */
  checkpoint?: { digest: Buffer; sig: Buffer };
}

export type DecodedEntry =
  | { seq: number; time: number; type: 'genesis'; genesis: Genesis }
  | { seq: number; time: number; type: 'op'; signed: SignedOp }
  | { seq: number; time: number; type: 'expire'; channelId: Buffer };

export function encodeEntry(seq: number, time: number, type: number, payload: Buffer): Buffer {
  return new Writer().u64(seq).u64(time).u8(type).bytes(payload).done();
}

function writeU64(b: Buffer, n: number, o: number): void {
  b.writeUInt32BE(Math.floor(n / 0x100000000), o);
  b.writeUInt32BE(n >>> 0, o + 4);
}
function writeU128(b: Buffer, n: bigint, o: number): void {
  b.writeBigUInt64BE(n >> 64n, o);
  b.writeBigUInt64BE(n & U64_MAX, o + 8);
}

/**
 * Σ SHA-256(record) mod 2^256 as 8 big-endian u32 limbs (plain number arithmetic: no bigint or hex round trips).
 */
class Sum256 {
  readonly w = new Uint32Array(8);
  add(h: Buffer): void {
    let c = 0;
    for (let i = 7; i >= 0; i--) {
      const s = this.w[i]! + h.readUInt32BE(i * 4) + c;
      this.w[i] = s >>> 0;
      c = s > 0xffffffff ? 1 : 0;
    }
  }
  sub(h: Buffer): void {
    let b = 0;
    for (let i = 7; i >= 0; i--) {
      const d = this.w[i]! - h.readUInt32BE(i * 4) - b;
      this.w[i] = d >>> 0;
      b = d < 0 ? 1 : 0;
    }
  }
  toBuffer(): Buffer {
    const out = Buffer.alloc(32);
    for (let i = 0; i < 8; i++) out.writeUInt32BE(this.w[i]!, i * 4);
    return out;
  }
}

export function decodeEntry(b: Buffer): DecodedEntry {
  const r = new Reader(b);
  const seq = Number(r.u64());
  const time = Number(r.u64());
  const type = r.u8();
  const payload = r.rest();
  if (type === EntryType.genesis) return { seq, time, type: 'genesis', genesis: decodeGenesis(payload) };
  if (type === EntryType.op) return { seq, time, type: 'op', signed: parseSignedOp(Buffer.from(payload)) };
  if (type === EntryType.expire) {
    if (payload.length !== 32) throw new RangeError('bad expire entry');
    return { seq, time, type: 'expire', channelId: Buffer.from(payload) };
  }
  throw new RangeError(`unknown entry type ${type}`);
}

export function checkpointMessage(seq: number, hash: Buffer, digest: Buffer): Buffer {
  return new Writer().bytes(CHECKPOINT_TAG).u64(seq).bytes(hash, 32).bytes(digest, 32).done();
}

export interface AccountRecord {
  balance: bigint;
  faucetClaimed: boolean;
}

/** A channel as the state machine keeps it: the public ChannelInfo without the ledger id (one per ledger). */
type ChannelRecord = Omit<ChannelInfo, 'ledgerId'>;

export interface OpRecord {
  seq: number;
  msgHash: Buffer;
  channelId?: Buffer;
}

export interface ApplyOk {
  ok: true;
  seq: number;
  channelId?: Buffer;
  /** The op had already been applied (idempotent retry): `seq` is the original entry. */
  duplicate?: boolean;
  /** Entry appended (absent for duplicates). */
  row?: JournalRow;
}
export type ApplyResult = ApplyOk | { ok: false; error: LedgerError };

const key = (b: Buffer): string => b.toString('latin1');
/** A private copy outside Node's shared 8 KiB pool (for long-lived keys). */
const own = (b: Buffer): Buffer => {
  const c = Buffer.allocUnsafeSlow(b.length);
  b.copy(c);
  return c;
};

function reject(code: string, message: string, status = 422): { ok: false; error: LedgerError } {
  return { ok: false, error: new LedgerError(code, message, status) };
}

/** Min-heap of (expiresAt, channel key), with lazy deletion. */
class ExpiryHeap {
  private a: { t: number; k: string }[] = [];
  push(t: number, k: string): void {
    const a = this.a;
    a.push({ t, k });
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]!.t <= a[i]!.t) break;
      [a[p], a[i]] = [a[i]!, a[p]!];
      i = p;
    }
  }
  peek(): { t: number; k: string } | undefined {
    return this.a[0];
  }
  pop(): void {
    const a = this.a;
    const last = a.pop()!;
    if (a.length === 0) return;
    a[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < a.length && a[l]!.t < a[m]!.t) m = l;
      if (r < a.length && a[r]!.t < a[m]!.t) m = r;
      if (m === i) break;
      [a[m], a[i]] = [a[i]!, a[m]!];
      i = m;
    }
  }
}

export class LedgerState {
  readonly genesis: Genesis;
  readonly ledgerId: Buffer;
  readonly accounts = new Map<string, AccountRecord>();
  readonly channels = new Map<string, ChannelRecord>();
  readonly ops = new Map<string, OpRecord>();
  /** Op ids by creation-time bucket, for forgetting them once out of the retry window (only with opIdWindowMs). */
  private opBuckets = new Map<number, string[]>();
  private opBucketMin = Infinity;
  private get opBucketMs(): number {
    return Math.max(1000, Math.floor((this.genesis.opIdWindowMs ?? 0) / 64));
  }

  /** Forget op ids created before `time - window` (deterministic: a function of the journal's times only). */
  private forgetOpIds(time: number): void {
    const win = this.genesis.opIdWindowMs;
    if (!win || this.opBuckets.size === 0) return;
    const B = this.opBucketMs;
    // Bucket b holds times in [b·B, (b+1)·B): drop it once all of it is older than time - window.
    const cutoff = Math.floor((time - win) / B) - 1;
    if (this.opBucketMin > cutoff) return;
    if (cutoff - this.opBucketMin > this.opBuckets.size * 4) {
      for (const [b, l] of this.opBuckets) if (b <= cutoff) {
        for (const k of l) this.ops.delete(k);
        this.opBuckets.delete(b);
      }
    } else
      for (let b = this.opBucketMin; b <= cutoff; b++) {
        const l = this.opBuckets.get(b);
        if (!l) continue;
        for (const k of l) this.ops.delete(k);
        this.opBuckets.delete(b);
      }
    this.opBucketMin = cutoff + 1;
  }
  /** Channel ids per account (as requester or provider). */
  readonly channelsByAccount = new Map<string, Buffer[]>();
  private expiry = new ExpiryHeap();
  escrow = 0n;
  height = -1;
  lastHash: Buffer = Buffer.alloc(32);
  lastTime = 0;
  openChannels = 0;
  /**
   * State digest, maintained lazily: records changed since the last read of `digest` are only marked dirty; reading
   * the digest (once per checkpoint, i.e. per batch) rehashes each dirty record once and swaps its old hash (cached)
   * for the new one in the sum. Same value as hashing eagerly on every change, for a fraction of the hashing.
   */
  private sum = new Sum256();
  private accHash = new Map<string, Buffer>();
  private chHash = new Map<string, Buffer>();
  private dirtyAcc = new Map<string, Buffer>();
  private dirtyCh = new Set<string>();
  private recBuf = Buffer.alloc(138);

  /** Build the state from a genesis; returns the state and the genesis journal row (seq 0). */
  constructor(genesis: Genesis) {
    this.genesis = genesis;
    this.ledgerId = ledgerIdOf(genesis);
    let sum = 0n;
    for (const a of genesis.allocations) {
      if (a.account.length !== 32 || a.amount < 0n) throw new RangeError('bad genesis allocation');
      sum += a.amount;
    }
    if (sum !== genesis.supply) throw new RangeError(`genesis allocations sum to ${sum}, supply is ${genesis.supply}`);
    if (genesis.faucet.difficulty > 64) throw new RangeError('faucet difficulty must be ≤ 64 bits');
  }

  /** Apply the genesis entry (seq 0); returns its row. */
  applyGenesis(time = this.genesis.createdAt): JournalRow {
    if (this.height !== -1) throw new Error('genesis already applied');
    for (const a of this.genesis.allocations) {
      const acct = this.account(a.account, true)!;
      this.setBalance(a.account, acct, acct.balance + a.amount);
    }
    return this.append(EntryType.genesis, encodeGenesis(this.genesis), time, []);
  }

  /** Σ SHA-256(record) mod 2^256 over all account and channel records (32 bytes, big-endian). */
  get digest(): Buffer {
    this.flushDigest();
    return this.sum.toBuffer();
  }

  /** The digest as a number (kept for callers of the former field). */
  get digestN(): bigint {
    return BigInt('0x' + this.digest.toString('hex'));
  }

  private flushDigest(): void {
    for (const [k, pub] of this.dirtyAcc) this.rehash(this.accHash, k, this.accountRecordBytes(pub, this.accounts.get(k)!));
    this.dirtyAcc.clear();
    for (const k of this.dirtyCh) this.rehash(this.chHash, k, this.channelRecordBytes(this.channels.get(k)!));
    this.dirtyCh.clear();
  }

  private rehash(cache: Map<string, Buffer>, k: string, rec: Buffer): void {
    const h = sha256One(rec);
    const old = cache.get(k);
    if (old) this.sum.sub(old);
    this.sum.add(h);
    cache.set(k, h);
  }

  /** 0x61 ‖ pub[32] ‖ balance u128 ‖ faucetClaimed u8 (in a scratch buffer, valid until the next call). */
  private accountRecordBytes(pub: Buffer, a: AccountRecord): Buffer {
    const b = this.recBuf;
    b[0] = 0x61;
    pub.copy(b, 1);
    writeU128(b, a.balance, 33);
    b[49] = a.faucetClaimed ? 1 : 0;
    return b.subarray(0, 50);
  }

  /** 0x63 ‖ id ‖ requester ‖ provider ‖ deposit u128 ‖ expiresAt u64 ‖ status u8 ‖ settled u128. */
  private channelRecordBytes(c: ChannelRecord): Buffer {
    const b = this.recBuf;
    b[0] = 0x63;
    c.id.copy(b, 1);
    c.requester.copy(b, 33);
    c.provider.copy(b, 65);
    writeU128(b, c.deposit, 97);
    writeU64(b, c.expiresAt, 113);
    b[121] = c.status === 'open' ? 0 : c.status === 'closed' ? 1 : 2;
    writeU128(b, c.settled, 122);
    return b.subarray(0, 138);
  }

  account(pub: Buffer, create = false): AccountRecord | undefined {
    const k = key(pub);
    let a = this.accounts.get(k);
    if (!a && create) {
      a = { balance: 0n, faucetClaimed: false };
      this.accounts.set(k, a);
      this.dirtyAcc.set(k, own(pub));
    }
    return a;
  }

  private setBalance(pub: Buffer, a: AccountRecord, balance: bigint, claimed = a.faucetClaimed): void {
    if (balance < 0n) throw new Error('invariant: negative balance');
    a.balance = balance;
    a.faucetClaimed = claimed;
    const k = key(pub);
    if (!this.dirtyAcc.has(k)) this.dirtyAcc.set(k, pub);
  }

  private updateChannel(c: ChannelRecord, f: (c: ChannelRecord) => void, _isNew = false): void {
    f(c);
    this.dirtyCh.add(key(c.id));
  }

  channelInfo(id: Buffer): ChannelInfo | undefined {
    const c = this.channels.get(key(id));
    if (!c) return undefined;
    return { ...c, ledgerId: this.ledgerId };
  }

  private append(type: number, payload: Buffer, time: number, accounts: Buffer[]): JournalRow {
    const seq = this.height + 1;
    // prevHash ‖ entry in one buffer, hashed in one call; the entry is the tail (encodeEntry's layout).
    const buf = Buffer.allocUnsafeSlow(32 + 17 + payload.length);
    this.lastHash.copy(buf, 0);
    writeU64(buf, seq, 32);
    writeU64(buf, time, 40);
    buf[48] = type;
    payload.copy(buf, 49);
    const entry = buf.subarray(32);
    const linked = this.linked;
    this.linked = null;
    const hash = linked && linked.seq === seq && linked.entry.equals(entry) ? linked.hash : sha256One(buf);
    this.height = seq;
    this.lastHash = hash;
    this.lastTime = time;
    return { seq, entry, hash, accounts };
  }

  /** Check a replayed/journaled row links to the current head; throws on a broken chain. */
  checkLink(row: JournalRow): void {
    if (row.seq !== this.height + 1) throw new Error(`journal gap: expected seq ${this.height + 1}, got ${row.seq}`);
    const h = sha256(this.lastHash, row.entry);
    if (!h.equals(row.hash)) throw new Error(`journal hash mismatch at seq ${row.seq}`);
    this.linked = row;
  }

  /** The row checkLink just accepted: append() reuses its hash when it re-encodes the same entry (one hash per row). */
  private linked: JournalRow | null = null;

  /** Channels due for expiry at `time`, oldest first. */
  dueExpiries(time: number, limit = Infinity): Buffer[] {
    const out: Buffer[] = [];
    const seen = new Set<string>();
    for (;;) {
      const top = this.expiry.peek();
      if (!top || top.t > time || out.length >= limit) break;
      this.expiry.pop();
      const c = this.channels.get(top.k);
      if (c && c.status === 'open' && c.expiresAt === top.t && c.expiresAt <= time && !seen.has(top.k)) {
        seen.add(top.k);
        out.push(c.id);
      }
    }
    // Re-insert anything still open that we popped but did not take (limit reached is handled by the break above).
    return out;
  }

  /** Refund an open channel whose expiry has passed. */
  applyExpire(channelId: Buffer, time: number): ApplyResult {
    const c = this.channels.get(key(channelId));
    if (!c) return reject('unknown_channel', 'no such channel', 404);
    if (c.status !== 'open') return reject('channel_not_open', `channel is ${c.status}`);
    if (time < c.expiresAt) return reject('not_expired', 'channel has not expired');
    const req = this.account(c.requester, true)!;
    this.setBalance(c.requester, req, req.balance + c.deposit);
    this.escrow -= c.deposit;
    this.openChannels--;
    const seq = this.height + 1;
    this.updateChannel(c, (x) => {
      x.status = 'expired';
      x.closeSeq = seq;
    });
    const row = this.append(EntryType.expire, c.id, time, [c.requester, c.provider]);
    return { ok: true, seq: row.seq, channelId: c.id, row };
  }

  /**
   * Apply a signed operation whose own signature has already been checked. `paymentSigOk` is the verdict on a close's
   * requester signature when checked in advance (undefined: check here).
   */
  applyOp(s: SignedOp, time: number, paymentSigOk?: boolean): ApplyResult {
    const { op } = s;
    if (!op.ledgerId.equals(this.ledgerId)) return reject('wrong_ledger', 'operation is for another ledger');
    const opKey = key(op.signer) + key(op.opId);
    const win = this.genesis.opIdWindowMs;
    if (win) {
      this.forgetOpIds(time);
      const t = opIdTime(op.opId);
      if (t < time - win || t > time + win) return reject('op_id_expired', `op id time is outside the ledger's ${win} ms retry window; if this is a retry, look the op up in the history`);
    }
    const prev = this.ops.get(opKey);
    if (prev) {
      if (prev.msgHash.equals(sha256(s.msg))) return { ok: true, seq: prev.seq, channelId: prev.channelId, duplicate: true };
      return reject('duplicate_op_id', 'this op id was already used for a different operation', 409);
    }
    const b = op.body;
    const signer = op.signer;
    let channelId: Buffer | undefined;
    let accounts: Buffer[];
    switch (b.kind) {
      case 'transfer': {
        if (b.amount <= 0n) return reject('invalid_amount', 'amount must be positive');
        if (b.to.equals(signer)) return reject('self_transfer', 'cannot transfer to yourself');
        const from = this.account(signer);
        if (!from || from.balance < b.amount) return reject('insufficient_funds', 'balance too low');
        const to = this.account(b.to, true)!;
        this.setBalance(signer, from, from.balance - b.amount);
        this.setBalance(b.to, to, to.balance + b.amount);
        accounts = [signer, b.to];
        break;
      }
      case 'open': {
        if (b.deposit <= 0n) return reject('invalid_amount', 'deposit must be positive');
        if (b.provider.equals(signer)) return reject('self_channel', 'requester and provider must differ');
        if (b.expiresAt <= time) return reject('bad_expiry', 'expiry is in the past');
        if (b.expiresAt - time > this.genesis.maxChannelMs) return reject('bad_expiry', `expiry more than ${this.genesis.maxChannelMs} ms ahead`);
        const from = this.account(signer);
        if (!from || from.balance < b.deposit) return reject('insufficient_funds', 'balance too low for the deposit');
        channelId = channelIdFor(this.ledgerId, signer, op.opId);
        const ck = key(channelId);
        if (this.channels.has(ck)) return reject('duplicate_channel', 'channel exists', 409);
        this.setBalance(signer, from, from.balance - b.deposit);
        this.escrow += b.deposit;
        this.openChannels++;
        const c: ChannelRecord = {
          id: channelId,
          // Own copies: the op's fields are views into its wire, which must not be kept alive by a long-lived record.
          requester: own(signer),
          provider: own(b.provider),
          deposit: b.deposit,
          expiresAt: b.expiresAt,
          status: 'open',
          openedAt: time,
          openSeq: this.height + 1,
          settled: 0n,
        };
        this.updateChannel(c, () => {}, true);
        this.channels.set(ck, c);
        for (const who of [signer, b.provider]) {
          const l = this.channelsByAccount.get(key(who));
          if (l) l.push(channelId);
          else this.channelsByAccount.set(key(who), [channelId]);
        }
        this.expiry.push(c.expiresAt, ck);
        accounts = [signer, b.provider];
        break;
      }
      case 'topup': {
        const c = this.channels.get(key(b.channelId));
        if (!c) return reject('unknown_channel', 'no such channel', 404);
        if (!c.requester.equals(signer)) return reject('not_requester', 'only the requester can top up');
        if (c.status !== 'open') return reject('channel_not_open', `channel is ${c.status}`);
        if (time >= c.expiresAt) return reject('channel_expired', 'channel has expired');
        if (b.amount < 0n) return reject('invalid_amount', 'negative amount');
        if (b.expiresAt < c.expiresAt) return reject('bad_expiry', 'expiry cannot move earlier');
        if (b.expiresAt - time > this.genesis.maxChannelMs) return reject('bad_expiry', `expiry more than ${this.genesis.maxChannelMs} ms ahead`);
        if (b.amount === 0n && b.expiresAt === c.expiresAt) return reject('invalid_amount', 'top-up changes nothing');
        const from = this.account(signer);
        if (!from || from.balance < b.amount) return reject('insufficient_funds', 'balance too low');
        if (c.deposit + b.amount > U128_MAX) return reject('invalid_amount', 'deposit overflow');
        this.setBalance(signer, from, from.balance - b.amount);
        this.escrow += b.amount;
        const moved = b.expiresAt !== c.expiresAt;
        this.updateChannel(c, (x) => {
          x.deposit += b.amount;
          x.expiresAt = b.expiresAt;
        });
        if (moved) this.expiry.push(c.expiresAt, key(c.id));
        channelId = c.id;
        accounts = [signer, c.provider];
        break;
      }
      case 'close': {
        const c = this.channels.get(key(b.channelId));
        if (!c) return reject('unknown_channel', 'no such channel', 404);
        if (!c.provider.equals(signer)) return reject('not_provider', 'only the provider can close a channel');
        if (c.status !== 'open') return reject('channel_not_open', `channel is ${c.status}`);
        if (time >= c.expiresAt) return reject('channel_expired', 'channel has expired');
        if (b.cumulative > c.deposit) return reject('exceeds_deposit', 'payment state exceeds the deposit');
        const ok =
          paymentSigOk ??
          verifyPaymentStateSignature({ ledgerId: this.ledgerId, channelId: c.id, sequence: b.sequence, cumulative: b.cumulative }, b.requesterSig, c.requester);
        if (!ok) return reject('bad_payment_signature', 'payment state not signed by the requester');
        const prov = this.account(c.provider, true)!;
        const req = this.account(c.requester, true)!;
        this.escrow -= c.deposit;
        this.openChannels--;
        this.setBalance(c.provider, prov, prov.balance + b.cumulative);
        this.setBalance(c.requester, req, req.balance + (c.deposit - b.cumulative));
        const seq = this.height + 1;
        this.updateChannel(c, (x) => {
          x.status = 'closed';
          x.settled = b.cumulative;
          x.closedSequence = b.sequence;
          x.closeSeq = seq;
        });
        channelId = c.id;
        accounts = [signer, c.requester];
        break;
      }
      case 'faucet': {
        const f = this.genesis.faucet;
        if (f.amount <= 0n) return reject('faucet_disabled', 'this ledger has no faucet');
        const acct = this.account(signer);
        if (acct?.faucetClaimed) return reject('faucet_claimed', 'this key already claimed the faucet', 409);
        if (leadingZeroBits(powHash(this.ledgerId, signer, b.nonce)) < f.difficulty) return reject('bad_proof_of_work', `proof of work needs ${f.difficulty} leading zero bits`);
        if (signer.equals(f.account)) return reject('faucet_claimed', 'the faucet cannot pay itself', 409);
        const src = this.account(f.account);
        if (!src || src.balance < f.amount) return reject('faucet_empty', 'the faucet is empty', 503);
        const dst = this.account(signer, true)!;
        this.setBalance(f.account, src, src.balance - f.amount);
        this.setBalance(signer, dst, dst.balance + f.amount, true);
        accounts = opAccounts(op, { faucet: f.account });
        break;
      }
      default:
        return reject('malformed_op', 'unknown operation');
    }
    const row = this.append(EntryType.op, s.wire, time, accounts);
    this.ops.set(opKey, { seq: row.seq, msgHash: sha256(s.msg), channelId });
    if (win) {
      const bk = Math.floor(opIdTime(op.opId) / this.opBucketMs);
      let l = this.opBuckets.get(bk);
      if (!l) this.opBuckets.set(bk, (l = []));
      l.push(opKey);
      if (bk < this.opBucketMin) this.opBucketMin = bk;
    }
    return { ok: true, seq: row.seq, channelId, row };
  }

  /** Sign a checkpoint over the current head. */
  checkpoint(secretKey: Buffer): { digest: Buffer; sig: Buffer } {
    const digest = this.digest;
    return { digest, sig: sign(checkpointMessage(this.height, this.lastHash, digest), secretKey) };
  }

  verifyCheckpoint(cp: { digest: Buffer; sig: Buffer }, checkSig: boolean): string | null {
    if (!cp.digest.equals(this.digest)) return `state digest mismatch at seq ${this.height}`;
    if (checkSig && !verify(checkpointMessage(this.height, this.lastHash, cp.digest), cp.sig, this.genesis.ledgerPublicKey)) {
      return `bad ledger signature on checkpoint at seq ${this.height}`;
    }
    return null;
  }

  /** Total of all balances (O(accounts)); with `escrow` must equal the supply. */
  sumBalances(): bigint {
    let s = 0n;
    for (const a of this.accounts.values()) s += a.balance;
    return s;
  }

  /**
   * Serialize the whole state (for start-up without a full replay). Layout, all integers big-endian:
   *   SNAPSHOT_TAG ‖ genesisLen u32 ‖ genesis ‖ height u64 ‖ lastHash[32] ‖ lastTime u64
   *   ‖ nAccounts u64 ‖ (pub[32] balance u128 claimed u8)*
   *   ‖ nChannels u64 ‖ (id requester provider [32 each] deposit u128 expiresAt u64 status u8 openedAt u64 openSeq u64
   *                     settled u128 flags u8 [closedSequence u64 if flags&1] [closeSeq u64 if flags&2])*
   *   ‖ nOps u64 ‖ (signer[32] opId[16] seq u64 msgHash[32] hasChannel u8 [channelId[32]])*
   * Everything else (escrow, open-channel count, indexes, expiry heap, op-id buckets, digest) is derived on load.
   * The accounts and channels are covered by the state digest, which the loader checks against the journal's signed
   * checkpoint at `height`; the caller signs the whole blob (see Ledger) to cover the op-id records.
   */
  toSnapshot(): Buffer {
    const g = encodeGenesis(this.genesis);
    let size = SNAPSHOT_TAG.length + 4 + g.length + 8 + 32 + 8 + 8 + this.accounts.size * 49 + 8 + this.channels.size * (96 + 16 + 8 + 1 + 8 + 8 + 16 + 1 + 16) + 8;
    for (const r of this.ops.values()) size += 48 + 8 + 32 + 1 + (r.channelId ? 32 : 0);
    const b = Buffer.alloc(size);
    let o = SNAPSHOT_TAG.copy(b, 0);
    o = b.writeUInt32BE(g.length, o);
    o += g.copy(b, o);
    writeU64(b, this.height, o);
    o += 8;
    o += this.lastHash.copy(b, o);
    writeU64(b, this.lastTime, o);
    o += 8;
    writeU64(b, this.accounts.size, o);
    o += 8;
    for (const [k, a] of this.accounts) {
      o += b.write(k, o, 'latin1');
      writeU128(b, a.balance, o);
      b[o + 16] = a.faucetClaimed ? 1 : 0;
      o += 17;
    }
    writeU64(b, this.channels.size, o);
    o += 8;
    for (const c of this.channels.values()) {
      o += c.id.copy(b, o);
      o += c.requester.copy(b, o);
      o += c.provider.copy(b, o);
      writeU128(b, c.deposit, o);
      writeU64(b, c.expiresAt, o + 16);
      b[o + 24] = c.status === 'open' ? 0 : c.status === 'closed' ? 1 : 2;
      writeU64(b, c.openedAt, o + 25);
      writeU64(b, c.openSeq, o + 33);
      writeU128(b, c.settled, o + 41);
      b[o + 57] = (c.closedSequence !== undefined ? 1 : 0) | (c.closeSeq !== undefined ? 2 : 0);
      o += 58;
      if (c.closedSequence !== undefined) o = b.writeBigUInt64BE(c.closedSequence, o);
      if (c.closeSeq !== undefined) {
        writeU64(b, c.closeSeq, o);
        o += 8;
      }
    }
    writeU64(b, this.ops.size, o);
    o += 8;
    for (const [k, r] of this.ops) {
      o += b.write(k, o, 'latin1');
      writeU64(b, r.seq, o);
      o += 8;
      o += r.msgHash.copy(b, o);
      b[o++] = r.channelId ? 1 : 0;
      if (r.channelId) o += r.channelId.copy(b, o);
    }
    return b.subarray(0, o);
  }

  /**
   * Rebuild a state from toSnapshot()'s bytes. Throws on malformed input or broken invariants (escrow, supply); the
   * caller must still check the result against the journal (hash and checkpoint digest at `height`).
   */
  static fromSnapshot(buf: Buffer): LedgerState {
    const r = new Reader(buf);
    if (!r.bytes(SNAPSHOT_TAG.length).equals(SNAPSHOT_TAG)) throw new RangeError('not a ledger snapshot');
    const glen = r.buf.readUInt32BE((r.pos += 4) - 4);
    const st = new LedgerState(decodeGenesis(Buffer.from(r.bytes(glen))));
    const num = (what: string): number => {
      const v = r.u64();
      if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`snapshot: ${what} out of range`);
      return Number(v);
    };
    st.height = num('height');
    st.lastHash = Buffer.from(r.bytes(32));
    st.lastTime = num('lastTime');
    const nAcc = num('account count');
    for (let i = 0; i < nAcc; i++) {
      const pub = own(r.bytes(32));
      const balance = r.u128();
      const claimed = r.u8();
      if (claimed > 1) throw new RangeError('snapshot: bad account flag');
      const k = key(pub);
      if (st.accounts.has(k)) throw new RangeError('snapshot: duplicate account');
      st.accounts.set(k, { balance, faucetClaimed: claimed === 1 });
      st.dirtyAcc.set(k, pub);
    }
    const nCh = num('channel count');
    const statuses = ['open', 'closed', 'expired'] as const;
    for (let i = 0; i < nCh; i++) {
      const id = own(r.bytes(32));
      const requester = own(r.bytes(32));
      const provider = own(r.bytes(32));
      const deposit = r.u128();
      const expiresAt = num('expiresAt');
      const status = statuses[r.u8()];
      if (!status) throw new RangeError('snapshot: bad channel status');
      const c: ChannelRecord = { id, requester, provider, deposit, expiresAt, status, openedAt: num('openedAt'), openSeq: num('openSeq'), settled: r.u128() };
      const flags = r.u8();
      if (flags & 1) c.closedSequence = r.u64();
      if (flags & 2) c.closeSeq = num('closeSeq');
      const ck = key(id);
      if (st.channels.has(ck)) throw new RangeError('snapshot: duplicate channel');
      st.channels.set(ck, c);
      st.dirtyCh.add(ck);
      for (const who of [requester, provider]) {
        const l = st.channelsByAccount.get(key(who));
        if (l) l.push(id);
        else st.channelsByAccount.set(key(who), [id]);
      }
      if (status === 'open') {
        st.escrow += deposit;
        st.openChannels++;
        st.expiry.push(expiresAt, ck);
      }
    }
    const nOps = num('op count');
    const win = st.genesis.opIdWindowMs;
    for (let i = 0; i < nOps; i++) {
      const k = key(r.bytes(48));
      const seq = num('op seq');
      const msgHash = own(r.bytes(32));
      const has = r.u8();
      if (has > 1) throw new RangeError('snapshot: bad op flag');
      const rec: OpRecord = { seq, msgHash };
      if (has) rec.channelId = own(r.bytes(32));
      if (seq > st.height) throw new RangeError('snapshot: op record beyond the snapshot height');
      st.ops.set(k, rec);
      if (win) {
        const bk = Math.floor(Buffer.from(k, 'latin1').readUIntBE(32, 6) / st.opBucketMs);
        let l = st.opBuckets.get(bk);
        if (!l) st.opBuckets.set(bk, (l = []));
        l.push(k);
        if (bk < st.opBucketMin) st.opBucketMin = bk;
      }
    }
    r.end();
    if (st.sumBalances() + st.escrow !== st.genesis.supply) throw new RangeError('snapshot: supply not conserved');
    return st;
  }

  /**
   * Replay one journal row (verification mode or startup). Checks the hash link and that the entry applies; with
   * `checkSigs`, also every signature. Throws on any inconsistency.
   */
  replay(row: JournalRow, checkSigs: boolean): void {
    this.checkLink(row);
    const e = decodeEntry(row.entry);
    if (e.seq !== row.seq) throw new Error(`entry seq ${e.seq} stored at ${row.seq}`);
    if (e.time < this.lastTime) throw new Error(`time goes backwards at seq ${row.seq}`);
    let res: ApplyResult;
    if (e.type === 'genesis') {
      if (row.seq !== 0) throw new Error('genesis entry after seq 0');
      if (!encodeGenesis(e.genesis).equals(encodeGenesis(this.genesis))) throw new Error('genesis differs');
      const r = this.applyGenesis(e.time);
      res = { ok: true, seq: r.seq, row: r };
    } else if (row.seq === 0) {
      throw new Error('journal does not start with genesis');
    } else if (e.type === 'op') {
      const s = e.signed;
      if (checkSigs && !verify(s.msg, s.sig, s.op.signer)) throw new Error(`bad operation signature at seq ${row.seq}`);
      res = this.applyOp(s, e.time, checkSigs ? undefined : true);
      if (res.ok && res.duplicate) throw new Error(`duplicate operation journaled at seq ${row.seq}`);
    } else {
      res = this.applyExpire(e.channelId, e.time);
    }
    if (!res.ok) throw new Error(`entry at seq ${row.seq} does not apply: ${res.error.code} (${res.error.message})`);
    if (!res.row || !res.row.hash.equals(row.hash)) throw new Error(`replayed hash differs at seq ${row.seq}`);
    if (row.checkpoint) {
      const err = this.verifyCheckpoint(row.checkpoint, checkSigs);
      if (err) throw new Error(err);
    }
  }
}
