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
import { Writer, Reader, tag, sha256, U128_MAX, BTT } from './codec.js';
import { sign, verify } from './keys.js';
import { type ChannelInfo, verifyPaymentStateSignature } from './payment.js';
import { type SignedOp, parseSignedOp, channelIdFor, powHash, leadingZeroBits, opAccounts, opIdTime } from './ops.js';

export const GENESIS_TAG = tag('bitorrent/ledger-genesis/v1');
export const LEDGER_ID_TAG = tag('bitorrent/ledger-id/v1');
export const CHECKPOINT_TAG = tag('bitorrent/ledger-checkpoint/v1');
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

const MOD = 1n << 256n;
const key = (b: Buffer): string => b.toString('latin1');

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
  digestN = 0n;
  openChannels = 0;

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

  get digest(): Buffer {
    return Buffer.from(this.digestN.toString(16).padStart(64, '0'), 'hex');
  }

  private recHash(buf: Buffer): bigint {
    return BigInt('0x' + sha256(buf).toString('hex'));
  }
  private accountHash(pub: Buffer, a: AccountRecord): bigint {
    return this.recHash(new Writer().u8(0x61).bytes(pub).u128(a.balance).u8(a.faucetClaimed ? 1 : 0).done());
  }
  private channelHash(c: ChannelRecord): bigint {
    return this.recHash(
      new Writer()
        .u8(0x63)
        .bytes(c.id)
        .bytes(c.requester)
        .bytes(c.provider)
        .u128(c.deposit)
        .u64(c.expiresAt)
        .u8(c.status === 'open' ? 0 : c.status === 'closed' ? 1 : 2)
        .u128(c.settled)
        .done(),
    );
  }

  account(pub: Buffer, create = false): AccountRecord | undefined {
    const k = key(pub);
    let a = this.accounts.get(k);
    if (!a && create) {
      a = { balance: 0n, faucetClaimed: false };
      this.accounts.set(k, a);
      this.digestN = (this.digestN + this.accountHash(pub, a)) % MOD;
    }
    return a;
  }

  private setBalance(pub: Buffer, a: AccountRecord, balance: bigint, claimed = a.faucetClaimed): void {
    if (balance < 0n) throw new Error('invariant: negative balance');
    this.digestN = (this.digestN - this.accountHash(pub, a) + MOD) % MOD;
    a.balance = balance;
    a.faucetClaimed = claimed;
    this.digestN = (this.digestN + this.accountHash(pub, a)) % MOD;
  }

  private updateChannel(c: ChannelRecord, f: (c: ChannelRecord) => void, isNew = false): void {
    if (!isNew) this.digestN = (this.digestN - this.channelHash(c) + MOD) % MOD;
    f(c);
    this.digestN = (this.digestN + this.channelHash(c)) % MOD;
  }

  channelInfo(id: Buffer): ChannelInfo | undefined {
    const c = this.channels.get(key(id));
    if (!c) return undefined;
    return { ...c, ledgerId: this.ledgerId };
  }

  private append(type: number, payload: Buffer, time: number, accounts: Buffer[]): JournalRow {
    const seq = this.height + 1;
    const entry = encodeEntry(seq, time, type, payload);
    const hash = sha256(this.lastHash, entry);
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
  }

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
          requester: signer,
          provider: b.provider,
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
