/** The ledger API shared by the in-process `Ledger` and the HTTP `LedgerClient`, with the signing helpers. */
import type { ChannelInfo, PaymentState } from './payment.js';
import { signOp, solvePow, channelIdFor, newOpId, type OpBody } from './ops.js';
import type { KeyPair } from './keys.js';

/** Most operations in one POST /v1/ops/batch. */
export const MAX_BATCH_OPS = 256;

export interface LedgerInfo {
  ledgerId: Buffer;
  ledgerPublicKey: Buffer;
  supply: bigint;
  /** Sum of balances + open escrow; equals supply. */
  escrow: bigint;
  openChannels: number;
  /** Seq of the last journal entry. */
  height: number;
  /** Ledger clock, ms. */
  time: number;
  faucet: { account: Buffer; amount: bigint; difficulty: number };
  maxChannelMs: number;
}

export interface AccountInfo {
  publicKey: Buffer;
  balance: bigint;
  faucetClaimed: boolean;
}

export interface OpResult {
  /** Journal sequence number of the applied entry. */
  seq: number;
  opId: Buffer;
  channelId?: Buffer;
  /** True when this was a retry of an operation already applied. */
  duplicate?: boolean;
}

export type HistoryKind = 'genesis' | 'transfer' | 'open' | 'topup' | 'close' | 'faucet' | 'expire';

export interface HistoryEntry {
  seq: number;
  time: number;
  kind: HistoryKind;
  signer?: Buffer;
  opId?: Buffer;
  to?: Buffer;
  amount?: bigint;
  channelId?: Buffer;
  provider?: Buffer;
  expiresAt?: number;
  sequence?: bigint;
  cumulative?: bigint;
}

export interface TransferArgs {
  fromKeys: KeyPair;
  to: Buffer;
  amount: bigint;
  opId?: Buffer;
}
export interface OpenChannelArgs {
  requesterKeys: KeyPair;
  provider: Buffer;
  deposit: bigint;
  /** ms since epoch (ledger clock). */
  expiresAt: number;
  opId?: Buffer;
}
export interface TopUpArgs {
  requesterKeys: KeyPair;
  channelId: Buffer;
  /** Added to the deposit (default 0). */
  amount?: bigint;
  /** New expiry (default: unchanged). */
  expiresAt?: number;
  opId?: Buffer;
}
export interface CloseChannelArgs {
  providerKeys: KeyPair;
  state: PaymentState;
  /** The requester's signature over the state. */
  signature: Buffer;
  opId?: Buffer;
}
export interface FaucetArgs {
  keys: KeyPair;
  opId?: Buffer;
}

export abstract class LedgerApiBase {
  abstract ledgerInfo(): Promise<LedgerInfo>;
  abstract account(publicKey: Buffer): Promise<AccountInfo>;
  abstract channel(id: Buffer): Promise<ChannelInfo | undefined>;
  abstract channels(publicKey: Buffer): Promise<ChannelInfo[]>;
  abstract history(publicKey: Buffer, opts?: { limit?: number; beforeSeq?: number }): Promise<HistoryEntry[]>;
  /** Submit a signed operation (`msg ‖ sig`). Throws LedgerError on rejection. */
  abstract submit(wire: Buffer): Promise<OpResult>;

  private idCache: Buffer | undefined;
  protected async ledgerId(): Promise<Buffer> {
    return (this.idCache ??= (await this.ledgerInfo()).ledgerId);
  }

  async transfer(a: TransferArgs): Promise<OpResult> {
    const op = signOp(await this.ledgerId(), a.fromKeys, { kind: 'transfer', to: a.to, amount: a.amount }, a.opId ?? newOpId());
    return this.submit(op.wire);
  }

  async openChannel(a: OpenChannelArgs): Promise<OpResult & { channelId: Buffer }> {
    const lid = await this.ledgerId();
    const opId = a.opId ?? newOpId();
    const op = signOp(lid, a.requesterKeys, { kind: 'open', provider: a.provider, deposit: a.deposit, expiresAt: a.expiresAt }, opId);
    const r = await this.submit(op.wire);
    return { ...r, channelId: r.channelId ?? channelIdFor(lid, a.requesterKeys.publicKey, opId) };
  }

  async topUp(a: TopUpArgs): Promise<OpResult> {
    let expiresAt = a.expiresAt;
    if (expiresAt === undefined) {
      const c = await this.channel(a.channelId);
      if (!c) throw new Error('no such channel');
      expiresAt = c.expiresAt;
    }
    const body: OpBody = { kind: 'topup', channelId: a.channelId, amount: a.amount ?? 0n, expiresAt };
    return this.submit(signOp(await this.ledgerId(), a.requesterKeys, body, a.opId ?? newOpId()).wire);
  }

  async closeChannel(a: CloseChannelArgs): Promise<OpResult> {
    const body: OpBody = { kind: 'close', channelId: a.state.channelId, sequence: a.state.sequence, cumulative: a.state.cumulative, requesterSig: a.signature };
    return this.submit(signOp(await this.ledgerId(), a.providerKeys, body, a.opId ?? newOpId()).wire);
  }

  /** Solve the faucet's proof of work for `keys.publicKey` and claim. */
  async faucet(a: FaucetArgs): Promise<OpResult & { amount: bigint }> {
    const info = await this.ledgerInfo();
    const nonce = solvePow(info.ledgerId, a.keys.publicKey, info.faucet.difficulty);
    const r = await this.submit(signOp(info.ledgerId, a.keys, { kind: 'faucet', nonce }, a.opId ?? newOpId()).wire);
    return { ...r, amount: info.faucet.amount };
  }
}

/** What both the in-process `Ledger` and the HTTP `LedgerClient` provide. */
export type LedgerApi = LedgerApiBase;
